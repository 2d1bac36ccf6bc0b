"""kata-monitor endpoints of the lab: one per Kubernetes node, each on its own loopback port.

`/metrics` answers in Prometheus text what kata-monitor aggregates from the shims of the Kata
sandboxes on its node: its own `kata_monitor_*` series (`kata_monitor_running_shim_count` among
them), then per sandbox `kata_shim_*` (with `kata_shim_pod_overhead_cpu` and
`kata_shim_pod_overhead_memory_in_bytes`), `kata_hypervisor_*`, `kata_agent_*` and `kata_guest_*`
series, each labelled `sandbox_id, cri_uid, cri_name, cri_namespace` after its own labels, as
kata-monitor appends them. `/sandboxes` lists the sandbox ids, one a line. The sandboxes are the
running pods of the lab cluster whose runtime class is a Kata one, read at request time, so the
endpoint follows evictions and migrations. Values are deterministic functions of the sandbox and
the lab clock.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_pods import pod_gpus
from sovereign_tui.lab.kube_store import Entry

CONTENT_TYPE = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
FAULTS = ("http500", "malformed", "down")


@dataclass(frozen=True)
class Sandbox:
    id: str
    uid: str
    name: str
    namespace: str
    runtime_class: str
    overhead_cpu: float
    overhead_memory: int
    gpus: int
    started: float


def sandboxes_on(cluster: KubeCluster, node: str) -> list[Sandbox]:
    """The Kata sandboxes running on `node` now: its running pods with a Kata runtime class."""
    out = []
    for e in cluster.pods_on(node):
        spec = e.obj["spec"]
        overhead = spec.get("overhead")
        if not overhead or not spec.get("runtimeClassName", "").startswith("kata"):
            continue
        if e.obj["status"].get("phase") != "Running":
            continue
        out.append(_sandbox(e, overhead))
    return sorted(out, key=lambda s: s.id)


def _sandbox(e: Entry, overhead: dict[str, str]) -> Sandbox:
    md = e.obj["metadata"]
    started = e.obj["status"].get("startTime", md["creationTimestamp"])
    return Sandbox(
        id=ko.sandbox_id(md["uid"]),
        uid=md["uid"],
        name=md["name"],
        namespace=md["namespace"],
        runtime_class=e.obj["spec"]["runtimeClassName"],
        overhead_cpu=ko.quantity_cores(overhead["cpu"]),
        overhead_memory=ko.quantity_bytes(overhead["memory"]),
        gpus=pod_gpus(e.obj),
        started=_epoch(started),
    )


def _epoch(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from its arguments."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def overhead_memory_bytes(s: Sandbox) -> int:
    """What the shim reports as the pod's memory overhead: near the runtime class's podFixed."""
    return int(s.overhead_memory * (0.60 + 0.38 * _unit(s.id, "mem")))


def overhead_cpu_percent(s: Sandbox, t: float) -> float:
    return round(s.overhead_cpu * 100 * (0.02 + 0.2 * _unit(s.id, "cpu", int(t // 15))), 3)


def _labels(s: Sandbox, **extra: str) -> str:
    own = "".join(f'{k}="{v}",' for k, v in extra.items())
    return f'{{{own}sandbox_id="{s.id}",cri_uid="{s.uid}",cri_name="{s.name}",cri_namespace="{s.namespace}"}}'


def render(sandboxes: Iterable[Sandbox], t: float, scrapes: int) -> str:
    """The `/metrics` body for these sandboxes at wall time `t`."""
    boxes = list(sandboxes)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float | int]]) -> None:
        rows = list(samples)
        if not rows:
            return
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in rows)

    family(
        "kata_monitor_running_shim_count",
        "gauge",
        "Running shim count(running sandboxes).",
        [("", len(boxes))],
    )
    family("kata_monitor_scrape_count", "counter", "Scape count.", [("", scrapes)])
    family("kata_monitor_scrape_failed_count", "counter", "Failed scape count.", [("", 0)])
    family(
        "kata_monitor_go_goroutines",
        "gauge",
        "Number of goroutines that currently exist.",
        [("", 14 + len(boxes))],
    )
    family(
        "kata_monitor_process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        [("", 31_000_000 + 250_000 * len(boxes))],
    )
    up = {s.id: max(0.0, t - s.started) for s in boxes}
    mem_total = {s.id: 2 * 1024 * 1024 + (s.gpus * 16 * 1024 * 1024) for s in boxes}  # kB, as /proc/meminfo
    family(
        "kata_agent_process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        [(_labels(s), round(up[s.id] * 0.0004, 2)) for s in boxes],
    )
    family(
        "kata_agent_process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        [(_labels(s), int(9_000_000 + 3_000_000 * _unit(s.id, "agent"))) for s in boxes],
    )
    guest_mem = []
    for s in boxes:
        free = int(mem_total[s.id] * (0.25 + 0.5 * _unit(s.id, "free", int(t // 15))))
        guest_mem += [
            (_labels(s, item="mem_available"), free + 65536),
            (_labels(s, item="mem_free"), free),
            (_labels(s, item="mem_total"), mem_total[s.id]),
        ]
    family(
        "kata_guest_load",
        "gauge",
        "Guest system load.",
        [(_labels(s, item="load1"), round(4 * _unit(s.id, "load", int(t // 15)), 2)) for s in boxes],
    )
    family("kata_guest_meminfo", "gauge", "Statistics about memory usage in the system.", guest_mem)
    family(
        "kata_guest_tasks",
        "gauge",
        "Guest system load.",
        [(_labels(s, item="cur"), 40 + int(60 * _unit(s.id, "tasks"))) for s in boxes],
    )
    family(
        "kata_hypervisor_fds",
        "gauge",
        "Open FDs for hypervisor.",
        [(_labels(s), 80 + 8 * s.gpus + int(20 * _unit(s.id, "fds"))) for s in boxes],
    )
    family(
        "kata_hypervisor_proc_status",
        "gauge",
        "Hypervisor process status.",
        [(_labels(s, item="vmrss"), overhead_memory_bytes(s) // 1024 + mem_total[s.id] // 4) for s in boxes],
    )
    family(
        "kata_hypervisor_threads",
        "gauge",
        "Hypervisor process threads.",
        [(_labels(s), 6 + 2 * s.gpus + int(4 * _unit(s.id, "thr"))) for s in boxes],
    )
    family(
        "kata_shim_pod_overhead_cpu",
        "gauge",
        "Kata Pod overhead for CPU resources(percent).",
        [(_labels(s), overhead_cpu_percent(s, t)) for s in boxes],
    )
    family(
        "kata_shim_pod_overhead_memory_in_bytes",
        "gauge",
        "Kata Pod overhead for memory resources(bytes).",
        [(_labels(s), overhead_memory_bytes(s)) for s in boxes],
    )
    family(
        "kata_shim_process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        [(_labels(s), int(40_000_000 + 5_000_000 * _unit(s.id, "shim"))) for s in boxes],
    )
    family(
        "kata_shim_threads",
        "gauge",
        "Kata containerd shim v2 process threads.",
        [(_labels(s), 11 + int(5 * _unit(s.id, "shimthr"))) for s in boxes],
    )
    return "\n".join(lines) + "\n"


@dataclass
class _Endpoint:
    node: str
    sock: socket.socket
    port: int
    site: web.SockSite | None = None
    fault: str | None = None
    scrapes: int = 0


class KataMonitorLab:
    """One kata-monitor per node (`start`, `url(node)`, `stop`); nodes default to the Kata nodes."""

    def __init__(
        self, cluster: KubeCluster, nodes: Iterable[str] | None = None, *, bind: str = "127.0.0.1"
    ) -> None:
        self.cluster = cluster
        self.bind = bind
        chosen = list(nodes) if nodes is not None else [n for n, s in cluster.specs.items() if s.kata]
        unknown = [n for n in chosen if n not in cluster.specs]
        if unknown:
            raise ValueError(
                f"kata-monitor lab: unknown node(s) {unknown}; use names of the Kubernetes lab's nodes"
            )
        self._endpoints: dict[str, _Endpoint] = {}
        self._by_port: dict[int, _Endpoint] = {}
        self._nodes = chosen
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sandboxes", self._sandboxes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)

    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    def endpoint(self, node: str) -> str:
        """``address:port`` of the node's kata-monitor."""
        address = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{address}:{self._endpoints[node].port}"

    def url(self, node: str) -> str:
        return f"http://{self.endpoint(node)}"

    def scrapes(self, node: str) -> int:
        return self._endpoints[node].scrapes

    def sandboxes(self, node: str) -> list[Sandbox]:
        return sandboxes_on(self.cluster, node)

    def payload(self, node: str) -> str:
        """What `/metrics` of `node` answers now (without counting a scrape)."""
        ep = self._endpoints[node]
        return render(self.sandboxes(node), self.cluster.clock.time(), ep.scrapes)

    async def start(self) -> None:
        await self._runner.setup()
        try:
            for node in self._nodes:
                sock = _listen(self.bind)
                ep = _Endpoint(node, sock, sock.getsockname()[1])
                self._endpoints[node] = ep
                self._by_port[ep.port] = ep
                await self._serve(ep)
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, ep: _Endpoint) -> None:
        ep.site = web.SockSite(self._runner, ep.sock)
        await ep.site.start()

    async def set_fault(self, node: str, fault: str | None) -> None:
        """Make a node's kata-monitor answer 500 (``http500``), cut its body (``malformed``), or
        close its port (``down``); None heals it."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"kata-monitor fault must be one of {FAULTS} or None, got {fault!r}")
        ep = self._endpoints[node]
        previous, ep.fault = ep.fault, fault
        if fault == "down" and ep.site is not None:
            site, ep.site = ep.site, None
            await site.stop()
        elif previous == "down" and fault != "down":
            ep.sock = _listen(self.bind, ep.port)
            await self._serve(ep)

    async def stop(self) -> None:
        await self._runner.cleanup()
        for ep in self._endpoints.values():
            with contextlib.suppress(OSError):
                ep.sock.close()

    def _endpoint_of(self, request: web.Request) -> _Endpoint:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        ep = self._by_port.get(sockname[1]) if sockname else None
        if ep is None:
            raise web.HTTPNotFound()
        return ep

    async def _metrics(self, request: web.Request) -> web.Response:
        ep = self._endpoint_of(request)
        self.cluster.timeline.run_due()
        if ep.fault == "http500":
            return web.Response(status=500, text="failed to aggregate sandbox metrics\n")
        ep.scrapes += 1
        body = render(self.sandboxes(ep.node), self.cluster.clock.time(), ep.scrapes)
        if ep.fault == "malformed":
            body = body[: len(body) // 2] + '\nkata_shim_threads{sandbox_id="\n'  # cut off mid-sample
        return web.Response(body=body.encode(), headers=CONTENT_TYPE)

    async def _sandboxes(self, request: web.Request) -> web.Response:
        ep = self._endpoint_of(request)
        self.cluster.timeline.run_due()
        if ep.fault == "http500":
            return web.Response(status=500, text="internal error\n")
        return web.Response(text="".join(f"{s.id}\n" for s in self.sandboxes(ep.node)))


def _listen(bind: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
