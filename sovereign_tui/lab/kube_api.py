"""The lab's Kubernetes API server: real JSON over HTTP for the kubernetes client, kubectl and the
collectors, with KubeVirt's API group and Kata runtime classes.

Served: discovery (`/api`, `/apis`, `/version`), list/get/watch of nodes, namespaces, pods,
runtime classes, disruption budgets and KubeVirt's virtualmachines, virtualmachineinstances and
virtualmachineinstancemigrations (cluster-wide and per namespace), `PATCH` of nodes (cordon),
pod eviction, creation and deletion, and creation and deletion of KubeVirt VMs and migrations. Requests
need the bearer token of the kubeconfig `write_kubeconfig` writes (401 otherwise).

Watches stream newline-delimited events from the store's bounded history; a resourceVersion older
than the history is answered as the API does, with an `ERROR` event carrying a 410 `Status`, or
(`WatchFaults.expired_as = "http"`) with HTTP 410. Bookmarks come every `bookmark_interval_s`
and whenever `KubeCluster.bookmark()` is called. `WatchFaults.drop_next` cuts streams mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from sovereign_tui.lab import kube_types as kt
from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import ApiError, raw_json, read_json, truthy
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_select import FieldSelector, LabelSelector, SelectorError
from sovereign_tui.lab.kube_store import Entry, Event, KubeError, ResourceType, error_body, status_object
from sovereign_tui.lab.kubevirt import WRITABLE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz"})
"""What anyone may read (system:public-info-viewer); everything else needs the token."""
DEFAULT_WATCH_S = 1800.0
_NEVER = float("inf")


@dataclass
class WatchFaults:
    expired_as: str = "event"
    """How a too-old resourceVersion is answered: "event" (an ERROR event, as the watch cache
    does) or "http" (HTTP 410 before streaming)."""
    drop_after_events: int | None = None
    """Cut the next `drop_streams` watch streams after this many events (no clean end)."""
    drop_streams: int = 0
    dropped: int = 0
    """How many streams were cut so far."""

    def drop_next(self, after_events: int = 0, streams: int = 1) -> None:
        self.drop_after_events = after_events
        self.drop_streams = streams


class KubeApi:
    """The request handlers (an aiohttp app from `make_app`)."""

    def __init__(
        self, cluster: KubeCluster, token: str, watch_faults: WatchFaults, bookmark_interval_s: float
    ) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.token = token
        self.faults = watch_faults
        self.bookmark_interval_s = bookmark_interval_s
        self._types = {(t.group, t.version, t.plural): t for t in kt.ALL}

    # --- middleware, discovery ------------------------------------------------------------------

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "")
        if request.path not in OPEN_PATHS and not hmac.compare_digest(sent, f"Bearer {self.token}"):
            raise KubeError(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def version(self, request: web.Request) -> web.Response:
        return raw_json(orjson.dumps(kt.VERSION_INFO))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def api(self, request: web.Request) -> web.Response:
        host = request.host
        return raw_json(
            orjson.dumps(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
                }
            )
        )

    async def api_v1(self, request: web.Request) -> web.Response:
        return raw_json(orjson.dumps(kt.resource_list("", "v1")))

    async def apis(self, request: web.Request) -> web.Response:
        return raw_json(orjson.dumps(kt.api_group_list()))

    async def api_group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        if group not in kt.groups() or not group:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return raw_json(orjson.dumps(kt.api_group(group)))

    async def group_version(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        doc = kt.resource_list(group, version)
        if group not in kt.groups() or not doc["resources"]:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return raw_json(orjson.dumps(doc))

    # --- resources -----------------------------------------------------------------------------

    def _resolve(self, request: web.Request) -> tuple[ResourceType, str | None]:
        mi = request.match_info
        rtype = self._types.get((mi.get("group", ""), mi.get("version", "v1"), mi["plural"]))
        ns = mi.get("ns")
        if rtype is None or (ns is not None and not rtype.namespaced):
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and self.store.get("namespaces", "", ns) is None and request.method == "POST":
            raise KubeError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )
        return rtype, ns

    async def collection(self, request: web.Request) -> web.StreamResponse:
        rtype, ns = self._resolve(request)
        q = request.query
        if truthy(q.get("watch")):
            return await self.watch(request, rtype, ns)
        try:
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError:
            raise KubeError(400, "BadRequest", f"invalid limit {q['limit']!r}: not an integer") from None
        try:
            page = self.store.list_page(
                rtype.plural, ns, q.get("labelSelector"), q.get("fieldSelector"), limit, q.get("continue")
            )
        except SelectorError as exc:
            raise KubeError(400, "BadRequest", str(exc)) from None
        return raw_json(page.body)

    async def item(self, request: web.Request) -> web.Response:
        rtype, ns = self._resolve(request)
        return raw_json(self.store.require(rtype.plural, ns or "", request.match_info["name"]).raw)

    async def patch(self, request: web.Request) -> web.Response:
        rtype, _ = self._resolve(request)
        if rtype.plural != "nodes":
            raise KubeError(
                405, "MethodNotAllowed", f"the server does not allow this method on {rtype.plural}"
            )
        body = await read_json(request)
        entry = self.cluster.patch_node(request.match_info["name"], body, request.content_type)
        return raw_json(entry.raw)

    async def create(self, request: web.Request) -> web.Response:
        rtype, ns = self._resolve(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise KubeError(400, "BadRequest", "the body of the request must be a JSON object")
        if rtype.plural in WRITABLE:  # KubeVirt's VMs and migrations
            return raw_json(self.cluster.kubevirt.create(rtype.plural, ns or "", body), 201)
        if rtype.plural == "pods":
            return raw_json(self.cluster.create_pod(ns or "", body).raw, 201)
        raise KubeError(405, "MethodNotAllowed", f"the server does not allow this method on {rtype.plural}")

    async def delete(self, request: web.Request) -> web.Response:
        rtype, ns = self._resolve(request)
        name = request.match_info["name"]
        if rtype.plural in WRITABLE:
            return raw_json(self.cluster.kubevirt.delete(rtype.plural, ns or "", name))
        if rtype.plural == "pods":
            return raw_json(self.cluster.delete_pod(ns or "", name).raw)
        raise KubeError(405, "MethodNotAllowed", f"the server does not allow this method on {rtype.plural}")

    async def eviction(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await read_json(request)
        md = body.get("metadata", {}) if isinstance(body, dict) else {}
        if md.get("name", name) != name:
            raise KubeError(
                400, "BadRequest", f"name in URL does not match name in Eviction object: {md.get('name')}"
            )
        return raw_json(orjson.dumps(self.cluster.evict(ns, name)), 201)

    # --- watch ---------------------------------------------------------------------------------

    async def watch(self, request: web.Request, rtype: ResourceType, ns: str | None) -> web.StreamResponse:
        q = request.query
        try:
            labels = LabelSelector.parse(q.get("labelSelector"))
            fields = FieldSelector.parse(
                q.get("fieldSelector"), rtype.fields({"metadata": {"name": "", "namespace": ""}})
            )
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else DEFAULT_WATCH_S
            rv_text = q.get("resourceVersion") or "0"
            start = int(rv_text)
        except SelectorError as exc:
            raise KubeError(400, "BadRequest", str(exc)) from None
        except ValueError as exc:
            raise KubeError(400, "BadRequest", f"invalid watch parameter: {exc}") from None
        expired: KubeError | None = None
        if start and start < self.store.oldest_rv and start < self.store.rv:
            expired = KubeError(
                410, "Expired", f"too old resource version: {start} ({self.store.oldest_rv + 1})"
            )
            if self.faults.expired_as == "http":
                raise expired
        stream = _WatchStream(self, request, rtype, ns, labels, fields, truthy(q.get("allowWatchBookmarks")))
        await stream.open()
        try:
            if expired is not None:
                await stream.send_error(expired)
            else:
                await stream.run(start, timeout)
        except (ConnectionResetError, _Dropped):
            return stream.response
        await stream.close()
        return stream.response


class _Dropped(Exception):
    pass


class _WatchStream:
    def __init__(
        self,
        api: KubeApi,
        request: web.Request,
        rtype: ResourceType,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        bookmarks: bool,
    ) -> None:
        self.api, self.request, self.rtype, self.ns = api, request, rtype, ns
        self.labels, self.fields, self.bookmarks = labels, fields, bookmarks
        self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
        self.sent = 0
        faults = api.faults
        self.drop_at: int | None = None
        if faults.drop_streams > 0 and faults.drop_after_events is not None:
            faults.drop_streams -= 1
            self.drop_at = faults.drop_after_events

    async def open(self) -> None:
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self.response.write_eof()

    def _matches(self, entry: Entry | None) -> bool:
        if entry is None:
            return False
        if self.ns and entry.namespace != self.ns:
            return False
        return self.labels.matches(entry.labels) and self.fields.matches(entry.fields)

    def _type_for(self, ev: Event) -> str | None:
        """The event as this watch sees it: objects entering or leaving the selection are ADDED or
        DELETED, as on a real API server."""
        if ev.type == "DELETED":
            return "DELETED" if self._matches(ev.old) else None
        now, before = self._matches(ev.entry), self._matches(ev.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    async def _write(self, kind: str, raw: bytes) -> None:
        if self.drop_at is not None and self.sent >= self.drop_at:
            self.api.faults.dropped += 1
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise _Dropped()
        await self.response.write(b'{"type":"%s","object":%s}\n' % (kind.encode(), raw))
        self.sent += 1

    async def send_error(self, err: KubeError) -> None:
        await self._write("ERROR", orjson.dumps(err.status_body))

    async def _bookmark(self) -> None:
        obj = {
            "kind": self.rtype.kind,
            "apiVersion": self.rtype.api_version,
            "metadata": {"resourceVersion": str(self.api.store.rv)},
        }
        await self._write("BOOKMARK", orjson.dumps(obj))

    async def run(self, start: int, duration_s: float) -> None:
        store, cluster = self.api.store, self.api.cluster
        clock, timeline = cluster.clock, cluster.timeline
        await store.watcher_joined(1)
        tasks: list[asyncio.Future[Any]] = []
        try:
            cursor = start
            if not start:  # no version: the current state as ADDED events first
                cursor = store.rv
                for e in list(store.entries(self.rtype.plural, self.ns)):
                    if self._matches(e):
                        await self._write("ADDED", e.raw)
            deadline = clock.monotonic() + duration_s
            ends = asyncio.ensure_future(clock.sleep_until(deadline))
            tasks.append(ends)
            next_bookmark = clock.monotonic() + self.api.bookmark_interval_s
            served = store.bookmarks_asked
            while True:
                if timeline.run_due():
                    cluster.settle()
                try:
                    events = store.events_after(cursor)
                except KubeError as err:  # fell behind the history while streaming
                    await self.send_error(err)
                    return
                for ev in events:
                    if ev.rtype is self.rtype:
                        kind = self._type_for(ev)
                        if kind is not None:
                            await self._write(kind, ev.entry.raw)
                    cursor = ev.rv
                if self.bookmarks and (store.bookmarks_asked > served or clock.monotonic() >= next_bookmark):
                    served = store.bookmarks_asked
                    next_bookmark = clock.monotonic() + self.api.bookmark_interval_s
                    await self._bookmark()
                if ends.done():
                    return
                waits: set[asyncio.Future[Any]] = {store.changed(), ends}
                due = timeline.next_due()
                wake = min(due if due is not None else _NEVER, next_bookmark if self.bookmarks else _NEVER)
                sleeper = asyncio.ensure_future(clock.sleep_until(wake)) if wake < _NEVER else None
                if sleeper is not None:
                    waits.add(sleeper)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if sleeper is not None:
                    sleeper.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await store.watcher_joined(-1)


def make_app(
    cluster: KubeCluster,
    token: str,
    faults: FaultBoard | None = None,
    watch_faults: WatchFaults | None = None,
    bookmark_interval_s: float = 60.0,
) -> web.Application:
    """The Kubernetes API app (the lab's shared `FaultBoard` applies under the name "kubernetes")."""
    if bookmark_interval_s <= 0:
        raise ValueError(f"bookmark_interval_s must be positive, got {bookmark_interval_s}")
    board = faults or FaultBoard(cluster.clock, cluster.seed)
    api = KubeApi(cluster, token, watch_faults or WatchFaults(), bookmark_interval_s)
    app = web.Application(
        middlewares=[board.middleware("kubernetes", cluster.timeline, error_body, ()), api.auth]
    )
    app[KUBE_API] = api
    r = app.router
    r.add_get("/version", api.version)
    r.add_get("/version/", api.version)
    for p in ("/healthz", "/livez", "/readyz"):
        r.add_get(p, api.healthz)
    r.add_get("/api", api.api)
    r.add_get("/api/v1", api.api_v1)
    r.add_get("/apis", api.apis)
    r.add_get("/apis/{group}", api.api_group)
    r.add_get("/apis/{group}/{version}", api.group_version)
    r.add_post("/api/v1/namespaces/{ns}/pods/{name}/eviction", api.eviction)
    for base in ("/api/{version:v1}", "/apis/{group}/{version}"):
        r.add_get(base + "/{plural}", api.collection)
        r.add_get(base + "/{plural}/{name}", api.item)
        r.add_patch(base + "/{plural}/{name}", api.patch)
        r.add_get(base + "/namespaces/{ns}/{plural}", api.collection)
        r.add_post(base + "/namespaces/{ns}/{plural}", api.create)
        r.add_get(base + "/namespaces/{ns}/{plural}/{name}", api.item)
        r.add_delete(base + "/namespaces/{ns}/{plural}/{name}", api.delete)
    return app


KUBE_API = web.AppKey("kube_api", KubeApi)


class KubeApiServer:
    """The API on its own loopback port: `await start()`, `url`, `write_kubeconfig()`, `await stop()`."""

    def __init__(
        self,
        cluster: KubeCluster,
        *,
        token: str | None = None,
        faults: FaultBoard | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval_s: float = 60.0,
    ) -> None:
        self.cluster = cluster
        self.faults = faults or FaultBoard(cluster.clock, cluster.seed)
        """Latency, errors, hangs and malformed bodies, under the service name "kubernetes"."""
        self.watch_faults = WatchFaults()
        self.app = make_app(
            cluster, token or secrets.token_urlsafe(24), self.faults, self.watch_faults, bookmark_interval_s
        )
        self._api = self.app[KUBE_API]
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    @property
    def token(self) -> str:
        """The bearer token requests need (the kubeconfig's user)."""
        return self._api.token

    def rotate_token(self) -> str:
        """Fault knob: issue a new token; the old one (and kubeconfigs holding it) get 401 from now."""
        self._api.token = secrets.token_urlsafe(24)
        return self._api.token

    async def start(self) -> str:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        await web.SockSite(self._runner, sock).start()
        port = sock.getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> KubeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: str | os.PathLike[str], context: str = "sovereign-lab") -> Path:
        return write_kubeconfig(path, self.url, self.token, context)


def write_kubeconfig(
    path: str | os.PathLike[str],
    server: str,
    token: str,
    context: str = "sovereign-lab",
    namespace: str = "default",
) -> Path:
    """A kubeconfig (cluster URL, bearer-token user, context) the kubernetes client and kubectl
    load; written 0600 as it holds a credential."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": f"{context}-admin", "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


__all__ = ["ApiError", "KubeApiServer", "WatchFaults", "make_app", "status_object", "write_kubeconfig"]
