"""The feed: the daemon's snapshots, streamed over a Unix socket to TUI sessions and scripts.

One publisher task follows the store; each generation is encoded once (and only when someone
is connected), whatever the number of clients. Each client has a writer that sends the newest
frame once the previous one has left: a slow reader skips generations instead of queueing them,
so a client costs at most one frame of memory, and one that takes nothing for
`feed_stalled_after_s` is dropped. A client's reader decodes its lines strictly; a line that is
too long, truncated, not JSON or of the wrong shape closes that client with the reason logged,
and everyone else carries on.

Who a client is comes from the daemon, never from the client: a console session's token (issued
by the daemon to the TUI process it started) or, without one, the socket peer's user id, which
must be the daemon's own (or root) and gets `ServeSettings.local_role`. Operation requests are
checked against that role here, before any gateway sees them.

Requests are answered concurrently (up to `MAX_IN_FLIGHT` per client: a slow plan does not hold a
cancel back). A start or resume that the gateway accepts is followed for the client that asked:
its events go into that client's queue after the answer, and stop when the client goes; the
operation itself goes on in the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
import stat
import struct
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from sovereign_tui.audit_sink import AuditSink
from sovereign_tui.clock import Clock
from sovereign_tui.daemon import protocol
from sovereign_tui.daemon.deadline import within
from sovereign_tui.daemon.gateway import OperationsGateway
from sovereign_tui.daemon.protocol import (
    Goodbye,
    Hello,
    HistoryFrame,
    OperationDone,
    OperationEventFrame,
    OperationRequest,
    OperationResult,
    QueryRequest,
    QueryResult,
    Welcome,
)
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.daemon.tokens import SessionTokens
from sovereign_tui.feed import SnapshotFeed
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.roles import PermissionDenied, allowed

log = logging.getLogger("sovereign_tui.feed")

MAX_QUEUED = 1024
"""Frames (answers, operation events) queued for a client that is not reading before it is dropped."""
MAX_IN_FLIGHT = 8
"""Requests of one client answered at once; its further lines wait to be read."""
SOCKET_PATH_MAX = 107


class FeedSetupError(Exception):
    """The socket cannot be set up: one line naming the path and the fix."""


class _Closing(Exception):
    """Close this client; the message is the reason (logged, and sent in a goodbye)."""


@dataclass(eq=False)
class FeedConnection:
    """What the server knows of one connection (read-only for callers)."""

    identity: Identity | None = None
    token: str | None = None
    sent_generation: int = -1
    frames_sent: int = 0
    blocked: bool = False
    """True while its writer waits for the client to take a frame."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: deque[bytes] = field(default_factory=deque)
    closing: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Its requests being answered and the operations it follows."""


class FeedServer:
    def __init__(
        self,
        feed: SnapshotFeed,
        *,
        settings: ServeSettings,
        clock: Clock,
        tokens: SessionTokens,
        gateway: OperationsGateway,
        audit: AuditSink,
    ) -> None:
        self._feed = feed
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._gateway = gateway
        self._audit = audit
        self._server: asyncio.AbstractServer | None = None
        self._path: Path | None = None
        self._inode: int | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._clients: set[FeedConnection] = set()
        self._latest: Snapshot = feed.snapshot()
        self._line: bytes | None = None
        self.history = GpuHistory()
        """The GPUs' recent samples, handed to each console as it attaches."""
        self.history.observe(self._latest)
        tokens.on_revoke(self._token_revoked)

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self, path: Path) -> None:
        _prepare(path)
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(path), limit=self._settings.feed_max_line_bytes
        )
        os.chmod(path, 0o600)
        self._path = path
        self._inode = os.stat(path).st_ino
        self._publisher = asyncio.create_task(self._publish(), name="feed-publisher")
        log.info("feed listening on %s", path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        for client in list(self._clients):
            self._drop(client, "the daemon is shutting down")
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._unlink()

    def _unlink(self) -> None:
        path = self._path
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_ino == self._inode:  # never remove a successor's socket
                path.unlink()
        self._path = None

    @property
    def clients(self) -> tuple[FeedConnection, ...]:
        return tuple(self._clients)

    # --- publishing ---------------------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            snapshot = await self._feed.wait_newer(self._latest.generation)
            self._latest = snapshot
            self._line = None
            self.history.observe(snapshot)
            for client in self._clients:
                client.wake.set()

    def _frame(self) -> bytes:
        if self._line is None:
            self._line = protocol.snapshot_line(self._latest)
        return self._line

    # --- one client ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        client = FeedConnection()
        try:
            await self._serve(client, reader, writer)
        except _Closing as exc:
            client.closing = client.closing or str(exc)
        except (ConnectionError, BrokenPipeError) as exc:
            client.closing = client.closing or f"connection lost ({exc.__class__.__name__})"
        except asyncio.CancelledError:  # the server is closing: end normally, with a goodbye
            client.closing = client.closing or "the daemon is shutting down"
        except Exception:
            log.exception("feed client failed")
            client.closing = client.closing or "an internal error of the daemon (see its log)"
        finally:
            self._clients.discard(client)
            self._handlers.discard(task)
            for work in list(client.tasks):  # operations run on: only the following stops
                work.cancel()
            if client.tasks:
                await asyncio.gather(*client.tasks, return_exceptions=True)
            if client.token is not None and client.identity is not None:
                self._record(_event("feed.detach", client.identity, reason=client.closing))
            await _goodbye(writer, client.closing)

    async def _serve(
        self, client: FeedConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            first = await within(self._clock, self._settings.feed_hello_timeout_s, _read_line(reader))
        except TimeoutError:
            raise _Closing(f"no hello within {self._settings.feed_hello_timeout_s:g} s") from None
        if first is None:
            raise _Closing("closed before its hello")
        hello = _decode(first)
        if not isinstance(hello, Hello):
            raise _Closing("the first message must be a hello")
        if hello.version != protocol.PROTOCOL_VERSION:
            raise _Closing(
                f"protocol version {hello.version} is not spoken here (this daemon speaks "
                f"{protocol.PROTOCOL_VERSION}); use a sovereign-tui of the same release"
            )
        client.identity = self._identify(hello, writer)
        client.token = hello.token
        if client.token is not None:
            self._record(_event("feed.attach", client.identity, client=hello.client))
        log.info("feed client %s (%s) attached", client.identity.operator, client.identity.role)
        writer.write(
            protocol.encode(
                Welcome(
                    version=protocol.PROTOCOL_VERSION,
                    operator=client.identity.operator,
                    role=client.identity.role,
                    via=client.identity.via,
                )
            )
            + protocol.encode(HistoryFrame(gpus=self.history.dump()))
        )
        self._clients.add(client)
        client.wake.set()
        sending = asyncio.create_task(self._send(client, writer), name="feed-send")
        reading = asyncio.create_task(self._receive(client, reader), name="feed-receive")
        try:
            done, _ = await asyncio.wait((sending, reading), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, reading):
                task.cancel()
            await asyncio.gather(sending, reading, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    def _identify(self, hello: Hello, writer: asyncio.StreamWriter) -> Identity:
        if hello.token is not None:
            identity = self._tokens.lookup(hello.token)
            if identity is None:
                raise _Closing("unknown or expired session token")
            return identity
        uid = _peer_uid(writer)
        if uid is None or uid not in (os.getuid(), 0):
            raise _Closing(f"user id {uid} may not use this feed (only the daemon's own user)")
        return Identity(operator=f"local:{_user_name(uid)}", role=self._settings.local_role, via="local")

    async def _send(self, client: FeedConnection, writer: asyncio.StreamWriter) -> None:
        stalled_after = self._settings.feed_stalled_after_s
        while True:
            await client.wake.wait()
            client.wake.clear()
            if client.closing is not None:
                raise _Closing(client.closing)
            while client.outbox:
                writer.write(client.outbox.popleft())
            if self._latest.generation > client.sent_generation:
                client.sent_generation = self._latest.generation
                client.frames_sent += 1
                writer.write(self._frame())
            client.blocked = True
            try:
                await within(self._clock, stalled_after, writer.drain())
            except TimeoutError:
                raise _Closing(f"stalled: took no frame for {stalled_after:g} s") from None
            finally:
                client.blocked = False

    async def _receive(self, client: FeedConnection, reader: asyncio.StreamReader) -> None:
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        while True:
            line = await _read_line(reader)
            if line is None:
                raise _Closing("closed by the client")
            message = _decode(line)
            if isinstance(message, Hello):
                raise _Closing("a second hello")
            await slots.acquire()
            self._spawn(client, self._answer(client, message, slots))

    def _spawn(self, client: FeedConnection, work: Coroutine[object, object, None]) -> None:
        if client.closing is not None:  # gone while its request was answered: nobody to follow for
            work.close()
            return
        task = asyncio.ensure_future(work)
        client.tasks.add(task)
        task.add_done_callback(client.tasks.discard)

    def _push(self, client: FeedConnection, frame: bytes) -> None:
        if client.closing is not None:
            return
        if len(client.outbox) >= MAX_QUEUED:
            self._drop(client, f"{MAX_QUEUED} frames waiting: the client does not read")
            return
        client.outbox.append(frame)
        client.wake.set()

    async def _answer(
        self, client: FeedConnection, message: OperationRequest | QueryRequest, slots: asyncio.Semaphore
    ) -> None:
        try:
            if isinstance(message, QueryRequest):
                self._push(client, protocol.encode(await self._query(client, message)))
                return
            result = await self._operation(client, message)
            self._push(client, protocol.encode(result))
            if result.ok and result.operation_id is not None and message.starts_run:
                frames = self._gateway.follow(result.operation_id)  # at once: no event is missed
                if frames is not None:
                    self._spawn(client, self._forward(client, frames))
        finally:
            slots.release()

    async def _forward(
        self, client: FeedConnection, frames: AsyncIterator[OperationEventFrame | OperationDone]
    ) -> None:
        async for frame in frames:
            self._push(client, protocol.encode(frame))

    async def _operation(self, client: FeedConnection, request: OperationRequest) -> OperationResult:
        who = client.identity
        assert who is not None
        detail: dict[str, object] = {"kind": request.kind, "target": request.target, "request": request.id}
        if request.dry_run:
            detail["dry_run"] = "true"
        reason = self._refusal(who, request.actions)
        if reason is not None:
            self._record(_event("operation.refused", who, reason=reason, **detail))
            log.warning("refused %s of %s by %s: %s", request.kind, request.target, who.operator, reason)
            return OperationResult(id=request.id, ok=False, error=reason, error_kind="denied")
        try:
            result = await self._gateway.submit(who, request)
        except Exception as exc:
            log.exception("operations gateway failed on %s", request.id)
            result = OperationResult(id=request.id, ok=False, error=f"the operation failed to start: {exc}")
        detail["operation"] = result.operation_id
        self._record(_event("operation.requested", who, ok=result.ok, reason=result.error, **detail))
        return result

    async def _query(self, client: FeedConnection, request: QueryRequest) -> QueryResult:
        """Read-only: not audited, but refused (and that audited) where the role may not."""
        who = client.identity
        assert who is not None
        reason = self._refusal(who, request.actions)
        if reason is not None:
            self._record(
                _event("operation.refused", who, reason=reason, kind=request.what, request=request.id)
            )
            return QueryResult(id=request.id, ok=False, error=reason, error_kind="denied")
        try:
            return await self._gateway.query(who, request)
        except Exception as exc:
            log.exception("operations gateway failed on %s", request.id)
            return QueryResult(id=request.id, ok=False, error=f"{request.what}: cannot be read: {exc}")

    @staticmethod
    def _refusal(who: Identity, actions: tuple[str, ...]) -> str | None:
        denied = next((a for a in actions if not allowed(who.role, a)), None)
        return None if denied is None else str(PermissionDenied(who.operator, who.role, denied))

    def _record(self, event: dict[str, object]) -> None:
        try:
            self._audit.append(event)
        except Exception as exc:  # the gateway's own records stay strict; this one is reported
            log.error("audit: cannot record %s: %s", event.get("event"), exc)

    # --- dropping -----------------------------------------------------------------------------

    def _drop(self, client: FeedConnection, reason: str) -> None:
        client.closing = client.closing or reason
        client.wake.set()

    def _token_revoked(self, token: str) -> None:
        for client in self._clients:
            if client.token == token:
                self._drop(client, "the console session ended")


# --- helpers ---------------------------------------------------------------------------------


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """One line, None at a clean end; _Closing for an over-long or truncated line."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise _Closing(f"truncated line ({len(exc.partial)} bytes without a newline)") from None
        return None
    except asyncio.LimitOverrunError:
        raise _Closing(f"line longer than {reader._limit} bytes") from None  # type: ignore[attr-defined]


def _decode(line: bytes) -> protocol.ClientMessage:
    try:
        return protocol.decode_client(line)
    except Exception as exc:  # msgspec.DecodeError and ValidationError
        raise _Closing(protocol.reason_of(exc)) from None


async def _goodbye(writer: asyncio.StreamWriter, reason: str | None) -> None:
    if reason is not None and reason != "closed by the client":
        level = logging.INFO if reason.startswith(("the daemon", "the console")) else logging.WARNING
        log.log(level, "feed client closed: %s", reason)
        with contextlib.suppress(Exception):
            writer.write(protocol.encode(Goodbye(reason=reason)))
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def _event(name: str, who: Identity, **detail: object) -> dict[str, object]:
    event: dict[str, object] = {"event": name, "operator": who.operator, "role": who.role, "via": who.via}
    if who.address:
        event["address"] = who.address
    event.update({k: v for k, v in detail.items() if v is not None})
    return event


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _prepare(path: Path) -> None:
    """A private directory for the socket, and no stale socket in the way."""
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise FeedSetupError(f"{path}: longer than {SOCKET_PATH_MAX} bytes, too long for a Unix socket")
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    info = directory.stat()
    if info.st_uid != os.getuid():
        raise FeedSetupError(
            f"{directory}: owned by another user; the feed socket needs a directory of its own"
        )
    if info.st_mode & 0o077:
        raise FeedSetupError(
            f"{directory}: open to other users (mode {stat.S_IMODE(info.st_mode):o}); "
            "put the feed socket in a directory of its own (mode 700)"
        )
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FeedSetupError(f"{path}: exists and is not a socket; remove it or choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that did not exit cleanly
    else:
        raise FeedSetupError(f"{path}: another daemon is serving on it; stop it first")
    finally:
        probe.close()
