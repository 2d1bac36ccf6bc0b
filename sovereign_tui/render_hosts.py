"""Hosts across the layers: the joined table, every layer's view of one host, and Ironic's nodes.

A layer cell says what is off and leaves out what is as it should be: Nova "up" (enabled), "up
disabled", "DOWN"; StarlingX "available" (unlocked, enabled), "locked disabled online". The
detail line and the host's own screen spell out every field. A facet whose source stopped
answering ends in `~`; a layer that does not know the host shows N/A.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sovereign_tui.model import (
    Host,
    IronicFacet,
    KataFacet,
    KubeFacet,
    MachineFacet,
    NovaFacet,
    StarlingxFacet,
)
from sovereign_tui.render import (
    NA,
    NONE,
    fmt_age,
    fmt_bytes,
    fmt_when,
    one_line,
    stale_mark,
    yes_no,
)
from sovereign_tui.table import Column, Grouping, RowState, TableSpec

# --- one cell per layer -------------------------------------------------------------------------


def nova_text(f: NovaFacet | None) -> str:
    if f is None:
        return NA
    words = ["up" if f.state == "up" else f.state.upper()]
    if f.status != "enabled":
        words.append(f.status)
    return stale_mark(" ".join(words), f.stale)


def power_text(power_state: str | None) -> str:
    """ "power on" -> "on"; N/A when Ironic does not know."""
    return NA if power_state is None else power_state.removeprefix("power ")


def provision_text(f: IronicFacet) -> str:
    """ "deploying→active" while it moves, the state alone when it rests."""
    target = f"→{f.target_provision_state}" if f.target_provision_state else ""
    return f"{f.provision_state}{target}"


def ironic_text(f: IronicFacet | None) -> str:
    """Maintenance first (it blocks everything), then the provision and power states."""
    if f is None:
        return NA
    words = ["MAINT"] if f.maintenance else []
    words += [provision_text(f), power_text(f.power_state)]
    return stale_mark(" ".join(words), f.stale)


def kube_text(f: KubeFacet | None) -> str:
    if f is None:
        return NA
    words = ["Ready" if f.ready else "NotReady"]
    if f.unschedulable:
        words.append("cordoned")
    return stale_mark(" ".join(words), f.stale)


def starlingx_text(f: StarlingxFacet | None) -> str:
    """ "locked" first when locked, then the availability, then "disabled" when an unlocked host
    is not enabled, then the task in progress: "available", "locked online", "failed disabled"."""
    if f is None:
        return NA
    words = [f.administrative] if f.administrative != "unlocked" else []
    words.append(f.availability)
    if f.administrative == "unlocked" and f.operational != "enabled":
        words.append(f.operational)
    if f.task:
        words.append(f.task)
    return stale_mark(" ".join(words), f.stale)


def ironic_trouble(f: IronicFacet) -> bool:
    state = f.provision_state.casefold()
    return f.maintenance or "fail" in state or state == "error"


def starlingx_trouble(f: StarlingxFacet) -> bool:
    if f.administrative == "locked":
        return False  # locked on purpose: out of service, not failing
    return f.operational != "enabled" or f.availability in {"failed", "degraded", "offline", "power-off"}


def host_trouble(h: Host) -> bool:
    """Some layer reports it unwell: Nova down, Ironic failed or in maintenance, Kubernetes not
    ready, StarlingX failing while unlocked."""
    return (
        (h.nova is not None and h.nova.state != "up")
        or (h.ironic is not None and ironic_trouble(h.ironic))
        or (h.kubernetes is not None and not h.kubernetes.ready)
        or (h.starlingx is not None and starlingx_trouble(h.starlingx))
    )


def host_state(h: Host) -> RowState:
    if h.stale:
        return RowState.STALE
    return RowState.ALERT if host_trouble(h) else RowState.NORMAL


def gpus_text(h: Host) -> str:
    """Busy of total: "3/4"; "-" for a host without GPUs."""
    return f"{h.gpus_busy}/{h.gpu_count}" if h.gpu_count else NONE


def host_detail(h: Host) -> str:
    """Every layer's state of the host in full, for the line under the table."""
    parts = [h.name + (f" · site {h.site}" if h.site else "")]
    nova = h.nova
    if nova is not None:
        reason = f" ({one_line(nova.disabled_reason)})" if nova.disabled_reason else ""
        parts.append(f"Nova {nova.state}/{nova.status}{reason}")
    ironic = h.ironic
    if ironic is not None:
        maint = f", maintenance: {one_line(ironic.maintenance_reason)}" if ironic.maintenance else ""
        parts.append(f"Ironic {provision_text(ironic)}, power {power_text(ironic.power_state)}{maint}")
    kube = h.kubernetes
    if kube is not None:
        parts.append(
            f"Kubernetes {'Ready' if kube.ready else 'NotReady'}"
            + (", cordoned" if kube.unschedulable else "")
        )
    stx = h.starlingx
    if stx is not None:
        task = f" ({stx.task})" if stx.task else ""
        parts.append(f"StarlingX {stx.administrative}/{stx.operational}/{stx.availability}{task}")
    layers = [nova, ironic, kube, stx]
    names = ("Nova", "Ironic", "Kubernetes", "StarlingX")
    unknown = [name for name, f in zip(names, layers, strict=True) if f is None]
    parts.append(f"{h.gpus_busy}/{h.gpu_count} GPUs busy · {h.workload_count} workloads")
    if unknown:
        parts.append("not known to " + ", ".join(unknown))
    stale = [f.source for f in (*layers, h.machine) if f is not None and f.stale]
    if stale:
        parts.append("STALE from " + ", ".join(stale))
    return " · ".join(parts)  # fmt: skip


