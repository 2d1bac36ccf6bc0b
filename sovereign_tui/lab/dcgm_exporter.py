"""Simulated dcgm-exporter endpoints: one ``/metrics`` per GPU host, as a real fleet runs one
exporter per node (port 9400 there; a free loopback port each here).

The text is what dcgm-exporter 3.x and 4.x print: ``# HELP`` / ``# TYPE`` per family, then one
sample per GPU with the labels in the exporter's own order (``gpu, UUID, pci_bus_id, device,
modelName``, then ``GPU_I_PROFILE, GPU_I_ID`` on MIG instances, then the host label, then the
sorted extra labels). The layout is a fixed function of the host's position, so a fleet of any
size from a few hosts up shows every shape:

- even hosts print ``Hostname`` (3.x), odd hosts ``hostname`` plus ``DCGM_FI_DRIVER_VERSION`` (4.x);
- on hosts 1, 4, 7... (index % 3 == 1) GPU 0 and every fourth GPU run MIG: one row per GPU
  instance (parent UUID, ``GPU_I_PROFILE``/``GPU_I_ID``), no ``GPU_UTIL`` (DCGM has none for MIG
  instances; ``PROF_GR_ENGINE_ACTIVE`` carries the load), device-wide fields repeated per instance;
- about two GPUs in three are mapped to a pod (``pod, namespace, container``), the others print
  them empty, as the exporter does in Kubernetes mode; given `pods_of` (the fleet lab's
  Kubernetes), the pods are those holding each GPU at the scrape instead; some held GPUs sit
  idle, some run hot, a few report an XID or rows remapped after uncorrectable errors (which ones
  depends on the seed).

Values are a deterministic function of the seed, the GPU and the injected clock (`sample`), so a
test computes what any poll must have read. Fault knobs per host (`set_fault`): HTTP 500, a hang,
a malformed body, or down (connection refused).

Built for thousands of endpoints in one process: one aiohttp runner serves every listening
socket (the host is found by the local port), each row's label set is formatted once at start,
and a scrape formats only the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from aiohttp import web

from sovereign_tui.clock import Clock

Fault = Literal["http500", "hang", "malformed", "down"]


@dataclass(frozen=True, slots=True)
class LabGpuModel:
    name: str
    memory_mib: int
    idle_power_w: float
    max_power_w: float
    idle_temp_c: float
    mig: tuple[tuple[str, int, int], ...] = ()
    """MIG layout used when the GPU runs MIG: (profile, GPU instance id, memory MiB)."""


MODELS: tuple[LabGpuModel, ...] = (
    LabGpuModel(
        "NVIDIA H100 80GB HBM3",
        81559,
        69.85,
        700.0,
        31.0,
        mig=(("3g.40gb", 2, 40448), ("2g.20gb", 3, 20096), ("1g.10gb", 9, 9984), ("1g.10gb", 10, 9984)),
    ),
    LabGpuModel(
        "NVIDIA A100-SXM4-80GB",
        81920,
        61.4,
        400.0,
        33.0,
        mig=(("3g.40gb", 1, 40192), ("2g.20gb", 5, 19968), ("1g.10gb", 13, 9856), ("1g.10gb", 14, 9856)),
    ),
    LabGpuModel("NVIDIA L40S", 46068, 34.12, 350.0, 30.0),
    LabGpuModel("NVIDIA H200", 143771, 78.28, 700.0, 28.0),
)
DRIVER_VERSION = "570.133.20"
_NAMESPACES = ("ml-train", "inference", "research")
_XIDS = (13, 31, 48, 79, 94)
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)


class GpuSample(NamedTuple):
    """What the exporter prints for one row at one time (None: the family has no sample)."""

    util: int | None
    fb_used: int
    fb_free: int
    temp: int
    power: float
    xid: int
    remapped_uncorrectable: int
    gr_active: float


@dataclass(frozen=True, slots=True)
class LabGpu:
    """One row of the exporter: a whole GPU, or one MIG GPU instance of it."""

    host: str
    index: int
    uuid: str
    bus_id: str
    model: LabGpuModel
    memory_mib: int
    mig_profile: str | None
    mig_instance: int | None
    namespace: str | None
    pod: str | None
    container: str | None
    idle: bool
    """Held by a pod but doing (almost) nothing: what the idle-allocation flag is for."""
    hot: bool
    xid: int
    remapped_uncorrectable: int
    phase: float
    period_s: float
    device_phase: float
    """Phase of the device-wide wave (temperature, power): shared by a GPU's MIG instances."""
    labels: str
    """The label set as printed between the braces."""

    @property
    def holder(self) -> str | None:
        return f"pod:{self.namespace}/{self.pod}" if self.pod else None


