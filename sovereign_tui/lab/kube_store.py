"""The lab Kubernetes API's object store: resource versions, paged lists, selectors, watch history.

Every stored object keeps its serialized JSON (orjson), so a list of 30,000 pods is a join of
cached bytes. Keys are `namespace/name` strings kept sorted, which is etcd's key order, so paging
is a bisect. Each mutation takes the next value of one global resourceVersion counter and lands in
a ring of events indexed by that number; a watch from a version the ring no longer holds is
expired (410), as a real API server's watch cache behaves. Continue tokens carry the version and
the last key, the real token's format; the first page snapshots the (sorted) entries so later pages
stay consistent, and a compaction expires them.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sovereign_tui.lab.httpkit import ApiError
from sovereign_tui.lab.kube_select import FieldSelector, LabelSelector, decode_continue, encode_continue

Obj = dict[str, Any]

TOO_OLD_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a "
    "new list without the continue parameter, or use the continue token in this response to retrieve "
    "the remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list."
)


class KubeError(ApiError):
    """An API failure rendered as the `Status` object a real API server sends."""

    def __init__(
        self, code: int, reason: str, message: str, details: Obj | None = None, meta: Obj | None = None
    ) -> None:
        self.reason = reason
        self.details = details
        self.status_body = status_object(code, reason, message, details, meta)
        super().__init__(code, message, body=orjson.dumps(self.status_body))


STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def error_body(status: int, message: str) -> bytes:
    """A `Status` for an error the lab's shared middleware produces (injected faults)."""
    return orjson.dumps(status_object(status, STATUS_REASONS.get(status, "InternalError"), message))


def status_object(
    code: int, reason: str, message: str, details: Obj | None = None, meta: Obj | None = None
) -> Obj:
    out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": meta or {}}
    out["status"] = "Success" if code < 400 else "Failure"
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    if details:
        out["details"] = details
    out["code"] = code
    return out


def not_found(rtype: ResourceType, name: str) -> KubeError:
    group = f".{rtype.group}" if rtype.group else ""
    return KubeError(
        404,
        "NotFound",
        f'{rtype.plural}{group} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural}
        if rtype.group
        else {"name": name, "kind": rtype.plural},
    )


def _meta_fields(obj: Obj) -> dict[str, str]:
    md = obj["metadata"]
    return {"metadata.name": md["name"], "metadata.namespace": md.get("namespace", "")}


def pod_fields(obj: Obj) -> dict[str, str]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    out = _meta_fields(obj)
    out["spec.nodeName"] = spec.get("nodeName", "")
    out["spec.restartPolicy"] = spec.get("restartPolicy", "")
    out["spec.schedulerName"] = spec.get("schedulerName", "")
    out["spec.serviceAccountName"] = spec.get("serviceAccountName", "")
    out["spec.hostNetwork"] = "true" if spec.get("hostNetwork") else "false"
    out["status.phase"] = status.get("phase", "")
    out["status.podIP"] = status.get("podIP", "")
    out["status.nominatedNodeName"] = status.get("nominatedNodeName", "")
    return out


def node_fields(obj: Obj) -> dict[str, str]:
    out = _meta_fields(obj)
    out["spec.unschedulable"] = "true" if obj.get("spec", {}).get("unschedulable") else "false"
    return out


def namespace_fields(obj: Obj) -> dict[str, str]:
    out = _meta_fields(obj)
    out["status.phase"] = obj.get("status", {}).get("phase", "")
    return out