HOST_TABLE: TableSpec[Host] = TableSpec(
    name="Hosts",
    columns=(
        Column("host", "Host", lambda h, _: h.name, 32, 8),
        Column("site", "Site", lambda h, _: h.site or NONE, 20, 4, optional=True),
        Column("nova", "Nova", lambda h, _: nova_text(h.nova), 16, 4),
        Column("ironic", "Ironic", lambda h, _: ironic_text(h.ironic), 32, 6),
        Column("kube", "Kube", lambda h, _: kube_text(h.kubernetes), 16, 5),
        Column("starlingx", "StarlingX", lambda h, _: starlingx_text(h.starlingx), 32, 9),
        Column("gpus", "GPUs", lambda h, _: gpus_text(h), 5, align="right",
               sort_key=lambda h: (h.gpus_busy, h.gpu_count) if h.gpu_count else None),
        Column("work", "Work", lambda h, _: str(h.workload_count), 4, align="right",
               sort_key=lambda h: h.workload_count),
    ),
    row_key=lambda h: h.name,
    row_state=host_state,
    detail=lambda h, _: host_detail(h),
    groupings=(
        Grouping("site", "site", lambda h: h.site or "no site",
                 lambda name, hosts: f"{name}: {len(hosts)} hosts · "
                 f"{sum(1 for h in hosts if host_trouble(h))} need attention · "
                 f"{sum(h.gpus_busy for h in hosts)}/{sum(h.gpu_count for h in hosts)} GPUs busy · "
                 f"{sum(h.workload_count for h in hosts)} workloads"),
    ),
)  # fmt: skip


# --- every layer's view of one host -------------------------------------------------------------

LAYERS: tuple[tuple[str, str, str], ...] = (
    ("machine", "Machine", "not the machine this console runs on"),
    ("nova", "Nova", "not a Nova hypervisor"),
    ("ironic", "Ironic", "not an Ironic node"),
    ("kubernetes", "Kubernetes", "not a Kubernetes node"),
    ("starlingx", "StarlingX", "not a StarlingX host"),
    ("kata", "Kata", "no kata-monitor read here"),
)
"""(Host attribute, layer name, what it means that the layer does not know the host), in the
order the host's screen lists them."""

_PROVENANCE = frozenset({"source", "observed_at", "stale"})
_MANY = frozenset({"disks", "nics", "labels", "sandboxes", "pods_by_runtime_class"})
"""Fields holding several values: a row each (`_extra_rows`)."""
_LABELS = {
    "memory_mb": "memory",
    "memory_mb_used": "memory used",
    "host_ip": "host IP",
    "uptime_s": "uptime",
    "boot_time": "booted",
    "load_1m": "load 1 min",
    "load_5m": "load 5 min",
    "load_15m": "load 15 min",
}
"""Field names that read badly once the underscores go (units the value already shows)."""


@dataclass(frozen=True, slots=True)
class FacetField:
    """One field of one layer's view of a host."""

    layer: str
    field: str
    value: str
    stale: bool = False
    known: bool = True
    """False on the row that says the layer does not know the host."""


