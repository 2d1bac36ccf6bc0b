"""GPUs as the screens show them: the fleet table (grouped by host or model), one GPU's facts,
its history as sparklines, its processes, and the GPU alerts.

The idle-allocated flag needs the history the app keeps (`gpu_analytics.GpuHistory`); the table is
made for a predicate so that this module stays a pure function of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sovereign_tui.gpu_analytics import XID_MEANINGS, GpuAlert, Metric
from sovereign_tui.model import Gpu, GpuProcess
from sovereign_tui.render import (
    NA,
    NONE,
    fmt_age,
    fmt_int,
    fmt_mem_pair,
    fmt_mib,
    fmt_pct,
    fmt_power_pair,
    fmt_temp,
    one_line,
)
from sovereign_tui.table import Column, Grouping, RowState, TableSpec

IDLE = "IDLE"
"""The marker of a GPU that a workload holds but has not used for the idle window."""


def _never(_: Gpu) -> bool:
    return False


# --- predicates ---------------------------------------------------------------------------------


def gpu_busy(g: Gpu) -> bool:
    """Something runs on it: processes, utilisation or a holder (the store's definition)."""
    return bool(g.processes) or (g.util_gpu_pct or 0) > 0 or g.holder is not None


def gpu_erroring(g: Gpu) -> bool:
    """Uncorrected ECC errors, an XID error seen, or rows remapped after uncorrectable errors."""
    return (g.ecc_uncorrected or 0) > 0 or g.xid_last not in (None, 0) or bool(g.remapped_rows_uncorrectable)


def gpu_state(g: Gpu) -> RowState:
    if g.stale:
        return RowState.STALE
    return RowState.ALERT if gpu_erroring(g) else RowState.NORMAL


def gpu_model(name: str | None) -> str:
    """The model without the vendor every GPU here shares: "H100 80GB HBM3"."""
    if name is None:
        return NA
    text = one_line(name)
    return text.removeprefix("NVIDIA ") or text


def xid_text(xid: int | None) -> str:
    """The last XID with what it means: "79 (GPU has fallen off the bus)"; "none" when none."""
    if xid in (None, 0):
        return "none"
    meaning = XID_MEANINGS.get(xid)
    return f"{xid} ({meaning[1]})" if meaning else str(xid)


# --- the fleet table ----------------------------------------------------------------------------


def gpu_detail(g: Gpu, idle: bool = False) -> str:
    """Everything about one GPU in two lines; fields the source did not report are left out."""
    head = [f"{g.host} #{g.index} {one_line(g.name) if g.name else NA}", g.uuid]
    if g.bus_id:
        head.append(f"bus {g.bus_id}")
    if g.driver_version:
        head.append(f"driver {g.driver_version}")
    head.append(f"from {g.source}" + (" · STALE: last known values" if g.stale else ""))
    procs = ", ".join(
        f"{p.pid} {one_line(p.name) if p.name else NA} ({fmt_mib(p.used_memory_mib)})" for p in g.processes
    )
    holder = f"held by {one_line(g.holder)}" if g.holder else "held by nobody known"
    body = [
        holder + (" · IDLE: allocated but unused" if idle else ""),
        f"ECC uncorrected {fmt_int(g.ecc_uncorrected)}",
        f"last XID {xid_text(g.xid_last)}",
        f"processes: {procs or 'none'}",
    ]
    return " · ".join(head) + "\n" + " · ".join(body)


def mig_text(g: Gpu) -> str:
    """A MIG instance's profile; else the GPU's MIG mode (on/off), "-" without MIG."""
    if g.mig_profile is not None:
        return one_line(g.mig_profile)
    if g.mig_mode is None:
        return NONE
    return {"enabled": "on", "disabled": "off"}.get(g.mig_mode.casefold(), g.mig_mode)


def _xid(g: Gpu) -> str:
    return NONE if g.xid_last in (None, 0) else str(g.xid_last)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def gpu_group_summary(name: str, gpus: Sequence[Gpu], idle: Callable[[Gpu], bool] = _never) -> str:
    """A group header: counts first (busy, erroring, idle, stale), then averages and totals."""
    n = len(gpus)
    parts = [f"{name}: {n} GPU{'' if n == 1 else 's'}", f"{sum(1 for g in gpus if gpu_busy(g))} busy"]
    for count, what in (
        (sum(1 for g in gpus if gpu_erroring(g)), "erroring"),
        (sum(1 for g in gpus if idle(g)), "idle-allocated"),
        (sum(1 for g in gpus if g.stale), "stale"),
    ):
        if count:
            parts.append(f"{count} {what}")
    parts.append(f"avg util {fmt_pct(_mean([g.util_gpu_pct for g in gpus]))}")
    parts.append(f"avg temp {fmt_temp(_mean([g.temperature_c for g in gpus]))}")
    parts.append(
        "mem "
        + fmt_mem_pair(_sum([g.memory_used_mib for g in gpus]), _sum([g.memory_total_mib for g in gpus]))
    )
    parts.append(
        "power " + fmt_power_pair(_sum([g.power_w for g in gpus]), _sum([g.power_limit_w for g in gpus]))
    )
    return " · ".join(parts)


def gpu_table(idle: Callable[[Gpu], bool] = _never) -> TableSpec[Gpu]:
    """The fleet's GPUs; `idle` says which are idle-allocated (the app's `GpuHistory`)."""

    def summary(name: str, gpus: Sequence[Gpu]) -> str:
        return gpu_group_summary(name, gpus, idle)

    return TableSpec(
        name="GPUs",
        columns=(
            Column("host", "Host", lambda g, _: g.host, 32, 7),
            Column("index", "#", lambda g, _: str(g.index), 2, align="right", sort_key=lambda g: g.index),
            Column("name", "Model", lambda g, _: gpu_model(g.name), 32, 7, optional=True),
            Column("util", "Util", lambda g, _: fmt_pct(g.util_gpu_pct), 4, align="right",
                   sort_key=lambda g: g.util_gpu_pct),
            Column("memory", "Memory", lambda g, _: fmt_mem_pair(g.memory_used_mib, g.memory_total_mib), 12,
                   align="right", sort_key=lambda g: g.memory_used_mib),
            Column("temp", "Temp", lambda g, _: fmt_temp(g.temperature_c), 5, align="right",
                   sort_key=lambda g: g.temperature_c),
            Column("power", "Power", lambda g, _: fmt_power_pair(g.power_w, g.power_limit_w), 8,
                   align="right", sort_key=lambda g: g.power_w, optional=True),
            Column("ecc", "ECC", lambda g, _: fmt_int(g.ecc_uncorrected), 3, align="right",
                   sort_key=lambda g: g.ecc_uncorrected),
            Column("xid", "XID", lambda g, _: _xid(g), 3, align="right", sort_key=lambda g: g.xid_last or 0),
            Column("mig", "MIG", lambda g, _: mig_text(g), 10, 3),
            Column("idle", "Idle", lambda g, _: IDLE if idle(g) else "", 4, sort_key=lambda g: not idle(g)),
            Column("procs", "Proc", lambda g, _: str(len(g.processes)), 4, align="right",
                   sort_key=lambda g: len(g.processes), optional=True),
            Column("holder", "Holder", lambda g, _: one_line(g.holder) if g.holder else NONE, 48, 6),
        ),
        row_key=lambda g: g.key,
        row_state=gpu_state,
        detail=lambda g, _: gpu_detail(g, idle(g)),
        groupings=(
            Grouping("host", "host", lambda g: g.host, summary),
            Grouping("model", "model", lambda g: gpu_model(g.name), summary),
        ),
    )  # fmt: skip


GPU_TABLE = gpu_table()
"""The fleet table without idle flags (no history)."""


# --- one GPU ------------------------------------------------------------------------------------


def gpu_facts(g: Gpu, now: float, idle: bool = False) -> list[tuple[str, str]]:
    """(label, text) lines for everything the sources said about one GPU, N/A where they did not."""
    mig = mig_text(g)
    if g.mig_instance is not None:
        mig = f"instance {g.mig_instance}, profile {one_line(g.mig_profile) if g.mig_profile else NA}"
    holder = one_line(g.holder) if g.holder else "nobody known"
    source = f"{g.source} · observed {fmt_age(now - g.observed_at)} ago"
    return [
        ("GPU", f"{g.host} #{g.index} · {one_line(g.name) if g.name else NA} · {g.uuid}"),
        ("Hardware", f"bus {g.bus_id or NA} · driver {g.driver_version or NA} · MIG {mig}"),
        ("Now", f"util {fmt_pct(g.util_gpu_pct)} (memory {fmt_pct(g.util_memory_pct)}) · "
                f"memory {fmt_mem_pair(g.memory_used_mib, g.memory_total_mib)} · "
                f"{fmt_temp(g.temperature_c)} · {fmt_power_pair(g.power_w, g.power_limit_w)}"),
        ("Errors", f"ECC uncorrected {fmt_int(g.ecc_uncorrected)} · remapped rows "
                   f"{fmt_int(g.remapped_rows_uncorrectable)} · last XID {xid_text(g.xid_last)}"),
        ("Held by", holder + (f" · {IDLE}: allocated but unused" if idle else "")),
        ("Source", source + (" · STALE: last known values" if g.stale else "")),
    ]  # fmt: skip


BLOCKS = "▁▂▃▄▅▆▇█"
"""Eight levels; a cell with no sample is a space, so a gap reads as a gap."""


def sparkline(
    points: Sequence[tuple[float, float | None]], start: float, end: float, width: int, top: float
) -> str:
    """`width` cells over [start, end): each cell the highest value sampled in its slice of time,
    scaled from 0 to `top`; a space where nothing was sampled."""
    if width <= 0 or end <= start:
        return ""
    cells: list[float | None] = [None] * width
    span = (end - start) / width
    for t, value in points:
        if value is None or not start <= t <= end:
            continue
        i = min(int((t - start) / span), width - 1)
        held = cells[i]
        cells[i] = value if held is None else max(held, value)
    scale = top if top > 0 else 1.0
    out = []
    for value in cells:
        if value is None:
            out.append(" ")
            continue
        level = math.ceil(max(0.0, min(value / scale, 1.0)) * len(BLOCKS)) - 1
        out.append(BLOCKS[max(level, 0)])
    return "".join(out)


def spark_cells(window_s: float, interval_s: float) -> int:
    """The most cells a sparkline of `window_s` should have for samples `interval_s` apart: one
    and a half intervals a cell, so that poll jitter never leaves a cell empty (a gap would say
    the source missed a poll)."""
    return max(int(window_s / (1.5 * interval_s)), 1)


@dataclass(frozen=True, slots=True)
class Trend:
    metric: Metric
    label: str
    line: str
    """The sparkline."""
    stats: str
    """Last, lowest and highest over the window: "now 35% · 0-96%"."""


def _range_text(values: list[float], fmt: Callable[[float | None], str]) -> str:
    if not values:
        return "no samples"
    return f"now {fmt(values[-1])} · {fmt(min(values))}-{fmt(max(values))}"


def trends(
    g: Gpu,
    series: Callable[[str, Metric], list[tuple[float, float | None]]],
    now: float,
    window_s: float,
    width: int,
) -> list[Trend]:
    """The four sparklines of one GPU's last `window_s`, each `width` cells, from `series(key,
    metric)` (`GpuHistory.series`). Scales: utilisation 0-100%, memory to the GPU's total, power to
    its limit, temperature to 100 C (each stretched if a sample goes higher)."""
    start = now - window_s
    specs: list[tuple[Metric, str, float | None, Callable[[float | None], str]]] = [
        ("util", "Util", 100.0, fmt_pct),
        ("memory", "Memory", g.memory_total_mib, fmt_mib),
        ("power", "Power", g.power_limit_w, lambda v: NA if v is None else f"{v:.0f}W"),
        ("temperature", "Temp", 100.0, fmt_temp),
    ]
    out = []
    for metric, label, top, fmt in specs:
        points = series(g.key, metric)
        values = [v for t, v in points if v is not None and t >= start]
        scale = max([top or 0.0, *values, 1.0])
        out.append(
            Trend(metric, label, sparkline(points, start, now, width, scale), _range_text(values, fmt))
        )
    return out


PROCESS_TABLE: TableSpec[GpuProcess] = TableSpec(
    name="Processes",
    columns=(
        Column("pid", "PID", lambda p, _: str(p.pid), 8, align="right", sort_key=lambda p: p.pid),
        Column("name", "Process", lambda p, _: one_line(p.name) if p.name else NA, 80, 10),
        Column("memory", "Memory", lambda p, _: fmt_mib(p.used_memory_mib), 8, align="right",
               sort_key=lambda p: p.used_memory_mib),
    ),
    row_key=lambda p: str(p.pid),
    default_sort="memory",
    default_reverse=True,
)  # fmt: skip


# --- alerts -------------------------------------------------------------------------------------

_RANK = {"critical": 0, "warning": 1, "info": 2}


def _alert_state(a: GpuAlert) -> RowState:
    if a.stale:
        return RowState.STALE
    return RowState.ALERT if a.severity == "critical" else RowState.NORMAL


def alert_counts(alerts: Sequence[GpuAlert]) -> str:
    """ "1 critical · 2 warning", most severe first; empty when there are none."""
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.severity] = counts.get(a.severity, 0) + 1
    return " · ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: _RANK.get(kv[0], 9)))


ALERT_TABLE: TableSpec[GpuAlert] = TableSpec(
    name="GPU alerts",
    columns=(
        Column("severity", "Severity", lambda a, _: a.severity, 8,
               sort_key=lambda a: _RANK.get(a.severity, 9)),
        Column("host", "Host", lambda a, _: a.host, 24, 7),
        Column("reason", "Reason", lambda a, _: one_line(a.reason), 200, 20),
    ),
    row_key=lambda a: f"{a.kind}:{a.gpu}",
    row_state=_alert_state,
    detail=lambda a, _: f"{a.severity} {a.kind} on {a.host} ({a.gpu}): {one_line(a.reason)}"
    + (" · STALE: the GPU's source stopped answering" if a.stale else ""),
)  # fmt: skip
