"""Deterministic cluster data for the TUI tests, built from the tables below and applied to a
real `Store` the way the poller does (one observation per target).

GPUs come from one nvidia-smi target per host (`fill`); the layers (`fill_layers`) from one target
per source: Nova, Ironic, Kubernetes, the three StarlingX services and the local machine. Which
workload holds which GPU is read from the workloads, so the GPUs' holders and the workloads agree.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import (
    Alarm,
    DiskUsage,
    FacetOf,
    Gpu,
    GpuProcess,
    IronicFacet,
    KataFacet,
    KataSandbox,
    KubeFacet,
    MachineFacet,
    NicCounters,
    NovaFacet,
    Observation,
    RuntimeClass,
    Site,
    SourceHealth,
    StarlingxFacet,
    Workload,
    WorkloadKind,
)
from sovereign_tui.store import Store


@dataclass(frozen=True)
class HostSpec:
    name: str
    model: str
    memory_mib: float
    power_limit_w: float
    gpus: int
    mig: str | None = None


# Models, memory and power limits as nvidia-smi reports them for the captured cards.
HOSTS: tuple[HostSpec, ...] = (
    HostSpec("gpu-a01", "NVIDIA H100 80GB HBM3", 81559, 700, 4),
    HostSpec("gpu-a02", "NVIDIA H100 80GB HBM3", 81559, 700, 4),
    HostSpec("gpu-b01", "NVIDIA H200", 143771, 700, 4, mig="Enabled"),
    HostSpec("gpu-b02", "NVIDIA H200", 143771, 700, 2, mig="Disabled"),
    HostSpec("ws-10", "NVIDIA GeForce RTX 2080 SUPER", 8192, 250, 1),
)
INTERVAL_S = 10.0
GPU_INTERVAL_S = 15.0
"""Seconds between the GPU samples `warm_history` records (the history's default interval)."""

# --- the layers ---------------------------------------------------------------------------------

CLOUD = "lab"
SYSTEM = "central"
"""The StarlingX system controller's name: the site of its hosts."""
NOVA = f"nova:{CLOUD}"
IRONIC = f"ironic:{CLOUD}"
KUBE = f"kubernetes:{CLOUD}"
SYSINV = f"starlingx-sysinv:{CLOUD}"
DCMANAGER = f"starlingx-dcmanager:{CLOUD}"
FM = f"starlingx-fm:{CLOUD}"
MACHINE = "host:local"
LAYER_TARGETS: dict[str, str] = {
    NOVA: "nova",
    IRONIC: "ironic",
    KUBE: "kubernetes",
    SYSINV: "starlingx",
    DCMANAGER: "starlingx",
    FM: "starlingx",
    MACHINE: "host",
}
"""Target id -> source kind."""

# (host, state, status, disabled reason)
NOVA_HOSTS: tuple[tuple[str, str, str, str | None], ...] = (
    ("gpu-a01", "up", "enabled", None),
    ("gpu-a02", "up", "disabled", "firmware update, back Friday"),
    ("cpu-c01", "down", "enabled", None),
)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    provision: str
    power: str | None
    target: str | None = None
    maintenance: bool = False
    reason: str | None = None
    last_error: str | None = None
    instance: str | None = None
    resource_class: str = "baremetal.h100x8"


IRONIC_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("bm-01", "active", "power on", instance="hpc-train-01"),
    NodeSpec("bm-02", "available", "power off"),
    NodeSpec(
        "bm-03",
        "deploy failed",
        "power off",
        maintenance=True,
        reason="BMC unreachable since 08:10",
        last_error="Failed to deploy: IPMI power on timed out after 60 s",
    ),
    NodeSpec("bm-04", "wait call-back", "power on", target="active", instance="hpc-train-02"),
)

# (node, ready, cordoned)
KUBE_NODES: tuple[tuple[str, bool, bool], ...] = (
    ("controller-0", True, False),
    ("controller-1", True, False),
    ("gpu-a01", True, False),
    ("gpu-a02", True, True),
    ("gpu-b01", True, False),
    ("gpu-b02", False, False),
)

# (host, personality, administrative, operational, availability, task)
STX_HOSTS: tuple[tuple[str, str, str, str, str, str | None], ...] = (
    ("controller-0", "controller", "unlocked", "enabled", "available", None),
    ("controller-1", "controller", "unlocked", "enabled", "degraded", None),
    ("gpu-a01", "worker", "unlocked", "enabled", "available", None),
    ("gpu-a02", "worker", "unlocked", "enabled", "available", None),
    ("gpu-b01", "worker", "unlocked", "enabled", "available", None),
    ("gpu-b02", "worker", "unlocked", "disabled", "failed", None),
    ("storage-0", "storage", "locked", "disabled", "online", None),
)

