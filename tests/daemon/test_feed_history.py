"""A console attaching to a running daemon gets the GPUs' recent history with its welcome, so its
sparklines and idle flags are those of the daemon's last 15 minutes, not empty for ten.

A real FeedServer on a real Unix socket, fed by a real Store on a FakeClock; the reference is a
GpuHistory that watched the same snapshots in the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tui_data import GPU_INTERVAL_S, fill

from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.feed_client import FeedClient
from sovereign_tui.daemon.protocol import HistoryFrame, decode_server
from sovereign_tui.gpu_analytics import METRICS, GpuHistory
from sovereign_tui.store import Store

from .feedkit import RawClient, make_server, short_dir, until

SAMPLES = 61  # 15 minutes of 15 s polls


@pytest.fixture
async def sock() -> AsyncIterator[Path]:
    with short_dir() as directory:
        yield directory / "feed.sock"


async def warm(store: Store, clock: FakeClock, published: GpuHistory, reference: GpuHistory) -> None:
    """SAMPLES polls; after each, wait until the daemon's publisher has taken that snapshot."""
    for tick in range(SAMPLES):
        if tick:
            await clock.advance(GPU_INTERVAL_S)
        fill(store, clock, tick=tick, anomalies=True)
        snapshot = store.snapshot()
        reference.observe(snapshot)
        first = snapshot.gpus[0]

        def taken(key: str = first.key, at: float = first.observed_at) -> bool:
            series = published.series(key, "util")
            return bool(series) and series[-1][0] == at

        await until(taken, "the daemon's history to take the poll")


def same_history(mine: GpuHistory, reference: GpuHistory, keys: list[str]) -> None:
    for key in keys:
        for metric in METRICS:
            assert mine.series(key, metric) == pytest.approx(reference.series(key, metric), nan_ok=True)


async def test_the_history_frame_comes_between_welcome_and_the_first_snapshot(
    clock: FakeClock, sock: Path
) -> None:
    store = Store(clock)
    server, _, _ = make_server(store, clock)
    await server.start(sock)
    reference = GpuHistory()
    try:
        await warm(store, clock, server.history, reference)
        client = await RawClient.connect(sock)
        assert (await client.message())["type"] == "welcome"
        frame = decode_server(await client.line())
        assert isinstance(frame, HistoryFrame)
        assert (await client.message())["type"] == "snapshot"
        client.close()
    finally:
        await server.close()
    keys = [g.key for g in store.snapshot().gpus]
    assert sorted(d.key for d in frame.gpus) == sorted(keys)
    restored = GpuHistory()
    assert restored.restore(frame.gpus) == len(keys)
    same_history(restored, reference, keys)
    assert len(restored.series(keys[0], "util")) == SAMPLES


async def test_an_attached_console_flags_idle_gpus_from_its_first_snapshot(
    clock: FakeClock, sock: Path
) -> None:
    store = Store(clock)
    server, _, _ = make_server(store, clock)
    await server.start(sock)
    reference = GpuHistory()
    history = GpuHistory()
    client = FeedClient(sock, clock=clock, history=history)
    try:
        await warm(store, clock, server.history, reference)
        snapshot = await client.wait_newer(0)
        idle = [g.key for g in reference.idle_gpus(store.snapshot())]
        assert idle, "the fleet of tui_data has idle held GPUs after 15 minutes"
        assert [g.key for g in history.idle_gpus(snapshot)] == idle
        same_history(history, reference, [g.key for g in snapshot.gpus])
    finally:
        await client.aclose()
        await server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
