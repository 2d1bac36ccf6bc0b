"""The feed socket: a real FeedServer on a real Unix socket, fed by a real Store on a FakeClock.

Frames are compared with the export of the same store; timeouts (stalled clients) are driven by
the FakeClock; every wait is on a condition (a frame arriving, the server's state), never a sleep.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tui_data import HOSTS, HostSpec, fill

from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.feed_server import FeedConnection, FeedServer, FeedSetupError
from sovereign_tui.daemon.gateway import UNAVAILABLE
from sovereign_tui.daemon.protocol import SnapshotFrame, decode_server, snapshot_json
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.export import to_json
from sovereign_tui.store import Store

from .feedkit import RawClient, RecordingGateway, make_server, short_dir, until

BIG = tuple(HostSpec(f"gpu-{i:03d}", "NVIDIA H100 80GB HBM3", 81559, 700, 8) for i in range(200))
"""1,600 GPUs: a frame of about a megabyte, more than a socket's buffers hold."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    store = Store(clock)
    fill(store, clock)
    return store


@pytest.fixture
async def sock() -> AsyncIterator[Path]:
    with short_dir() as directory:
        yield directory / "feed.sock"


async def started(server: FeedServer, path: Path) -> FeedServer:
    await server.start(path)
    return server


def generation(line: bytes) -> int:
    message = decode_server(line)
    assert isinstance(message, SnapshotFrame)
    return message.snapshot.generation


async def test_snapshot_frames_are_the_export_json(store: Store, clock: FakeClock, sock: Path) -> None:
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    try:
        client = await RawClient.connect(sock)
        welcome = await client.message()
        assert welcome["type"] == "welcome" and welcome["role"] == "viewer" and welcome["via"] == "local"
        assert (await client.message())["type"] == "history"
        assert snapshot_json(await client.line()) == to_json(store.snapshot())
        fill(store, clock, tick=1)  # a new poll changes every GPU
        assert snapshot_json(await client.line()) == to_json(store.snapshot())
        client.close()
    finally:
        await server.close()


