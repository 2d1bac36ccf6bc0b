"""Schedules every target on its own grid, modelled on Prometheus' scrape loop.

- each target polls at ``start + offset + k * interval`` (offset hash-seeded from its id);
- one loop task per target, so one target never has two polls at once;
- a poll longer than its timeout is cancelled and counts as a failure;
- after failures the next attempt backs off exponentially, with jitter, then returns to the grid;
- every attempt updates the target's health and, on success, the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.model import Observation, SourceHealth
from sovereign_tui.poller.deadlines import Deadlines
from sovereign_tui.poller.limits import Limiter
from sovereign_tui.poller.target import PollContext, PollError, Target

if TYPE_CHECKING:
    import aiohttp

    from sovereign_tui.store import Store


@dataclass(frozen=True)
class Backoff:
    """Delay after `n` consecutive failures: ``min(cap, interval * factor**(n-1))``, shortened
    by up to `jitter` (a fraction) so that failed targets do not retry in lockstep."""

    factor: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.2

    def delay(self, interval: float, failures: int, rng: random.Random) -> float:
        base = min(self.cap_s, interval * self.factor ** max(0, failures - 1))
        return max(interval, base) * (1.0 - self.jitter * rng.random())


def describe_error(exc: BaseException) -> str:
    """One line for the operator: the exception's own words, never a traceback."""
    if isinstance(exc, PollError):
        return str(exc)
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name


