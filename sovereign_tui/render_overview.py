"""The Overview's summary: one line per layer, counts first, trouble named."""

from __future__ import annotations

from dataclasses import dataclass

from sovereign_tui.model import WORKLOAD_KINDS, Snapshot
from sovereign_tui.render_edge import severity_counts, site_trouble
from sovereign_tui.render_gpus import gpu_busy, gpu_erroring
from sovereign_tui.render_hosts import host_trouble
from sovereign_tui.render_workloads import kind_counts, workload_trouble


@dataclass(frozen=True, slots=True)
class Overview:
    sources: int
    sources_up: int
    sources_down: int
    sources_pending: int
    gpus: int
    gpus_busy: int
    gpus_erroring: int
    gpus_stale: int
    gpus_idle: int
    hosts: int
    hosts_stale: int
    hosts_trouble: int
    workloads: int
    workloads_failing: int
    kinds: tuple[tuple[str, int], ...]
    """(kind, count) for the kinds present, in the model's order."""
    sites: int
    sites_trouble: int
    alarms: int
    alarm_counts: str


def overview(snapshot: Snapshot, gpus_idle: int = 0) -> Overview:
    states = [h.up for h in snapshot.sources]
    counts = kind_counts(snapshot.workloads)
    return Overview(
        sources=len(states),
        sources_up=states.count(True),
        sources_down=states.count(False),
        sources_pending=states.count(None),
        gpus=len(snapshot.gpus),
        gpus_busy=sum(1 for g in snapshot.gpus if gpu_busy(g)),
        gpus_erroring=sum(1 for g in snapshot.gpus if gpu_erroring(g)),
        gpus_stale=sum(1 for g in snapshot.gpus if g.stale),
        gpus_idle=gpus_idle,
        hosts=len(snapshot.hosts),
        hosts_stale=sum(1 for h in snapshot.hosts if h.stale),
        hosts_trouble=sum(1 for h in snapshot.hosts if host_trouble(h)),
        workloads=len(snapshot.workloads),
        workloads_failing=sum(1 for w in snapshot.workloads if workload_trouble(w)),
        kinds=tuple((k, counts[k]) for k in WORKLOAD_KINDS if counts[k]),
        sites=len(snapshot.sites),
        sites_trouble=sum(1 for s in snapshot.sites if site_trouble(s)),
        alarms=len(snapshot.alarms),
        alarm_counts=severity_counts(snapshot.alarms),
    )


def _fit(base: str, extras: tuple[str, ...], width: int | None) -> str:
    """`base` with the longest of `extras` that keeps it within `width` (all of the first when
    there is no limit): detail where there is room, never a wrapped line where there is not."""
    for extra in extras:
        if extra and (width is None or len(base) + len(extra) <= width):
            return base + extra
    return base


def overview_lines(o: Overview, width: int | None = None) -> list[tuple[str, str]]:
    """(label, text) pairs for the Overview's summary; `width` is the room for the text."""
    kinds = " · ".join(f"{k} {n}" for k, n in o.kinds)
    alarms = o.alarm_counts.split(" · ")
    return [
        ("Sources", f"{o.sources} · {o.sources_up} up · {o.sources_down} DOWN · {o.sources_pending} pending"),
        ("Hosts", f"{o.hosts} · {o.hosts_trouble} need attention · {o.hosts_stale} stale"),
        (
            "GPUs",
            f"{o.gpus} · {o.gpus_busy} busy · {o.gpus_erroring} erroring · {o.gpus_idle} idle-allocated · "
            f"{o.gpus_stale} stale",
        ),
        ("Workloads", _fit(f"{o.workloads} · {o.workloads_failing} failing", (f" · {kinds}",), width)),
        (
            "Edge",
            _fit(
                f"{o.sites} sites · {o.sites_trouble} need attention · {o.alarms} alarms",
                tuple(f" ({' · '.join(alarms[:n])})" for n in range(len(alarms), 0, -1) if o.alarm_counts),
                width,
            ),
        ),
    ]