async def test_a_burst_of_generations_is_sent_as_the_latest_only(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    try:
        client = await RawClient.connect(sock)
        await client.until_type("history")
        seen = [generation(await client.line())]
        for tick in range(1, 21):  # twenty polls land before the publisher runs again
            fill(store, clock, HOSTS[:1], tick=tick)
        burst_end = store.generation
        seen.append(generation(await client.line()))
        fill(store, clock, HOSTS[:1], tick=99)
        seen.append(generation(await client.line()))
        assert seen == [seen[0], burst_end, store.generation]
        assert burst_end - seen[0] == 20
        client.close()
    finally:
        await server.close()


def conn_of(server: FeedServer, operator: str) -> FeedConnection:
    return next(c for c in server.clients if c.identity is not None and c.identity.operator == operator)


async def test_a_slow_reader_skips_to_the_latest_while_others_get_every_frame(
    clock: FakeClock, sock: Path
) -> None:
    store = Store(clock)
    fill(store, clock, BIG)
    server, tokens, _ = make_server(store, clock)
    await started(server, sock)
    try:
        hellos = {
            name: {
                "type": "hello",
                "version": 1,
                "token": tokens.issue(Identity(operator=name, role="viewer", via="ssh")),
            }
            for name in ("fast", "slow")
        }
        fast = await RawClient.connect(sock, hellos["fast"])
        slow = await RawClient.connect(sock, hellos["slow"])
        await fast.until_type("history")
        await fast.line()
        await until(
            lambda: len(server.clients) == 2 and conn_of(server, "slow").blocked,
            "the slow client to fall behind",
        )
        published = []
        for tick in range(1, 11):
            fill(store, clock, BIG[:1], tick=tick)
            published.append(store.generation)
            assert generation(await fast.line()) == store.generation  # the fast one gets each
        assert conn_of(server, "slow").frames_sent <= 2, (
            "frames were queued for a client that was not reading"
        )
        await slow.until_type("history")
        got = [generation(await slow.line())]
        while got[-1] != store.generation:
            got.append(generation(await slow.line()))
        assert len(got) <= 3 < len(published)
        assert conn_of(server, "fast").frames_sent == len(published) + 1
        fast.close()
        slow.close()
    finally:
        await server.close()


async def test_a_client_that_stops_reading_is_dropped_and_the_rest_carry_on(
    clock: FakeClock, sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(clock)
    fill(store, clock, BIG)
    settings = ServeSettings(feed_stalled_after_s=30.0)
    server, _, _ = make_server(store, clock, settings=settings)
    await started(server, sock)
    try:
        stalled = await RawClient.connect(sock)
        await until(
            lambda: len(server.clients) == 1 and server.clients[0].blocked, "the client to stop taking frames"
        )
        fine = await RawClient.connect(sock)
        await fine.until_type("history")
        await fine.line()
        await clock.advance(settings.feed_stalled_after_s + 1)
        await until(lambda: len(server.clients) == 1, "the stalled client to be dropped")
        assert "stalled: took no frame for 30 s" in caplog.text
        fill(store, clock, BIG[:1], tick=5)
        assert generation(await fine.line()) == store.generation
        stalled.close()
        fine.close()
    finally:
        await server.close()


HOSTILE = [
    pytest.param(
        b'{"type":"hello","version":1}\n' + b"x" * 70_000, "line longer than 65536 bytes", id="huge-line"
    ),
    pytest.param(b'{"type":"hello","version":1}\n{not json\n', "invalid JSON", id="invalid-json"),
    pytest.param(b'{"type":"hello","version":"1"}\n', "invalid message: Expected `int`", id="wrong-type"),
    pytest.param(
        b'{"type":"hello","version":1}\n{"type":"shell","cmd":"ls"}\n', "invalid message", id="unknown-type"
    ),
    pytest.param(
        b'{"type":"hello","version":1,"role":"admin"}\n',
        "invalid message: Object contains unknown field `role`",
        id="claimed-role",
    ),
    pytest.param(
        b'{"type":"hello","version":1}\n{"type":"operation","id":"1","kind":"drain","target":""}\n',
        "invalid message: Expected `str` of length >= 1",
        id="empty-target",
    ),
    pytest.param(b'{"type":"hello","version":1}\n{"type":"hel', "truncated line", id="truncated"),
    pytest.param(b'{"type":"hello","version":7}\n', "protocol version 7 is not spoken here", id="version"),
]


@pytest.mark.parametrize(("payload", "reason"), HOSTILE)
async def test_a_hostile_line_closes_only_its_client(
    store: Store, clock: FakeClock, sock: Path, caplog: pytest.LogCaptureFixture, payload: bytes, reason: str
) -> None:
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    try:
        bystander = await RawClient.connect(sock)
        await bystander.until_type("history")
        await bystander.line()
        hostile = await RawClient.connect(sock, payload)
        if payload.endswith(b'"hel'):
            hostile.end_writing()
        said = await hostile.closed()
        goodbyes = [m for m in said if m["type"] == "goodbye"]
        assert goodbyes and reason in goodbyes[0]["reason"]
        assert reason in caplog.text
        # The daemon and the other client carry on; a new client is served as before.
        fill(store, clock, tick=3)
        assert generation(await bystander.line()) == store.generation
        again = await RawClient.connect(sock)
        assert (await again.message())["type"] == "welcome"
        assert (await again.message())["type"] == "history"
        assert snapshot_json(await again.line()) == to_json(store.snapshot())
        bystander.close()
        again.close()
    finally:
        await server.close()


async def test_a_viewer_is_refused_operations_by_the_daemon_whatever_it_sends(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    gateway = RecordingGateway()
    server, tokens, audit = make_server(store, clock, gateway=gateway)
    await started(server, sock)
    try:
        viewer_token = tokens.issue(Identity(operator="vera", role="viewer", via="ssh", address="10.0.0.9"))
        viewer = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": viewer_token})
        assert (await viewer.message())["operator"] == "vera"
        await viewer.send(
            {"type": "operation", "id": "op-1", "kind": "drain", "target": "gpu-a01", "confirm": "gpu-a01"}
        )
        result = await viewer.until_type("operation_result")
        assert result["id"] == "op-1" and result["ok"] is False
        assert result["error"] == "vera (role viewer) may not drain; that needs the role operator or admin"
        local = await RawClient.connect(sock)  # no token: the local role, viewer by default
        assert (await local.message())["role"] == "viewer"
        await local.send({"type": "operation", "id": "op-2", "kind": "migrate", "target": "vm-1"})
        assert (await local.until_type("operation_result"))["ok"] is False
        assert gateway.calls == [], "a refused request reached the operations gateway"
        refused = audit.of("operation.refused")
        assert [(e["operator"], e["kind"], e["target"]) for e in refused] == [
            ("vera", "drain", "gpu-a01"),
            (local_operator(), "migrate", "vm-1"),
        ]
        viewer.close()
        local.close()
    finally:
        await server.close()


def local_operator() -> str:
    import pwd

    return f"local:{pwd.getpwuid(os.getuid()).pw_name}"


async def test_an_operator_session_reaches_the_gateway_as_itself(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    gateway = RecordingGateway()
    server, tokens, audit = make_server(store, clock, gateway=gateway)
    await started(server, sock)
    try:
        alice = Identity(operator="alice", role="operator", via="ssh", address="10.0.0.7")
        client = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": tokens.issue(alice)})
        assert (await client.message())["role"] == "operator"
        await client.send(
            {"type": "operation", "id": "7", "kind": "drain", "target": "gpu-b01", "dry_run": True}
        )
        result = await client.until_type("operation_result")
        assert result == {
            "type": "operation_result",
            "id": "7",
            "ok": True,
            "message": "drain of gpu-b01 accepted",
            "error": None,
            "operation_id": None,
        }
        assert [(who, req.kind, req.target, req.dry_run) for who, req in gateway.calls] == [
            (alice, "drain", "gpu-b01", True)
        ]
        assert audit.of("operation.requested")[0]["operator"] == "alice"
        client.close()
    finally:
        await server.close()


async def test_without_an_engine_operations_are_refused_as_unavailable(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    server, tokens, _ = make_server(store, clock)
    await started(server, sock)
    try:
        admin = tokens.issue(Identity(operator="root-ops", role="admin", via="ssh"))
        client = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": admin})
        await client.send({"type": "operation", "id": "1", "kind": "provision", "target": "gpu-a02"})
        result = await client.until_type("operation_result")
        assert result["ok"] is False and result["error"] == UNAVAILABLE
        client.close()
    finally:
        await server.close()


async def test_tokens_are_checked_and_die_with_their_session(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    server, tokens, audit = make_server(store, clock)
    await started(server, sock)
    try:
        forged = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": "not-a-token"})
        said = await forged.closed()
        assert said == [{"type": "goodbye", "reason": "unknown or expired session token"}]
        token = tokens.issue(Identity(operator="alice", role="operator", via="ssh"))
        session = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": token})
        await session.until_type("welcome")
        tokens.revoke(token)
        said = await session.closed()
        assert said[-1] == {"type": "goodbye", "reason": "the console session ended"}
        assert [e["event"] for e in audit.events] == ["feed.attach", "feed.detach"]
        reuse = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": token})
        assert (await reuse.closed())[-1]["reason"] == "unknown or expired session token"
    finally:
        await server.close()


async def test_no_hello_in_time_closes_the_client(store: Store, clock: FakeClock, sock: Path) -> None:
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    try:
        silent = await RawClient.connect(sock, b"")
        await until(lambda: clock.pending >= 1, "the hello timer to start")
        await clock.advance(ServeSettings().feed_hello_timeout_s + 1)
        assert (await silent.closed()) == [{"type": "goodbye", "reason": "no hello within 10 s"}]
    finally:
        await server.close()


async def test_the_socket_is_private_and_removed_on_close(store: Store, clock: FakeClock, sock: Path) -> None:
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    second, _, _ = make_server(store, clock)
    with pytest.raises(FeedSetupError, match="another daemon is serving on it"):
        await second.start(sock)
    await server.close()
    assert not sock.exists()


async def test_a_stale_socket_is_replaced_and_an_open_directory_refused(
    store: Store, clock: FakeClock, sock: Path
) -> None:
    import socket as socketlib

    leftover = socketlib.socket(socketlib.AF_UNIX)
    leftover.bind(str(sock))  # bound, never listening: what a killed daemon leaves
    leftover.close()
    server, _, _ = make_server(store, clock)
    await started(server, sock)
    client = await RawClient.connect(sock)
    assert (await client.message())["type"] == "welcome"
    client.close()
    await server.close()
    os.chmod(sock.parent, 0o755)
    with pytest.raises(FeedSetupError, match="open to other users"):
        await make_server(store, clock)[0].start(sock)


async def test_forcing_and_abandoning_need_an_admin(store: Store, clock: FakeClock, sock: Path) -> None:
    gateway = RecordingGateway()
    server, tokens, _ = make_server(store, clock, gateway=gateway)
    await started(server, sock)
    try:
        olga = tokens.issue(Identity(operator="olga", role="operator", via="ssh"))
        ada = Identity(operator="ada", role="admin", via="ssh")
        operator = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": olga})
        await operator.send(
            {"type": "operation", "id": "1", "kind": "drain", "target": "gpu-a01", "force": True}
        )
        forced = await operator.until_type("operation_result")
        assert not forced["ok"] and "(role operator) may not force" in forced["error"]
        await operator.send({"type": "operation", "id": "2", "kind": "abandon", "target": "op-17"})
        abandoned = await operator.until_type("operation_result")
        assert not abandoned["ok"] and "(role operator) may not abandon" in abandoned["error"]
        admin = await RawClient.connect(sock, {"type": "hello", "version": 1, "token": tokens.issue(ada)})
        await admin.send(
            {"type": "operation", "id": "3", "kind": "abandon", "target": "op-17", "force": True}
        )
        assert (await admin.until_type("operation_result"))["ok"] is True
        assert [(who.operator, req.kind, req.force) for who, req in gateway.calls] == [
            ("ada", "abandon", True)
        ]
        operator.close()
        admin.close()
    finally:
        await server.close()
