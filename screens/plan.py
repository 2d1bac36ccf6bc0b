"""Every action shows its plan first: each step, what it touches, what blocks it or warns. A
destructive plan runs only once the operator has typed its name (a batch: every name), on Enter
or ctrl+r; another runs on `y`. Then the same screen shows the run: each step's state, the
current step's progress, the result. Esc closes it at any time; a running operation goes on (the
Operations screen shows it). A plan that cannot be made, a role that may not, a host held by
another operation: one line in red, never a traceback.

The same screen resumes an interrupted operation (its stored plan, the steps already done) and
abandons one (typing its target's name).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Literal

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static

from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.ops.engine import Actor
from sovereign_tui.ops.journal import OperationRecord
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import OperationsBackend, batch_phrase, error_line
from sovereign_tui.render_ops import (
    PLAN_TABLE,
    OperationBoard,
    PlanRow,
    RunLive,
    StepLive,
    plan_rows,
    plan_summary,
    plan_warnings,
    run_line,
)

Planner = Callable[[], Awaitable[Sequence[Plan]]]
Mode = Literal["start", "resume", "abandon"]
State = Literal["planning", "ready", "starting", "running", "over", "failed"]
_RUN_LABEL = {"start": "Run", "resume": "Resume", "abandon": "Abandon"}


def may(app: object, action: str) -> bool:
    """Whether the app may `action` (a role action: drain, migrate, resume...): it has an
    operations backend and the operator's role allows it."""
    check = getattr(app, "may", None)
    return bool(check(action)) if callable(check) else False


def operations_of(app: object) -> tuple[OperationsBackend, Actor] | None:
    """The app's operations backend and actor, or None when it has none (it only looks)."""
    backend, actor = getattr(app, "operations", None), getattr(app, "actor", None)
    if backend is None or not isinstance(actor, Actor):
        return None
    return backend, actor


class PlanMade(Message):
    def __init__(self, plans: Sequence[Plan]) -> None:
        super().__init__()
        self.plans = tuple(plans)


class PlanActionFailed(Message):
    """Planning, a resume, an abandon or a cancel failed: the reason, one line."""

    def __init__(self, reason: str, *, planning: bool = False) -> None:
        super().__init__()
        self.reason = reason
        self.planning = planning


class OperationAbandoned(Message):
    def __init__(self, record: OperationRecord) -> None:
        super().__init__()
        self.record = record


