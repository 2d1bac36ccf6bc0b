"""Command palette entries: one per screen."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from screens.registry import SCREENS


class ScreenCommands(Provider):
    """Go to any screen by name."""

    def _switch(self, mode: str) -> None:
        self.app.switch_mode(mode)

    async def discover(self) -> Hits:
        for entry in SCREENS:
            yield DiscoveryHit(f"Show {entry.title}", partial(self._switch, entry.mode), help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in SCREENS:
            name = f"Show {entry.title}"
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._switch, entry.mode), help=entry.help)
