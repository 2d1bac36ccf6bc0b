"""List + watch of one Kubernetes collection into an in-memory index keyed by uid.

An `Informer` lists the collection page by page (``limit``/``continue``; an expired continue
restarts the list), then watches from the list's resourceVersion with bookmarks, in a task of its
own that outlives any poll. Events are applied as they arrive, to the index and to the `View`s
that collectors keep over it (each keeps what it publishes up to date, so a poll costs what
changed, not the size of the cluster). A stream that ends or drops is resumed from the last
resourceVersion seen; an expired one (HTTP 410, or an ERROR event with code 410) is re-listed.

Polls call `ensure`: it starts the task on the first poll, restarts it when it stopped, and waits
for the outcome of a connection attempt in progress; a watch that cannot (re)connect fails the
poll with the reason, so the source goes stale rather than passing old data off as fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
import msgspec

from collectors.kube_client import KubeSession, short
from sovereign_tui.clock import Clock
from sovereign_tui.poller import PollContext, PollError, Target

EMPTY_STREAMS_BEFORE_PAUSE = 3
"""Streams in a row that end at once without a single line before the task stops and waits for
the next poll to restart it (a server that accepts and hangs up at once must not be hammered)."""


class OwnerRef(msgspec.Struct, rename="camel"):
    kind: str = ""
    name: str = ""
    controller: bool = False


class Meta(msgspec.Struct, rename="camel"):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    deletion_timestamp: str | None = None
    owner_references: list[OwnerRef] = msgspec.field(default_factory=list)


class KubeObject(msgspec.Struct):
    """The part every object shares; resource Structs add only the fields they use."""

    metadata: Meta = msgspec.field(default_factory=Meta)


T = TypeVar("T", bound=KubeObject)
T_contra = TypeVar("T_contra", bound=KubeObject, contravariant=True)


class _ListMeta(msgspec.Struct, rename={"resource_version": "resourceVersion", "cont": "continue"}):
    resource_version: str = ""
    cont: str | None = None


class _List(msgspec.Struct, Generic[T]):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[T] | None = None


class _Event(msgspec.Struct):
    type: str
    object: msgspec.Raw


class _Status(msgspec.Struct):
    code: int = 0
    reason: str = ""
    message: str = ""


_event_decoder = msgspec.json.Decoder(_Event)
_status_decoder = msgspec.json.Decoder(_Status)
_head_decoder = msgspec.json.Decoder(KubeObject)


class View(Protocol[T_contra]):
    """Something a collector keeps up to date from an informer's events."""

    def reset(self, items: Mapping[str, T_contra], now: float) -> None: ...

    def upsert(self, uid: str, obj: T_contra, old: T_contra | None, now: float) -> None: ...

    def delete(self, uid: str, old: T_contra, now: float) -> None: ...


@dataclass(frozen=True)
class Resource(Generic[T]):
    path: str
    """Cluster-wide collection path, e.g. ``/api/v1/pods``."""
    kind: str
    """Plural name for messages ("pods")."""
    type: type[T]


class _Expired(Exception):
    pass