def _value(name: str, value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return yes_no(value)
    if name.endswith("_bytes"):
        return fmt_bytes(value)
    if name in {"memory_mb", "memory_mb_used"}:
        return fmt_bytes(value * 1024 * 1024)
    if name.endswith(("percent", "_pct")):
        return f"{value:.1f}%"
    if name.startswith("load_"):
        return f"{value:.2f}"
    if name == "uptime_s":
        return fmt_age(value)
    if name == "boot_time":
        return fmt_when(value)
    if isinstance(value, tuple):
        return ", ".join(one_line(str(v)) for v in value) or "none"
    return one_line(str(value))


def _extra_rows(layer: str, facet: Any, stale: bool) -> list[FacetField]:
    """Rows for the fields that hold several values: disks, NICs, labels."""
    rows = []
    if isinstance(facet, MachineFacet):
        for d in facet.disks:
            used = f"{fmt_bytes(d.used_bytes)} of {fmt_bytes(d.total_bytes)} ({d.percent:.0f}%)"
            rows.append(FacetField(layer, f"disk {d.mountpoint}", f"{used} · {d.device} {d.fstype}", stale))
        for n in facet.nics:
            text = (
                f"{'up' if n.is_up else 'DOWN'} · {n.speed_mbps} Mb/s · sent {fmt_bytes(n.bytes_sent)} · "
                f"received {fmt_bytes(n.bytes_recv)} · errors {n.errors_in} in, {n.errors_out} out"
            )
            rows.append(FacetField(layer, f"nic {n.name}", text, stale))
    if isinstance(facet, KubeFacet):
        for key, value in sorted(facet.labels.items()):
            rows.append(FacetField(layer, f"label {key}", one_line(value) or '""', stale))
    if isinstance(facet, KataFacet):
        for name, count in sorted(facet.pods_by_runtime_class.items()):
            rows.append(FacetField(layer, f"pods {name}", str(count), stale))
        for s in facet.sandboxes:
            pod = f"{s.namespace}/{s.pod}" if s.namespace and s.pod else (s.pod or NA)
            cpu = NA if s.overhead_cpu_pct is None else f"{s.overhead_cpu_pct:.1f}%"
            text = f"pod {one_line(pod)} · overhead {cpu} CPU, {fmt_bytes(s.overhead_memory_bytes)}"
            rows.append(FacetField(layer, f"sandbox {s.sandbox_id[:12]}", text, stale))
    return rows


def facet_fields(h: Host, now: float) -> tuple[FacetField, ...]:
    """Every field of every layer's view of `h`, in layer order; one N/A row for a layer that does
    not know it; each layer's source and age last."""
    rows: list[FacetField] = []
    for attr, layer, unknown in LAYERS:
        facet = getattr(h, attr)
        if facet is None:
            rows.append(FacetField(layer, NONE, f"{NA}: {unknown}", known=False))
            continue
        stale = bool(facet.stale)
        for f in msgspec.structs.fields(facet):
            if f.name in _PROVENANCE or f.name in _MANY:
                continue
            rows.append(
                FacetField(layer, f.name.replace("_", " "), _value(f.name, getattr(facet, f.name)), stale)
            )
        rows.extend(_extra_rows(layer, facet, stale))
        source = f"{facet.source} · observed {fmt_age(now - facet.observed_at)} ago"
        rows.append(
            FacetField(layer, "source", source + (" · STALE: last known values" if stale else ""), stale)
        )
    return tuple(rows)  # fmt: skip


FACET_TABLE: TableSpec[FacetField] = TableSpec(
    name="Layers",
    columns=(
        Column("layer", "Layer", lambda f, _: f.layer, 10),
        Column("field", "Field", lambda f, _: f.field, 40, 10),
        Column("value", "Value", lambda f, _: f.value, 200, 12),
    ),
    row_key=lambda f: f"{f.layer}/{f.field}",
    row_state=lambda f: RowState.STALE if f.stale else RowState.NORMAL,
    detail=lambda f, _: f"{f.layer} {f.field}: {f.value}" if f.known else f"{f.layer}: {f.value}",
)


# --- Ironic nodes -------------------------------------------------------------------------------


def node_name(f: IronicFacet) -> str:
    return f.name or f.node_uuid


def ironic_state(f: IronicFacet) -> RowState:
    if f.stale:
        return RowState.STALE
    return RowState.ALERT if ironic_trouble(f) or f.last_error else RowState.NORMAL


def maintenance_text(f: IronicFacet) -> str:
    if not f.maintenance:
        return NONE
    return f"yes: {one_line(f.maintenance_reason)}" if f.maintenance_reason else "yes"


def node_detail(f: IronicFacet) -> str:
    parts = [
        f"{node_name(f)} ({f.node_uuid})",
        f"provision {provision_text(f)}",
        f"power {power_text(f.power_state)}",
        f"maintenance {maintenance_text(f)}",
        f"instance {f.instance_uuid or NONE}",
        f"class {f.resource_class or NA}",
        f"from {f.source}" + (" · STALE: last known values" if f.stale else ""),
    ]
    error = f"\nlast error: {one_line(f.last_error)}" if f.last_error else ""
    return " · ".join(parts) + error


BAREMETAL_TABLE: TableSpec[IronicFacet] = TableSpec(
    name="Nodes",
    columns=(
        Column("node", "Node", lambda f, _: node_name(f), 36, 8),
        Column("provision", "Provision", lambda f, _: provision_text(f), 32, 9),
        Column("power", "Power", lambda f, _: power_text(f.power_state), 5),
        Column("maintenance", "Maint", lambda f, _: maintenance_text(f), 40, 5),
        Column("last-error", "Last error", lambda f, _: one_line(f.last_error) if f.last_error else NONE,
               200, 10),
        Column("instance", "Instance", lambda f, _: f.instance_uuid or NONE, 36, 8, optional=True),
        Column("class", "Class", lambda f, _: f.resource_class or NA, 24, 5),
    ),
    row_key=lambda f: f.node_uuid,
    row_state=ironic_state,
    detail=lambda f, _: node_detail(f),
)  # fmt: skip