# (name, availability, management, deploy status, sync status, software version)
SUBCLOUDS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("edge-paris", "online", "managed", "complete", "in-sync", "24.09"),
    ("edge-lyon", "offline", "managed", "complete", "unknown", "24.09"),
    ("edge-nice", "online", "unmanaged", "bootstrap-failed", "out-of-sync", "22.12"),
)

# (name, pod overhead CPU, pod overhead memory): the cluster's RuntimeClasses (kata-qemu-snp, which
# a pod names, is missing on purpose: its pod cannot start)
RUNTIME_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("kata-qemu", "250m", "160Mi"),
    ("kata-clh", "250m", "130Mi"),
    ("kata-qemu-nvidia-gpu", "500m", "512Mi"),
    ("kata-fc", "250m", "130Mi"),
)
KATA_NODES = ("gpu-a01", "gpu-a02", "gpu-b01", "gpu-b02")
"""Nodes whose kata-monitor is read."""
LEAKED_ON = "gpu-b02"
"""The node whose kata-monitor reports a sandbox no pod owns (left behind)."""

# (alarm id, severity, entity instance, reason, minutes ago)
ALARMS: tuple[tuple[str, str, str, str, int], ...] = (
    ("200.004", "critical", "host=gpu-b02", "gpu-b02 experienced a service-affecting failure", 3),
    ("100.101", "major", "host=controller-1.processor=0", "Platform CPU threshold exceeded; 96% > 90%", 12),
    ("250.001", "major", "host=storage-0", "storage-0 Configuration is out-of-date", 40),
    ("400.002", "minor", "service_domain=controller.service_group=oam", "Service group oam degraded", 125),
    ("270.001", "critical", "subcloud=edge-lyon", "Subcloud edge-lyon is offline", 25),
    ("800.001", "warning", "cluster=ceph", "Storage Alarm Condition: HEALTH_WARN", 300),
    ("100.104", "minor", "host=controller-1.filesystem=/var/log", "Filesystem /var/log 81% full", 8),
)


@dataclass(frozen=True)
class WorkloadSpec:
    kind: WorkloadKind
    name: str
    owner: str
    state: str
    host: str | None
    gpus: tuple[str, ...] = ()
    """`Gpu.uuid` of each GPU it holds."""
    flavor: str | None = None
    runtime_class: str | None = None
    gpu_kind: str | None = None
    idle: bool = False
    """It holds its GPUs without using them (the idle-allocated case)."""
    detail: dict[str, str] = field(default_factory=dict)


def gpu_uuid(host: str, index: int) -> str:
    return f"GPU-{host}-{index:02d}"


