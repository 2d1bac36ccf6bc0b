"""Simulated time for the lab's state machines.

Nothing in the lab runs in the background: a migration or a provisioning step is an event due
at a monotonic time on the injected clock, and the events that are due run when the next request
arrives (or when `run_due` is called). So with a `FakeClock` a test moves the lab forward by
advancing the clock, and with the system clock the lab moves with real time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from sovereign_tui.clock import Clock


class Event:
    __slots__ = ("cancelled", "due", "fn")

    def __init__(self, due: float, fn: Callable[[], None]) -> None:
        self.due = due
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timeline:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()
        self._running: Event | None = None

    def now(self) -> float:
        """Monotonic time of what is happening: the due time of the event being run, else the
        clock's. A chain of events thus keeps its own pace however late it is run."""
        return self._running.due if self._running is not None else self.clock.monotonic()

    def wall(self) -> float:
        """Wall-clock (epoch) time matching `now`."""
        return self.clock.time() - (self.clock.monotonic() - self.now())

    def after(self, delay_s: float, fn: Callable[[], None]) -> Event:
        """Run `fn` once `delay_s` seconds have passed from `now` (at the next `run_due`)."""
        event = Event(self.now() + max(0.0, delay_s), fn)
        heapq.heappush(self._heap, (event.due, next(self._seq), event))
        return event

    def run_due(self) -> int:
        """Run every event whose time has come, in time order (events may schedule more).

        Returns how many ran."""
        now = self.clock.monotonic()
        ran = 0
        while self._heap and self._heap[0][0] <= now:
            _, _, event = heapq.heappop(self._heap)
            if not event.cancelled:
                self._running = event
                try:
                    event.fn()
                finally:
                    self._running = None
                ran += 1
        return ran

    @property
    def pending(self) -> int:
        return sum(1 for _, _, e in self._heap if not e.cancelled)

    def next_due(self) -> float | None:
        """Monotonic time of the next pending event, None when nothing is pending."""
        live = [due for due, _, e in self._heap if not e.cancelled]
        return min(live) if live else None
