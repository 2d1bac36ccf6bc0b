"""Operations: what runs now (steps done of all, the current step, a progress bar), what was
interrupted (a process died mid-way: resume or abandon it), and the history; under it the journal
of the operation under the cursor, step by step with state, attempts and times.

Live progress comes from the app's board (the events of the operations this session runs); the
list and the journal come from the backend, read again whenever the board changes and every few
seconds (another session's operations progress too).
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from screens.base import SnapshotScreen
from screens.plan import PlanScreen, operations_of
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.ops.journal import OperationRecord
from sovereign_tui.ops_gateway import error_line
from sovereign_tui.render_ops import (
    JOURNAL_TABLE,
    OPERATION_TABLE,
    JournalRow,
    OperationBoard,
    OpRow,
    journal_rows,
    op_rows,
)

RELOAD_S = 5.0
"""How often the list is read again while nothing of this session changes."""


class OperationsLoaded(Message):
    def __init__(self, records: list[OperationRecord]) -> None:
        super().__init__()
        self.records = records

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, OperationsLoaded)


class OperationsFailed(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class OperationsScreen(SnapshotScreen):
    TITLE = "Operations"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_operation", "Cancel", id="cancel-operation",
                tooltip="Stop the running operation under the cursor; running steps are cleaned up"),
        Binding("R", "resume_operation", "Resume", id="resume-operation",
                tooltip="Run an interrupted or failed operation on from the step it reached"),
        Binding("A", "abandon_operation", "Abandon", id="abandon-operation",
                tooltip="Give an interrupted operation up: its hosts released, its steps left as they are"),
    ]  # fmt: skip
    ACTION_ROLES: ClassVar[dict[str, str]] = {
        "cancel_operation": "cancel",
        "resume_operation": "resume",
        "abandon_operation": "abandon",
    }
    DEFAULT_CSS = """
    OperationsScreen #ops-note { height: auto; padding: 0 1; display: none; }
    OperationsScreen #ops-note.-shown { display: block; }
    OperationsScreen #ops-note.-error { color: $text-error; text-style: bold; }
    OperationsScreen #operations-pane { height: 3fr; }
    OperationsScreen #journal-pane { height: 2fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[OperationRecord] = []
        self._loaded_at = 0.0

    def compose_body(self) -> ComposeResult:
        yield Static(id="ops-note")
        yield TablePane(SnapshotTable[OpRow](OPERATION_TABLE, id="operations"), id="operations-pane")
        yield TablePane(SnapshotTable[JournalRow](JOURNAL_TABLE, id="journal"), id="journal-pane")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#operations", SnapshotTable)
        table.sort_by("started")
        table.group_by("section")
        self.watch(self.app, "operations_version", self._board_changed, init=False)
        if operations_of(self.app) is None:
            self._note("no operations backend: this session only looks")
        self._load()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._load()

    @property
    def board(self) -> OperationBoard:
        board = getattr(self.app, "board", None)
        return board if isinstance(board, OperationBoard) else OperationBoard()

    def _note(self, text: str, error: bool = False) -> None:
        note = self.query_one("#ops-note", Static)
        note.set_class(bool(text), "-shown")
        note.set_class(error, "-error")
        note.update(Content(text))

    # --- data ------------------------------------------------------------------------------------

    @work(exclusive=True, group="operations-list", name="load-operations")
    async def _load(self) -> None:
        ctx = operations_of(self.app)
        if ctx is None:
            return
        try:
            interrupted = await ctx[0].interrupted()
            recent = await ctx[0].recent()
        except Exception as exc:
            self.post_message(OperationsFailed(error_line(exc)))
            return
        self.post_message(OperationsLoaded(interrupted + recent))

    def on_operations_loaded(self, message: OperationsLoaded) -> None:
        self.records = message.records
        self._loaded_at = self.now
        self._show()

    def on_operations_failed(self, message: OperationsFailed) -> None:
        self._note(message.reason, error=True)

    def _show(self) -> None:
        table = self.query_one("#operations", SnapshotTable)
        table.set_rows(op_rows(self.records, self.board))
        if table.model.cursor_row is None and table.model.view:
            table.action_cursor_down()  # off the first group's header, onto an operation
        self._show_journal()

    def _show_journal(self) -> None:
        row = self.query_one("#operations", SnapshotTable).model.cursor_row
        journal = self.query_one("#journal", SnapshotTable)
        journal.set_rows(journal_rows(row if isinstance(row, OpRow) else None))
        journal.set_note(f"{row.record.kind} {row.record.target}" if isinstance(row, OpRow) else "")

    def on_snapshot_table_cursor_moved(self, event: SnapshotTable.CursorMoved) -> None:
        if event.table.id == "operations":
            self._show_journal()

    def _board_changed(self, _version: int) -> None:
        if self.is_mounted:
            self._show()
            self._load()

    def watch_now(self, now: float) -> None:
        self.query_one("#operations", SnapshotTable).now = now
        if now - self._loaded_at >= RELOAD_S and self.is_current:
            self._loaded_at = now
            self._load()

    # --- keys ------------------------------------------------------------------------------------

    def _selected(self) -> OpRow | None:
        row = self.query_one("#operations", SnapshotTable).model.cursor_row
        return row if isinstance(row, OpRow) else None

    def action_cancel_operation(self) -> None:
        row = self._selected()
        if row is None or row.state != "running":
            self.notify("cancel: put the cursor on a running operation", severity="warning")
            return
        self._cancel(row.record.id)

    def action_resume_operation(self) -> None:
        row = self._selected()
        if row is None or row.state not in ("interrupted", "failed"):
            self.notify("resume: put the cursor on an interrupted or failed operation", severity="warning")
            return
        rec = row.record
        reached = rec.step_reached
        where = f" from step {reached.index + 1}" if reached is not None else ""
        heading = f"Resume {rec.kind} {rec.target}{where} ({rec.done_count} of {len(rec.steps)} steps done)"
        self.app.push_screen(PlanScreen(heading, mode="resume", record=rec))

    def action_abandon_operation(self) -> None:
        row = self._selected()
        if row is None or row.state != "interrupted":
            self.notify("abandon: put the cursor on an interrupted operation", severity="warning")
            return
        rec = row.record
        heading = f"Abandon {rec.kind} {rec.target}: its hosts are released, its steps left as they are"
        self.app.push_screen(PlanScreen(heading, mode="abandon", record=rec))

    @work(group="cancel", name="cancel")
    async def _cancel(self, op_id: str) -> None:
        ctx = operations_of(self.app)
        if ctx is None:
            return
        try:
            await ctx[0].cancel(op_id, ctx[1])
        except Exception as exc:
            self.post_message(OperationsFailed(error_line(exc)))