WORKLOADS: tuple[WorkloadSpec, ...] = (
    WorkloadSpec("nova-vm", "train-llama-01", "ml-research", "ACTIVE", "gpu-a01",
                 (gpu_uuid("gpu-a01", 0), gpu_uuid("gpu-a01", 1)), "g1.h100x2", gpu_kind="passthrough"),
    WorkloadSpec("nova-vm", "eval-02", "ml-research", "ACTIVE", "gpu-a01", (gpu_uuid("gpu-a01", 2),),
                 "g1.h100x1", gpu_kind="passthrough", idle=True),
    WorkloadSpec("nova-vm", "notebook-7", "data-science", "SHUTOFF", "gpu-a02", flavor="m1.xlarge"),
    WorkloadSpec("nova-vm", "render-05", "media", "ACTIVE", "gpu-a02", (gpu_uuid("gpu-a02", 3),),
                 "g1.h100x1", gpu_kind="passthrough"),
    WorkloadSpec("nova-vm", "broken-vm", "ml-research", "ERROR", None, flavor="g1.h100x1",
                 detail={"fault": "No valid host was found. There are not enough hosts available."}),
    WorkloadSpec("baremetal", "hpc-train-01", "hpc", "active", "bm-01", flavor="baremetal.h100x8"),
    WorkloadSpec("baremetal", "hpc-train-02", "hpc", "wait call-back", "bm-04", flavor="baremetal.h100x8"),
    WorkloadSpec("pod", "coredns-5d78c9869d-x2x7q", "kube-system", "Running", "controller-0"),
    WorkloadSpec("pod", "jupyter-0", "ml", "Running", "gpu-b01", (gpu_uuid("gpu-b01", 0),)),
    WorkloadSpec("pod", "batch-9", "ml", "Pending", None),
    WorkloadSpec("pod", "dcgm-exporter-gpu-b02", "monitoring", "Unknown", "gpu-b02"),
    WorkloadSpec("kata-pod", "infer-7", "ml", "Running", "gpu-b01", (gpu_uuid("gpu-b01", 1),),
                 runtime_class="kata-qemu-nvidia-gpu"),
    WorkloadSpec("kata-pod", "infer-8", "ml", "Running", "gpu-b01", (gpu_uuid("gpu-b01", 2),),
                 runtime_class="kata-qemu-nvidia-gpu"),
    WorkloadSpec("kata-pod", "scan-3", "untrusted", "Running", "gpu-a01", runtime_class="kata-qemu"),
    WorkloadSpec("kata-pod", "scan-4", "untrusted", "Running", "gpu-b02", runtime_class="kata-clh"),
    WorkloadSpec("kata-pod", "scan-5", "untrusted", "CrashLoopBackOff", "gpu-a02", runtime_class="kata-qemu"),
    WorkloadSpec("kata-pod", "confidential-1", "untrusted", "Pending", None, runtime_class="kata-qemu-snp"),
    WorkloadSpec("kubevirt-vm", "legacy-erp", "vms", "Running", "gpu-b01", flavor="u1.large"),
    WorkloadSpec("kubevirt-vm", "win-build", "vms", "Migrating", "gpu-b02", (gpu_uuid("gpu-b02", 1),),
                 "u1.xlarge", gpu_kind="vgpu", detail={"migration": "gpu-b02 -> gpu-b01"}),
)  # fmt: skip


def holder_of(w: WorkloadSpec) -> str:
    """How attribution names a workload: "nova-vm:train-llama-01", "pod:ml/infer-7" (a Kata pod
    is a pod to dcgm-exporter), "baremetal:hpc-train-01", "kubevirt-vm:vms/win-build"."""
    if w.kind in ("pod", "kata-pod"):
        return f"pod:{w.owner}/{w.name}"
    return f"{w.kind}:{w.owner}/{w.name}" if w.kind == "kubevirt-vm" else f"{w.kind}:{w.name}"


HOLDINGS: dict[str, WorkloadSpec] = {u: w for w in WORKLOADS for u in w.gpus}
"""GPU uuid -> the workload that holds it."""
ANOMALIES: dict[str, dict[str, object]] = {
    gpu_uuid("gpu-a02", 1): {"xid_last": 48},
    gpu_uuid("gpu-b01", 1): {"temperature_c": 88.0},
}
"""Faults put on single GPUs when asked (`anomalies=True`): an XID and a GPU over the temperature
limit. Off by default: tests elsewhere count on GPUs without them."""


def target_of(host: str) -> str:
    return f"nvidia_smi:{host}"


def workload_id(w: WorkloadSpec) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{w.kind}/{w.owner}/{w.name}"))


def gpus_for(spec: HostSpec, observed_at: float, tick: int = 0, anomalies: bool = False) -> tuple[Gpu, ...]:
    """The host's GPUs; values vary with the GPU's number and `tick` so updates change them. A GPU
    a workload holds is busy (or idle, for an idle workload); a free one is idle, except on the
    workstation, where the desktop runs."""
    found = []
    for i in range(spec.gpus):
        n = sum(map(ord, spec.name)) + i * 7
        uid = gpu_uuid(spec.name, i)
        holder = HOLDINGS.get(uid)
        desktop = holder is None and spec.name.startswith("ws-")
        working = (holder is not None and not holder.idle) or desktop
        util = float(20 + (n * 13 + tick * 11) % 75) if working else (1.0 if holder else 0.0)
        used = round(spec.memory_mib * (0.2 + (n % 7) / 10)) if holder or desktop else 0.0
        procs = (GpuProcess(pid=1000 + n, name="Xorg" if desktop else "python3", used_memory_mib=512.0),)
        gpu = Gpu(
            source=target_of(spec.name),
            observed_at=observed_at,
            host=spec.name,
            index=i,
            uuid=uid,
            name=spec.model,
            bus_id=f"00000000:{0x17 + i * 0x20:02X}:00.0",
            driver_version="550.54.15",
            memory_total_mib=spec.memory_mib,
            memory_used_mib=used,
            util_gpu_pct=util,
            util_memory_pct=round(util / 2),
            temperature_c=float(32 + round(util * 0.4) + n % 5),
            power_w=float(round(60 + util / 100 * (spec.power_limit_w - 100))),
            power_limit_w=spec.power_limit_w,
            ecc_uncorrected=1 if n % 11 == 0 else 0,
            mig_mode=spec.mig,
            processes=procs if working else (),
            holder=holder_of(holder) if holder else None,
        )
        found.append(msgspec.structs.replace(gpu, **ANOMALIES.get(uid, {})) if anomalies else gpu)
    return tuple(found)


