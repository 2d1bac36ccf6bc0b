"""A snapshot in the Prometheus text exposition format (0.0.4), for ``export --format prometheus``
and the daemon's ``/metrics``: so fleets that already run Prometheus or Thanos can scrape it.

Series follow Prometheus' conventions: base units (bytes, seconds, ratios 0-1), ``_total`` only
on counters, identifying facts as ``*_info`` series of value 1, and absent values (N/A) left out
rather than written as zero. Label values are escaped (backslash, quote, newline), and so are
``# HELP`` texts. Families are written in a fixed order, each with its HELP and TYPE once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from sovereign_tui.model import Gpu, Host, Snapshot, SourceHealth, Workload
from sovereign_tui.promtext import escape_label_value

Labels = tuple[tuple[str, str], ...]
MIB = 1024 * 1024

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families:
    def __init__(self) -> None:
        self._order: list[str] = []
        self._meta: dict[str, tuple[str, str]] = {}
        self._samples: dict[str, list[tuple[Labels, float]]] = {}

    def add(self, name: str, kind: str, help_text: str, labels: Labels, value: float | None) -> None:
        if value is None:
            return
        if name not in self._meta:
            self._order.append(name)
            self._meta[name] = (kind, help_text)
            self._samples[name] = []
        self._samples[name].append((labels, float(value)))

    def render(self) -> str:
        out: list[str] = []
        for name in self._order:
            kind, help_text = self._meta[name]
            out.append(f"# HELP {name} {escape_help(help_text)}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in self._samples[name]:
                out.append(f"{name}{format_labels(labels)} {format_value(value)}")
        return "\n".join(out) + "\n" if out else ""


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels) + "}"


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _flag(value: bool | None) -> float | None:
    return None if value is None else (1.0 if value else 0.0)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# (suffix, type, help, getter) for the numeric series of one kind of entity.
Field = tuple[str, str, str, Callable[[Any], float | None]]

_GPU_FIELDS: tuple[Field, ...] = (
    ("utilization_ratio", "gauge", "GPU compute utilisation (0-1).", lambda g: _scaled(g.util_gpu_pct, 0.01)),
    (
        "memory_utilization_ratio",
        "gauge",
        "GPU memory bandwidth utilisation (0-1).",
        lambda g: _scaled(g.util_memory_pct, 0.01),
    ),
    ("memory_total_bytes", "gauge", "GPU memory size.", lambda g: _scaled(g.memory_total_mib, MIB)),
    ("memory_used_bytes", "gauge", "GPU memory in use.", lambda g: _scaled(g.memory_used_mib, MIB)),
    ("temperature_celsius", "gauge", "GPU temperature.", lambda g: g.temperature_c),
    ("power_watts", "gauge", "GPU power draw.", lambda g: g.power_w),
    ("power_limit_watts", "gauge", "GPU power limit.", lambda g: g.power_limit_w),
    (
        "ecc_uncorrected_errors",
        "gauge",
        "Uncorrected ECC errors the driver reports.",
        lambda g: g.ecc_uncorrected,
    ),
    (
        "remapped_rows_uncorrectable",
        "gauge",
        "Memory rows remapped after uncorrectable errors.",
        lambda g: g.remapped_rows_uncorrectable,
    ),
    ("xid_last", "gauge", "Last XID error seen on the GPU.", lambda g: g.xid_last),
    ("processes", "gauge", "Processes running on the GPU.", lambda g: len(g.processes)),
    (
        "stale",
        "gauge",
        "1 when the GPU's source failed or went quiet (values are the last known).",
        lambda g: _flag(g.stale),
    ),
    ("observed_timestamp_seconds", "gauge", "When the GPU was last observed.", lambda g: g.observed_at),
)

_SOURCE_FIELDS: tuple[Field, ...] = (
    (
        "up",
        "gauge",
        "1 when the source's last poll succeeded (absent before the first).",
        lambda h: _flag(h.up),
    ),
    ("interval_seconds", "gauge", "The source's poll interval.", lambda h: h.interval_s),
    (
        "last_success_timestamp_seconds",
        "gauge",
        "When a poll of the source last succeeded.",
        lambda h: h.last_success,
    ),
    (
        "last_poll_duration_seconds",
        "gauge",
        "How long the source's last poll took.",
        lambda h: h.last_duration_s,
    ),
    (
        "consecutive_failures",
        "gauge",
        "Failed polls of the source since its last success.",
        lambda h: h.consecutive_failures,
    ),
    ("polls_total", "counter", "Polls of the source.", lambda h: h.polls),
    ("failures_total", "counter", "Failed polls of the source.", lambda h: h.failures),
)

_HOST_FIELDS: tuple[Field, ...] = (
    ("stale", "gauge", "1 when every source that describes the host is stale.", lambda h: _flag(h.stale)),
    ("gpus", "gauge", "GPUs seen on the host.", lambda h: h.gpu_count),
    ("gpus_busy", "gauge", "GPUs of the host that are in use.", lambda h: h.gpus_busy),
    ("workloads", "gauge", "Workloads placed on the host.", lambda h: h.workload_count),
)

_MACHINE_FIELDS: tuple[Field, ...] = (
    ("cpus", "gauge", "Logical CPUs of the machine.", lambda m: m.cpu_count),
    (
        "cpu_utilization_ratio",
        "gauge",
        "CPU utilisation of the machine (0-1).",
        lambda m: m.cpu_percent / 100,
    ),
    ("load1", "gauge", "1-minute load average.", lambda m: m.load_1m),
    ("load5", "gauge", "5-minute load average.", lambda m: m.load_5m),
    ("load15", "gauge", "15-minute load average.", lambda m: m.load_15m),
    ("memory_total_bytes", "gauge", "Memory of the machine.", lambda m: m.memory_total_bytes),
    ("memory_used_bytes", "gauge", "Memory in use on the machine.", lambda m: m.memory_used_bytes),
    ("swap_used_bytes", "gauge", "Swap in use on the machine.", lambda m: m.swap_used_bytes),
    ("boot_time_seconds", "gauge", "When the machine booted.", lambda m: m.boot_time),
)

_NOVA_FIELDS: tuple[Field, ...] = (
    ("up", "gauge", "1 when Nova reports the compute service up.", lambda n: _flag(n.state == "up")),
    (
        "enabled",
        "gauge",
        "1 when the compute service is enabled for scheduling.",
        lambda n: _flag(n.status == "enabled"),
    ),
    ("running_vms", "gauge", "VMs running on the hypervisor.", lambda n: n.running_vms),
    ("vcpus", "gauge", "vCPUs of the hypervisor.", lambda n: n.vcpus),
    ("vcpus_used", "gauge", "vCPUs in use on the hypervisor.", lambda n: n.vcpus_used),
    ("memory_bytes", "gauge", "Memory of the hypervisor.", lambda n: _scaled(n.memory_mb, MIB)),
    (
        "memory_used_bytes",
        "gauge",
        "Memory in use on the hypervisor.",
        lambda n: _scaled(n.memory_mb_used, MIB),
    ),
)


def _gpu_labels(g: Gpu) -> Labels:
    labels: Labels = (("host", g.host), ("gpu", str(g.index)), ("uuid", g.uuid))
    if g.mig_instance is not None:
        labels += (("gpu_instance", str(g.mig_instance)),)
    return labels


def _fields(fam: _Families, prefix: str, fields: Iterable[Field], labels: Labels, item: object) -> None:
    for suffix, kind, help_text, get in fields:
        fam.add(f"{prefix}_{suffix}", kind, help_text, labels, get(item))


def _sources(fam: _Families, sources: Iterable[SourceHealth]) -> None:
    for h in sources:
        labels: Labels = (("target", h.target), ("source", h.source), ("endpoint", h.endpoint))
        _fields(fam, "sovereign_source", _SOURCE_FIELDS, labels, h)


def _gpus(fam: _Families, gpus: Iterable[Gpu], idle: Callable[[Gpu], bool] | None) -> None:
    for g in gpus:
        labels = _gpu_labels(g)
        info = (
            *labels,
            ("name", _s(g.name)),
            ("bus_id", _s(g.bus_id)),
            ("driver_version", _s(g.driver_version)),
            ("mig_mode", _s(g.mig_mode)),
            ("mig_profile", _s(g.mig_profile)),
            ("holder", _s(g.holder)),
            ("source", g.source),
        )
        fam.add("sovereign_gpu_info", "gauge", "A GPU and what describes it (value 1).", info, 1)
        _fields(fam, "sovereign_gpu", _GPU_FIELDS, labels, g)
        if idle is not None:
            fam.add(
                "sovereign_gpu_idle_allocated",
                "gauge",
                "1 when a workload holds the GPU and it stayed under the idle threshold for the idle window.",
                labels,
                1.0 if idle(g) else 0.0,
            )


def _hosts(fam: _Families, hosts: Iterable[Host]) -> None:
    for h in hosts:
        labels: Labels = (("host", h.name),)
        fam.add(
            "sovereign_host_info",
            "gauge",
            "A host joined across the layers (value 1).",
            (*labels, ("site", _s(h.site))),
            1,
        )
        _fields(fam, "sovereign_host", _HOST_FIELDS, labels, h)
        if (m := h.machine) is not None:
            _fields(fam, "sovereign_machine", _MACHINE_FIELDS, labels, m)
            for d in m.disks:
                disk = (*labels, ("mountpoint", d.mountpoint), ("device", d.device), ("fstype", d.fstype))
                fam.add(
                    "sovereign_machine_filesystem_size_bytes",
                    "gauge",
                    "Size of a filesystem.",
                    disk,
                    d.total_bytes,
                )
                fam.add(
                    "sovereign_machine_filesystem_used_bytes",
                    "gauge",
                    "Space used on a filesystem.",
                    disk,
                    d.used_bytes,
                )
            for n in m.nics:
                nic = (*labels, ("interface", n.name))
                fam.add(
                    "sovereign_machine_network_up",
                    "gauge",
                    "1 when the interface is up.",
                    nic,
                    _flag(n.is_up),
                )
                fam.add(
                    "sovereign_machine_network_receive_bytes_total",
                    "counter",
                    "Bytes received.",
                    nic,
                    n.bytes_recv,
                )
                fam.add(
                    "sovereign_machine_network_transmit_bytes_total",
                    "counter",
                    "Bytes sent.",
                    nic,
                    n.bytes_sent,
                )
                fam.add(
                    "sovereign_machine_network_receive_errors_total",
                    "counter",
                    "Receive errors.",
                    nic,
                    n.errors_in,
                )
                fam.add(
                    "sovereign_machine_network_transmit_errors_total",
                    "counter",
                    "Transmit errors.",
                    nic,
                    n.errors_out,
                )
        if (nova := h.nova) is not None:
            info = (
                *labels,
                ("hypervisor_id", nova.hypervisor_id),
                ("hypervisor_type", _s(nova.hypervisor_type)),
                ("state", nova.state),
                ("status", nova.status),
            )
            fam.add(
                "sovereign_nova_compute_info",
                "gauge",
                "Nova's compute service on the host (value 1).",
                info,
                1,
            )
            _fields(fam, "sovereign_nova_compute", _NOVA_FIELDS, labels, nova)
        if (ironic := h.ironic) is not None:
            info = (
                *labels,
                ("node_uuid", ironic.node_uuid),
                ("provision_state", ironic.provision_state),
                ("power_state", _s(ironic.power_state)),
                ("resource_class", _s(ironic.resource_class)),
            )
            fam.add("sovereign_ironic_node_info", "gauge", "Ironic's node for the host (value 1).", info, 1)
            fam.add(
                "sovereign_ironic_node_maintenance",
                "gauge",
                "1 when the node is in maintenance.",
                labels,
                _flag(ironic.maintenance),
            )
        if (kube := h.kubernetes) is not None:
            node = (*labels, ("node", kube.node))
            fam.add(
                "sovereign_kubernetes_node_ready",
                "gauge",
                "1 when the node is Ready.",
                node,
                _flag(kube.ready),
            )
            fam.add(
                "sovereign_kubernetes_node_unschedulable",
                "gauge",
                "1 when the node is cordoned.",
                node,
                _flag(kube.unschedulable),
            )
            fam.add(
                "sovereign_kubernetes_node_gpu_allocatable",
                "gauge",
                "GPUs the node can allocate.",
                node,
                kube.gpu_allocatable,
            )
        if (stx := h.starlingx) is not None:
            info = (
                *labels,
                ("personality", stx.personality),
                ("administrative", stx.administrative),
                ("operational", stx.operational),
                ("availability", stx.availability),
                ("site", _s(stx.site)),
            )
            fam.add(
                "sovereign_starlingx_host_info", "gauge", "StarlingX's view of the host (value 1).", info, 1
            )


def _workloads(fam: _Families, workloads: Iterable[Workload]) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for w in workloads:
        counts[(w.kind, w.state)] += 1
        labels: Labels = (("kind", w.kind), ("id", w.id))
        info = (
            *labels,
            ("name", w.name),
            ("state", w.state),
            ("host", _s(w.host)),
            ("owner", _s(w.owner)),
            ("flavor", _s(w.flavor)),
            ("runtime_class", _s(w.runtime_class)),
            ("gpu_kind", _s(w.gpu_kind)),
        )
        fam.add("sovereign_workload_info", "gauge", "A workload and where it runs (value 1).", info, 1)
        fam.add("sovereign_workload_gpus", "gauge", "GPUs the workload holds.", labels, w.gpus)
    for (kind, state), count in sorted(counts.items()):
        fam.add(
            "sovereign_workloads",
            "gauge",
            "Workloads by kind and state.",
            (("kind", kind), ("state", state)),
            count,
        )


def to_text(snapshot: Snapshot, idle: Callable[[Gpu], bool] | None = None) -> str:
    """The whole snapshot as exposition text (ends with a newline). `idle` (the GPU history's
    `idle_allocated`, where there is one: the daemon) adds ``sovereign_gpu_idle_allocated``."""
    fam = _Families()
    fam.add(
        "sovereign_snapshot_generation",
        "gauge",
        "Generation of the snapshot exported.",
        (),
        snapshot.generation,
    )
    fam.add(
        "sovereign_snapshot_timestamp_seconds", "gauge", "When the snapshot was taken.", (), snapshot.taken_at
    )
    _sources(fam, snapshot.sources)
    _gpus(fam, snapshot.gpus, idle)
    _hosts(fam, snapshot.hosts)
    _workloads(fam, snapshot.workloads)
    for s in snapshot.sites:
        info: Labels = (
            ("site", s.name),
            ("region", _s(s.region)),
            ("management", _s(s.management)),
            ("availability", _s(s.availability)),
            ("deploy_status", _s(s.deploy_status)),
            ("sync_status", _s(s.sync_status)),
            ("software_version", _s(s.software_version)),
        )
        fam.add("sovereign_site_info", "gauge", "A site (subcloud) and its state (value 1).", info, 1)
    alarms = Counter((_s(a.site), a.severity) for a in snapshot.alarms)
    for (site, severity), count in sorted(alarms.items()):
        fam.add(
            "sovereign_alarms",
            "gauge",
            "Active alarms by site and severity.",
            (("site", site), ("severity", severity)),
            count,
        )
    operations = Counter((o.kind, o.state) for o in snapshot.operations)
    for (kind, state), count in sorted(operations.items()):
        fam.add(
            "sovereign_operations",
            "gauge",
            "Operations by kind and state.",
            (("kind", kind), ("state", state)),
            count,
        )
    return fam.render()