def _unit(seed: int, *parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _uuid(seed: int, host: str, index: int) -> str:
    h = hashlib.blake2b(repr((seed, "uuid", host, index)).encode(), digest_size=16).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def sample(gpu: LabGpu, t: float) -> GpuSample:
    """The values `gpu` shows at wall time `t` (epoch seconds): the lab's one generator."""
    step = math.floor(t)  # values change once a second, as DCGM's own sampling would
    wave = 0.5 + 0.5 * math.sin(2 * math.pi * (step / gpu.period_s + gpu.phase))
    if gpu.pod is None:
        load = 0.0
    elif gpu.idle:
        load = 0.02 * wave
    else:
        load = 0.2 + 0.8 * wave
    util = round(100 * load)
    if gpu.pod is None:
        used = 0
    else:
        used = int(gpu.memory_mib * (0.35 + 0.5 * (0.5 + 0.5 * math.sin(gpu.phase * 7 + step / 900))))
    # Device-wide fields follow the GPU's own wave, the same for each of its MIG instances.
    device = 0.5 + 0.5 * math.sin(2 * math.pi * (step / 300 + gpu.device_phase))
    device_load = load if gpu.mig_instance is None else 0.15 + 0.7 * device
    m = gpu.model
    temp = round(m.idle_temp_c + 45 * device_load) if not gpu.hot else 86 + step % 5
    power = round(m.idle_power_w + (m.max_power_w - m.idle_power_w) * device_load, 3)
    return GpuSample(
        util=None if gpu.mig_instance is not None else util,
        fb_used=used,
        fb_free=gpu.memory_mib - used,
        temp=temp,
        power=power,
        xid=gpu.xid,
        remapped_uncorrectable=gpu.remapped_uncorrectable,
        gr_active=round(load * 0.97, 6),
    )


def layout(hosts: Sequence[tuple[str, int]], seed: int = 0) -> list[list[LabGpu]]:
    """The rows each host prints, in order (see the module's docstring for the rules)."""
    out: list[list[LabGpu]] = []
    for i, (name, count) in enumerate(hosts):
        mig_host = i % 3 == 1
        pool = MODELS[:2] if mig_host else MODELS
        model = pool[int(_unit(seed, "model", name) * len(pool))]
        rows: list[LabGpu] = []
        for g in range(count):
            mig = model.mig if mig_host and g % 4 == 0 else ()
            parts: list[tuple[str | None, int | None, int]] = (
                [(p, gi, mem) for p, gi, mem in mig] if mig else [(None, None, model.memory_mib)]
            )
            for k, part in enumerate(parts):
                rows.append(_row(seed, name, g, k, model, part, v4=i % 2 == 1))
        out.append(rows)
    return out


def _pod_labels(ns: str | None, pod: str | None, container: str | None) -> str:
    return f',container="{container or ""}",namespace="{ns or ""}",pod="{pod or ""}"'


PodsOf = Callable[[str], Sequence[tuple[str, str, str] | None]]
"""Host name -> per GPU index, the (namespace, pod, container) holding it now, or None."""


def relabel(rows: Sequence[LabGpu], pods: Sequence[tuple[str, str, str] | None], seed: int) -> list[LabGpu]:
    """`rows` with their pod labels from `pods` (by GPU index), as dcgm-exporter reads them from
    the kubelet on each scrape; a GPU's idle draw stays the seed's."""
    out = []
    for g in rows:
        holder = pods[g.index] if g.index < len(pods) else None
        ns, pod, container = holder if holder is not None else (None, None, None)
        if (ns, pod, container) == (g.namespace, g.pod, g.container):
            out.append(g)
            continue
        head = g.labels[: g.labels.index(',container="')]
        out.append(
            dataclasses.replace(
                g,
                namespace=ns,
                pod=pod,
                container=container,
                idle=pod is not None and _unit(seed, "idle", g.host, g.index, g.mig_instance) < 0.25,
                labels=head + _pod_labels(ns, pod, container),
            )
        )
    return out


def _row(
    seed: int,
    host: str,
    g: int,
    k: int,
    model: LabGpuModel,
    part: tuple[str | None, int | None, int],
    v4: bool,
) -> LabGpu:
    profile, gi, memory = part
    uuid = _uuid(seed, host, g)
    bus = (_HGX_BUSES[g % len(_HGX_BUSES)] + g // len(_HGX_BUSES)) % 256
    bus_id = f"00000000:{bus:02X}:00.0"
    held = _unit(seed, "held", host, g, k) < 0.67
    ns = pod = container = None
    if held:
        ns = _NAMESPACES[int(_unit(seed, "ns", host, g, k) * len(_NAMESPACES))]
        pod = f"{'job' if ns == 'ml-train' else 'srv'}-{host}-{g}{'' if gi is None else f'-{gi}'}"
        container = "main"
    has_xid = _unit(seed, "xid", host, g) < 0.04
    labels = f'gpu="{g}",UUID="{uuid}",pci_bus_id="{bus_id}",device="nvidia{g}",modelName="{model.name}"'
    if profile is not None:
        labels += f',GPU_I_PROFILE="{profile}",GPU_I_ID="{gi}"'
    labels += f',hostname="{host}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"' if v4 else f',Hostname="{host}"'
    labels += _pod_labels(ns, pod, container)
    return LabGpu(
        host=host,
        index=g,
        uuid=uuid,
        bus_id=bus_id,
        model=model,
        memory_mib=memory,
        mig_profile=profile,
        mig_instance=gi,
        namespace=ns,
        pod=pod,
        container=container,
        idle=held and _unit(seed, "idle", host, g, k) < 0.25,
        hot=_unit(seed, "hot", host, g) < 0.06,
        xid=_XIDS[int(_unit(seed, "xidk", host, g) * len(_XIDS))] if has_xid else 0,
        remapped_uncorrectable=1 if _unit(seed, "remap", host, g) < 0.03 else 0,
        phase=_unit(seed, "phase", host, g, k),
        period_s=120 + 480 * _unit(seed, "period", host, g, k),
        device_phase=_unit(seed, "device", host, g),
        labels=labels,
    )


_DRAM_HELP = "Ratio of cycles the device memory interface is active sending or receiving data."
# Families as dcgm-exporter's default counters file lists them: (name after ``DCGM_FI_``, type,
# key of its value in `_values`, help text).
_FAMILIES: tuple[tuple[str, str, str, str], ...] = tuple(
    (f"DCGM_FI_{name}", kind, key, help_)
    for name, kind, key, help_ in (
        ("DEV_SM_CLOCK", "gauge", "sm", "SM clock frequency (in MHz)."),
        ("DEV_MEM_CLOCK", "gauge", "mem", "Memory clock frequency (in MHz)."),
        ("DEV_MEMORY_TEMP", "gauge", "memtemp", "Memory temperature (in C)."),
        ("DEV_GPU_TEMP", "gauge", "temp", "GPU temperature (in C)."),
        ("DEV_POWER_USAGE", "gauge", "power", "Power draw (in W)."),
        ("DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "energy", "Total energy consumption since boot (in mJ)."),
        ("DEV_PCIE_REPLAY_COUNTER", "counter", "zero", "Total number of PCIe retries."),
        ("DEV_GPU_UTIL", "gauge", "util", "GPU utilization (in %)."),
        ("DEV_MEM_COPY_UTIL", "gauge", "copy", "Memory utilization (in %)."),
        ("DEV_ENC_UTIL", "gauge", "zero", "Encoder utilization (in %)."),
        ("DEV_DEC_UTIL", "gauge", "zero", "Decoder utilization (in %)."),
        ("DEV_XID_ERRORS", "gauge", "xid", "Value of the last XID error encountered."),
        ("DEV_FB_FREE", "gauge", "fb_free", "Framebuffer memory free (in MiB)."),
        ("DEV_FB_USED", "gauge", "fb_used", "Framebuffer memory used (in MiB)."),
        (
            "DEV_UNCORRECTABLE_REMAPPED_ROWS",
            "counter",
            "remap",
            "Number of remapped rows for uncorrectable errors",
        ),
        (
            "DEV_CORRECTABLE_REMAPPED_ROWS",
            "counter",
            "zero",
            "Number of remapped rows for correctable errors",
        ),
        ("DEV_ROW_REMAP_FAILURE", "gauge", "zero", "Whether remapping of rows has failed"),
        ("PROF_GR_ENGINE_ACTIVE", "gauge", "gr", "Ratio of time the graphics engine is active."),
        ("PROF_PIPE_TENSOR_ACTIVE", "gauge", "tensor", "Ratio of cycles the tensor (HMMA) pipe is active."),
        ("PROF_DRAM_ACTIVE", "gauge", "dram", _DRAM_HELP),
    )
)
_HEADERS = {name: f"# HELP {name} {help_}\n# TYPE {name} {kind}\n" for name, kind, _, help_ in _FAMILIES}


def _values(gpu: LabGpu, s: GpuSample, t: float) -> dict[str, str]:
    """Every family's value as the exporter prints it (integers bare, ratios and watts ``%f``)."""
    busy = s.gr_active
    return {
        "sm": str(345 + int(1635 * busy)) if busy else "345",
        "mem": "2619",
        "memtemp": str(s.temp + 4),
        "temp": str(s.temp),
        "power": f"{s.power:f}",
        "energy": str(int(t * 1000 * gpu.model.idle_power_w) % 10**15),
        "zero": "0",
        "util": "" if s.util is None else str(s.util),
        "copy": str(int(40 * busy)),
        "xid": str(s.xid),
        "fb_free": str(s.fb_free),
        "fb_used": str(s.fb_used),
        "remap": str(s.remapped_uncorrectable),
        "gr": f"{s.gr_active:f}",
        "tensor": f"{busy * 0.61:f}",
        "dram": f"{busy * 0.44:f}",
    }


def render(rows: Sequence[LabGpu], t: float) -> str:
    """The ``/metrics`` body of a host whose rows are `rows`, at wall time `t`."""
    values = [_values(g, sample(g, t), t) for g in rows]
    out: list[str] = []
    for name, _, key, _ in _FAMILIES:
        out.append(_HEADERS[name])
        for g, v in zip(rows, values, strict=True):
            value = v[key]
            if value:  # MIG instances have no GPU_UTIL sample
                out.append(f"{name}{{{g.labels}}} {value}\n")
    return "".join(out)


def malformed(rows: Sequence[LabGpu], t: float) -> str:
    """A body with a broken sample of a family the collectors read (an unclosed label set)."""
    body = render(rows, t)
    head, sep, tail = body.partition("DCGM_FI_DEV_GPU_TEMP{")
    return head + sep + tail.replace("}", "", 1) if sep else body + "DCGM_FI_DEV_GPU_TEMP{gpu=0 1\n"


_CONTENT_TYPE = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@dataclass(eq=False)
class _Host:
    name: str
    rows: list[LabGpu]
    sock: socket.socket
    port: int
    site: web.SockSite | None = None
    fault: Fault | None = None
    requests: int = 0
    hung: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to let this host's hanging requests go (when healed, and at stop)."""
    pods: tuple[tuple[str, str, str] | None, ...] | None = None
    """The pods its rows are labelled with, when they come from `DcgmLab.pods_of`."""


class DcgmLab:
    """A running fleet of simulated exporters (from `start_dcgm_lab`)."""

    def __init__(
        self, clock: Clock, seed: int, hosts: dict[str, _Host], bind: str, pods_of: PodsOf | None = None
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.pods_of = pods_of
        """Where the pods holding each GPU come from (the lab's Kubernetes); None: the seed's."""
        self.bind = bind
        self.hosts = hosts
        self._by_port = {h.port: h for h in hosts.values()}
        self._hang_seen = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    @property
    def urls(self) -> list[str]:
        """One ``/metrics`` URL per host, in the order the hosts were given."""
        return [self.url(name) for name in self.hosts]

    def url(self, name: str) -> str:
        return f"http://{self.endpoint(name)}/metrics"

    def endpoint(self, name: str) -> str:
        """``address:port`` of a host's exporter, as the collectors key their targets."""
        address = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{address}:{self.hosts[name].port}"

    def rows(self, name: str) -> list[LabGpu]:
        return list(self._current(self.hosts[name]))

    def _current(self, host: _Host) -> list[LabGpu]:
        """The host's rows, relabelled first when the pods holding its GPUs changed."""
        if self.pods_of is not None:
            pods = tuple(self.pods_of(host.name))
            if pods != host.pods:
                host.rows, host.pods = relabel(host.rows, pods, self.seed), pods
        return host.rows

    def expected(self, name: str, t: float | None = None) -> list[tuple[LabGpu, GpuSample]]:
        """Each row of host `name` with the values it serves at `t` (now by the lab's clock)."""
        when = self.clock.time() if t is None else t
        return [(g, sample(g, when)) for g in self._current(self.hosts[name])]

    def requests(self, name: str) -> int:
        return self.hosts[name].requests

    def payload(self, name: str, t: float | None = None) -> str:
        return render(self._current(self.hosts[name]), self.clock.time() if t is None else t)

    async def set_fault(self, name: str, fault: Fault | None) -> None:
        """Make host `name` fail (None heals it): ``http500``, ``hang`` (until healed or
        stopped), ``malformed``, or ``down`` (its socket closed; healing re-opens the port)."""
        host = self.hosts[name]
        previous, host.fault = host.fault, fault
        if previous == "hang" and fault != "hang":
            host.release.set()
            host.release = asyncio.Event()
        if previous == "down" and fault != "down":
            host.sock = _listen(self.bind, host.port)
            await self._serve(host)
        elif fault == "down" and host.site is not None:
            site, host.site = host.site, None
            await site.stop()

    async def wait_hung(self, name: str, count: int = 1) -> None:
        """Return once `count` requests to host `name` are hanging."""
        async with self._hang_seen:
            await self._hang_seen.wait_for(lambda: self.hosts[name].hung >= count)

    async def _serve(self, host: _Host) -> None:
        site = web.SockSite(self.runner, host.sock)
        await site.start()
        host.site = site

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        host = self._by_port.get(sockname[1]) if sockname else None
        if host is None:
            raise web.HTTPNotFound()
        host.requests += 1
        fault = host.fault
        if fault == "down":  # a connection kept alive from before: cut it, as a dead process would
            if transport is not None:
                transport.abort()
            raise web.HTTPServiceUnavailable()
        if fault == "http500":
            return web.Response(status=500, text="failed to collect metrics: DCGM is not running\n")
        if fault == "hang":
            release = host.release
            host.hung += 1
            async with self._hang_seen:
                self._hang_seen.notify_all()
            try:
                await release.wait()
            finally:
                host.hung -= 1
            raise web.HTTPServiceUnavailable()
        t = self.clock.time()
        rows = self._current(host)
        body = malformed(rows, t) if fault == "malformed" else render(rows, t)
        return web.Response(body=body.encode(), headers=_CONTENT_TYPE)

    async def stop(self) -> None:
        for host in self.hosts.values():
            host.release.set()
        await self.runner.cleanup()
        for host in self.hosts.values():
            with contextlib.suppress(OSError):
                host.sock.close()


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


async def start_dcgm_lab(
    hosts: Sequence[tuple[str, int]],
    clock: Clock,
    seed: int = 0,
    *,
    bind: str = "127.0.0.1",
    pods_of: PodsOf | None = None,
) -> DcgmLab:
    """Start one exporter per ``(host name, GPU count)``, each on its own free port of `bind`."""
    names = [name for name, _ in hosts]
    if len(set(names)) != len(names):
        raise ValueError("dcgm lab: host names must be unique")
    built: dict[str, _Host] = {}
    try:
        for (name, _), rows in zip(hosts, layout(hosts, seed), strict=True):
            sock = _listen(bind)
            built[name] = _Host(name, rows, sock, sock.getsockname()[1])
    except OSError:
        for host in built.values():
            host.sock.close()
        raise
    lab = DcgmLab(clock, seed, built, bind, pods_of)
    await lab.runner.setup()
    try:
        for host in built.values():
            await lab._serve(host)
    except BaseException:
        await lab.stop()
        raise
    return lab
