"""Command palette entries for the actions possible here and now: the operation keys of the
screen under the palette (drain, migrate, provision, resume...), read from its active bindings, so
an action the role may not do (or with no operations backend) is not offered, as in the footer."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.binding import ActiveBinding
from textual.command import DiscoveryHit, Hit, Hits, Provider

OPERATION_BINDINGS = frozenset(
    {
        "drain-host",
        "undrain-host",
        "mark-host",
        "migrate-workload",
        "drain-gpu-host",
        "migrate-gpu-holder",
        "provision-node",
        "provide-node",
        "undeploy-node",
        "drain-node",
        "new-provision",
        "cancel-operation",
        "resume-operation",
        "abandon-operation",
    }
)
"""Ids of the bindings that act (the palette offers them where they are active)."""


class OperationCommands(Provider):
    """Run an operation key of this screen by name."""

    def _actions(self) -> Iterator[tuple[str, str, ActiveBinding]]:
        seen: set[str] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if binding.id not in OPERATION_BINDINGS or not active.enabled or binding.id in seen:
                continue
            seen.add(binding.id)
            name = f"{binding.description} ({self.app.get_key_display(binding)})"
            yield name, binding.tooltip or binding.description, active

    async def _run(self, active: ActiveBinding) -> None:
        await self.app.run_action(active.binding.action, active.node)

    async def discover(self) -> Hits:
        for name, help_text, active in self._actions():
            yield DiscoveryHit(name, partial(self._run, active), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, active in self._actions():
            score = matcher.match(f"{name} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, active), help=help_text)