class PlanScreen(ModalScreen[None]):
    TITLE = "Plan"
    AUTO_FOCUS = None
    BINDING_GROUP_TITLE = "Plan"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,ctrl+r", "run_plan", "Run", id="run-plan",
                tooltip="Run the plan (a destructive one once its name is typed; then Enter runs it too)"),
        Binding("c", "cancel_operation", "Cancel", id="cancel-operation",
                tooltip="Stop the operation: running steps are stopped and cleaned up"),
        Binding("o", "show_operations", "Operations", id="plan-operations",
                tooltip="Close this and show every operation, its progress and journal"),
        Binding("escape", "close", "Close", id="close-plan",
                tooltip="Close; a running operation goes on (the Operations screen shows it)"),
    ]  # fmt: skip
    DEFAULT_CSS = """
    PlanScreen {
        align: center middle;
        & > #plan-box { width: 100%; max-width: 160; height: 100%; max-height: 48; background: $surface; }
        & #plan-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
        & #plan-summary, & #plan-progress { height: auto; padding: 0 1; }
        & #plan-warnings { height: auto; max-height: 4; padding: 0 1; color: $text-warning; }
        & #plan-progress { display: none; &.-shown { display: block; } }
        & #plan-error { display: none; height: auto; padding: 0 1; color: $text-error; text-style: bold; }
        & #plan-error.-shown { display: block; }
        & #plan-confirm { height: 1; padding: 0 1; margin: 1 0 0 0; display: none; }
        & #plan-confirm.-shown { display: block; }
        & #plan-confirm > Input { width: 1fr; }
        & #plan-confirm > Button { width: auto; min-width: 10; margin: 0 0 0 1; }
    }
    """

    def __init__(
        self,
        heading: str,
        planner: Planner | None = None,
        *,
        plans: Sequence[Plan] = (),
        mode: Mode = "start",
        record: OperationRecord | None = None,
    ) -> None:
        super().__init__()
        self.heading = heading
        self.planner = planner
        self.plans: tuple[Plan, ...] = tuple(plans) if record is None else (record.plan,)
        self.mode: Mode = mode
        self.record = record
        """The journaled operation a resume or an abandon is about."""
        self.state: State = "planning" if planner is not None else "ready"
        self.error = ""
        self.outcome = ""
        """What an abandon answered."""
        self._prior: dict[int, StepLive] = {}
        if record is not None:
            self._prior = {
                s.index: StepLive(state=s.state, message=s.outcome, at=s.finished_at or s.started_at)
                for s in record.steps
            }

    # --- what it shows ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="plan-box"):
            yield Static(Content(self.heading), id="plan-title")
            yield Static(id="plan-summary")
            yield Static(id="plan-warnings")
            yield TablePane(SnapshotTable[PlanRow](PLAN_TABLE, id="plan-steps"))
            yield Static(id="plan-progress")
            yield Static(id="plan-error")
            with Horizontal(id="plan-confirm"):
                yield Input(id="confirm", compact=True)
                yield Button(_RUN_LABEL[self.mode], id="run", compact=True, disabled=True)
            yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.watch(self.app, "operations_version", self._board_changed, init=False)
        if self.planner is not None:
            self._make_plan()
        self._show()
        self._focus()

    @property
    def board(self) -> OperationBoard:
        board = getattr(self.app, "board", None)
        return board if isinstance(board, OperationBoard) else OperationBoard()

    @property
    def phrase(self) -> str | None:
        """What the operator types before the run key works; None: `y` is enough."""
        if not self.plans:
            return None
        if self.mode == "abandon":
            return self.plans[0].target
        return batch_phrase(self.plans)

    @property
    def typed(self) -> str:
        return " ".join(self.query_one("#confirm", Input).value.split())

    @property
    def confirmed(self) -> bool:
        phrase = self.phrase
        return phrase is None or self.typed == phrase

    @property
    def role_action(self) -> str:
        if self.mode != "start":
            return self.mode
        return self.plans[0].kind if self.plans else "drain"

    def _runs(self) -> list[RunLive | None]:
        board = self.board
        return [board.runs.get(p.id) for p in self.plans]

    def _rows(self) -> list[PlanRow]:
        rows = plan_rows(self.plans, self.board)
        if self._prior:
            rows = [
                r if r.live is not None else PlanRow(r.pos, r.plan, r.step, self._prior.get(r.step.index))
                for r in rows
            ]
        return rows

    def _progress_lines(self) -> list[str]:
        if self.outcome:
            return [self.outcome]
        board, lines = self.board, []
        for plan, run in zip(self.plans, self._runs(), strict=True):
            refused = board.refusals.get(plan.id)
            if run is not None:
                lines.append(run_line(run))
            elif refused is not None:
                lines.append(f"{plan.kind} {plan.target}: not started: {refused}")
            else:
                lines.append(f"{plan.kind} {plan.target}: waiting")
        if self.state == "over":
            lines.append("finished · Esc closes · o shows every operation")
        return lines

    def _show(self) -> None:
        plans = self.plans
        summary = plan_summary(plans) if self.state != "failed" else "no plan"
        phrase = self.phrase
        if phrase is not None and self.state == "ready":
            summary += f" · type {phrase} to {_RUN_LABEL[self.mode].lower()} it"
        self.query_one("#plan-summary", Static).update(Content(summary))
        self.query_one("#plan-warnings", Static).update(Content("\n".join(plan_warnings(plans))))
        self.query_one("#plan-steps", SnapshotTable).set_rows(self._rows())
        progress = self.query_one("#plan-progress", Static)
        shown = self.state in ("starting", "running", "over")
        progress.set_class(shown, "-shown")
        progress.update(Content("\n".join(self._progress_lines()) if shown else ""))
        err = self.query_one("#plan-error", Static)
        err.set_class(bool(self.error), "-shown")
        err.update(Content(self.error))
        confirm = self.query_one("#plan-confirm", Horizontal)
        confirm.set_class(self.state == "ready" and bool(plans), "-shown")
        box = self.query_one("#confirm", Input)
        box.display = phrase is not None
        box.placeholder = f"type {phrase} to {_RUN_LABEL[self.mode].lower()} it" if phrase else ""
        self._sync_run()

    def _sync_run(self) -> None:
        ready = self.state == "ready" and bool(self.plans) and may(self.app, self.role_action)
        self.query_one("#run", Button).disabled = not (ready and self.confirmed)
        self.refresh_bindings()

    def _focus(self) -> None:
        if self.state == "ready" and self.phrase is not None:
            self.query_one("#confirm", Input).focus()
        else:
            self.query_one("#plan-steps", SnapshotTable).focus()

    # --- keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run_plan":
            if self.state != "ready" or not self.plans or not may(self.app, self.role_action):
                return False
            return True if self.confirmed else None
        if action == "cancel_operation":
            return self._live_run() is not None and may(self.app, "cancel")
        return True

    def _live_run(self) -> RunLive | None:
        if self.state != "running":
            return None
        return next((r for r in self._runs() if r is not None and not r.over), None)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._sync_run()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.check_action("run_plan", ()):
            self.action_run_plan()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run" and self.check_action("run_plan", ()):
            self.action_run_plan()

    def action_run_plan(self) -> None:
        if not self.confirmed or self.state != "ready":
            return
        self.error, self.state = "", "starting"
        if self.mode == "resume":
            self._resume()
        elif self.mode == "abandon":
            self._abandon()
        else:
            start = getattr(self.app, "start_plans", None)
            if callable(start):
                start(self.plans, self.typed)
        self._show()
        self.query_one("#plan-steps", SnapshotTable).focus()

    def action_cancel_operation(self) -> None:
        run = self._live_run()
        if run is not None:
            self._cancel(run.op_id)

    def action_show_operations(self) -> None:
        self.dismiss()
        self.app.switch_mode("operations")

    def action_close(self) -> None:
        self.dismiss()

    # --- workers (they post messages; the handlers below touch the widgets) ---------------------

    @work(exclusive=True, group="plan", name="make-plan")
    async def _make_plan(self) -> None:
        assert self.planner is not None
        try:
            plans = await self.planner()
        except Exception as exc:
            self.post_message(PlanActionFailed(error_line(exc), planning=True))
            return
        self.post_message(PlanMade(plans))

    @work(exclusive=True, group="plan", name="resume")
    async def _resume(self) -> None:
        ctx, rec = operations_of(self.app), self.record
        if ctx is None or rec is None:
            return
        try:
            run = await ctx[0].resume(rec.id, ctx[1])
        except Exception as exc:
            self.post_message(PlanActionFailed(error_line(exc)))
            return
        follow = getattr(self.app, "follow_run", None)
        if callable(follow):
            follow(run)

    @work(exclusive=True, group="plan", name="abandon")
    async def _abandon(self) -> None:
        ctx, rec = operations_of(self.app), self.record
        if ctx is None or rec is None:
            return
        try:
            done = await ctx[0].abandon(rec.id, ctx[1])
        except Exception as exc:
            self.post_message(PlanActionFailed(error_line(exc)))
            return
        self.post_message(OperationAbandoned(done))

    @work(group="cancel", name="cancel")
    async def _cancel(self, op_id: str) -> None:
        ctx = operations_of(self.app)
        if ctx is None:
            return
        try:
            await ctx[0].cancel(op_id, ctx[1])
        except Exception as exc:
            self.post_message(PlanActionFailed(error_line(exc)))

    def on_plan_made(self, message: PlanMade) -> None:
        self.plans = message.plans
        self.state = "ready" if self.plans else "failed"
        self.error = "" if self.plans else "nothing to do: the plan has no steps"
        self._show()
        self._focus()

    def on_plan_action_failed(self, message: PlanActionFailed) -> None:
        self.error = message.reason
        if message.planning:
            self.state = "failed"
        elif self.state == "starting":
            self.state = "ready"
        self._show()
        self._focus()

    def on_operation_abandoned(self, message: OperationAbandoned) -> None:
        rec = message.record
        self.outcome = f"{rec.kind} {rec.target}: {rec.state}: {rec.message or ''}; its hosts are released"
        self.state = "over"
        self._show()

    def _board_changed(self, _version: int) -> None:
        if self.state not in ("starting", "running"):
            return
        board, runs = self.board, self._runs()
        settled = [
            (r is not None and r.over) or (r is None and p.id in board.refusals)
            for p, r in zip(self.plans, runs, strict=True)
        ]
        if all(r is None for r in runs):
            refusal = next((board.refusals[p.id] for p in self.plans if p.id in board.refusals), None)
            if refusal is not None:
                self.state, self.error = "ready", refusal
                self._show()
                self._focus()
            return
        self.state = "over" if all(settled) else "running"
        self._show()
