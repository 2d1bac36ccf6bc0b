"""Reading the daemon's feed: `FeedClient` for the TUI (a `SnapshotFeed` that reconnects) and
`snapshot_frames` for scripts (one connection, errors surface).

`FeedClient` numbers the snapshots it hands out itself, so generations keep rising across a
daemon restart. While the daemon cannot be reached it republishes the last snapshot with every
entity marked stale and a ``feed`` source that is down with the reason, so old data is never
shown as fresh, and it keeps trying to reconnect.

Requests (`request`, `query`) are answered by id. A start or resume that the daemon accepts comes
with a `RunChannel` (`start_run`): the operation's events and its end, as the daemon forwards
them; the channel ends with `lost` set when the connection drops (the operation goes on in the
daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import msgspec

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.daemon import protocol
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
    SnapshotFrame,
    Welcome,
)
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import EMPTY_SNAPSHOT, Entity, Snapshot, SourceHealth
from sovereign_tui.ops.executor import OpEvent

log = logging.getLogger("sovereign_tui.feed_client")

FEED_TARGET = "feed"


class FeedError(Exception):
    """The feed cannot be read: one line naming the socket and the problem."""


def _hello(token: str | None, client: str) -> bytes:
    return protocol.encode(Hello(version=protocol.PROTOCOL_VERSION, token=token, client=client))


async def _connect(
    path: Path, token: str | None, client: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=protocol.MAX_SERVER_FRAME)
    except FileNotFoundError:
        raise FeedError(f"{path}: no such socket (is `sovereign-tui serve` running?)") from None
    except ConnectionRefusedError:
        raise FeedError(f"{path}: connection refused (is `sovereign-tui serve` running?)") from None
    except PermissionError:
        raise FeedError(f"{path}: permission denied (run as the daemon's user)") from None
    except OSError as exc:
        raise FeedError(f"{path}: cannot connect ({exc.strerror or exc})") from None
    writer.write(_hello(token, client))
    return reader, writer


async def _next_line(reader: asyncio.StreamReader, path: Path) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise FeedError(f"{path}: the daemon closed the connection") from None
    except asyncio.LimitOverrunError:
        raise FeedError(f"{path}: a frame longer than {protocol.MAX_SERVER_FRAME} bytes") from None
    except (ConnectionError, OSError) as exc:
        raise FeedError(f"{path}: connection lost ({exc})") from None


async def snapshot_frames(
    path: Path, *, token: str | None = None, client: str = "sovereign-tui export"
) -> AsyncGenerator[bytes, None]:
    """The export JSON of each snapshot the daemon sends, byte for byte, on one connection."""
    reader, writer = await _connect(path, token, client)
    try:
        while True:
            line = await _next_line(reader, path)
            if line.startswith(b'{"type":"snapshot"'):
                yield protocol.snapshot_json(line)
                continue
            message = protocol.decode_server(line)
            if isinstance(message, Goodbye):
                raise FeedError(f"{path}: the daemon closed the connection: {message.reason}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class RunChannel:
    """An operation running in the daemon, as this client follows it: its events (every one from
    the start, then live ones) and how it ended (`done`), or why it can no longer be followed
    (`lost`)."""

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        self.history: list[OpEvent] = []
        self.done: OperationDone | None = None
        self.lost: str | None = None
        self._over = asyncio.Event()
        self._queues: list[asyncio.Queue[OpEvent | None]] = []

    @property
    def over(self) -> bool:
        return self._over.is_set()

    def _event(self, event: OpEvent) -> None:
        self.history.append(event)
        for q in self._queues:
            q.put_nowait(event)

    def _end(self, done: OperationDone | None, lost: str | None) -> None:
        if self.over:
            return
        self.done, self.lost = done, lost
        self._over.set()
        for q in self._queues:
            q.put_nowait(None)

    async def events(self) -> AsyncIterator[OpEvent]:
        q: asyncio.Queue[OpEvent | None] = asyncio.Queue()
        for past in self.history:
            q.put_nowait(past)
        if self.over:
            q.put_nowait(None)
        self._queues.append(q)
        try:
            while (event := await q.get()) is not None:
                yield event
        finally:
            self._queues.remove(q)

    async def ended(self) -> None:
        await self._over.wait()


_Answer = OperationResult | QueryResult
_Request = OperationRequest | QueryRequest


class FeedClient:
    """A `SnapshotFeed` read from the daemon's socket, for `sovereign-tui --attach`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        token: str | None = None,
        clock: Clock | None = None,
        client: str = "sovereign-tui",
        retry_max_s: float = 2.0,
        history: GpuHistory | None = None,
    ) -> None:
        self.path = Path(path)
        self.history = history
        """Seeded from the daemon's ``history`` frame on each connection (the console's own)."""
        # An empty token means none (a local client), whatever the environment says.
        self._token = (token if token is not None else os.environ.get(protocol.TOKEN_ENV)) or None
        self._clock = clock or SystemClock()
        self._client = client
        self._retry_max_s = retry_max_s
        self._generation = 0
        self._snapshot = EMPTY_SNAPSHOT
        self._fresh: Snapshot | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[
            str, tuple[asyncio.Future[tuple[_Answer, RunChannel | None]], _Request, bool]
        ] = {}
        """Request id -> its answer to come, the request, and whether it starts a run to follow."""
        self._runs: dict[str, RunChannel] = {}
        self._ids = itertools.count(1)
        self.welcome: Welcome | None = None
        """Who the daemon takes this client to be, once connected."""
        self.on_welcome: Callable[[Welcome], None] | None = None
        """Called with each welcome (after every reconnection)."""
        self.last_error: str | None = None

    # --- SnapshotFeed -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def wait_newer(self, generation: int) -> Snapshot:
        self.start()
        while self._generation <= generation:
            self._changed.clear()
            await self._changed.wait()
        return self._snapshot

    # --- operations ---------------------------------------------------------------------------

    async def request(self, request: OperationRequest) -> OperationResult:
        """Send an operation request; the daemon's answer (a refusal when not connected)."""
        result, _ = await self.start_run(request) if request.starts_run else (await self._ask(request), None)
        assert isinstance(result, OperationResult)
        return result

    async def start_run(self, request: OperationRequest) -> tuple[OperationResult, RunChannel | None]:
        """A start or resume: the answer, and the run to follow when the daemon accepted it."""
        answer, run = await self._send(request, follows=request.starts_run)
        assert isinstance(answer, OperationResult)
        return answer, run

    async def query(self, request: QueryRequest) -> QueryResult:
        answer = await self._ask(request)
        assert isinstance(answer, QueryResult)
        return answer

    async def _ask(self, request: _Request) -> _Answer:
        answer, _ = await self._send(request, follows=False)
        return answer

    async def _send(self, request: _Request, *, follows: bool) -> tuple[_Answer, RunChannel | None]:
        self.start()
        if self._writer is None:
            return _refused(request, f"not connected to the daemon at {self.path}"), None
        future: asyncio.Future[tuple[_Answer, RunChannel | None]] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (future, request, follows)
        self._writer.write(protocol.encode(request))
        return await future

    def next_request_id(self) -> str:
        return str(next(self._ids))

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="feed-client")

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._follow()
                reason = "the daemon closed the connection"
            except FeedError as exc:
                reason = str(exc)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                reason = f"{self.path}: a frame the client cannot read ({protocol.reason_of(exc)})"
            finally:
                self._disconnected()
            if self.welcome is not None:
                delay = 0.1
                self.welcome = None
            self._set_down(reason)
            await self._clock.sleep_until(self._clock.monotonic() + delay)
            delay = min(delay * 2, self._retry_max_s)

    async def _follow(self) -> None:
        reader, writer = await _connect(self.path, self._token, self._client)
        self._writer = writer
        try:
            while True:
                message = protocol.decode_server(await _next_line(reader, self.path))
                if isinstance(message, SnapshotFrame):
                    self._publish(message.snapshot)
                elif isinstance(message, Welcome):
                    self.welcome = message
                    self.last_error = None
                    if self.on_welcome is not None:
                        self.on_welcome(message)
                elif isinstance(message, HistoryFrame):
                    if self.history is not None:
                        self.history.restore(message.gpus)
                elif isinstance(message, OperationResult | QueryResult):
                    self._answered(message)
                elif isinstance(message, OperationEventFrame):
                    if (run := self._runs.get(message.event.op_id)) is not None:
                        run._event(message.event)
                elif isinstance(message, OperationDone):
                    if (run := self._runs.pop(message.op_id, None)) is not None:
                        run._end(message, None)
                else:
                    raise FeedError(f"{self.path}: the daemon closed the connection: {message.reason}")
        finally:
            writer.close()

    def _answered(self, answer: _Answer) -> None:
        pending = self._pending.pop(answer.id, None)
        if pending is None or pending[0].done():
            return
        future, _, follows = pending
        run = None
        if follows and isinstance(answer, OperationResult) and answer.ok and answer.operation_id:
            run = self._runs[answer.operation_id] = RunChannel(answer.operation_id)  # before its events
        future.set_result((answer, run))

    def _disconnected(self) -> None:
        self._writer = None
        lost = "the connection to the daemon was lost"
        for future, request, _ in self._pending.values():
            if not future.done():
                future.set_result((_refused(request, lost), None))
        self._pending.clear()
        for run in self._runs.values():
            run._end(None, f"{lost} at {self.path}; the operation goes on there (see Operations)")
        self._runs.clear()

    def _publish(self, snapshot: Snapshot) -> None:
        self._fresh = snapshot
        self._generation += 1
        self._snapshot = msgspec.structs.replace(snapshot, generation=self._generation)
        self._changed.set()

    def _set_down(self, reason: str) -> None:
        """Republish the last snapshot as stale, with the feed shown down (once per reason, so a
        daemon that stays away costs no redraw per retry)."""
        if reason == self.last_error:
            return
        log.warning("feed: %s", reason)
        self.last_error = reason
        base = self._fresh or EMPTY_SNAPSHOT
        down = SourceHealth(
            target=FEED_TARGET,
            source=FEED_TARGET,
            endpoint=str(self.path),
            interval_s=self._retry_max_s,
            up=False,
            last_attempt=self._clock.time(),
            last_success=base.taken_at or None,
            last_error=f"{reason}; retrying",
        )
        self._generation += 1
        self._snapshot = msgspec.structs.replace(
            stale_snapshot(base),
            generation=self._generation,
            sources=(*[s for s in base.sources if s.target != FEED_TARGET], down),
        )
        self._changed.set()


def _refused(request: _Request, error: str) -> _Answer:
    if isinstance(request, QueryRequest):
        return QueryResult(id=request.id, ok=False, error=error)
    return OperationResult(id=request.id, ok=False, error=error)


def stale_snapshot(snapshot: Snapshot) -> Snapshot:
    """The snapshot with every entity and host marked stale (its values are the last known)."""
    changes: dict[str, object] = {
        "hosts": tuple(
            msgspec.structs.replace(host, stale=True, **_stale_fields(host)) for host in snapshot.hosts
        )
    }
    for name in snapshot.__struct_fields__:
        value = getattr(snapshot, name)
        if name != "hosts" and isinstance(value, tuple) and value and isinstance(value[0], Entity):
            changes[name] = tuple(msgspec.structs.replace(item, stale=True) for item in value)
    return msgspec.structs.replace(snapshot, **changes)


def _stale_fields(struct: msgspec.Struct) -> dict[str, object]:
    """The struct's entity-valued fields (a host's facets), marked stale."""
    found: dict[str, object] = {}
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, Entity):
            found[name] = msgspec.structs.replace(value, stale=True)
    return found
