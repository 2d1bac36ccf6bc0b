"""StarlingX: its sites (the system controller and the subclouds), its hosts and its alarms."""

from __future__ import annotations

from collections.abc import Iterable

from sovereign_tui.model import Alarm, Host, Site, StarlingxFacet
from sovereign_tui.render import NA, NONE, fmt_age, one_line, parse_time
from sovereign_tui.render_hosts import starlingx_trouble
from sovereign_tui.table import Column, RowState, TableSpec

SEVERITIES = ("critical", "major", "minor", "warning")
"""fm's severities, most severe first."""


def _text(value: str | None) -> str:
    return one_line(value) if value else NA


# --- sites --------------------------------------------------------------------------------------


def site_trouble(s: Site) -> bool:
    return (
        s.availability == "offline"
        or s.sync_status == "out-of-sync"
        or "fail" in (s.deploy_status or "").casefold()
    )


def site_state(s: Site) -> RowState:
    if s.stale:
        return RowState.STALE
    return RowState.ALERT if site_trouble(s) else RowState.NORMAL


def site_detail(s: Site) -> str:
    return (
        f"{s.name} (region {_text(s.region)}) · {_text(s.availability)} · {_text(s.management)} · "
        f"deploy {_text(s.deploy_status)} · sync {_text(s.sync_status)} · "
        f"software {_text(s.software_version)} · from {s.source}"
        + (" · STALE: last known values" if s.stale else "")
    )


SITE_TABLE: TableSpec[Site] = TableSpec(
    name="Sites",
    columns=(
        Column("name", "Site", lambda s, _: s.name, 32, 8),
        Column("availability", "Avail", lambda s, _: _text(s.availability), 8, 5),
        Column("management", "Managed", lambda s, _: _text(s.management), 9, 5),
        Column("deploy", "Deploy", lambda s, _: _text(s.deploy_status), 24, 6),
        Column("sync", "Sync", lambda s, _: _text(s.sync_status), 11, 4),
        Column("version", "Version", lambda s, _: _text(s.software_version), 10, 7),
        Column("region", "Region", lambda s, _: _text(s.region), 24, 6, optional=True),
    ),
    row_key=lambda s: f"{s.source}/{s.name}",
    row_state=site_state,
    detail=lambda s, _: site_detail(s),
)


# --- hosts --------------------------------------------------------------------------------------


def _stx(h: Host) -> StarlingxFacet:
    assert h.starlingx is not None  # the table holds only hosts StarlingX knows
    return h.starlingx


def stx_host_state(h: Host) -> RowState:
    f = _stx(h)
    if f.stale:
        return RowState.STALE
    return RowState.ALERT if starlingx_trouble(f) else RowState.NORMAL


def stx_host_detail(h: Host) -> str:
    f = _stx(h)
    return (
        f"{h.name} ({f.uuid}) · {f.personality} · {f.administrative}/{f.operational}/{f.availability}"
        f" · task {f.task or NONE} · site {f.site or NA} · from {f.source}"
        + (" · STALE: last known values" if f.stale else "")
    )


STX_HOST_TABLE: TableSpec[Host] = TableSpec(
    name="StarlingX hosts",
    columns=(
        Column("host", "Host", lambda h, _: h.name, 32, 8),
        Column("personality", "Role", lambda h, _: _stx(h).personality, 12, 6),
        Column("admin", "Admin", lambda h, _: _stx(h).administrative, 8, 6),
        Column("oper", "Oper", lambda h, _: _stx(h).operational, 8, 6),
        Column("avail", "Avail", lambda h, _: _stx(h).availability, 11, 6),
        Column("task", "Task", lambda h, _: _stx(h).task or NONE, 24, 4),
        Column("site", "Site", lambda h, _: _stx(h).site or NA, 24, 6, optional=True),
    ),
    row_key=lambda h: h.name,
    row_state=stx_host_state,
    detail=lambda h, _: stx_host_detail(h),
)


# --- alarms -------------------------------------------------------------------------------------


def severity_rank(severity: str) -> int:
    s = severity.casefold()
    return SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES)


def alarm_order(a: Alarm) -> tuple[int, float]:
    """Most severe first, then newest first (an alarm without a readable time last in its rank)."""
    when = parse_time(a.timestamp)
    return severity_rank(a.severity), -when if when is not None else float("inf")


def alarm_age(a: Alarm, now: float) -> str:
    when = parse_time(a.timestamp)
    return NA if when is None else fmt_age(now - when)


def alarm_state(a: Alarm) -> RowState:
    if a.stale:
        return RowState.STALE
    return RowState.ALERT if severity_rank(a.severity) <= 1 else RowState.NORMAL


def severity_counts(alarms: Iterable[Alarm]) -> str:
    """ "1 critical · 2 major", most severe first, only the severities raised."""
    counts: dict[str, int] = {}
    for a in alarms:
        counts[a.severity.casefold()] = counts.get(a.severity.casefold(), 0) + 1
    order = sorted(counts, key=lambda s: (severity_rank(s), s))
    return " · ".join(f"{counts[s]} {s}" for s in order)


def alarm_detail(a: Alarm, now: float) -> str:
    return (
        f"{a.severity} {a.alarm_id} on {one_line(a.entity)} · raised {a.timestamp or NA} "
        f"({alarm_age(a, now)} ago) · site {a.site or NA} · {one_line(a.reason) or NA} · from {a.source}"
        + (" · STALE: last known values" if a.stale else "")
    )


ALARM_TABLE: TableSpec[Alarm] = TableSpec(
    name="Alarms",
    columns=(
        Column("severity", "Severity", lambda a, _: a.severity, 8, sort_key=alarm_order),
        Column("alarm", "Alarm", lambda a, _: a.alarm_id, 7),
        Column("entity", "Entity", lambda a, _: a.host or one_line(a.entity), 40, 8),
        Column("reason", "Reason", lambda a, _: one_line(a.reason) or NA, 200, 12),
        Column("age", "Age", alarm_age, 6, align="right", uses_now=True, searchable=False,
               sort_key=lambda a: -(parse_time(a.timestamp) or 0.0)),
        Column("site", "Site", lambda a, _: a.site or NA, 24, 6, optional=True),
    ),
    row_key=lambda a: f"{a.source}/{a.id}",
    row_state=alarm_state,
    default_sort="severity",
    detail=alarm_detail,
)  # fmt: skip
