"""What every collector offers the rest of the app."""

from __future__ import annotations

from typing import Literal, Protocol

from sovereign_tui.poller import Target

Capability = Literal["read", "drain", "migrate", "provision"]


class Collector(Protocol):
    """One source. It yields poll targets and knows nothing of scheduling or screens."""

    name: str
    capabilities: frozenset[Capability]

    def targets(self) -> list[Target]:
        """The targets to poll for the current configuration."""
        ...

    async def aclose(self) -> None:
        """Release connections and handles."""
        ...
