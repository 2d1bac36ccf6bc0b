"""Reading the daemon's feed: `FeedClient` (what `--attach` gives the app), the real app on it,
and `export --attach` run as the real command against a real feed socket."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tui_data import HOSTS, fail, fill

from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.feed_client import FEED_TARGET, FeedClient
from sovereign_tui.daemon.feed_server import FeedServer
from sovereign_tui.daemon.protocol import OperationRequest
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.export import to_json
from sovereign_tui.model import Snapshot
from sovereign_tui.store import Store

from .feedkit import GUARD_S, make_server, short_dir, until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    store = Store(clock)
    fill(store, clock)
    return store


@pytest.fixture
async def served(store: Store, clock: FakeClock) -> AsyncIterator[tuple[FeedServer, Path]]:
    with short_dir() as directory:
        path = directory / "feed.sock"
        server, _, _ = make_server(store, clock)
        await server.start(path)
        try:
            yield server, path
        finally:
            await server.close()


def same_content(a: Snapshot, b: Snapshot) -> bool:
    """Equal but for the generation, once both have been through JSON (as the feed sends them)."""

    def seen(s: Snapshot) -> Snapshot:
        return msgspec.json.decode(to_json(msgspec.structs.replace(s, generation=0)), type=Snapshot)

    return seen(a) == seen(b)


async def newer(feed: FeedClient, generation: int) -> Snapshot:
    return await asyncio.wait_for(feed.wait_newer(generation), GUARD_S)


async def test_the_client_follows_the_daemon_with_its_own_generations(
    store: Store, clock: FakeClock, served: tuple[FeedServer, Path]
) -> None:
    _, path = served
    feed = FeedClient(path, token="", clock=clock)
    try:
        first = await newer(feed, 0)
        assert same_content(first, store.snapshot())
        assert feed.welcome is not None and feed.welcome.role == "viewer"
        fill(store, clock, tick=1)
        second = await newer(feed, first.generation)
        assert second.generation == first.generation + 1
        assert same_content(second, store.snapshot())
    finally:
        await feed.aclose()


async def test_a_lost_daemon_shows_stale_data_and_the_feed_down_until_it_returns(
    store: Store, clock: FakeClock
) -> None:
    with short_dir() as directory:
        path = directory / "feed.sock"
        server, _, _ = make_server(store, clock)
        await server.start(path)
        feed = FeedClient(path, token="", clock=clock)
        try:
            seen = await newer(feed, 0)
            await server.close()
            down = await newer(feed, seen.generation)
            feed_health = next(s for s in down.sources if s.target == FEED_TARGET)
            assert feed_health.up is False and str(path) in (feed_health.last_error or "")
            assert down.gpus and all(g.stale for g in down.gpus)
            assert all(h.stale for h in down.hosts)
            fail(store, clock, HOSTS[0].name, "ssh: connection refused")
            server, _, _ = make_server(store, clock)
            await server.start(path)
            latest = down
            while not same_content(latest, store.snapshot()):
                waiting = asyncio.ensure_future(feed.wait_newer(latest.generation))
                for _ in range(100):  # retries wait on the client's clock
                    if waiting.done():
                        break
                    await clock.advance(0.5)
                assert waiting.done(), "the client did not reconnect"
                latest = waiting.result()
            assert latest.generation > down.generation
            assert all(s.target != FEED_TARGET for s in latest.sources)
        finally:
            await feed.aclose()
            await server.close()


async def test_requests_travel_with_the_session_identity(store: Store, clock: FakeClock) -> None:
    with short_dir() as directory:
        path = directory / "feed.sock"
        server, tokens, audit = make_server(store, clock)
        await server.start(path)
        token = tokens.issue(Identity(operator="olga", role="viewer", via="ssh"))
        feed = FeedClient(path, token=token, clock=clock)
        try:
            await newer(feed, 0)
            assert feed.welcome is not None and feed.welcome.operator == "olga"
            result = await feed.request(
                OperationRequest(id=feed.next_request_id(), kind="drain", target="gpu-a01")
            )
            assert result.ok is False and "(role viewer) may not drain" in (result.error or "")
            assert audit.of("operation.refused")[0]["operator"] == "olga"
        finally:
            await feed.aclose()
            await server.close()


async def test_the_app_shows_what_the_daemon_publishes(
    store: Store, clock: FakeClock, served: tuple[FeedServer, Path]
) -> None:
    from sovereign_tui.app import SovereignApp

    _, path = served
    app = SovereignApp(FeedClient(path, token="", clock=clock), clock=clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await caught_up(pilot, app, store)
        await pilot.press("2")
        fill(store, clock, tick=7)
        await caught_up(pilot, app, store)
        assert [g.uuid for g in app.snapshot.gpus] == [g.uuid for g in store.snapshot().gpus]


async def caught_up(pilot: Any, app: Any, store: Store) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD_S
    while not same_content(app.snapshot, store.snapshot()):
        assert loop.time() < deadline, "the app never showed the daemon's snapshot"
        await pilot.pause(0.01)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sovereign_tui",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), GUARD_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_export_attach_prints_the_daemon_export(store: Store, served: tuple[FeedServer, Path]) -> None:
    _, path = served
    status, out, err = await run_cli("export", "--attach", str(path))
    assert (status, err) == (0, "")
    assert out.encode() == to_json(store.snapshot()) + b"\n"


async def test_export_attach_in_prometheus_format(store: Store, served: tuple[FeedServer, Path]) -> None:
    _, path = served
    status, out, _ = await run_cli("export", "--attach", str(path), "--format", "prometheus")
    assert status == 0
    families = {f.name: f for f in text_string_to_metric_families(out)}
    uuids = {s.labels["uuid"] for s in families["sovereign_gpu_info"].samples}
    assert uuids == {g.uuid for g in store.snapshot().gpus}


async def test_export_attach_watch_streams_new_snapshots(
    store: Store, clock: FakeClock, served: tuple[FeedServer, Path]
) -> None:
    server, path = served
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sovereign_tui",
        "export",
        "--attach",
        str(path),
        "--watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), GUARD_S)
        assert first == to_json(store.snapshot()) + b"\n"
        fill(store, clock, tick=2)
        second = await asyncio.wait_for(proc.stdout.readline(), GUARD_S)
        assert second == to_json(store.snapshot()) + b"\n"
    finally:
        proc.terminate()
        await proc.wait()
    await until(lambda: not server.clients, "the export's connection to close")


async def test_export_attach_to_no_daemon_is_one_line() -> None:
    with short_dir() as directory:
        status, out, err = await run_cli("export", "--attach", str(directory / "none.sock"))
    assert (status, out) == (1, "")
    assert err == f"export: {directory / 'none.sock'}: no such socket (is `sovereign-tui serve` running?)\n"


async def test_prometheus_with_watch_is_refused() -> None:
    status, _, err = await run_cli("export", "--format", "prometheus", "--watch")
    assert status == 2 and "--watch streams ndjson" in err and err.count("\n") == 1
