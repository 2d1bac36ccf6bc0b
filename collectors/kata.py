"""Kata Containers: each Kata node's sandboxes from its kata-monitor, beside the API's Kata pods.

Two kinds of target. ``kata:<context>`` reads the cluster through the shared watches (`kube_watch`):
the Kata runtime classes, the Kata pods per node and runtime class, and the nodes labelled by
kata-deploy, whose kata-monitor endpoints it discovers (``http://<InternalIP>:8090/metrics``)
unless they are configured. ``kata-monitor:<node>`` scrapes one node's ``/metrics`` (one target
per node, so the poller's per-host limit applies and one dead monitor makes only that node's Kata
data stale) with the focused Prometheus text parser, and files a `KataFacet` under the node name.

Discovered endpoints change with the cluster: `watch_targets` registers the callback through which
the collector asks its owner to take `targets()` again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

from yarl import URL

from collectors.base import Capability
from collectors.dcgm import fetch_text
from collectors.kube_client import KubeSession
from collectors.kube_watch import Informer, ensure_all, informer
from collectors.kubernetes import (
    NODES,
    PODS,
    RUNTIME_CLASSES,
    Node,
    Pod,
    RuntimeClassObj,
    internal_ip,
    is_kata_class,
)
from sovereign_tui.config_sources import KataSource
from sovereign_tui.model import FacetOf, KataFacet, KataSandbox, Observation
from sovereign_tui.poller import PollContext, PollError, Target
from sovereign_tui.promtext import Parser, PromTextError

SHIMS = "kata_monitor_running_shim_count"
CPU = "kata_shim_pod_overhead_cpu"
MEMORY = "kata_shim_pod_overhead_memory_in_bytes"
FAMILIES = (SHIMS, CPU, MEMORY)
FINISHED = ("Succeeded", "Failed")


class KataPods:
    """Kata pods not finished, per node and runtime class, kept up to date from pod events."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[str, str]] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def _add(self, uid: str, pod: Pod) -> None:
        rc = pod.spec.runtime_class_name
        node = pod.spec.node_name
        if not node or not rc or not is_kata_class(rc) or pod.status.phase in FINISHED:
            return
        self._where[uid] = (node, rc)
        per = self.counts.setdefault(node, {})
        per[rc] = per.get(rc, 0) + 1

    def _remove(self, uid: str) -> None:
        where = self._where.pop(uid, None)
        if where is None:
            return
        node, rc = where
        per = self.counts[node]
        per[rc] -= 1
        if not per[rc]:
            del per[rc]
            if not per:
                del self.counts[node]

    def reset(self, items: Mapping[str, Pod], now: float) -> None:
        self._where, self.counts = {}, {}
        for uid, pod in items.items():
            self._add(uid, pod)

    def upsert(self, uid: str, obj: Pod, old: Pod | None, now: float) -> None:
        self._remove(uid)
        self._add(uid, obj)

    def delete(self, uid: str, old: Pod, now: float) -> None:
        self._remove(uid)

    def by_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for per in self.counts.values():
            for rc, n in per.items():
                out[rc] = out.get(rc, 0) + n
        return out


def monitor_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/metrics"


def kata_facet(
    node: str,
    url: str,
    families: Mapping[str, list[tuple[Mapping[str, str], float]]],
    source: str,
    now: float,
    pods: dict[str, int],
) -> KataFacet:
    shims = families[SHIMS]
    if not shims:
        raise PollError(f"kata-monitor {node}: no {SHIMS} in {URL(url).path}; is this kata-monitor?")
    boxes: dict[str, dict[str, object]] = {}
    for family, key in ((CPU, "overhead_cpu_pct"), (MEMORY, "overhead_memory_bytes")):
        for labels, value in families[family]:
            sandbox = labels.get("sandbox_id")
            if not sandbox:
                continue
            box = boxes.setdefault(
                sandbox,
                {
                    "pod_uid": labels.get("cri_uid") or None,
                    "pod": labels.get("cri_name") or None,
                    "namespace": labels.get("cri_namespace") or None,
                },
            )
            if math.isfinite(value):
                box[key] = int(value) if family == MEMORY else value
    sandboxes = tuple(
        KataSandbox(sandbox_id=sid, **box)  # type: ignore[arg-type]
        for sid, box in sorted(boxes.items())
    )
    cpu = [s.overhead_cpu_pct for s in sandboxes if s.overhead_cpu_pct is not None]
    mem = [s.overhead_memory_bytes for s in sandboxes if s.overhead_memory_bytes is not None]
    return KataFacet(
        source=source,
        observed_at=now,
        node=node,
        running_shims=int(shims[0][1]),
        sandboxes=sandboxes,
        overhead_cpu_pct=round(sum(cpu), 6),
        overhead_memory_bytes=sum(mem),
        pods_by_runtime_class=pods,
        endpoint=url,
    )


