"""The adapters that perform steps against the real APIs, one module per layer, and the registry
that picks the adapter for a step's kind."""

from __future__ import annotations

from sovereign_tui.ops.actions.base import Adapter, LayerUnavailable, Progress, StepContext, StepFailed
from sovereign_tui.ops.actions.connections import Connections, Targets
from sovereign_tui.ops.actions.ironic import IronicActions
from sovereign_tui.ops.actions.kubernetes import KubernetesActions
from sovereign_tui.ops.actions.kubevirt import KubeVirtActions
from sovereign_tui.ops.actions.nova import NovaActions
from sovereign_tui.ops.actions.starlingx import StarlingxActions
from sovereign_tui.ops.plan import StepKind

__all__ = [
    "Adapter",
    "Adapters",
    "Connections",
    "LayerUnavailable",
    "Progress",
    "StepContext",
    "StepFailed",
    "Targets",
]


class Adapters:
    """One adapter per layer over shared connections; `for_kind` finds the one for a step."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.nova = NovaActions(connections)
        self.ironic = IronicActions(connections)
        self.kubernetes = KubernetesActions(connections)
        self.kubevirt = KubeVirtActions(connections, self.kubernetes)
        self.starlingx = StarlingxActions(connections)
        self._by_kind: dict[StepKind, Adapter] = {}
        for adapter in (self.nova, self.ironic, self.kubernetes, self.kubevirt, self.starlingx):
            for kind in adapter.kinds:
                self._by_kind[kind] = adapter

    def for_kind(self, kind: StepKind) -> Adapter | None:
        return self._by_kind.get(kind)

    async def close(self) -> None:
        await self.connections.close()
