"""Helpers for the daemon tests: short socket paths, a raw NDJSON client, condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sovereign_tui.audit_sink import MemoryAuditSink
from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.feed_server import FeedServer
from sovereign_tui.daemon.gateway import OperationsGateway, UnavailableGateway
from sovereign_tui.daemon.protocol import OperationRequest, OperationResult
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.daemon.tokens import SessionTokens
from sovereign_tui.store import Store

GUARD_S = 30.0
"""Longest any single wait may take before the test fails (a hang guard, not a timing claim)."""


@contextmanager
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, giving the event loop turns; fail naming `what` after GUARD_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class RawClient:
    """A feed client speaking the protocol by hand over a plain socket, so tests can send what a
    real client never would, and stop reading (nothing is read until a test asks)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    @classmethod
    async def connect(cls, path: Path, hello: dict[str, Any] | bytes | None = None) -> RawClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, str(path))
        client = cls(sock)
        await client.send({"type": "hello", "version": 1} if hello is None else hello)
        return client

    async def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def end_writing(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def _fill(self) -> bool:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1 << 20), GUARD_S)
        self._buf += data
        return bool(data)

    async def line(self) -> bytes:
        while (end := self._buf.find(b"\n")) < 0:
            if not await self._fill():
                raise EOFError("the daemon closed the connection")
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    async def message(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(await self.line())
        return loaded

    async def until_type(self, kind: str) -> dict[str, Any]:
        while True:
            msg = await self.message()
            if msg["type"] == kind:
                return msg

    async def closed(self) -> list[dict[str, Any]]:
        """Every message the daemon sends until it closes the connection."""
        with contextlib.suppress(ConnectionResetError):
            while await self._fill():
                pass
        return [json.loads(line) for line in bytes(self._buf).splitlines() if line.strip()]

    def close(self) -> None:
        self.sock.close()


class RecordingGateway:
    """An operations gateway that accepts everything and remembers who asked what."""

    def __init__(self) -> None:
        self.calls: list[tuple[Identity, OperationRequest]] = []

    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        self.calls.append((who, request))
        return OperationResult(id=request.id, ok=True, message=f"{request.kind} of {request.target} accepted")


def make_server(
    store: Store,
    clock: FakeClock,
    *,
    gateway: OperationsGateway | None = None,
    settings: ServeSettings | None = None,
) -> tuple[FeedServer, SessionTokens, MemoryAuditSink]:
    tokens = SessionTokens()
    audit = MemoryAuditSink(clock)
    server = FeedServer(
        store,
        settings=settings or ServeSettings(),
        clock=clock,
        tokens=tokens,
        gateway=gateway or UnavailableGateway(),
        audit=audit,
    )
    return server, tokens, audit