class Poller:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        concurrency: int = 256,
        per_host: int = 8,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        http: aiohttp.ClientSession | None = None,
        poll_at_start: bool = False,
    ) -> None:
        self.store = store
        self.poll_at_start = poll_at_start
        """Poll each target once as soon as it starts, then on its grid: a console shows data at
        once instead of after up to one interval (the limits still bound the burst)."""
        self.clock = clock or SystemClock()
        self.limiter = Limiter(concurrency, per_host)
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self._http = http
        self._own_http = http is None
        self._targets: dict[str, Target] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._health: dict[str, SourceHealth] = {}
        self._epoch: float | None = None
        self._deadlines = Deadlines(self.clock)
        self.started: list[str] = []
        """Ids of loops started, in order (reconfiguration is observable in tests)."""

    # --- the shared HTTP client ---------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            import aiohttp

            # The poller bounds concurrency itself; the connector only keeps connections alive
            # (limit 0: unbounded, so keep-alive spans every endpoint of a cycle).
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
            # Every poll runs under the poller's own deadline, so the session sets no total
            # timeout of its own (that would cost a timer per request).
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
            self._http = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
        return self._http

    async def close(self) -> None:
        await self.stop()
        if self._http is not None and self._own_http:
            await self._http.close()
            self._http = None

    # --- targets --------------------------------------------------------------------------------

    @property
    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    def health(self, target_id: str) -> SourceHealth:
        return self._health[target_id]

    def set_targets(self, targets: list[Target]) -> None:
        """Reconfigure: start new targets, stop removed ones, restart those whose spec changed;
        leave the rest running on their schedule."""
        wanted = {t.id: t for t in targets}
        if len(wanted) != len(targets):
            raise ValueError("target ids must be unique")
        for tid in list(self._targets):
            new = wanted.get(tid)
            if new is None or new.spec != self._targets[tid].spec:
                self._drop(tid)
        for tid, target in wanted.items():
            if tid in self._targets:
                self._targets[tid] = target  # same spec: keep loop and health
                continue
            self._targets[tid] = target
            self._health[tid] = SourceHealth(
                target=tid, source=target.source, endpoint=target.endpoint, interval_s=target.interval_s
            )
            self.store.set_health(self._health[tid])
            if self._epoch is not None:
                self._start_loop(target)

    def _drop(self, tid: str) -> None:
        self._targets.pop(tid, None)
        self._health.pop(tid, None)
        loop = self._loops.pop(tid, None)
        if loop is not None:
            loop.cancel()
        self.store.remove_target(tid)

    # --- running --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._epoch is not None:
            return
        self._epoch = self.clock.monotonic()
        for target in self._targets.values():
            self._start_loop(target)

    def _start_loop(self, target: Target) -> None:
        self.started.append(target.id)
        self._loops[target.id] = asyncio.create_task(self._loop(target), name=f"poll:{target.id}")

    async def stop(self) -> None:
        loops = list(self._loops.values())
        self._loops.clear()
        self._epoch = None
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def next_slot(self, target: Target, after: float) -> float:
        """The first grid time of `target` at or after `after`."""
        assert self._epoch is not None
        first = self._epoch + target.offset()
        if after <= first:
            return first
        k = math.ceil((after - first) / target.interval_s - 1e-9)
        return first + k * target.interval_s

    async def _loop(self, target: Target) -> None:
        now = self.clock.monotonic()
        due = now if self.poll_at_start else self.next_slot(target, now)
        while True:
            await self.clock.sleep_until(due)
            ok = await self.poll_target(target)
            now = self.clock.monotonic()
            if ok:
                due = self.next_slot(target, max(now, due + target.interval_s * 0.5))
            else:
                failures = self._health[target.id].consecutive_failures
                due = now + self.backoff.delay(target.interval_s, failures, self.rng)

    async def run_once(self, timeout_s: float | None = None) -> None:
        """Poll every target once now, concurrently within the limits; return when all are done
        (or, with `timeout_s`, when that much time has passed: the rest are left failed)."""
        tasks = [asyncio.create_task(self.poll_target(t)) for t in self._targets.values()]
        if not tasks:
            return
        if timeout_s is None:
            await asyncio.gather(*tasks)
            return
        started, wall = self.clock.monotonic(), self.clock.time()
        by_task = dict(zip(tasks, self._targets.values(), strict=True))
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            target = by_task[task]
            self._record(
                target, started, wall, f"no answer within {timeout_s:g}s (endpoint {target.endpoint})", None
            )

    async def poll_target(self, target: Target) -> bool:
        """One attempt: take a slot, poll with the timeout, record health. True on success."""
        await self.limiter.acquire(target.endpoint)
        try:
            return await self._attempt(target)
        finally:
            self.limiter.release(target.endpoint)

    async def _attempt(self, target: Target) -> bool:
        started = self.clock.monotonic()
        attempt_wall = self.clock.time()
        ctx = PollContext(clock=self.clock, http=self.http, timeout_s=target.timeout)
        # The poll runs in this task; the shared watcher cancels it at the deadline (on the
        # injected clock), and the cancellation is told apart from one from outside as
        # asyncio.timeout does: by the task's cancel count.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        deadline = self._deadlines.add(started + target.timeout, task)
        error: str | None = None
        observation: Observation | None = None
        try:
            observation = await target.poll(ctx)
        except asyncio.CancelledError:
            if not deadline.expired or task.uncancel() > cancelling:
                raise
        except Exception as exc:  # any failure of a source is that source's health
            error = describe_error(exc)
        finally:
            self._deadlines.discard(deadline)
        if deadline.expired:
            if task.cancelling() > cancelling:  # the poll swallowed the cancellation
                task.uncancel()
            observation = None
            error = f"timed out after {target.timeout:g}s (endpoint {target.endpoint})"
        return self._record(target, started, attempt_wall, error, observation)

    def _record(
        self,
        target: Target,
        started: float,
        attempt_wall: float,
        error: str | None,
        observation: Observation | None,
    ) -> bool:
        duration = self.clock.monotonic() - started
        previous = self._health.get(target.id)
        if previous is None:  # dropped while polling
            return error is None
        if error is None and observation is not None:
            health = msgspec.structs.replace(
                previous,
                up=True,
                last_success=self.clock.time(),
                last_attempt=attempt_wall,
                last_error=None,
                last_duration_s=duration,
                consecutive_failures=0,
                polls=previous.polls + 1,
            )
            self._health[target.id] = health
            self.store.apply(health, observation)
            return True
        health = msgspec.structs.replace(
            previous,
            up=False,
            last_attempt=attempt_wall,
            last_error=error or "poll returned no observation",
            last_duration_s=duration,
            consecutive_failures=previous.consecutive_failures + 1,
            polls=previous.polls + 1,
            failures=previous.failures + 1,
        )
        self._health[target.id] = health
        self.store.set_health(health)
        return False