class KataCollector:
    name = "kata"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, session: KubeSession, source: KataSource) -> None:
        self.session = session
        self.source = source
        self.target_id = f"kata:{session.ref.label}"
        key, _, value = source.node_label.partition("=")
        self._label = (key, value)
        self.discover = not source.endpoints
        self.endpoints: dict[str, str] = dict(source.endpoints)
        self._parsers: dict[str, Parser] = {}
        self._listener: Callable[[], None] | None = None
        self.nodes: Informer[Node] = informer(session, NODES)
        self.pods: Informer[Pod] = informer(session, PODS)
        self.runtime_classes: Informer[RuntimeClassObj] = informer(session, RUNTIME_CLASSES)
        self.kata_pods = KataPods()
        self._viewed = False
        session.acquire()

    def watch_targets(self, callback: Callable[[], None]) -> None:
        """`callback` is called when discovered kata-monitor endpoints change (take `targets()` again)."""
        self._listener = callback

    def targets(self) -> list[Target]:
        cluster = Target(
            id=self.target_id,
            source=self.name,
            endpoint=f"kubeconfig:{self.session.ref.label}",
            interval_s=self.source.interval_s,
            poll=self.poll_cluster,
            timeout_s=self.source.timeout_s,
            fingerprint=repr((self.session.ref, self.source)),
        )
        out = [cluster]
        for node, url in sorted(self.endpoints.items()):
            u = URL(url)
            host = f"[{u.host}]" if u.host and ":" in u.host else u.host
            out.append(
                Target(
                    id=f"kata-monitor:{node}",
                    source=self.name,
                    endpoint=f"{host}:{u.port}",
                    interval_s=self.source.interval_s,
                    poll=functools.partial(self.poll_node, node, url),
                    timeout_s=self.source.timeout_s,
                    fingerprint=url,
                )
            )
        return out

    def _kata_nodes(self) -> dict[str, str | None]:
        key, value = self._label
        return {
            n.metadata.name: internal_ip(n)
            for n in self.nodes.items.values()
            if n.metadata.labels.get(key) == value
        }

    async def poll_cluster(self, ctx: PollContext) -> Observation:
        if not self._viewed:
            self.pods.add_view(self.kata_pods, ctx.clock.time())
            self._viewed = True
        await ensure_all(ctx, [self.nodes, self.pods, self.runtime_classes])
        nodes = self._kata_nodes()
        if self.discover:
            found = {n: monitor_url(ip, self.source.monitor_port) for n, ip in nodes.items() if ip}
            if found != self.endpoints:
                self.endpoints = found
                self._parsers = {n: p for n, p in self._parsers.items() if n in found}
                if self._listener is not None:
                    self._listener()
        classes = sorted(
            rc.metadata.name
            for rc in self.runtime_classes.items.values()
            if is_kata_class(rc.metadata.name) or is_kata_class(rc.handler)
        )
        pods = self.kata_pods.by_class()
        no_ip = sorted(n for n, ip in nodes.items() if not ip)
        detail = {
            "kata runtime classes": ", ".join(classes) or "none",
            "kata pods per runtime class": ", ".join(f"{rc} {n}" for rc, n in sorted(pods.items())) or "none",
            "kata nodes": f"{len(nodes)}, {len(self.endpoints)} kata-monitor endpoints"
            + (f"; no InternalIP: {', '.join(no_ip[:5])}" if no_ip else ""),
        }
        return Observation(health_detail=detail)

    async def poll_node(self, node: str, url: str, ctx: PollContext) -> Observation:
        what = f"kata-monitor {node}"
        text = await fetch_text(ctx, url, what)
        parser = self._parsers.get(node)
        if parser is None:
            parser = self._parsers[node] = Parser(FAMILIES)
        try:
            families = parser.parse(text)
        except PromTextError as exc:
            raise PollError(f"{what}: malformed metrics text ({exc})") from None
        pods = dict(self.kata_pods.counts.get(node, {}))
        facet = kata_facet(node, url, families, f"kata-monitor:{node}", ctx.clock.time(), pods)
        return Observation(facets=(FacetOf(node, facet),))

    async def aclose(self) -> None:
        await self.session.release()
