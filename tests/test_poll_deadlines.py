"""Poll timeouts through one watcher on the injected clock: mixed timeouts, outside
cancellation, polls that swallow the cancellation, and no watcher left behind."""

from __future__ import annotations

import asyncio
import random

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import Gpu, Observation
from sovereign_tui.poller import PollContext, Poller, Target
from sovereign_tui.poller.deadlines import Deadlines
from sovereign_tui.store import Store


def make_poller(clock: FakeClock) -> tuple[Poller, Store]:
    store = Store(clock)
    return Poller(store, clock=clock, rng=random.Random(1), http=object()), store  # type: ignore[arg-type]


def observation(clock: FakeClock) -> Observation:
    return Observation(gpus=(Gpu(source="t", observed_at=clock.time(), host="h", index=0, uuid="GPU-0"),))


class Sleeper:
    """A poll that takes `duration` seconds of the fake clock, recording how each attempt ended."""

    def __init__(self, clock: FakeClock, duration: float, swallow: bool = False) -> None:
        self.clock = clock
        self.duration = duration
        self.swallow = swallow
        self.ended: list[str] = []

    async def __call__(self, ctx: PollContext) -> Observation:
        try:
            await self.clock.sleep_until(self.clock.monotonic() + self.duration)
        except asyncio.CancelledError:
            self.ended.append(f"cancelled at {self.clock.monotonic():g}")
            if not self.swallow:
                raise
            return observation(self.clock)
        self.ended.append(f"done at {self.clock.monotonic():g}")
        return observation(self.clock)


async def test_a_short_timeout_fires_while_a_longer_one_is_armed() -> None:
    clock = FakeClock(start=0.0)
    poller, store = make_poller(clock)
    slow, hung = Sleeper(clock, 5.0), Sleeper(clock, 100.0)
    # The long deadline is armed first; the short one, added after, must re-arm the watcher.
    poller.set_targets(
        [
            Target("slow", "s", "a:1", 10.0, slow, timeout_s=8.0),
            Target("hung", "s", "b:1", 10.0, hung, timeout_s=1.0),
        ]
    )
    cycle = asyncio.ensure_future(poller.run_once())
    await clock.advance(1.0)
    assert hung.ended == ["cancelled at 1"]
    assert slow.ended == []
    await clock.advance(4.0)
    await cycle
    assert slow.ended == ["done at 5"]
    health = {h.target: h for h in store.snapshot().sources}
    assert health["slow"].up is True
    assert health["hung"].up is False
    assert health["hung"].last_error == "timed out after 1s (endpoint b:1)"
    assert poller._deadlines.open == 0
    assert clock.pending == 0  # no watcher left asleep once nothing is in flight


async def test_polls_in_time_leave_no_deadline_open() -> None:
    clock = FakeClock(start=0.0)
    poller, store = make_poller(clock)
    polls = [Sleeper(clock, 0.5 * (i % 3)) for i in range(20)]
    poller.set_targets([Target(f"t{i}", "s", f"h{i}:1", 10.0, p, timeout_s=2.0) for i, p in enumerate(polls)])
    cycle = asyncio.ensure_future(poller.run_once())
    await clock.advance(1.0)
    await cycle
    assert all(h.up for h in store.snapshot().sources)
    assert all(p.ended[0].startswith("done") for p in polls)
    assert poller._deadlines.open == 0
    assert clock.pending == 0


async def test_stopping_during_a_poll_is_not_reported_as_a_timeout() -> None:
    clock = FakeClock(start=0.0)
    poller, store = make_poller(clock)
    hung = Sleeper(clock, 100.0)
    target = Target("hung", "s", "a:1", 10.0, hung, timeout_s=5.0)
    poller.set_targets([target])
    poller.start()
    await clock.advance(target.offset() + 1.0)  # one second into its first poll
    assert hung.ended == []
    polls_before = store.snapshot().sources[0].polls
    await poller.stop()
    assert hung.ended
    assert hung.ended[0].startswith("cancelled")
    health = store.snapshot().sources[0]
    assert health.polls == polls_before  # the cancelled attempt recorded nothing
    assert health.last_error is None or "timed out" not in health.last_error
    assert poller._deadlines.open == 0


async def test_a_poll_that_swallows_the_cancellation_still_times_out_and_the_loop_goes_on() -> None:
    clock = FakeClock(start=0.0)
    poller, store = make_poller(clock)
    stubborn = Sleeper(clock, 100.0, swallow=True)
    poller.set_targets([Target("stubborn", "s", "a:1", 10.0, stubborn, timeout_s=2.0)])
    poller.start()
    await clock.advance(60.0)
    health = store.snapshot().sources[0]
    assert health.up is False
    assert health.last_error == "timed out after 2s (endpoint a:1)"
    # Several attempts: the loop task was not left cancelled by the swallowed cancellation.
    assert health.polls >= 3
    assert len(stubborn.ended) == health.polls
    await poller.stop()


async def test_deadlines_cancel_only_what_overran() -> None:
    clock = FakeClock(start=0.0)
    deadlines = Deadlines(clock)
    gate = asyncio.Event()

    async def guarded(when: float) -> str:
        task = asyncio.current_task()
        assert task is not None
        deadline = deadlines.add(when, task)  # type: ignore[arg-type]
        try:
            await gate.wait()
            return "done"
        except asyncio.CancelledError:
            assert deadline.expired
            task.uncancel()
            return "expired"
        finally:
            deadlines.discard(deadline)

    tasks = [asyncio.ensure_future(guarded(w)) for w in (3.0, 1.0, 2.0, 9.0)]
    await clock.advance(2.5)
    assert [t.done() for t in tasks] == [False, True, True, False]
    gate.set()
    await clock.settle()
    assert [t.result() for t in tasks] == ["done", "expired", "expired", "done"]
    assert deadlines.open == 0
    assert clock.pending == 0
