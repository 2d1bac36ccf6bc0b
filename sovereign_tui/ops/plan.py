"""Plans: what an operation will do, across layers, computed before anything happens.

A `Plan` is an ordered tuple of `Step`s. Each step names its layer, the object it acts on, what it
touches (so the operator and the audit log see the blast radius), the parameters the adapter
needs, and any `Blocker`. Plans are immutable values: the journal stores them as JSON and a resume
runs the stored plan, never a re-computed one. `digest()` is the SHA-256 of the canonical JSON of
what the plan does; the audit log records it, so a log line points at exactly one plan.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Literal

import msgspec

Layer = Literal["nova", "ironic", "kubernetes", "kubevirt", "starlingx"]
OperationKind = Literal["drain", "undrain", "migrate", "provision", "provide", "undeploy"]


class StepKind(StrEnum):
    NOVA_DISABLE = "nova.disable-service"
    NOVA_ENABLE = "nova.enable-service"
    NOVA_LIVE_MIGRATE = "nova.live-migrate"
    NOVA_COLD_MIGRATE = "nova.cold-migrate"
    """Cold migration and its ``confirmResize``."""
    NOVA_CANNOT_MOVE = "nova.cannot-move"
    """A server that stays: always blocked, listed so the operator sees it."""
    NOVA_CREATE = "nova.create-server"
    IRONIC_MAINTENANCE_ON = "ironic.maintenance-on"
    IRONIC_MAINTENANCE_OFF = "ironic.maintenance-off"
    IRONIC_DEPLOY = "ironic.deploy"
    IRONIC_MANAGE = "ironic.manage"
    """``enroll`` (or a failed clean, inspection, adoption) -> ``manageable``."""
    IRONIC_PROVIDE = "ironic.provide"
    """``manageable`` -> ``available``, through cleaning when Ironic cleans automatically."""
    IRONIC_UNDEPLOY = "ironic.undeploy"
    """``active`` -> ``available`` (provision target ``deleted``): the instance's disks are wiped."""
    KUBE_CORDON = "kubernetes.cordon"
    KUBE_UNCORDON = "kubernetes.uncordon"
    KUBE_EVICT = "kubernetes.evict"
    KUBE_CREATE_POD = "kubernetes.create-pod"
    KUBEVIRT_MIGRATE = "kubevirt.migrate"
    """Create a VirtualMachineInstanceMigration and follow it."""
    KUBEVIRT_EVACUATE = "kubevirt.evacuate"
    """Evict the launcher pod of a LiveMigrate VMI: the 429 it answers is the start of a migration."""
    KUBEVIRT_CREATE_VM = "kubevirt.create-vm"
    STX_LOCK = "starlingx.lock"
    STX_UNLOCK = "starlingx.unlock"

    @property
    def layer(self) -> Layer:
        return self.value.split(".", 1)[0]  # type: ignore[return-value]


DESTRUCTIVE_KINDS = frozenset(
    {
        StepKind.NOVA_DISABLE,
        StepKind.NOVA_LIVE_MIGRATE,
        StepKind.NOVA_COLD_MIGRATE,
        StepKind.KUBE_EVICT,
        StepKind.KUBEVIRT_MIGRATE,
        StepKind.KUBEVIRT_EVACUATE,
        StepKind.IRONIC_MAINTENANCE_ON,
        StepKind.IRONIC_UNDEPLOY,
        StepKind.STX_LOCK,
    }
)
"""Steps that take capacity away or move running workloads: a plan with one is confirmed by
typing the target's name."""


class Blocker(msgspec.Struct, frozen=True, kw_only=True):
    """Why a step cannot (or may not) happen.

    `hard` blockers are never attempted (the step ends ``blocked``); soft ones describe the state
    now (a disruption budget with no room) and the step is attempted and retried until its
    timeout, as ``kubectl drain`` does."""

    reason: str
    kind: str = "state"
    """cannot-move | budget | several-budgets | not-migratable | state | capacity | locked"""
    hard: bool = True
    detail: str | None = None
    """The budget's name, the flavor's GPU kind, ...: what the operator acts on."""


class Step(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    kind: StepKind
    target: str
    """The object acted on: service id, server id, node name, ``ns/pod``, ``ns/vmi``, ihost uuid."""
    target_name: str
    """Its name as the operator knows it."""
    host: str | None = None
    description: str
    touches: tuple[str, ...] = ()
    """``layer:type:id`` of every object the step changes."""
    params: dict[str, str] = msgspec.field(default_factory=dict)
    blocker: Blocker | None = None
    warning: str | None = None
    group: str | None = None
    """Consecutive steps of one group run concurrently, up to the group's cap."""
    timeout_s: float | None = None

    @property
    def layer(self) -> Layer:
        return self.kind.layer

    @property
    def blocked(self) -> bool:
        return self.blocker is not None and self.blocker.hard


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: OperationKind
    target: str
    """The host (drain, undrain), workload (migrate) or new workload's name (provision)."""
    steps: tuple[Step, ...]
    created_at: float
    params: dict[str, str] = msgspec.field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    leases: tuple[str, ...] = ()
    """Hosts (or ``workload:...`` keys) held while the operation runs."""
    snapshot_generation: int = 0

    @property
    def destructive(self) -> bool:
        return any(s.kind in DESTRUCTIVE_KINDS for s in self.steps)

    @property
    def confirm_phrase(self) -> str | None:
        """What the operator types to confirm a destructive plan (the target's name), else None."""
        return self.target if self.destructive else None

    @property
    def blocked_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.blocker is not None)

    def digest(self) -> str:
        """SHA-256 of what the plan does (kind, target, params, steps): not its id or time."""
        body = msgspec.json.encode([self.kind, self.target, self.params, self.steps], order="sorted")
        return hashlib.sha256(body).hexdigest()


def new_plan(
    kind: OperationKind,
    target: str,
    steps: list[Step],
    *,
    now: float,
    params: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    leases: list[str] | None = None,
    generation: int = 0,
) -> Plan:
    numbered = tuple(msgspec.structs.replace(s, index=i) for i, s in enumerate(steps))
    return Plan(
        id=str(uuid.uuid4()),
        kind=kind,
        target=target,
        steps=numbered,
        created_at=now,
        params=dict(params or {}),
        warnings=tuple(warnings or ()),
        leases=tuple(leases or ()),
        snapshot_generation=generation,
    )


def encode_plan(plan: Plan) -> bytes:
    return msgspec.json.encode(plan)


def decode_plan(data: bytes | str) -> Plan:
    return msgspec.json.decode(data, type=Plan)


def plan_rows(plan: Plan) -> list[dict[str, str]]:
    """One row per step for a table: what a dry run prints."""
    rows = []
    for s in plan.steps:
        note = ""
        if s.blocker is not None:
            note = ("BLOCKED: " if s.blocker.hard else "may block: ") + s.blocker.reason
        elif s.warning:
            note = "warning: " + s.warning
        rows.append(
            {
                "#": str(s.index + 1),
                "layer": s.layer,
                "step": s.kind.value.split(".", 1)[1],
                "target": s.target_name,
                "what": s.description,
                "note": note,
            }
        )
    return rows
