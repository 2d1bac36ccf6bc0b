"""Concurrency slots: one global limit and one per endpoint host.

A slot is taken synchronously when free (before any await), and handed directly to the first
waiter that can use it when released, so no two tasks race for the same slot.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque


class Limiter:
    def __init__(self, global_limit: int, per_host_limit: int) -> None:
        if global_limit < 1 or per_host_limit < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.global_limit = global_limit
        self.per_host_limit = per_host_limit
        self._active = 0
        self._per_host: defaultdict[str, int] = defaultdict(int)
        self._waiters: deque[tuple[str, asyncio.Future[None]]] = deque()

    @property
    def active(self) -> int:
        return self._active

    def active_for(self, host: str) -> int:
        return self._per_host.get(host, 0)

    def _free(self, host: str) -> bool:
        return self._active < self.global_limit and self._per_host[host] < self.per_host_limit

    def _take(self, host: str) -> None:
        self._active += 1
        self._per_host[host] += 1

    async def acquire(self, host: str) -> None:
        if not self._waiters and self._free(host):
            self._take(host)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((host, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(host)  # the slot was handed to us as we were cancelled
            else:
                self._waiters.remove((host, fut))
            raise

    def release(self, host: str) -> None:
        self._active -= 1
        left = self._per_host[host] - 1
        if left:
            self._per_host[host] = left
        else:
            del self._per_host[host]
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if not waiters:
            return
        # Hand free slots to waiters in order; those whose host is full keep their place at
        # the front (the queue is not rebuilt: releases stay O(1) with thousands waiting).
        skipped: list[tuple[str, asyncio.Future[None]]] = []
        while waiters and self._active < self.global_limit:
            host, fut = waiters.popleft()
            if fut.done():
                continue
            if self._per_host[host] < self.per_host_limit:
                self._take(host)
                fut.set_result(None)
            else:
                skipped.append((host, fut))
        if skipped:
            waiters.extendleft(reversed(skipped))
