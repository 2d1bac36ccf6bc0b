"""The daemon with its operations engine, on the embedded lab: the real collectors fill the store,
a real `FeedServer` serves it on a Unix socket with the real `EngineGateway` (journal and
hash-chained audit log under the test's directory), and console sessions are real `FeedClient`s
holding real capability tokens, each with a `RemoteOperations`. One `FakeClock` drives the lab,
the engine and the feed: an operation moves only when a test moves the clock (`drive`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from sovereign_tui.audit_sink import OpsAuditSink
from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.engine_gateway import EngineGateway
from sovereign_tui.daemon.feed_client import FeedClient
from sovereign_tui.daemon.feed_server import FeedServer
from sovereign_tui.daemon.remote_ops import RemoteOperations, actor_of
from sovereign_tui.daemon.roles import Identity, Role
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.daemon.tokens import SessionTokens
from sovereign_tui.ops.audit import AuditRecord
from sovereign_tui.ops.engine import Actor, Operations
from sovereign_tui.runtime import Runtime, openstack_collectors
from sovereign_tui.store import Store
from tests.ops.conftest import OpsLab, start_ops_lab, stop_ops_lab

from .feedkit import short_dir, until


@dataclass
class Session:
    """One console session: its feed connection, its backend, and who the daemon says it is."""

    client: FeedClient
    remote: RemoteOperations
    actor: Actor


@dataclass
class DaemonRig:
    lab: OpsLab
    clock: FakeClock
    store: Store
    ops: Operations
    gateway: EngineGateway
    server: FeedServer
    tokens: SessionTokens
    path: Path
    clients: list[FeedClient] = field(default_factory=list)

    def token(self, name: str, role: Role) -> str:
        return self.tokens.issue(Identity(operator=name, role=role, via="ssh", address="10.0.0.7"))

    async def session(self, name: str, role: Role) -> Session:
        client = FeedClient(self.path, token=self.token(name, role), clock=self.clock, client="test")
        self.clients.append(client)
        client.start()
        await until(lambda: client.welcome is not None, f"the daemon's welcome to {name}")
        assert client.welcome is not None
        return Session(client, RemoteOperations(client), actor_of(client.welcome))

    def audit(self) -> list[AuditRecord]:
        lines = self.ops.audit.path.read_text().splitlines()
        return [msgspec.json.decode(line, type=AuditRecord) for line in lines]


@contextlib.asynccontextmanager
async def daemon_rig(tmp_path: Path) -> AsyncIterator[DaemonRig]:
    clock = FakeClock()
    ol = await start_ops_lab(tmp_path, clock)
    settings = ol.settings()
    runtime = Runtime(settings, clock=clock, collectors=openstack_collectors(settings))
    rig: DaemonRig | None = None
    try:
        snap = await runtime.first_poll(60.0)
        assert all(s.up for s in snap.sources), [s.last_error for s in snap.sources]
        ops = ol.operations()
        gateway = EngineGateway(ops, runtime.store, publish=runtime.store.set_operations)
        tokens = SessionTokens()
        server = FeedServer(
            runtime.store,
            settings=ServeSettings(),
            clock=clock,
            tokens=tokens,
            gateway=gateway,
            audit=OpsAuditSink(ops.audit),  # one chain for the feed's events and the engine's
        )
        with short_dir() as directory:
            path = directory / "feed.sock"
            await server.start(path)
            rig = DaemonRig(ol, clock, runtime.store, ops, gateway, server, tokens, path)
            try:
                yield rig
            finally:
                for client in rig.clients:
                    await client.aclose()
                await server.close()
                await gateway.close()
    finally:
        await runtime.close()
        await stop_ops_lab(ol)
