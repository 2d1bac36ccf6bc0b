"""Pure functions from snapshot entities to what the screens show: cells, columns, counts,
banners, details.

No UI toolkit here, so the rules for N/A, sizes and ages are tested without a terminal. Values a
source cannot report are `None` and show as N/A; state is always spelled out in text (a marker,
"DOWN", "STALE"), never by colour alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sovereign_tui.model import Gpu, Snapshot, SourceHealth
from sovereign_tui.table import Column, RowState, TableSpec

NA = "N/A"
"""A value the source cannot report (or has not reported)."""
NONE = "-"
"""A value that does not apply (no MIG on this GPU, nobody holds it)."""

# --- formatting -------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str | None) -> str:
    """Free text from a source (an error, a reason) as one line without control characters."""
    if text is None:
        return NA
    return " ".join(_CONTROL.sub(" ", text).split())


def fmt_int(value: int | None) -> str:
    return NA if value is None else str(value)


def fmt_pct(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}%"


def fmt_temp(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}°C"


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f}"


def fmt_mib(mib: float | None) -> str:
    """GPU memory: "512M" below a GiB, "79.6G" above."""
    if mib is None:
        return NA
    return f"{mib:.0f}M" if mib < 1024 else f"{_gib(mib)}G"


def fmt_mem_pair(used: float | None, total: float | None) -> str:
    """Used/total in the total's unit: "12.3/79.6G"."""
    if used is None and total is None:
        return NA
    if total is None:
        return f"{fmt_mib(used)}/{NA}"
    in_gib = total >= 1024
    unit = "G" if in_gib else "M"

    def part(v: float | None) -> str:
        if v is None:
            return NA
        return _gib(v) if in_gib else f"{v:.0f}"

    return f"{part(used)}/{part(total)}{unit}"


def fmt_power_pair(power: float | None, limit: float | None) -> str:
    if power is None and limit is None:
        return NA

    def part(v: float | None) -> str:
        return NA if v is None else f"{v:.0f}"

    return f"{part(power)}/{part(limit)}W"


def fmt_bytes(n: float | None) -> str:
    """Binary units, one decimal: "1.5 GiB"."""
    if n is None:
        return NA
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_age(seconds: float | None) -> str:
    """Compact elapsed time: "3s", "2m05s", "1h02m", "3d04h". Clock skew shows as 0s."""
    if seconds is None:
        return NA
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_duration(seconds: float | None) -> str:
    """A poll's duration: "120ms" under a second, "1.5s" under a minute."""
    if seconds is None:
        return NA
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return fmt_age(seconds)


def fmt_interval(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:g}s"
    return f"{s // 60}m" if s % 60 == 0 else fmt_age(s)


# --- GPUs -------------------------------------------------------------------------------------


def gpu_busy(g: Gpu) -> bool:
    """Something runs on it: processes, utilisation or a holder (the store's definition)."""
    return bool(g.processes) or (g.util_gpu_pct or 0) > 0 or g.holder is not None


def gpu_erroring(g: Gpu) -> bool:
    """Uncorrected ECC errors or an XID error seen."""
    return (g.ecc_uncorrected or 0) > 0 or g.xid_last not in (None, 0)


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


def gpu_detail(g: Gpu) -> str:
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
    xid = "none" if g.xid_last in (None, 0) else str(g.xid_last)
    body = [
        f"held by {one_line(g.holder)}" if g.holder else "held by nobody known",
        f"ECC uncorrected {fmt_int(g.ecc_uncorrected)}",
        f"last XID {xid}",
        f"processes: {procs or 'none'}",
    ]
    return " · ".join(head) + "\n" + " · ".join(body)


def _mig(g: Gpu) -> str:
    if g.mig_mode is None:
        return NONE
    return {"enabled": "on", "disabled": "off"}.get(g.mig_mode.casefold(), g.mig_mode)


def _ecc(g: Gpu) -> str:
    text = fmt_int(g.ecc_uncorrected)
    return f"{text} x{g.xid_last}" if g.xid_last not in (None, 0) else text


