"""Failed logins per address, with a cool-down once an address has failed too often."""

from __future__ import annotations

from collections import deque

from sovereign_tui.clock import Clock

MAX_ADDRESSES = 10_000
"""Addresses remembered at most; the quietest are forgotten first."""


class FailedLogins:
    def __init__(self, clock: Clock, *, limit: int, window_s: float, cooldown_s: float) -> None:
        self._clock = clock
        self._limit = limit
        self._window_s = window_s
        self._cooldown_s = cooldown_s
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def cooling(self, address: str) -> float:
        """Seconds left of the address's cool-down; 0 when it may try."""
        until = self._until.get(address)
        if until is None:
            return 0.0
        left = until - self._clock.monotonic()
        if left <= 0:
            del self._until[address]
            return 0.0
        return left

    def record(self, address: str) -> bool:
        """Count a failed login; True when it starts a cool-down."""
        now = self._clock.monotonic()
        times = self._failures.pop(address, None) or deque()
        times.append(now)
        while times and now - times[0] > self._window_s:
            times.popleft()
        if len(times) >= self._limit:
            self._until[address] = now + self._cooldown_s
            return True
        self._failures[address] = times  # re-inserted last: dict order is recency
        while len(self._failures) > MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        return False
