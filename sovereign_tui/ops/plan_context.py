"""What planners share: the snapshot, the live lookups, the settings and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from sovereign_tui.clock import Clock
from sovereign_tui.model import Host, Snapshot
from sovereign_tui.ops.inventory import Inventory
from sovereign_tui.ops.plan import Blocker, OperationKind, Plan, Step, StepKind, new_plan
from sovereign_tui.ops.settings import OpsSettings


class PlanError(Exception):
    """The operation cannot be planned (unknown host or workload, bad choice): one line."""


@dataclass
class PlanContext:
    snapshot: Snapshot
    inventory: Inventory
    settings: OpsSettings
    clock: Clock
    notes: list[str] = field(default_factory=list)

    def timeout(self, kind: StepKind) -> float:
        return self.settings.step_timeouts.get(kind.value, self.settings.step_timeout_s)

    def step(
        self,
        kind: StepKind,
        target: str,
        name: str,
        description: str,
        *,
        host: str | None = None,
        touches: tuple[str, ...] = (),
        params: dict[str, str] | None = None,
        blocker: Blocker | None = None,
        warning: str | None = None,
        group: str | None = None,
    ) -> Step:
        return Step(
            index=0,
            kind=kind,
            target=target,
            target_name=name,
            description=description,
            host=host,
            touches=touches,
            params=dict(params or {}),
            blocker=blocker,
            warning=warning,
            group=group,
            timeout_s=self.timeout(kind),
        )

    def plan(
        self,
        kind: OperationKind,
        target: str,
        steps: list[Step],
        *,
        leases: list[str],
        params: dict[str, str] | None = None,
        warnings: list[str] | None = None,
    ) -> Plan:
        """The plan of `steps`, made now from this snapshot, with the notes planning gathered
        (a layer read from the snapshot because its API did not answer...) among its warnings."""
        return new_plan(
            kind,
            target,
            steps,
            now=self.clock.time(),
            params=params,
            warnings=[*(warnings or ()), *self.notes],
            leases=leases,
            generation=self.snapshot.generation,
        )

    def layer_on(self, layer: str) -> bool:
        return layer in self.settings.layers


def find_host(snapshot: Snapshot, name: str) -> Host | None:
    return next((h for h in snapshot.hosts if h.name == name), None)
