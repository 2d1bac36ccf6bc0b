"""What the operations screens show, without a UI toolkit: plans step by step, the live progress
of running operations folded from their events (`OperationBoard`), the operations list, the
journal of one operation, and the marks of rows chosen for a batch.

Progress is text that reads without colour: a bar of `█` and `░` and the percentage beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.journal import STEP_FINAL, OperationRecord, StepRecord
from sovereign_tui.ops.plan import Plan, Step
from sovereign_tui.render import NONE, fmt_age, one_line
from sovereign_tui.table import Column, Grouping, RowState, TableSpec

R = TypeVar("R")

MARK = "*"
"""Marks a row chosen for a batch (space toggles it)."""

# --- live progress ------------------------------------------------------------------------------


@dataclass
class StepLive:
    state: str = "pending"
    message: str | None = None
    fraction: float | None = None
    at: float | None = None


@dataclass
class RunLive:
    """One operation as its events tell it, updated as they arrive."""

    op_id: str
    plan: Plan
    state: str = "starting"
    """starting | running | succeeded | failed | cancelled"""
    message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    steps: dict[int, StepLive] = field(default_factory=dict)
    current: int | None = None
    """The step that started last and has not finished."""

    def step(self, index: int) -> StepLive:
        return self.steps.setdefault(index, StepLive())

    @property
    def finished_steps(self) -> int:
        return sum(1 for s in self.steps.values() if s.state in STEP_FINAL)

    @property
    def done(self) -> int:
        return sum(1 for s in self.steps.values() if s.state == "done")

    @property
    def fraction(self) -> float:
        """How far the whole operation is: finished steps plus the current one's fraction."""
        total = len(self.plan.steps) or 1
        cur = self.steps.get(self.current) if self.current is not None else None
        part = (cur.fraction or 0.0) if cur is not None and cur.state == "started" else 0.0
        return min((self.finished_steps + part) / total, 1.0)

    @property
    def over(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


class OperationBoard:
    """The live state of the operations this session follows, folded from their events, and the
    refusals of those it could not start. `version` grows with every change."""

    def __init__(self) -> None:
        self.runs: dict[str, RunLive] = {}
        self.refusals: dict[str, str] = {}
        """Plan or operation id -> why it was not started (one line)."""
        self.version = 0

    def started(self, op_id: str, plan: Plan) -> None:
        self.refusals.pop(op_id, None)
        run = self.runs.get(op_id)
        if run is None or run.over:
            self.runs[op_id] = RunLive(op_id, plan)
        self.version += 1

    def forget_refusals(self, op_ids: Iterable[str]) -> None:
        """Drop what was said of earlier attempts (before these are tried again)."""
        for op_id in op_ids:
            self.refusals.pop(op_id, None)
        self.version += 1

    def refused(self, op_id: str, message: str) -> None:
        self.refusals[op_id] = message
        self.version += 1

    def apply(self, event: OpEvent) -> None:
        run = self.runs.get(event.op_id)
        if run is None:
            return
        kind = event.kind
        if kind == "operation-started":
            run.state, run.message, run.finished_at = "running", event.message, None
            run.started_at = run.started_at or event.at
        elif kind == "operation-finished":
            run.state, run.message, run.finished_at = event.state or "failed", event.message, event.at
            run.current = None
        elif event.step is not None:
            step = run.step(event.step)
            step.at = event.at
            step.message = event.message
            if kind == "step-started":
                step.state, step.fraction = "started", None
                run.current = event.step
            elif kind == "step-progress":
                step.fraction = event.fraction
            elif kind == "step-finished":
                step.state = event.state or "failed"
                if run.current == event.step:
                    started = [i for i, s in run.steps.items() if s.state == "started"]
                    run.current = started[-1] if started else None
        self.version += 1


def bar(fraction: float | None, width: int = 10) -> str:
    """ "██████░░░░ 60%"; blank cells and no percentage when the fraction is unknown."""
    if fraction is None:
        return "░" * width
    f = min(max(fraction, 0.0), 1.0)
    full = round(f * width)
    return "█" * full + "░" * (width - full) + f" {f:.0%}"


def step_name(step: Step) -> str:
    """ "live-migrate" for ``nova.live-migrate``."""
    return step.kind.value.split(".", 1)[1]


def run_line(run: RunLive) -> str:
    """One line: where the operation is, and how far."""
    plan = run.plan
    head = f"{plan.kind} {plan.target}: {run.state}"
    n = len(plan.steps)
    if run.over:
        return f"{head} · {run.done}/{n} steps done · {one_line(run.message or '')}".rstrip(" ·")
    parts = [head, f"{run.finished_steps}/{n} steps"]
    if run.current is not None:
        step, live = plan.steps[run.current], run.steps[run.current]
        now = f"step {run.current + 1} {step_name(step)} {step.target_name}"
        if live.message:
            now += f": {one_line(live.message)}"
        parts.append(now)
    parts.append(bar(run.fraction))
    return " · ".join(parts)


# --- plans --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One step of one plan (of a batch), with its progress once it runs."""

    pos: str
    plan: Plan
    step: Step
    live: StepLive | None = None


def plan_rows(plans: Sequence[Plan], board: OperationBoard | None = None) -> list[PlanRow]:
    rows = []
    for n, plan in enumerate(plans, 1):
        run = board.runs.get(plan.id) if board is not None else None
        for s in plan.steps:
            pos = f"{n}.{s.index + 1}" if len(plans) > 1 else str(s.index + 1)
            live = run.steps.get(s.index) if run is not None else None
            rows.append(PlanRow(pos, plan, s, live))
    return rows


def step_note(s: Step) -> str:
    """What blocks or warns, as the dry run prints it."""
    if s.blocker is not None:
        return ("BLOCKED: " if s.blocker.hard else "may block: ") + one_line(s.blocker.reason)
    if s.warning:
        return "warning: " + one_line(s.warning)
    return NONE


def live_state(live: StepLive | None) -> str:
    if live is None:
        return "pending"
    if live.state == "started" and live.fraction is not None:
        return f"started {live.fraction:.0%}"
    return live.state


def _plan_row_state(r: PlanRow) -> RowState:
    if (r.step.blocker is not None and r.step.blocker.hard) or (
        r.live is not None and r.live.state in ("failed", "blocked")
    ):
        return RowState.ALERT
    return RowState.NORMAL


def plan_row_detail(r: PlanRow, _now: float = 0.0) -> str:
    s = r.step
    parts = [s.description, "touches " + (", ".join(s.touches) or NONE)]
    if s.blocker is not None:
        b = s.blocker
        what = "BLOCKED" if b.hard else "may block"
        parts.append(f"{what} ({b.kind}{': ' + b.detail if b.detail else ''}): {one_line(b.reason)}")
    if s.warning:
        parts.append("warning: " + one_line(s.warning))
    if r.live is not None and r.live.message:
        parts.append(f"{r.live.state}: {one_line(r.live.message)}")
    return " · ".join(parts)


PLAN_TABLE: TableSpec[PlanRow] = TableSpec(
    name="Steps",
    columns=(
        Column("pos", "#", lambda r, _: r.pos, 4, align="right",
               sort_key=lambda r: (r.plan.id, r.step.index)),
        Column("layer", "Layer", lambda r, _: r.step.layer, 10, 5, optional=True),
        Column("step", "Step", lambda r, _: step_name(r.step), 15, 8),
        Column("target", "Target", lambda r, _: r.step.target_name, 32, 8),
        Column("touches", "Touches", lambda r, _: ", ".join(r.step.touches) or NONE, 48, 8, optional=True),
        Column("note", "Blocks / warns", lambda r, _: step_note(r.step), 90, 12),
        Column("state", "State", lambda r, _: live_state(r.live), 12, 7),
    ),
    row_key=lambda r: f"{r.plan.id}:{r.step.index}",
    row_state=_plan_row_state,
    detail=plan_row_detail,
)  # fmt: skip


def plan_summary(plans: Sequence[Plan]) -> str:
    """The line above the steps: what, how many steps, what blocks, what confirms it."""
    if not plans:
        return "planning..."
    steps = [s for p in plans for s in p.steps]
    hard = sum(1 for s in steps if s.blocker is not None and s.blocker.hard)
    soft = sum(1 for s in steps if s.blocker is not None and not s.blocker.hard)
    warned = sum(1 for s in steps if s.warning)
    if len(plans) == 1:
        p = plans[0]
        what = f"{p.kind} {p.target} · plan {p.id[:8]} · digest {p.digest()[:12]}"
    else:
        what = f"{plans[0].kind} {len(plans)} targets: {', '.join(p.target for p in plans)}"
    parts = [what, f"{len(steps)} steps"]
    if hard:
        parts.append(f"{hard} blocked")
    if soft:
        parts.append(f"{soft} may block")
    if warned:
        parts.append(f"{warned} with warnings")
    parts.append("DESTRUCTIVE" if any(p.destructive for p in plans) else "not destructive")
    return " · ".join(parts)


def plan_warnings(plans: Sequence[Plan]) -> list[str]:
    many = len(plans) > 1
    return [f"warning: {p.target + ': ' if many else ''}{one_line(w)}" for p in plans for w in p.warnings]


# --- the operations list ------------------------------------------------------------------------

SECTIONS = {"running": "1 running", "interrupted": "2 interrupted", "history": "3 history"}
_SECTION_TITLES = {
    "1 running": "Running",
    "2 interrupted": "Interrupted: resume (R) or abandon (A)",
    "3 history": "History",
}


@dataclass(frozen=True, slots=True)
class OpRow:
    record: OperationRecord
    live: RunLive | None = None

    @property
    def state(self) -> str:
        rec = self.record
        if rec.interrupted:
            return "interrupted"
        if self.live is not None and self.live.over:
            return self.live.state
        return rec.state

    @property
    def section(self) -> str:
        state = self.state
        if state in ("running", "interrupted"):
            return SECTIONS[state]
        return SECTIONS["history"]

    @property
    def done(self) -> int:
        return max(self.record.done_count, self.live.done if self.live is not None else 0)

    @property
    def fraction(self) -> float:
        n = len(self.record.steps) or 1
        if self.live is not None and not self.live.over:
            return self.live.fraction
        return sum(1 for s in self.record.steps if s.state in STEP_FINAL) / n


def op_rows(records: Iterable[OperationRecord], board: OperationBoard | None = None) -> tuple[OpRow, ...]:
    """One row per operation (the first record of an id wins), with its live progress if any."""
    seen: set[str] = set()
    rows = []
    for rec in records:
        if rec.id in seen:
            continue
        seen.add(rec.id)
        rows.append(OpRow(rec, board.runs.get(rec.id) if board is not None else None))
    return tuple(rows)


def op_now(row: OpRow) -> str:
    """What it does now (running), or how it ended."""
    rec, live = row.record, row.live
    if live is not None and not live.over and live.current is not None:
        step = live.plan.steps[live.current]
        text = f"{live.current + 1}: {step_name(step)} {step.target_name}"
        msg = live.steps[live.current].message
        return f"{text}: {one_line(msg)}" if msg else text
    if row.state in ("running", "interrupted"):
        reached = rec.step_reached
        if reached is not None:
            step = rec.plan.steps[reached.index]
            return f"{reached.index + 1}: {step_name(step)} {step.target_name} ({reached.state})"
    message = live.message if live is not None and live.over else rec.message
    return one_line(message) if message else NONE


def _op_state(row: OpRow) -> RowState:
    return RowState.ALERT if row.state in ("interrupted", "failed") else RowState.NORMAL


def _op_detail(row: OpRow, now: float) -> str:
    rec = row.record
    return (
        f"{rec.kind} {rec.target} · {row.state} · by {rec.operator} ({rec.role}) · "
        f"started {fmt_age(now - rec.created_at)} ago · id {rec.id} · digest {rec.digest[:12]} · "
        f"{op_now(row)}"
    )


def _section_summary(key: str, rows: Sequence[OpRow]) -> str:
    return f"{_SECTION_TITLES.get(key, key)} · {len(rows)}"


OPERATION_TABLE: TableSpec[OpRow] = TableSpec(
    name="Operations",
    columns=(
        Column("id", "Id", lambda r, _: r.record.id[:8], 8),
        Column("kind", "Kind", lambda r, _: r.record.kind, 9),
        Column("target", "Target", lambda r, _: r.record.target, 28, 8),
        Column("state", "State", lambda r, _: r.state, 11),
        Column("steps", "Steps", lambda r, _: f"{r.done}/{len(r.record.steps)}", 5, align="right",
               sort_key=lambda r: r.done),
        Column("progress", "Progress", lambda r, _: bar(r.fraction), 15, searchable=False,
               sort_key=lambda r: r.fraction, optional=True),
        Column("now", "Step now / result", lambda r, _: op_now(r), 80, 12),
        Column("operator", "By", lambda r, _: r.record.operator, 12, 4, optional=True),
        Column("started", "Started", lambda r, now: fmt_age(now - r.record.created_at), 7, align="right",
               sort_key=lambda r: -r.record.created_at, searchable=False, uses_now=True),
    ),
    row_key=lambda r: r.record.id,
    row_state=_op_state,
    detail=_op_detail,
    groupings=(Grouping("section", "section", lambda r: r.section, _section_summary),),
)  # fmt: skip


# --- one operation's journal ---------------------------------------------------------------------


def clock_time(epoch: float | None) -> str:
    """Time of day in UTC, "08:00:05Z": the journal's steps are minutes apart, not days."""
    if epoch is None:
        return NONE
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class JournalRow:
    record: OperationRecord
    step: StepRecord
    live: StepLive | None = None

    @property
    def plan_step(self) -> Step:
        return self.record.plan.steps[self.step.index]


def journal_rows(row: OpRow | None) -> tuple[JournalRow, ...]:
    if row is None:
        return ()
    live = row.live
    return tuple(
        JournalRow(row.record, s, live.steps.get(s.index) if live is not None and not live.over else None)
        for s in row.record.steps
    )


def _journal_state(r: JournalRow) -> str:
    if r.live is not None and r.live.state == "started":
        return live_state(r.live)
    return r.step.state


def _journal_outcome(r: JournalRow) -> str:
    if r.live is not None and r.live.state == "started" and r.live.message:
        return one_line(r.live.message)
    return one_line(r.step.outcome) if r.step.outcome else NONE


def _journal_detail(r: JournalRow, _now: float) -> str:
    s = r.plan_step
    return (
        f"{s.description} · {_journal_state(r)} · attempts {r.step.attempts} · started "
        f"{clock_time(r.step.started_at)} · finished {clock_time(r.step.finished_at)} · {_journal_outcome(r)}"
    )


JOURNAL_TABLE: TableSpec[JournalRow] = TableSpec(
    name="Journal",
    columns=(
        Column("pos", "#", lambda r, _: str(r.step.index + 1), 3, align="right",
               sort_key=lambda r: r.step.index),
        Column("layer", "Layer", lambda r, _: r.plan_step.layer, 10, 5, optional=True),
        Column("step", "Step", lambda r, _: step_name(r.plan_step), 15, 8),
        Column("target", "Target", lambda r, _: r.plan_step.target_name, 28, 8),
        Column("state", "State", lambda r, _: _journal_state(r), 12, 7),
        Column("tries", "Tries", lambda r, _: str(r.step.attempts), 5, align="right", optional=True),
        Column("started", "Started", lambda r, _: clock_time(r.step.started_at), 9, optional=True),
        Column("finished", "Finished", lambda r, _: clock_time(r.step.finished_at), 9, optional=True),
        Column("outcome", "Outcome", lambda r, _: _journal_outcome(r), 80, 10),
    ),
    row_key=lambda r: f"{r.record.id}:{r.step.index}",
    row_state=lambda r: RowState.ALERT if r.step.state in ("failed", "blocked") else RowState.NORMAL,
    detail=_journal_detail,
)  # fmt: skip


# --- marks for a batch ---------------------------------------------------------------------------


def with_marks(spec: TableSpec[R], marked: Callable[[R], bool]) -> TableSpec[R]:
    """`spec` with a first, one-cell column showing `MARK` on the rows `marked` says."""
    mark: Column[R] = Column(
        "mark", "", lambda r, _: MARK if marked(r) else " ", 1, searchable=False,
        sort_key=lambda r: 0 if marked(r) else 1,
    )  # fmt: skip
    return dataclasses.replace(spec, columns=(mark, *spec.columns))
