"""Pure functions from snapshot entities to what the screens show: the formatting every layer
shares, sources, banners, the status line and help. Each layer has its own module beside this
one (`render_gpus`, `render_hosts`, `render_workloads`, `render_edge`, `render_overview`).

No UI toolkit here, so the rules for N/A, sizes and ages are tested without a terminal. Values a
source cannot report are `None` and show as N/A; state is always spelled out in text (a marker,
"DOWN", "STALE"), never by colour alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sovereign_tui.model import Snapshot, SourceHealth
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
    if text.isprintable() and "  " not in text and text == text.strip():
        return text  # the common case, without a regex or a copy
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
    if limit is None:  # dcgm-exporter reports no limit: the draw alone, not "70/N/AW"
        return f"{power:.0f}W"
    return f"{NA if power is None else f'{power:.0f}'}/{limit:.0f}W"


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


def fmt_when(epoch: float | None) -> str:
    """A point in time, in UTC: "2027-01-15 08:00:00Z"."""
    if epoch is None:
        return NA
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds from an ISO 8601 time as the APIs write it (no zone: UTC); None if it is not one."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def yes_no(value: bool | None) -> str:
    return NA if value is None else ("yes" if value else "no")


def stale_mark(text: str, stale: bool) -> str:
    """A cell from a source that stopped answering ends in `~` (last known value)."""
    return f"{text}~" if stale else text


def fmt_interval(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:g}s"
    return f"{s // 60}m" if s % 60 == 0 else fmt_age(s)


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


# --- status ------------------------------------------------------------------------------------


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