GPU_TABLE: TableSpec[Gpu] = TableSpec(
    name="GPUs",
    columns=(
        Column("host", "Host", lambda g, _: g.host, 32, 8),
        Column("index", "#", lambda g, _: str(g.index), 2, align="right", sort_key=lambda g: g.index),
        Column("name", "Name", lambda g, _: gpu_model(g.name), 32, 8),
        Column("util", "Util", lambda g, _: fmt_pct(g.util_gpu_pct), 4, align="right",
               sort_key=lambda g: g.util_gpu_pct),
        Column("memory", "Memory", lambda g, _: fmt_mem_pair(g.memory_used_mib, g.memory_total_mib), 11,
               align="right", sort_key=lambda g: g.memory_used_mib),
        Column("temp", "Temp", lambda g, _: fmt_temp(g.temperature_c), 5, align="right",
               sort_key=lambda g: g.temperature_c),
        Column("power", "Power", lambda g, _: fmt_power_pair(g.power_w, g.power_limit_w), 8, align="right",
               sort_key=lambda g: g.power_w),
        Column("ecc", "ECC", lambda g, _: _ecc(g), 3, align="right",
               sort_key=lambda g: (g.ecc_uncorrected or 0, g.xid_last or 0)),
        Column("mig", "MIG", lambda g, _: _mig(g), 3),
        Column("procs", "Proc", lambda g, _: str(len(g.processes)), 4, align="right",
               sort_key=lambda g: len(g.processes)),
        Column("holder", "Holder", lambda g, _: one_line(g.holder) if g.holder else NONE, 48, 6),
    ),
    row_key=lambda g: g.key,
    row_state=gpu_state,
    detail=lambda g, _: gpu_detail(g),
)  # fmt: skip


# --- sources ----------------------------------------------------------------------------------


def source_state(h: SourceHealth) -> str:
    if h.up is None:
        return "pending"
    return "up" if h.up else "DOWN"


def source_detail(h: SourceHealth, now: float) -> str:
    """The target's state and last error first (what an operator needs), then its timings."""
    head = f"{h.target} {source_state(h)}" + (f": {one_line(h.last_error)}" if h.last_error else "")
    last_ok = "never" if h.last_success is None else f"{fmt_age(now - h.last_success)} ago"
    timing = (
        f"{h.source} at {h.endpoint} · last ok {last_ok} · took {fmt_duration(h.last_duration_s)} · "
        f"every {fmt_interval(h.interval_s)} · {h.consecutive_failures} failed in a row, "
        f"{h.failures} of {h.polls} polls"
    )
    return f"{head}\n{timing}"


def _since(t: float | None, now: float) -> str:
    return "never" if t is None else fmt_age(now - t)


def _source_row_state(h: SourceHealth) -> RowState:
    return RowState.ALERT if h.up is False else RowState.NORMAL


def _error(h: SourceHealth) -> str:
    return one_line(h.last_error) if h.last_error else NONE


_TARGET: Column[SourceHealth] = Column("target", "Target", lambda h, _: h.target, 40, 10)
_LAST_OK: Column[SourceHealth] = Column(
    "last-ok", "Last ok", lambda h, now: _since(h.last_success, now), 7, align="right",
    sort_key=lambda h: -h.last_success if h.last_success is not None else None,
    searchable=False, uses_now=True,
)  # fmt: skip
_FAILS: Column[SourceHealth] = Column(
    "fails", "Fails", lambda h, _: str(h.consecutive_failures), 5, align="right",
    sort_key=lambda h: h.consecutive_failures,
)  # fmt: skip
_LAST_ERROR: Column[SourceHealth] = Column("last-error", "Last error", lambda h, _: _error(h), 240, 10)