@dataclass(frozen=True)
class ResourceType:
    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    fields: Callable[[Obj], dict[str, str]] = _meta_fields
    """Field-selector values of an object: the fields this resource's API supports."""
    index: str | None = None
    """A field kept in an index, so `fieldSelector=<index>=X` is served without a scan."""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("get", "list", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


@dataclass(frozen=True, eq=False)
class Entry:
    """One version of one object: never mutated; a change stores a new Entry."""

    key: str
    obj: Obj
    raw: bytes
    fields: dict[str, str]
    rv: int

    @property
    def labels(self) -> Mapping[str, str]:
        labels: Mapping[str, str] = self.obj["metadata"].get("labels") or {}
        return labels

    @property
    def namespace(self) -> str:
        return self.fields["metadata.namespace"]

    @property
    def name(self) -> str:
        return self.fields["metadata.name"]

    def copy(self) -> Obj:
        """A private deep copy of the object, to change and store back."""
        copied: Obj = orjson.loads(self.raw)
        return copied


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    rtype: ResourceType
    entry: Entry
    old: Entry | None = None
    """The version this event replaced (for watches with selectors: an object leaving or
    entering the selection reads as DELETED or ADDED)."""


# --- the store ---------------------------------------------------------------------------------


@dataclass
class _Table:
    rtype: ResourceType
    live: dict[str, Entry] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    index: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    body: bytes
    count: int
    cont: str | None


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


class KubeStore:
    """Objects by resource type, one resourceVersion counter, a bounded event history."""

    def __init__(self, history: int = 10_000, snapshots: int = 32) -> None:
        if history < 1:
            raise ValueError("history must be at least 1 event")
        self._tables: dict[str, _Table] = {}
        self._rv = 0
        self._ring: list[Event | None] = [None] * history
        self._history = history
        self._compacted = 0
        self._snapshots: OrderedDict[tuple[str, str, str | None, int], list[Entry]] = OrderedDict()
        self._max_snapshots = snapshots
        self._changed: asyncio.Future[None] | None = None
        self._bookmarks_asked = 0
        self._watchers = 0
        self._watchers_changed: asyncio.Condition | None = None
        self.listeners: list[Callable[[Event, Entry | None], None]] = []
        """Called synchronously with every stored event and the entry it replaced (or removed)."""

    # --- types and reads ---------------------------------------------------------------------

    def register(self, rtype: ResourceType) -> None:
        self._tables[rtype.plural] = _Table(rtype)

    def rtype(self, plural: str) -> ResourceType:
        return self._tables[plural].rtype

    @property
    def types(self) -> list[ResourceType]:
        return [t.rtype for t in self._tables.values()]

    @property
    def rv(self) -> int:
        return self._rv

    @property
    def oldest_rv(self) -> int:
        """The oldest resourceVersion a watch may start from and still see every later event."""
        return max(self._compacted, self._rv - self._history)

    def get(self, plural: str, namespace: str, name: str) -> Entry | None:
        return self._tables[plural].live.get(object_key(namespace, name))

    def require(self, plural: str, namespace: str, name: str) -> Entry:
        entry = self.get(plural, namespace, name)
        if entry is None:
            raise not_found(self.rtype(plural), name)
        return entry

    def entries(self, plural: str, namespace: str | None = None) -> Iterator[Entry]:
        """Live entries in key order (a copy of the order, safe to mutate the store meanwhile)."""
        table = self._tables[plural]
        keys = self._scope_keys(table, namespace)
        live = table.live
        return (live[k] for k in keys)

    def table_keys(self, plural: str) -> list[str]:
        """The live sorted keys (the store's own list: read it, never change it)."""
        return self._tables[plural].keys

    def get_key(self, plural: str, key: str) -> Entry | None:
        return self._tables[plural].live.get(key)

    def count(self, plural: str) -> int:
        return len(self._tables[plural].live)

    def by_index(self, plural: str, value: str) -> list[Entry]:
        table = self._tables[plural]
        return [table.live[k] for k in sorted(table.index.get(value, ()))]

    # --- writes ------------------------------------------------------------------------------

    def put(self, plural: str, obj: Obj) -> Entry:
        """Create or replace an object; stamps the next resourceVersion and records the event."""
        table = self._tables[plural]
        md = obj["metadata"]
        key = object_key(md.get("namespace", "") if table.rtype.namespaced else "", md["name"])
        old = table.live.get(key)
        self._rv += 1
        md["resourceVersion"] = str(self._rv)
        entry = Entry(key, obj, orjson.dumps(obj), table.rtype.fields(obj), self._rv)
        table.live[key] = entry
        if old is None:
            bisect.insort(table.keys, key)
        self._reindex(table, old, entry)
        self._record(Event(self._rv, "ADDED" if old is None else "MODIFIED", table.rtype, entry, old), old)
        return entry

    def update(self, plural: str, namespace: str, name: str, change: Callable[[Obj], object]) -> Entry:
        """Apply `change` to a private copy of the object and store the result."""
        entry = self.require(plural, namespace, name)
        obj = entry.copy()
        change(obj)
        obj["metadata"]["resourceVersion"] = entry.obj["metadata"]["resourceVersion"]
        if obj == entry.obj:  # a no-op write changes nothing, as on a real API server
            return entry
        return self.put(plural, obj)

    def set_path(self, plural: str, namespace: str, name: str, path: tuple[str, ...], value: object) -> Entry:
        """Set one nested field (creating the maps on the way) and store the result."""

        def change(obj: Obj) -> None:
            at = obj
            for key in path[:-1]:
                at = at.setdefault(key, {})
            at[path[-1]] = value

        return self.update(plural, namespace, name, change)

    def delete(self, plural: str, namespace: str, name: str) -> Entry:
        table = self._tables[plural]
        key = object_key(namespace if table.rtype.namespaced else "", name)
        old = table.live.pop(key, None)
        if old is None:
            raise not_found(table.rtype, name)
        del table.keys[bisect.bisect_left(table.keys, key)]
        self._reindex(table, old, None)
        self._rv += 1
        obj = old.copy()
        obj["metadata"]["resourceVersion"] = str(self._rv)
        entry = Entry(key, obj, orjson.dumps(obj), old.fields, self._rv)
        self._record(Event(self._rv, "DELETED", table.rtype, entry, old), old)
        return entry

    def compact(self) -> None:
        """Forget all history (as an etcd compaction does): older watches and continues expire."""
        self._compacted = self._rv
        self._snapshots.clear()

    def _reindex(self, table: _Table, old: Entry | None, new: Entry | None) -> None:
        index = table.rtype.index
        if index is None:
            return
        if old is not None:
            bucket = table.index.get(old.fields[index])
            if bucket is not None:
                bucket.discard(old.key)
                if not bucket:
                    del table.index[old.fields[index]]
        if new is not None:
            table.index.setdefault(new.fields[index], set()).add(new.key)

    def _record(self, event: Event, old: Entry | None) -> None:
        self._ring[event.rv % self._history] = event
        for listener in self.listeners:
            listener(event, old)
        if self._changed is not None:
            if not self._changed.done():
                self._changed.set_result(None)
            self._changed = None

    # --- lists -------------------------------------------------------------------------------

    def _scope_keys(self, table: _Table, namespace: str | None) -> list[str]:
        if not namespace or not table.rtype.namespaced:
            return list(table.keys)
        lo = bisect.bisect_left(table.keys, namespace + "/")
        hi = bisect.bisect_left(table.keys, namespace + "0")  # "0" sorts right after "/"
        return table.keys[lo:hi]

    def list_page(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        cont: str | None = None,
    ) -> Page:
        """One page of a list as the API's JSON bytes, with resourceVersion and continue."""
        table = self._tables[plural]
        rtype = table.rtype
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rtype.fields(_SKELETON))
        pinned = fields.indexed(rtype.index)
        scope = (plural, namespace or "", pinned)
        if cont:
            try:
                rv, start = decode_continue(cont)
            except ValueError as exc:
                raise KubeError(400, "BadRequest", str(exc)) from None
            if rv == -1:  # an inconsistent continue: carry on from the live state
                rv, entries = self._rv, self._scoped(table, namespace, pinned)
            else:
                snap = self._snapshots.get((*scope, rv))
                if rv < self.oldest_rv or snap is None:
                    raise KubeError(
                        410, "Expired", TOO_OLD_CONTINUE, meta={"continue": encode_continue(-1, start)}
                    )
                self._snapshots.move_to_end((*scope, rv))
                entries = snap
            first = bisect.bisect_right(entries, start, key=_entry_key)
        else:
            rv, entries, first = self._rv, self._scoped(table, namespace, pinned), 0
        items: list[bytes] = []
        want = limit if limit and limit > 0 else None
        i = first
        n = len(entries)
        filtered = bool(labels.requirements or fields.terms)
        while i < n:
            e = entries[i]
            i += 1
            if filtered and not (labels.matches(e.labels) and fields.matches(e.fields)):
                continue
            items.append(e.raw)
            if want is not None and len(items) >= want:
                break
        meta: Obj = {"resourceVersion": str(rv)}
        token = None
        if want is not None and i < n:
            token = encode_continue(rv, entries[i - 1].key)
            meta["continue"] = token
            if not filtered:
                meta["remainingItemCount"] = n - i
            if not cont:
                self._keep_snapshot((*scope, rv), entries)
        head = b'{"kind":"%s","apiVersion":"%s","metadata":%s,"items":[' % (
            rtype.list_kind.encode(),
            rtype.api_version.encode(),
            orjson.dumps(meta),
        )
        return Page(head + b",".join(items) + b"]}", len(items), token)

    def _scoped(self, table: _Table, namespace: str | None, pinned: str | None) -> list[Entry]:
        live = table.live
        if pinned is not None:
            keys = sorted(table.index.get(pinned, ()))
            if namespace:
                keys = [k for k in keys if k.startswith(namespace + "/")]
        else:
            keys = self._scope_keys(table, namespace)
        return [live[k] for k in keys]

    def _keep_snapshot(self, key: tuple[str, str, str | None, int], entries: list[Entry]) -> None:
        self._snapshots[key] = entries
        while len(self._snapshots) > self._max_snapshots:
            self._snapshots.popitem(last=False)

    # --- watch -------------------------------------------------------------------------------

    def events_after(self, rv: int) -> list[Event]:
        """Every event newer than `rv`; raises a 410 KubeError if some of them are gone."""
        if rv >= self._rv:
            return []
        if rv < self.oldest_rv:
            raise KubeError(410, "Expired", f"too old resource version: {rv} ({self.oldest_rv + 1})")
        out = []
        for r in range(rv + 1, self._rv + 1):
            ev = self._ring[r % self._history]
            assert ev is not None
            out.append(ev)
        return out

    def changed(self) -> asyncio.Future[None]:
        """A future resolved by the next stored event (shared by all waiters: never cancel it)."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    @property
    def bookmarks_asked(self) -> int:
        """How many times `bookmark()` was called (a watch sends one per call it has not served)."""
        return self._bookmarks_asked

    def bookmark(self) -> None:
        """Ask every watch that allows bookmarks to send one now."""
        self._bookmarks_asked += 1
        if self._changed is not None:
            if not self._changed.done():
                self._changed.set_result(None)
            self._changed = None

    @property
    def watchers(self) -> int:
        return self._watchers

    async def watcher_joined(self, delta: int) -> None:
        self._watchers += delta
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def wait_for_watchers(self, n: int) -> None:
        """Return once at least `n` watches are streaming (tests start churn after this)."""
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self._watchers >= n)

    def _condition(self) -> asyncio.Condition:
        if self._watchers_changed is None:
            self._watchers_changed = asyncio.Condition()
        return self._watchers_changed


def _entry_key(entry: Entry) -> str:
    return entry.key


_SKELETON: Obj = {"metadata": {"name": "", "namespace": ""}}
"""An empty object: its field-selector values name the fields a resource supports."""
