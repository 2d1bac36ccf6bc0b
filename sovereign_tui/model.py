"""The joined model: immutable, typed values shared by every layer.

Collectors emit *facets* (one source's view of a host) and entities (GPUs, workloads, sites,
alarms); the store joins facets on the host name into `Host` and publishes everything as one
immutable `Snapshot`. Every entity records its `source` and `observed_at` (epoch seconds) and
carries `stale`, set by the store when its source failed or went quiet, so old data is never
passed off as fresh. Fields that a source cannot report are `None` (shown as N/A).

msgspec Structs: frozen, cheap to build, and encoded straight to JSON for the export (the export
schema in `sovereign_tui/schema/export.schema.json` is generated from these types).
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1

WorkloadKind = Literal["nova-vm", "baremetal", "pod", "kata-pod", "kubevirt-vm"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("nova-vm", "baremetal", "pod", "kata-pod", "kubevirt-vm")


class Entity(msgspec.Struct, frozen=True, kw_only=True):
    """Common provenance of every observed entity."""

    source: str
    """Id of the target that observed it (e.g. ``nvml:local``)."""
    observed_at: float
    """Wall-clock time (epoch seconds) of the poll that observed it."""
    stale: bool = False
    """True when the source failed or went quiet since; the values are the last known."""


# --- GPUs --------------------------------------------------------------------------------


class GpuProcess(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    name: str | None = None
    used_memory_mib: float | None = None


class Gpu(Entity, frozen=True, kw_only=True):
    host: str
    index: int
    uuid: str
    name: str | None = None
    bus_id: str | None = None
    memory_total_mib: float | None = None
    memory_used_mib: float | None = None
    util_gpu_pct: float | None = None
    util_memory_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    ecc_uncorrected: int | None = None
    mig_mode: str | None = None
    """"Enabled", "Disabled", or None when the GPU has no MIG."""
    xid_last: int | None = None
    """Last XID error seen on this GPU, None when none seen or unsupported."""
    driver_version: str | None = None
    processes: tuple[GpuProcess, ...] = ()
    holder: str | None = None
    """The workload that holds it (filled by attribution), None when free or unknown."""
    mig_profile: str | None = None
    """MIG profile (e.g. "1g.10gb") when this row is one MIG GPU instance of the GPU `uuid`."""
    mig_instance: int | None = None
    """MIG GPU instance id (dcgm's GPU_I_ID) when this row is one instance of the GPU `uuid`."""
    remapped_rows_uncorrectable: int | None = None
    """Memory rows remapped after uncorrectable errors (dcgm), None when not reported."""

    @property
    def key(self) -> str:
        base = self.uuid or f"{self.host}/{self.index}"
        return base if self.mig_instance is None else f"{base}/gi{self.mig_instance}"


class GpuAllocation(Entity, frozen=True, kw_only=True):
    """One consumer's claim on one GPU's PCI device, as OpenStack Placement records it: a Nova
    PCI-in-Placement device provider, or a libvirt vGPU provider of a physical GPU."""

    hypervisor: str
    """Name of the tree's root provider: the compute node's hypervisor hostname."""
    hypervisor_id: str
    """UUID of the root provider: the compute node's (Nova's hypervisor id from 2.53)."""
    bus_id: str
    """PCI address of the device, normalised (``0000:18:00.0``, lower case)."""
    provider: str
    """UUID of the device's resource provider."""
    consumer: str
    """The consumer: a Nova server's id, or a migration's while the server moves."""
    consumer_type: str | None = None
    """Placement's consumer type (``INSTANCE``, ``MIGRATION``; from 1.38), None when unknown."""
    resource_class: str
    """``CUSTOM_PCI_<vendor>_<product>`` (or the operator's class) for a whole device, ``VGPU``."""
    amount: int = 1


# --- Host facets: one layer's view of a physical host --------------------------------------


class MachineFacet(Entity, frozen=True, kw_only=True):
    """The machine the app runs on, from psutil."""

    cpu_count: int
    cpu_percent: float
    load_1m: float
    load_5m: float
    load_15m: float
    memory_total_bytes: int
    memory_used_bytes: int
    memory_percent: float
    swap_used_bytes: int
    boot_time: float
    uptime_s: float
    disks: tuple[DiskUsage, ...] = ()
    nics: tuple[NicCounters, ...] = ()


class DiskUsage(msgspec.Struct, frozen=True, kw_only=True):
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    percent: float


class NicCounters(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    is_up: bool
    speed_mbps: int
    bytes_sent: int
    bytes_recv: int
    errors_in: int
    errors_out: int


class NovaFacet(Entity, frozen=True, kw_only=True):
    """Nova's hypervisor and compute service for the host."""

    hypervisor_id: str
    state: str
    """up | down"""
    status: str
    """enabled | disabled"""
    disabled_reason: str | None = None
    service_id: str | None = None
    hypervisor_type: str | None = None
    host_ip: str | None = None
    running_vms: int | None = None
    vcpus: int | None = None
    vcpus_used: int | None = None
    memory_mb: int | None = None
    memory_mb_used: int | None = None


class IronicFacet(Entity, frozen=True, kw_only=True):
    node_uuid: str
    name: str | None = None
    provision_state: str
    power_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    last_error: str | None = None
    instance_uuid: str | None = None
    resource_class: str | None = None
    target_provision_state: str | None = None


class KubeFacet(Entity, frozen=True, kw_only=True):
    node: str
    ready: bool
    unschedulable: bool = False
    kubelet_version: str | None = None
    gpu_allocatable: int = 0
    taints: tuple[str, ...] = ()
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    internal_ip: str | None = None
    """The node's InternalIP address (where its node agents, e.g. kata-monitor, listen)."""


class StarlingxFacet(Entity, frozen=True, kw_only=True):
    uuid: str
    personality: str
    administrative: str
    operational: str
    availability: str
    task: str | None = None
    site: str | None = None


class KataSandbox(msgspec.Struct, frozen=True, kw_only=True):
    """One Kata sandbox (the VM of one Kata pod) as kata-monitor reports it."""

    sandbox_id: str
    pod_uid: str | None = None
    """The pod's uid (kata-monitor's ``cri_uid``): the `Workload.id` of its kata-pod."""
    pod: str | None = None
    namespace: str | None = None
    overhead_cpu_pct: float | None = None
    """The shim's CPU overhead in percent of one CPU (``kata_shim_pod_overhead_cpu``)."""
    overhead_memory_bytes: int | None = None
    """The shim's memory overhead (``kata_shim_pod_overhead_memory_in_bytes``)."""


class KataFacet(Entity, frozen=True, kw_only=True):
    """A Kubernetes node's Kata sandboxes: kata-monitor's view, and the API's Kata pods there."""

    node: str
    running_shims: int | None = None
    """``kata_monitor_running_shim_count``: Kata sandboxes running on the node."""
    sandboxes: tuple[KataSandbox, ...] = ()
    overhead_cpu_pct: float | None = None
    """Sum of the sandboxes' CPU overhead (percent of one CPU)."""
    overhead_memory_bytes: int | None = None
    """Sum of the sandboxes' memory overhead."""
    pods_by_runtime_class: dict[str, int] = msgspec.field(default_factory=dict)
    """Kata pods the Kubernetes API places on the node (not finished), per runtime class."""
    endpoint: str | None = None
    """The kata-monitor URL scraped."""


HostFacet = MachineFacet | NovaFacet | IronicFacet | KubeFacet | StarlingxFacet | KataFacet


class FacetOf(msgspec.Struct, frozen=True):
    """A facet tagged with the host it belongs to, as collectors emit it."""

    host: str
    facet: MachineFacet | NovaFacet | IronicFacet | KubeFacet | StarlingxFacet | KataFacet


class Host(msgspec.Struct, frozen=True, kw_only=True):
    """One physical host, joined across every layer by name."""

    name: str
    site: str | None = None
    stale: bool = False
    """True when every facet that describes it is stale."""
    machine: MachineFacet | None = None
    nova: NovaFacet | None = None
    ironic: IronicFacet | None = None
    kubernetes: KubeFacet | None = None
    starlingx: StarlingxFacet | None = None
    kata: KataFacet | None = None
    gpu_count: int = 0
    gpus_busy: int = 0
    workload_count: int = 0


# --- Workloads, sites, alarms ---------------------------------------------------------------


class Workload(Entity, frozen=True, kw_only=True):
    kind: WorkloadKind
    id: str
    name: str
    state: str
    host: str | None = None
    owner: str | None = None
    """Project (Nova), namespace (Kubernetes) or instance owner (Ironic)."""
    gpus: int = 0
    gpu_uuids: tuple[str, ...] = ()
    flavor: str | None = None
    runtime_class: str | None = None
    gpu_kind: str | None = None
    """"passthrough", "vgpu" or None, from the flavor or the pod's resource request."""
    detail: dict[str, str] = msgspec.field(default_factory=dict)


class RuntimeClass(Entity, frozen=True, kw_only=True):
    """A Kubernetes RuntimeClass (``node.k8s.io/v1``)."""

    name: str
    handler: str
    kata: bool = False
    """A Kata (VM-isolated) class: named or handled ``kata*``."""
    overhead_cpu: str | None = None
    """``overhead.podFixed.cpu``: what every pod of the class costs on top of its requests."""
    overhead_memory: str | None = None
    """``overhead.podFixed.memory``."""
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)


class DisruptionBudget(Entity, frozen=True, kw_only=True):
    """A PodDisruptionBudget (``policy/v1``) and the disruption controller's status of it."""

    namespace: str
    name: str
    min_available: str | None = None
    max_unavailable: str | None = None
    selector: dict[str, str] = msgspec.field(default_factory=dict)
    """``spec.selector.matchLabels`` (expressions are not shown)."""
    current_healthy: int | None = None
    desired_healthy: int | None = None
    disruptions_allowed: int | None = None
    expected_pods: int | None = None


class Site(Entity, frozen=True, kw_only=True):
    name: str
    region: str | None = None
    management: str | None = None
    availability: str | None = None
    deploy_status: str | None = None
    sync_status: str | None = None
    software_version: str | None = None


class Alarm(Entity, frozen=True, kw_only=True):
    id: str
    alarm_id: str
    severity: str
    entity: str
    reason: str
    timestamp: str
    site: str | None = None
    host: str | None = None


# --- Health and operations ------------------------------------------------------------------


class SourceHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Health of one poll target, as the poller records it."""

    target: str
    source: str
    endpoint: str
    interval_s: float
    up: bool | None = None
    """None until the first poll finishes."""
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    last_duration_s: float | None = None
    consecutive_failures: int = 0
    polls: int = 0
    failures: int = 0
    detail: dict[str, str] = msgspec.field(default_factory=dict)
    """What the source says of its own state (e.g. a Kubernetes watch: connected, events,
    relists), from its last successful poll."""


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    target: str
    operator: str
    state: str
    started_at: float
    step: int = 0
    steps: int = 0
    message: str | None = None


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything known at one generation. Never mutated: a new poll makes a new one."""

    schema_version: int = SCHEMA_VERSION
    generation: int
    taken_at: float
    hosts: tuple[Host, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    workloads: tuple[Workload, ...] = ()
    sites: tuple[Site, ...] = ()
    alarms: tuple[Alarm, ...] = ()
    sources: tuple[SourceHealth, ...] = ()
    operations: tuple[Operation, ...] = ()
    runtime_classes: tuple[RuntimeClass, ...] = ()
    budgets: tuple[DisruptionBudget, ...] = ()
    gpu_allocations: tuple[GpuAllocation, ...] = ()


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What one successful poll of one target returns: its complete current view.

    A target's new observation replaces its previous one wholesale, so an entity that
    disappears from the source disappears from the snapshot.
    """

    gpus: tuple[Gpu, ...] = ()
    facets: tuple[FacetOf, ...] = ()
    workloads: tuple[Workload, ...] = ()
    sites: tuple[Site, ...] = ()
    alarms: tuple[Alarm, ...] = ()
    runtime_classes: tuple[RuntimeClass, ...] = ()
    budgets: tuple[DisruptionBudget, ...] = ()
    gpu_allocations: tuple[GpuAllocation, ...] = ()
    health_detail: dict[str, str] = msgspec.field(default_factory=dict)
    """The source's own state, published as `SourceHealth.detail`."""


EMPTY_SNAPSHOT = Snapshot(generation=0, taken_at=0.0)