SOURCE_TABLE: TableSpec[SourceHealth] = TableSpec(
    name="Sources",
    columns=(
        _TARGET,
        Column("source", "Source", lambda h, _: h.source, 16, 6, optional=True),
        Column("endpoint", "Endpoint", lambda h, _: h.endpoint, 40, 8),
        Column("state", "State", lambda h, _: source_state(h), 7),
        _LAST_OK,
        Column("took", "Took", lambda h, _: fmt_duration(h.last_duration_s), 6, align="right",
               sort_key=lambda h: h.last_duration_s, optional=True),
        Column("every", "Every", lambda h, _: fmt_interval(h.interval_s), 5, align="right",
               sort_key=lambda h: h.interval_s, optional=True),
        _FAILS,
        _LAST_ERROR,
    ),
    row_key=lambda h: h.target,
    row_state=_source_row_state,
    detail=lambda h, now: source_detail(h, now),
)  # fmt: skip

DOWN_SOURCE_TABLE: TableSpec[SourceHealth] = TableSpec(
    name="Down sources",
    columns=(_TARGET, _LAST_OK, _FAILS, _LAST_ERROR),
    row_key=lambda h: h.target,
    row_state=_source_row_state,
    detail=lambda h, now: source_detail(h, now),
)


def down_sources(snapshot: Snapshot) -> tuple[SourceHealth, ...]:
    return tuple(h for h in snapshot.sources if h.up is False)


def down_banner(
    snapshot: Snapshot, kinds: Iterable[str] = (), feeding: Iterable[str] = (), limit: int = 3
) -> list[str]:
    """One line per down target that feeds a screen: those of the given source kinds and those
    whose id appears as `feeding` (the `source` of rows shown). Past `limit`, a count."""
    kinds = frozenset(kinds)
    feeding = frozenset(feeding)
    down = [h for h in down_sources(snapshot) if h.source in kinds or h.target in feeding]
    lines = [f"{h.target} down: {one_line(h.last_error) if h.last_error else 'no answer'}" for h in down]
    if len(lines) > limit:
        rest = len(lines) - (limit - 1)
        lines = [*lines[: limit - 1], f"... and {rest} more sources down (see Sources)"]
    return lines


# --- overview and status ----------------------------------------------------------------------


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
    hosts: int
    hosts_stale: int


def overview(snapshot: Snapshot) -> Overview:
    states = [h.up for h in snapshot.sources]
    return Overview(
        sources=len(states),
        sources_up=states.count(True),
        sources_down=states.count(False),
        sources_pending=states.count(None),
        gpus=len(snapshot.gpus),
        gpus_busy=sum(1 for g in snapshot.gpus if gpu_busy(g)),
        gpus_erroring=sum(1 for g in snapshot.gpus if gpu_erroring(g)),
        gpus_stale=sum(1 for g in snapshot.gpus if g.stale),
        hosts=len(snapshot.hosts),
        hosts_stale=sum(1 for h in snapshot.hosts if h.stale),
    )


def overview_lines(o: Overview) -> list[tuple[str, str]]:
    """(label, text) pairs for the Overview's summary."""
    return [
        (
            "Sources",
            f"{o.sources} total · {o.sources_up} up · {o.sources_down} DOWN · {o.sources_pending} pending",
        ),
        (
            "GPUs",
            f"{o.gpus} total · {o.gpus_busy} busy · {o.gpus_erroring} erroring · {o.gpus_stale} stale",
        ),
        ("Hosts", f"{o.hosts} total"),
    ]


def status_text(snapshot: Snapshot, now: float) -> str:
    """The snapshot's generation and age: "gen 42 · updated 3s ago"."""
    if snapshot.generation == 0:
        return "gen 0 · waiting for the first poll"
    return f"gen {snapshot.generation} · updated {fmt_age(now - snapshot.taken_at)} ago"


# --- help -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelpRow:
    """One key binding as the help screen lists it."""

    group: str
    keys: str
    description: str
    id: str


HELP_TABLE: TableSpec[HelpRow] = TableSpec(
    name="Keys",
    columns=(
        Column("group", "Where", lambda b, _: b.group, 24, 8),
        Column("keys", "Keys", lambda b, _: b.keys, 20, 6),
        Column("description", "Does", lambda b, _: b.description, 120, 14),
        Column("id", "Id (keymap)", lambda b, _: b.id or NONE, 24, 8),
    ),
    row_key=lambda b: f"{b.group}\x1f{b.keys}",
)