def health(host: str, clock: FakeClock, *, up: bool | None = True, error: str | None = None) -> SourceHealth:
    return target_health(target_of(host), "nvidia_smi", f"{host}:22", clock, up=up, error=error)


def target_health(
    target: str,
    source: str,
    endpoint: str,
    clock: FakeClock,
    *,
    up: bool | None = True,
    error: str | None = None,
) -> SourceHealth:
    return SourceHealth(
        target=target,
        source=source,
        endpoint=endpoint,
        interval_s=INTERVAL_S,
        up=up,
        last_success=clock.time() if up else None,
        last_attempt=clock.time(),
        last_error=error,
        last_duration_s=0.25,
        consecutive_failures=0 if up else 1,
        polls=1,
        failures=0 if up else 1,
    )


def fill(
    store: Store,
    clock: FakeClock,
    hosts: tuple[HostSpec, ...] = HOSTS,
    tick: int = 0,
    anomalies: bool = False,
) -> None:
    for spec in hosts:
        gpus = gpus_for(spec, clock.time(), tick, anomalies)
        store.apply(health(spec.name, clock), Observation(gpus=gpus))


# --- the layers' observations -------------------------------------------------------------------


def _workloads(now: float, source: str, kinds: tuple[WorkloadKind, ...]) -> tuple[Workload, ...]:
    return tuple(
        Workload(
            source=source,
            observed_at=now,
            kind=w.kind,
            id=workload_id(w),
            name=w.name,
            state=w.state,
            host=w.host,
            owner=w.owner,
            gpus=len(w.gpus),
            gpu_uuids=w.gpus,
            flavor=w.flavor,
            runtime_class=w.runtime_class,
            gpu_kind=w.gpu_kind,
            detail=w.detail,
        )
        for w in WORKLOADS
        if w.kind in kinds
    )


def nova_observation(now: float) -> Observation:
    facets = tuple(
        FacetOf(
            host,
            NovaFacet(
                source=NOVA,
                observed_at=now,
                hypervisor_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, host)),
                state=state,
                status=status,
                disabled_reason=reason,
                service_id=str(uuid.uuid5(uuid.NAMESPACE_OID, host)),
                hypervisor_type="QEMU",
                host_ip=f"10.0.0.{11 + i}",
                running_vms=sum(1 for w in WORKLOADS if w.kind == "nova-vm" and w.host == host),
                vcpus=128,
                vcpus_used=16 * (i + 1),
                memory_mb=1_048_576,
                memory_mb_used=131_072 * (i + 1),
            ),
        )
        for i, (host, state, status, reason) in enumerate(NOVA_HOSTS)
    )
    return Observation(facets=facets, workloads=_workloads(now, NOVA, ("nova-vm",)))


def ironic_observation(now: float) -> Observation:
    facets = []
    for n in IRONIC_NODES:
        instance = next((w for w in WORKLOADS if w.kind == "baremetal" and w.name == n.instance), None)
        facets.append(
            FacetOf(
                n.name,
                IronicFacet(
                    source=IRONIC,
                    observed_at=now,
                    node_uuid=str(uuid.uuid5(uuid.NAMESPACE_X500, n.name)),
                    name=n.name,
                    provision_state=n.provision,
                    target_provision_state=n.target,
                    power_state=n.power,
                    maintenance=n.maintenance,
                    maintenance_reason=n.reason,
                    last_error=n.last_error,
                    instance_uuid=workload_id(instance) if instance else None,
                    resource_class=n.resource_class,
                ),
            )
        )
    return Observation(facets=tuple(facets), workloads=_workloads(now, IRONIC, ("baremetal",)))