class Informer(Generic[T]):
    def __init__(self, session: KubeSession, resource: Resource[T], rng: random.Random | None = None) -> None:
        self.session = session
        self.resource = resource
        self.items: dict[str, T] = {}
        self.views: list[View[T]] = []
        self._decoder = msgspec.json.Decoder(resource.type)
        self._list_decoder = msgspec.json.Decoder(_List[resource.type])  # type: ignore[name-defined]
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._attempt: asyncio.Future[str | None] | None = None
        self._waiter: asyncio.Event | None = None
        self._clock: Clock | None = None
        self._need_list = True
        self._empty_streams = 0
        # what the health shows
        self.resource_version = ""
        self.synced = False
        self.connected = False
        self.error: str | None = None
        self.version = 0
        """Bumped on every change of `items` (views and caches compare it)."""
        self.lists = 0
        self.pages = 0
        self.relists = 0
        """Lists after the first: an expired resourceVersion (410) or an expired continue."""
        self.list_restarts = 0
        """Lists started again because their continue token expired mid-way."""
        self.connects = 0
        self.reconnects = 0
        self.drops = 0
        self.events = 0
        self.bookmarks = 0
        self.restarts = 0
        """Times a poll restarted the task after it stopped."""
        self.last_event_at: float | None = None

    @property
    def where(self) -> str:
        return self.session.where

    def add_view(self, view: View[T], now: float) -> None:
        self.views.append(view)
        if self.synced:
            view.reset(self.items, now)

    # --- what polls call -------------------------------------------------------------------------

    async def ensure(self, ctx: PollContext) -> None:
        """Make the index current: list (watch off), or start/restart the watch and wait for the
        connection attempt in progress. Raises `PollError` with the reason when it fails."""
        self._clock = ctx.clock
        if not self.session.options.watch:
            await self._list(ctx.http)
            return
        if self._task is None or self._task.done():
            if self._task is not None:
                self.restarts += 1
            self.error = None
            self._empty_streams = 0
            self._attempt = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(ctx.http), name=f"kube-watch:{self.resource.kind}")
        if self.connected:
            return
        attempt = self._attempt
        assert attempt is not None
        await asyncio.wait([attempt])  # a cancelled poll leaves the attempt to the task
        message = attempt.result()
        if message is not None:
            raise PollError(message)

    def state(self) -> str:
        """One line for the source's health detail."""
        if not self.session.options.watch:
            mode = "listed each poll"
        elif self.connected:
            mode = "watching"
        elif self.error:
            mode = f"down ({self.error})"
        else:
            mode = "reconnecting"
        last = "never"
        if self.last_event_at is not None:
            last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_event_at))
        return (
            f"{mode}; {len(self.items)} objects at resourceVersion {self.resource_version or '-'}; "
            f"{self.events} events, {self.bookmarks} bookmarks, last event {last}; "
            f"{self.relists} relists, {self.reconnects} reconnects, {self.drops} drops"
        )

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checking after every change (tests, benchmarks)."""
        while not predicate():
            if self._waiter is None:
                self._waiter = asyncio.Event()
            await self._waiter.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the task ----------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.time() if self._clock is not None else time.time()

    def _notify(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    def _settle(self, message: str | None) -> None:
        attempt = self._attempt
        if attempt is not None and not attempt.done():
            attempt.set_result(message)

    async def _run(self, http: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._attempt is None or self._attempt.done():
                    self._attempt = loop.create_future()  # what polls wait on meanwhile
                if self._need_list:
                    await self._list(http)
                try:
                    ended = await self._watch(http)
                except _Expired:
                    self._need_list = True
                    self.relists += 1
                    continue
                self.reconnects += 1
                self._empty_streams = 0 if ended else self._empty_streams + 1
                if self._empty_streams >= EMPTY_STREAMS_BEFORE_PAUSE:
                    self.error = f"{self.where}: the watch of {self.resource.kind} keeps ending at once"
                    return
        except PollError as exc:
            self.error = str(exc)
        except Exception as exc:  # anything else still ends as the source's one-line reason
            self.error = f"{self.where}: the watch of {self.resource.kind} failed ({short(exc)})"
        finally:
            self.connected = False
            self._settle(self.error or f"{self.where}: the watch of {self.resource.kind} stopped")
            self._notify()

    async def _list(self, http: aiohttp.ClientSession) -> None:
        opts = self.session.options
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=opts.request_timeout_s, sock_read=opts.request_timeout_s
        )
        items: dict[str, T] = {}
        cont: str | None = None
        rv = ""
        restarts = 0
        while True:
            params = {"limit": str(opts.page_size)}
            if cont:
                params["continue"] = cont
            try:
                async with self.session.get(http, self.resource.path, params, timeout) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise PollError(
                    f"{self.where}: listing {self.resource.kind} was cut short ({short(exc)})"
                ) from None
            if status == 410 and cont:  # the continue token expired: start the list again
                self.list_restarts += 1
                restarts += 1
                if restarts > 3:
                    raise PollError(f"{self.where}: listing {self.resource.kind} keeps expiring mid-way")
                items, cont = {}, None
                continue
            if status >= 400:
                raise self.session.http_error(status, body, f"listing {self.resource.kind}")
            try:
                page = self._list_decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise PollError(f"{self.where}: malformed {self.resource.kind} list ({short(exc)})") from None
            for obj in page.items or ():
                items[obj.metadata.uid] = obj
            rv = page.metadata.resource_version
            cont = page.metadata.cont
            self.pages += 1
            self._notify()
            if not cont:
                break
        self.lists += 1
        self.items = items
        self.resource_version = rv
        self._need_list = False
        self.synced = True
        self.version += 1
        now = self._now()
        for view in self.views:
            view.reset(items, now)
        self._notify()

    async def _watch(self, http: aiohttp.ClientSession) -> bool:
        """One watch stream; False if it ended at once without a line (a server refusing to
        stream), True if it carried anything or lasted."""
        opts = self.session.options
        seconds = int(opts.watch_timeout_s * (1.0 + self._rng.random()))
        params = {
            "watch": "1",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=opts.request_timeout_s, sock_read=seconds + 30.0
        )
        lines = 0
        opened = time.monotonic()
        async with self.session.get(http, self.resource.path, params, timeout) as resp:
            if resp.status == 410:
                raise _Expired()
            if resp.status >= 400:
                raise self.session.http_error(
                    resp.status, await resp.read(), f"watching {self.resource.kind}"
                )
            self.connected = True
            self.connects += 1
            self.error = None
            self._settle(None)
            self._notify()
            pending = b""
            try:
                async for chunk in resp.content.iter_any():
                    parts = (pending + chunk).split(b"\n")
                    pending = parts.pop()
                    for line in parts:
                        if line.strip():
                            lines += 1
                            self._apply(line)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                self.drops += 1
            finally:
                self.connected = False
            if pending.strip():
                lines += 1
                self._apply(pending)
        return lines > 0 or time.monotonic() - opened >= 1.0

    def _apply(self, line: bytes) -> None:
        try:
            event = _event_decoder.decode(line)
            kind = event.type
            if kind == "ERROR":
                status = _status_decoder.decode(event.object)
                if status.code == 410:
                    raise _Expired()
                raise PollError(
                    f"{self.where}: the watch of {self.resource.kind} failed: "
                    f"{status.message or status.reason} (code {status.code})"
                )
            if kind == "BOOKMARK":
                self.resource_version = _head_decoder.decode(event.object).metadata.resource_version
                self.bookmarks += 1
                self._notify()
                return
            obj = self._decoder.decode(event.object)
        except msgspec.DecodeError as exc:
            raise PollError(
                f"{self.where}: malformed watch event for {self.resource.kind} ({short(exc)})"
            ) from None
        now = self._now()
        uid = obj.metadata.uid
        if kind == "DELETED":
            old = self.items.pop(uid, None)
            if old is not None:
                for view in self.views:
                    view.delete(uid, old, now)
        elif kind in ("ADDED", "MODIFIED"):
            before = self.items.get(uid)
            self.items[uid] = obj
            for view in self.views:
                view.upsert(uid, obj, before, now)
        else:
            return
        if obj.metadata.resource_version:
            self.resource_version = obj.metadata.resource_version
        self.events += 1
        self.last_event_at = now
        self.version += 1
        self._notify()


def informer(session: KubeSession, resource: Resource[T]) -> Informer[T]:
    """The session's informer of `resource` (one per collection, shared by its collectors)."""
    found = session.informer_slot(resource.path)
    if found is None:
        found = Informer(session, resource)
        session.set_informer(resource.path, found)
    inf: Informer[T] = found
    return inf


async def ensure_all(ctx: PollContext, informers: list[Informer[Any]]) -> None:
    """`ensure` them concurrently; the first failure is the poll's."""
    results = await asyncio.gather(*(i.ensure(ctx) for i in informers), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


class SessionCollector:
    """What the collectors that watch one cluster through a shared `KubeSession` have in common:
    one poll target named after the session's kubeconfig, and a share of the session (its watches
    stop when the last collector closes)."""

    name: str

    def __init__(self, session: KubeSession, *, interval_s: float, timeout_s: float | None) -> None:
        self.session = session
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.target_id = f"{self.name}:{session.ref.label}"
        session.acquire()

    def targets(self) -> list[Target]:
        return [
            Target(
                id=self.target_id,
                source=self.name,
                endpoint=f"kubeconfig:{self.session.ref.label}",
                interval_s=self.interval_s,
                poll=self.poll,
                timeout_s=self.timeout_s,
                fingerprint=repr((self.session.ref, self.session.options)),
            )
        ]

    async def poll(self, ctx: PollContext) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.session.release()
