"""The operations engine's values as they cross the feed socket.

Plans (`Plan`), events (`OpEvent`) and the journal's records (`OperationRecord`) are strict
msgspec structs already and travel as they are. The provision form's request and the flavors it
offers are dataclasses of the engine; here each has a strict wire twin (unknown fields refused)
and the two conversions, so a change of those dataclasses is a change of the protocol made here,
on purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from sovereign_tui.ops.executor import OperationResult as RunResult
from sovereign_tui.ops.executor import StepResult

if TYPE_CHECKING:  # the provisioning module pulls in the OpenStack SDK: only where it is used
    from sovereign_tui.ops.provisioning import FlavorFit, ProvisionRequest

_Short = Annotated[str, msgspec.Meta(max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


# --- the provision form's request ------------------------------------------------------------


class ProvisionSpec(_Wire, frozen=True):
    """`ProvisionRequest` on the wire."""

    kind: Literal["vm", "baremetal", "kata-pod", "kubevirt-vm"]
    name: _Name
    flavor: _Name | None = None
    image: _Name | None = None
    network: _Name = "auto"
    host: _Name | None = None
    node: _Name | None = None
    namespace: _Name = "default"
    runtime_class: _Name | None = None
    gpus: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    cores: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 2
    memory: _Short = "4Gi"
    extra: Annotated[dict[_Short, _Text], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=dict)


def provision_spec(request: ProvisionRequest) -> ProvisionSpec:
    """ValueError (one line) when the request cannot travel (an unknown kind)."""
    try:
        return msgspec.convert(
            {f: getattr(request, f) for f in ProvisionSpec.__struct_fields__}, ProvisionSpec
        )
    except msgspec.ValidationError as exc:
        raise ValueError(f"provision request: {exc}") from None


def provision_request(spec: ProvisionSpec) -> ProvisionRequest:
    from sovereign_tui.ops.provisioning import ProvisionRequest

    return ProvisionRequest(**{f: getattr(spec, f) for f in ProvisionSpec.__struct_fields__})


# --- flavors a provision form offers ---------------------------------------------------------


class FlavorWire(_Wire, frozen=True):
    id: str
    name: str
    vcpus: int
    ram_mb: int
    extra_specs: dict[str, str]


class FlavorFitWire(_Wire, frozen=True):
    flavor: FlavorWire
    gpus: int
    gpu_kind: str | None
    hosts: tuple[str, ...]
    known: bool = True


def flavor_fit_wire(fit: FlavorFit) -> FlavorFitWire:
    f = fit.flavor
    return FlavorFitWire(
        flavor=FlavorWire(
            id=f.id, name=f.name, vcpus=f.vcpus, ram_mb=f.ram_mb, extra_specs=dict(f.extra_specs)
        ),
        gpus=fit.gpus,
        gpu_kind=fit.gpu_kind,
        hosts=fit.hosts,
        known=fit.known,
    )


def flavor_fit(wire: FlavorFitWire) -> FlavorFit:
    from sovereign_tui.ops.inventory import FlavorInfo
    from sovereign_tui.ops.provisioning import FlavorFit

    f = wire.flavor
    return FlavorFit(
        flavor=FlavorInfo(
            id=f.id, name=f.name, vcpus=f.vcpus, ram_mb=f.ram_mb, extra_specs=dict(f.extra_specs)
        ),
        gpus=wire.gpus,
        gpu_kind=wire.gpu_kind,
        hosts=wire.hosts,
        known=wire.known,
    )


# --- how a run ended ----------------------------------------------------------------------------


class StepOutcome(_Wire, frozen=True):
    index: int
    state: str
    outcome: str | None = None


def step_outcomes(result: RunResult) -> tuple[StepOutcome, ...]:
    return tuple(StepOutcome(index=s.index, state=s.state, outcome=s.outcome) for s in result.steps)


def run_result(op_id: str, state: str, message: str, steps: tuple[StepOutcome, ...]) -> RunResult:
    return RunResult(op_id, state, message, [StepResult(s.index, s.state, s.outcome) for s in steps])
