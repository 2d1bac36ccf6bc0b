"""A snapshot table with its filter box and its detail line.

`/` opens the filter box, typing filters, Enter goes back to the table keeping the filter, Escape
clears it. Under the table, everything about the cursor's row (cells may be cut on a small
terminal; the detail wraps, in three lines that stay put as the cursor moves), or the whole
header of the cursor's group; on a screen with several tables only the focused one shows it."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input, Static

from screens.widgets.snapshot_table import SnapshotTable
from sovereign_tui.table import Group


class TablePane(Vertical):
    BINDING_GROUP_TITLE = "Filter"
    BINDINGS: ClassVar[list[BindingType]] = [
        # A priority binding acts when the key arrives, before the keys after it are routed: text
        # that came with it (a paste, one read of an SSH session's PTY) lands in the filter box,
        # and none of it acts as the screen's keys (a host name's ``d`` as a drain).
        Binding(
            "slash",
            "open_filter",
            "Filter",
            id="filter",
            tooltip="Show only rows containing a text",
            priority=True,
        ),
        Binding(
            "escape", "clear_filter", "Clear", id="clear-filter", tooltip="Clear the filter: every row again"
        ),
    ]
    DEFAULT_CSS = """
    TablePane {
        height: 1fr;
        & > Input { display: none; border: none; height: 1; padding: 0 1; }
        &.-filtering > Input { display: block; }
        & > .detail { height: 3; padding: 0 1; color: $text-muted; }
    }
    """

    def __init__(self, table: SnapshotTable[Any], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.table = table

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: text in any column · Enter keeps · Esc clears", id="filter")
        yield self.table
        if self.table.spec.detail is not None:
            box = Static(classes="detail")
            box.display = False  # shown while the table has the focus
            yield box

    def on_snapshot_table_cursor_moved(self, event: SnapshotTable.CursorMoved) -> None:
        detail = self.table.spec.detail
        if event.table is not self.table or detail is None:
            return
        line = self.table.model.cursor_line
        if line is None:
            text = ""
        elif isinstance(line, Group):
            text = line.label
        else:
            text = detail(line, self.table.now)
        self.query_one(".detail", Static).update(Content(text))

    def on_descendant_focus(self) -> None:
        self._show_detail(True)

    def on_descendant_blur(self) -> None:
        self._show_detail(self.has_focus_within)

    def _show_detail(self, shown: bool) -> None:
        for box in self.query_children(".detail").results(Static):
            box.display = shown

    @property
    def filter_input(self) -> Input:
        return self.query_one("#filter", Input)

    def action_open_filter(self) -> None:
        self.add_class("-filtering")
        self._focus_now(self.filter_input)
        self.refresh_bindings()

    def action_clear_filter(self) -> None:
        self.filter_input.value = ""
        self.table.set_filter("")
        self.remove_class("-filtering")
        self._focus_now(self.table)
        self.refresh_bindings()

    def _focus_now(self, widget: Input | SnapshotTable[Any]) -> None:
        """`focus()` waits for the message queue; keys already on their way must find it moved."""
        self.screen.set_focus(widget)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            return self.has_class("-filtering") or bool(self.table.model.filter.strip())
        if action == "open_filter":  # a `/` typed in the box is text
            return self.screen.focused is not self.filter_input
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.table.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Back to the table; the filter stays (the table's subtitle shows it, Escape clears it)."""
        event.stop()
        self.remove_class("-filtering")
        self._focus_now(self.table)
        self.refresh_bindings()