def kube_observation(now: float) -> Observation:
    facets = tuple(
        FacetOf(
            node,
            KubeFacet(
                source=KUBE,
                observed_at=now,
                node=node,
                ready=ready,
                unschedulable=cordoned,
                kubelet_version="v1.31.4",
                gpu_allocatable=next((h.gpus for h in HOSTS if h.name == node), 0),
                taints=("node.kubernetes.io/unschedulable:NoSchedule",) if cordoned else (),
                labels={"kubernetes.io/hostname": node}
                | ({"katacontainers.io/kata-runtime": "true"} if node.startswith("gpu-") else {}),
            ),
        )
        for node, ready, cordoned in KUBE_NODES
    )
    classes = tuple(
        RuntimeClass(
            source=KUBE,
            observed_at=now,
            name=name,
            handler=name.removeprefix("kata-") if name != "kata-qemu-nvidia-gpu" else name,
            kata=True,
            overhead_cpu=cpu,
            overhead_memory=memory,
            node_selector={"katacontainers.io/kata-runtime": "true"},
        )
        for name, cpu, memory in RUNTIME_CLASSES
    )
    workloads = _workloads(now, KUBE, ("pod", "kata-pod", "kubevirt-vm"))
    return Observation(facets=facets, workloads=workloads, runtime_classes=classes)


def kata_target(node: str) -> str:
    return f"kata:{node}"


def kata_observation(node: str, now: float) -> Observation:
    """kata-monitor on `node`: a sandbox per Kata pod placed there (and a leaked one on
    `LEAKED_ON`), with their CPU and memory overhead."""
    pods = [w for w in WORKLOADS if w.kind == "kata-pod" and w.host == node]
    sandboxes = [
        KataSandbox(
            sandbox_id=uuid.uuid5(uuid.NAMESPACE_OID, f"sandbox/{w.name}").hex,
            pod_uid=workload_id(w),
            pod=w.name,
            namespace=w.owner,
            overhead_cpu_pct=round(1.5 + i * 0.75, 2),
            overhead_memory_bytes=(140 + 20 * i) * 2**20,
        )
        for i, w in enumerate(pods)
    ]
    if node == LEAKED_ON:
        sandboxes.append(
            KataSandbox(
                sandbox_id=uuid.uuid5(uuid.NAMESPACE_OID, "sandbox/leaked").hex,
                pod_uid=str(uuid.uuid5(uuid.NAMESPACE_OID, "gone")),
                overhead_cpu_pct=0.5,
                overhead_memory_bytes=150 * 2**20,
            )
        )
    by_class: dict[str, int] = {}
    for w in pods:
        by_class[w.runtime_class or ""] = by_class.get(w.runtime_class or "", 0) + 1
    facet = KataFacet(
        source=kata_target(node),
        observed_at=now,
        node=node,
        running_shims=len(sandboxes),
        sandboxes=tuple(sandboxes),
        overhead_cpu_pct=round(sum(x.overhead_cpu_pct or 0.0 for x in sandboxes), 2),
        overhead_memory_bytes=sum(x.overhead_memory_bytes or 0 for x in sandboxes),
        pods_by_runtime_class=by_class,
        endpoint=f"http://{node}:8090/metrics",
    )
    return Observation(facets=(FacetOf(node, facet),))


def sysinv_observation(now: float) -> Observation:
    facets = tuple(
        FacetOf(
            host,
            StarlingxFacet(
                source=SYSINV,
                observed_at=now,
                uuid=str(uuid.uuid5(uuid.NAMESPACE_OID, f"stx/{host}")),
                personality=personality,
                administrative=admin,
                operational=oper,
                availability=avail,
                task=task,
                site=SYSTEM,
            ),
        )
        for host, personality, admin, oper, avail, task in STX_HOSTS
    )
    own = Site(
        source=SYSINV,
        observed_at=now,
        name=SYSTEM,
        region="RegionOne",
        availability="online",
        software_version="24.09",
    )
    return Observation(facets=facets, sites=(own,))


def dcmanager_observation(now: float) -> Observation:
    return Observation(
        sites=tuple(
            Site(
                source=DCMANAGER,
                observed_at=now,
                name=name,
                region=f"{name}-region",
                availability=avail,
                management=mgmt,
                deploy_status=deploy,
                sync_status=sync,
                software_version=version,
            )
            for name, avail, mgmt, deploy, sync, version in SUBCLOUDS
        )
    )


