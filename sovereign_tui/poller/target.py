"""Poll targets and what a poll is given."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sovereign_tui.clock import Clock
from sovereign_tui.model import Observation

if TYPE_CHECKING:
    import aiohttp


class PollError(Exception):
    """A poll failed for a reason worth one line on the operator's screen.

    The message names the thing and, where there is one, the fix.
    """


@dataclass(frozen=True)
class PollContext:
    clock: Clock
    http: aiohttp.ClientSession
    """The one shared async HTTP client (global and per-host connection limits)."""
    timeout_s: float


PollFn = Callable[[PollContext], Awaitable[Observation]]


@dataclass(frozen=True)
class Target:
    """One thing to poll, keyed by a stable `id`.

    Two targets with the same id and the same `spec` are the same target: reconfiguring with it
    leaves its schedule and health untouched.
    """

    id: str
    source: str
    endpoint: str
    """Host (and port) it talks to: the key of the per-host concurrency limit."""
    interval_s: float
    poll: PollFn = field(compare=False, repr=False)
    timeout_s: float | None = None
    """Defaults to 80% of the interval; must be shorter than the interval."""
    fingerprint: str = ""
    """Anything else of the target's configuration whose change must restart it."""

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"target {self.id}: interval must be positive")
        if self.timeout_s is not None and not 0 < self.timeout_s < self.interval_s:
            raise ValueError(
                f"target {self.id}: timeout {self.timeout_s}s must be positive and shorter "
                f"than the interval {self.interval_s}s"
            )

    @property
    def timeout(self) -> float:
        return self.timeout_s if self.timeout_s is not None else 0.8 * self.interval_s

    @property
    def spec(self) -> tuple[str, str, float, float, str]:
        return (self.source, self.endpoint, self.interval_s, self.timeout, self.fingerprint)

    def offset(self) -> float:
        """Where in each interval this target polls: a stable hash of its id, so load spreads
        evenly over the interval and stays put across restarts."""
        digest = hashlib.blake2b(self.id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 * self.interval_s
