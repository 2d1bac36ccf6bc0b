"""The poller's schedule under a fake clock: offsets, grid, no overlap, timeout, backoff,
reconfiguration and concurrency limits."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import Gpu, Observation
from sovereign_tui.poller import Backoff, Limiter, PollContext, Poller, PollError, Target
from sovereign_tui.store import Store


def gpu_obs(target: str, clock: FakeClock, n: int = 1) -> Observation:
    return Observation(
        gpus=tuple(
            Gpu(source=target, observed_at=clock.time(), host="h1", index=i, uuid=f"GPU-{target}-{i}")
            for i in range(n)
        )
    )


class Recorder:
    """A poll function that records when it ran and how many ran at once."""

    def __init__(self, clock: FakeClock, duration: float = 0.0, fail: bool = False) -> None:
        self.clock = clock
        self.duration = duration
        self.fail = fail
        self.calls: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, ctx: PollContext) -> Observation:
        self.calls.append(self.clock.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.duration:
                await self.clock.sleep_until(self.clock.monotonic() + self.duration)
            if self.fail:
                raise PollError("lab: connection refused (is the lab running?)")
            return gpu_obs("t", self.clock)
        finally:
            self.in_flight -= 1


def make_poller(clock: FakeClock, **kw: object) -> tuple[Poller, Store]:
    store = Store(clock)
    poller = Poller(store, clock=clock, rng=random.Random(7), http=object(), **kw)  # type: ignore[arg-type]
    return poller, store


def test_offsets_are_stable_and_spread_over_the_interval() -> None:
    targets = [
        Target(f"dcgm:10.0.{i // 250}.{i % 250}:9400", "dcgm", "x", 10.0, Recorder(FakeClock()))
        for i in range(1000)
    ]
    offsets = [t.offset() for t in targets]
    assert all(0 <= o < 10.0 for o in offsets)
    # Same id, same offset: the schedule stays put across restarts.
    again = Target(targets[3].id, "dcgm", "y", 10.0, Recorder(FakeClock()))
    assert again.offset() == offsets[3]
    # Spread: every tenth of the interval holds a fair share (1000 targets -> ~100 per bucket).
    buckets = defaultdict(int)
    for o in offsets:
        buckets[int(o)] += 1
    assert len(buckets) == 10
    assert min(buckets.values()) > 60


def test_timeout_must_be_shorter_than_interval() -> None:
    with pytest.raises(ValueError, match="shorter than the interval"):
        Target("t", "s", "e", 5.0, Recorder(FakeClock()), timeout_s=5.0)


async def test_polls_follow_the_grid_of_offset_plus_interval() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock)
    rec = Recorder(clock, duration=0.3)
    target = Target("nvml:h1", "nvml", "local", 2.0, rec)
    poller.set_targets([target])
    start = clock.monotonic()
    poller.start()
    await clock.advance(10.0 + 0.5)  # offset < 2 s: five slots start, and all end, by then
    expected = [start + target.offset() + k * 2.0 for k in range(5)]
    assert rec.calls == pytest.approx(expected)
    assert store.snapshot().sources[0].polls == 5
    assert store.snapshot().sources[0].up is True
    await poller.stop()


async def test_slow_polls_never_overlap_and_time_out() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock)
    rec = Recorder(clock, duration=100.0)  # never finishes within the timeout
    poller.set_targets([Target("ssh:h1", "nvidia-smi", "h1:22", 5.0, rec, timeout_s=2.0)])
    poller.start()
    await clock.advance(60.0)
    assert rec.max_in_flight == 1
    health = store.snapshot().sources[0]
    assert health.up is False
    assert health.last_error is not None and "timed out after 2s" in health.last_error
    assert health.last_duration_s == pytest.approx(2.0)
    assert rec.in_flight == 0  # the hung poll was cancelled, not left running
    await poller.stop()


async def test_failures_back_off_exponentially_then_return_to_the_grid() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock, backoff=Backoff(factor=2.0, cap_s=16.0, jitter=0.2))
    rec = Recorder(clock, fail=True)
    target = Target("nova", "nova", "lab:8774", 1.0, rec)
    poller.set_targets([target])
    poller.start()
    await clock.advance(60.0)
    gaps = [b - a for a, b in zip(rec.calls, rec.calls[1:], strict=False)]
    # Nominal delays 1, 2, 4, 8, 16, 16...: each gap within the jitter band of its nominal value.
    nominal = [min(16.0, 2.0**k) for k in range(len(gaps))]
    for gap, nom in zip(gaps, nominal, strict=True):
        assert nom * 0.8 <= gap <= nom
    assert len(gaps) >= 5
    assert store.snapshot().sources[0].consecutive_failures == len(rec.calls)
    assert store.snapshot().sources[0].last_error == "lab: connection refused (is the lab running?)"
    # Recovery: the next attempt succeeds and the target is back on its grid.
    rec.fail = False
    await clock.advance(20.0)
    rec.calls.clear()
    await clock.advance(5.0)
    assert len(rec.calls) == 5
    phase = {round((c - target.offset()) % 1.0, 6) for c in rec.calls}
    assert len(phase) == 1
    assert store.snapshot().sources[0].up is True
    await poller.stop()


async def test_reconfiguration_starts_and_stops_only_what_changed() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock)
    a, b, c = Recorder(clock), Recorder(clock), Recorder(clock)
    poller.set_targets([Target("a", "s", "e", 1.0, a), Target("b", "s", "e", 1.0, b)])
    poller.start()
    await clock.advance(3.0)
    polls_a = store.snapshot().sources[0].polls
    assert polls_a >= 2
    # Same a, b with a new interval, c new.
    poller.set_targets(
        [Target("a", "s", "e", 1.0, a), Target("b", "s", "e", 2.0, b), Target("c", "s", "e", 1.0, c)]
    )
    assert poller.started[2:] == ["b", "c"]
    await clock.advance(3.0)
    by_id = {h.target: h for h in store.snapshot().sources}
    assert by_id["a"].polls >= polls_a + 2  # health and schedule kept
    assert by_id["c"].polls >= 2
    # Removing b stops its loop and drops its data.
    b_calls = len(b.calls)
    poller.set_targets([Target("a", "s", "e", 1.0, a), Target("c", "s", "e", 1.0, c)])
    await clock.advance(5.0)
    assert len(b.calls) == b_calls
    assert {h.target for h in store.snapshot().sources} == {"a", "c"}
    assert all(g.source != "b" for g in store.snapshot().gpus)
    await poller.stop()


async def test_run_once_respects_global_and_per_host_limits() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock, concurrency=3, per_host=1)
    recs = [Recorder(clock, duration=1.0) for _ in range(6)]
    shared = Recorder(clock, duration=1.0)
    targets = [Target(f"t{i}", "s", f"host{i}:1", 10.0, r) for i, r in enumerate(recs)]
    # Two targets on one endpoint host share one per-host slot.
    targets += [Target("s1", "s", "shared:1", 10.0, shared), Target("s2", "s", "shared:1", 10.0, shared)]
    poller.set_targets(targets)
    running = asyncio.ensure_future(poller.run_once())
    peak = 0
    while not running.done():
        peak = max(peak, poller.limiter.active)
        assert poller.limiter.active_for("shared:1") <= 1
        await clock.advance(0.5)
    await running
    assert peak == 3
    assert shared.max_in_flight == 1
    assert all(h.up for h in store.snapshot().sources)
    assert poller.limiter.active == 0


async def test_limiter_cancelled_waiter_does_not_leak_a_slot() -> None:
    lim = Limiter(1, 1)
    await lim.acquire("a")
    waiter = asyncio.ensure_future(lim.acquire("a"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    lim.release("a")
    assert lim.active == 0
    await lim.acquire("a")
    assert lim.active == 1


async def test_run_once_with_timeout_marks_the_slow_target_down() -> None:
    clock = FakeClock()
    poller, store = make_poller(clock)
    hang: asyncio.Future[Observation] = asyncio.get_running_loop().create_future()

    async def never(ctx: PollContext) -> Observation:
        return await hang

    poller.set_targets(
        [Target("fast", "s", "a", 10.0, Recorder(clock)), Target("hung", "s", "b", 10.0, never)]
    )
    await poller.run_once(timeout_s=0.05)
    by_id = {h.target: h for h in store.snapshot().sources}
    assert by_id["fast"].up is True
    assert by_id["hung"].up is False
    assert "no answer within 0.05s" in (by_id["hung"].last_error or "")


async def test_poll_at_start_polls_at_once_then_keeps_to_the_grid() -> None:
    clock = FakeClock()
    poller, _ = make_poller(clock, poll_at_start=True)
    rec = Recorder(clock)
    target = Target("nova:lab", "nova", "lab:8774", 10.0, rec)
    poller.set_targets([target])
    start = clock.monotonic()
    poller.start()
    await clock.advance(25.0)
    first_slot = start + target.offset()
    assert rec.calls[0] == pytest.approx(start)  # at once, not after the offset
    later = rec.calls[1:]
    assert later  # then on the target's own grid
    assert all(round((c - first_slot) % 10.0, 6) in (0.0, 10.0) for c in later)
    await poller.stop()