def iso(epoch: float) -> str:
    """How fm writes a time: ISO 8601, UTC, no zone."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def fm_observation(now: float) -> Observation:
    alarms = []
    for i, (alarm_id, severity, entity, reason, minutes) in enumerate(ALARMS):
        parts = dict(p.split("=", 1) for p in entity.split(".") if "=" in p)
        alarms.append(
            Alarm(
                source=FM,
                observed_at=now,
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"alarm/{i}")),
                alarm_id=alarm_id,
                severity=severity,
                entity=entity,
                reason=reason,
                timestamp=iso(now - minutes * 60),
                site=parts.get("subcloud", SYSTEM),
                host=parts.get("host"),
            )
        )
    return Observation(alarms=tuple(alarms))


def machine_observation(now: float) -> Observation:
    facet = MachineFacet(
        source=MACHINE,
        observed_at=now,
        cpu_count=32,
        cpu_percent=12.5,
        load_1m=2.5,
        load_5m=2.0,
        load_15m=1.75,
        memory_total_bytes=256 * 2**30,
        memory_used_bytes=96 * 2**30,
        memory_percent=37.5,
        swap_used_bytes=0,
        boot_time=now - 3 * 86400,
        uptime_s=3 * 86400.0,
        disks=(DiskUsage(mountpoint="/", device="/dev/nvme0n1p2", fstype="ext4", total_bytes=2**40,
                         used_bytes=2**38, percent=25.0),),
        nics=(NicCounters(name="eno1", is_up=True, speed_mbps=25000, bytes_sent=2**33, bytes_recv=2**34,
                          errors_in=0, errors_out=0),),
    )  # fmt: skip
    return Observation(facets=(FacetOf("controller-0", facet),))


LAYERS = {
    NOVA: nova_observation,
    IRONIC: ironic_observation,
    KUBE: kube_observation,
    SYSINV: sysinv_observation,
    DCMANAGER: dcmanager_observation,
    FM: fm_observation,
    MACHINE: machine_observation,
}


def fill_layers(store: Store, clock: FakeClock) -> None:
    now = clock.time()
    for target, observe in LAYERS.items():
        endpoint = "localhost" if target == MACHINE else f"cloud:{CLOUD}"
        store.apply(target_health(target, LAYER_TARGETS[target], endpoint, clock), observe(now))
    for node in KATA_NODES:
        health = target_health(kata_target(node), "kata", f"{node}:8090", clock)
        store.apply(health, kata_observation(node, now))


def fill_cluster(store: Store, clock: FakeClock, tick: int = 0) -> None:
    """Every layer, and GPUs with their anomalies."""
    fill(store, clock, tick=tick, anomalies=True)
    fill_layers(store, clock)


async def warm_history(store: Store, clock: FakeClock, history: GpuHistory, samples: int = 61) -> None:
    """`samples` GPU polls `GPU_INTERVAL_S` apart (15 minutes for 61), each observed by `history`
    as the app would; the clock ends at the last poll."""
    for tick in range(samples):
        if tick:
            await clock.advance(GPU_INTERVAL_S)
        fill(store, clock, tick=tick, anomalies=True)
        history.observe(store.snapshot())


def fail_target(store: Store, clock: FakeClock, target: str, error: str) -> None:
    """The target's next poll failed: the store keeps what it reported, marked stale."""
    before = next(h for h in store.snapshot().sources if h.target == target)
    store.set_health(
        SourceHealth(
            target=before.target,
            source=before.source,
            endpoint=before.endpoint,
            interval_s=before.interval_s,
            up=False,
            last_success=before.last_success,
            last_attempt=clock.time(),
            last_error=error,
            last_duration_s=2.0,
            consecutive_failures=before.consecutive_failures + 1,
            polls=before.polls + 1,
            failures=before.failures + 1,
        )
    )


def fail(store: Store, clock: FakeClock, host: str, error: str) -> None:
    """The host's GPU target failed."""
    fail_target(store, clock, target_of(host), error)


DOWN = "gpu-b02"
DOWN_ERROR = f"ssh: connect to {DOWN}:22: connection refused; check that the host is up and sshd runs"


def cluster_store() -> tuple[Store, FakeClock, GpuHistory]:
    """The whole cluster as the snapshot tests show it: 15 minutes of GPU history, every layer,
    one GPU target down (its GPUs stale) and the snapshot 2 s old, so every age on screen is
    stable."""
    clock = FakeClock()
    store = Store(clock)
    history = GpuHistory()
    asyncio.run(warm_history(store, clock, history))
    fill_layers(store, clock)
    asyncio.run(clock.advance(3))
    fail(store, clock, DOWN, DOWN_ERROR)
    store.snapshot()
    asyncio.run(clock.advance(2))
    return store, clock, history
