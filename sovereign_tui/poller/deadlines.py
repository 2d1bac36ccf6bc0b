"""Poll timeouts on the injected clock, for thousands of polls at once.

A timer task per poll (the simple way) costs a task, a sleep and a wait for every poll. Here one
watcher task sleeps (on the `Clock`) until the earliest deadline still open and cancels the task
that overran it, the way `asyncio.timeout` does for a single one. A poll that finishes in time
costs a heap push and a flag; the watcher wakes about once per timeout, not once per poll.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

from sovereign_tui.clock import Clock


class Deadline:
    __slots__ = ("expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[object]) -> None:
        self.when = when
        self.task: asyncio.Task[object] | None = task
        self.expired = False
        """Set when the watcher cancelled the task for overrunning `when`."""


class Deadlines:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._open = 0
        self._watcher: asyncio.Task[None] | None = None
        self._armed_for = math.inf

    @property
    def open(self) -> int:
        """Deadlines neither met nor expired."""
        return self._open

    def add(self, when: float, task: asyncio.Task[object]) -> Deadline:
        """Cancel `task` if it is still guarded when the clock reaches `when`."""
        deadline = Deadline(when, task)
        heapq.heappush(self._heap, (when, next(self._seq), deadline))
        self._open += 1
        watcher = self._watcher
        if watcher is None or watcher.done():
            self._start()
        elif when < self._armed_for:  # earlier than the watcher's sleep: re-arm it
            watcher.cancel()
            self._start()
        return deadline

    def discard(self, deadline: Deadline) -> None:
        """The guarded work is over (in time or not): forget the deadline."""
        if deadline.task is None:
            return
        deadline.task = None
        self._open -= 1
        if not self._open:
            self._heap.clear()
            if self._watcher is not None:
                self._watcher.cancel()
                self._watcher = None
            self._armed_for = math.inf

    def _start(self) -> None:
        self._armed_for = -math.inf  # not asleep yet: it reads the earliest deadline when it runs
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="poll-deadlines")

    async def _watch(self) -> None:
        heap = self._heap
        while heap:
            when, _, deadline = heap[0]
            task = deadline.task
            if task is None:  # met: dropped lazily when it reaches the top
                heapq.heappop(heap)
                continue
            if when > self._clock.monotonic():
                self._armed_for = when
                await self._clock.sleep_until(when)
                self._armed_for = -math.inf
                continue
            heapq.heappop(heap)
            deadline.expired = True
            deadline.task = None
            self._open -= 1
            task.cancel()
        if self._watcher is asyncio.current_task():
            self._watcher = None
            self._armed_for = math.inf
