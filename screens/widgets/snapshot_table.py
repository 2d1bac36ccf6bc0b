"""A table for snapshot rows of any kind, on Textual's Line API.

Only the visible lines are drawn, so 100,000 rows cost what 50 do; sorting, filtering and
grouping run on the data (`TableModel`), and a new snapshot replaces the rows without rebuilding
anything that depends on the rows' count or the terminal's width unless those changed. The cursor
follows its row by key across snapshots. Stale rows are dim and marked `~`, alerting rows bold and
marked `!`, the cursor row marked `>`, group headers start with `──`: readable without colour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from sovereign_tui.table import (
    Column,
    Group,
    RowState,
    TableModel,
    TableSpec,
    fit_widths,
    natural_widths,
    sample_rows,
)

R = TypeVar("R")

_GAP = 1
_MARKS = 2
"""Cells before the first column: the cursor mark and the row's state marker."""


def fit(text: str, width: int, align: str = "left") -> str:
    """`text` in exactly `width` cells: padded, or cut with an ellipsis."""
    length = len(text) if text.isascii() else cell_len(text)
    if length > width:
        if width <= 0:
            return ""
        return (text[: width - 1] if text.isascii() else set_cell_size(text, width - 1)) + "…"
    pad = " " * (width - length)
    return pad + text if align == "right" else text + pad


class SnapshotTable(ScrollView, Generic[R], can_focus=True):
    """Rows described by a `TableSpec`; feed it with `set_rows` and `set_filter`."""

    BINDING_GROUP_TITLE = "Table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter", "open_row", "Open", id="open-row", tooltip="Everything about the row under the cursor"
        ),
        Binding("s", "sort_next", "Sort", id="sort-next", tooltip="Sort by the next column"),
        Binding(
            "r", "sort_reverse", "Reverse", show=False, id="sort-reverse", tooltip="Reverse the sort order"
        ),
        Binding(
            "b",
            "next_grouping",
            "Group",
            id="group-by",
            tooltip="Group the rows (each way in turn, then none)",
        ),
        Binding("up,k", "cursor_up", "Row up", show=False, id="cursor-up"),
        Binding("down,j", "cursor_down", "Row down", show=False, id="cursor-down"),
        Binding("pageup", "page_up", "Page up", show=False, id="page-up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="page-down"),
        Binding("home,g", "first_row", "First row", show=False, id="first-row"),
        Binding("end,G", "last_row", "Last row", show=False, id="last-row"),
        Binding("left", "scroll_left", "Scroll left", show=False, id="scroll-left"),
        Binding("right", "scroll_right", "Scroll right", show=False, id="scroll-right"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "snapshot-table--header",
        "snapshot-table--cursor",
        "snapshot-table--stale",
        "snapshot-table--alert",
        "snapshot-table--group",
    }
    DEFAULT_CSS = """
    SnapshotTable {
        height: 1fr;
        border: round $foreground 30%;
        border-title-align: left;
        border-subtitle-align: right;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
        &:focus { border: round $primary; }
        & > .snapshot-table--header { text-style: bold; background: $panel; }
        & > .snapshot-table--cursor {
            background: $block-cursor-blurred-background; text-style: bold;
        }
        &:focus > .snapshot-table--cursor {
            background: $block-cursor-background; color: $block-cursor-foreground;
        }
        & > .snapshot-table--stale { text-style: dim; }
        & > .snapshot-table--alert { color: $text-error; text-style: bold; }
        & > .snapshot-table--group { text-style: bold; background: $boost; }
    }
    App:nocolor SnapshotTable > .snapshot-table--cursor { text-style: bold reverse; }
    """

    now: reactive[float] = reactive(0.0, layout=False)
    """Wall-clock time for the columns that show ages."""

    class CursorMoved(Message):
        """The cursor is on another row (key None: the table is empty)."""

        def __init__(self, table: SnapshotTable[Any], key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

    class RowOpened(Message):
        """Enter on a row of a table that opens rows: the screen shows everything about it."""

        def __init__(self, table: SnapshotTable[Any], row: Any) -> None:
            super().__init__()
            self.table = table
            self.row = row

    def __init__(
        self,
        spec: TableSpec[R],
        *,
        openable: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        self._styles: dict[str, Style] = {}
        super().__init__(name=name, id=id, classes=classes)
        self.model: TableModel[R] = TableModel(spec)
        self.openable = openable
        """Whether Enter opens a row (the screen handles `RowOpened`)."""
        self.note = ""
        """Appended to the title: what the count alone does not say ("2 critical")."""
        self._preferred = natural_widths(spec, ())
        self._widths: tuple[int, list[int], list[int]] = (-1, [], [])
        self._set_titles()

    @property
    def spec(self) -> TableSpec[R]:
        return self.model.spec

    # --- feeding ----------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[R]) -> None:
        if self.model.set_rows(rows):
            self._preferred = natural_widths(self.spec, sample_rows(rows), self.now)
            self._view_changed()

    def set_filter(self, text: str) -> None:
        self.model.set_filter(text)
        self._view_changed()

    def sort_by(self, column_id: str | None, reverse: bool | None = None) -> None:
        self.model.sort_by(None if column_id is None else self.spec.index_of(column_id), reverse)
        self._view_changed()

    def set_scope(self, label: str | None, predicate: Callable[[R], bool] | None = None) -> None:
        self.model.set_scope(label, predicate)
        self._view_changed()

    def group_by(self, grouping_id: str | None) -> None:
        self.model.group_by(grouping_id)
        self._view_changed()

    def set_note(self, note: str) -> None:
        if note != self.note:
            self.note = note
            self._set_titles()

    def watch_now(self) -> None:
        if self.spec.uses_now:
            self.refresh()
            self.post_message(self.CursorMoved(self, self.model.cursor_key))

    # --- actions ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_row":
            return self.openable
        if action == "next_grouping":
            return bool(self.spec.groupings)
        return True

    def action_open_row(self) -> None:
        row = self.model.cursor_row
        if row is not None:
            self.post_message(self.RowOpened(self, row))

    def action_next_grouping(self) -> None:
        self.model.next_grouping()
        self._view_changed()

    def action_sort_next(self) -> None:
        self.model.sort_next()
        self._view_changed()

    def action_sort_reverse(self) -> None:
        self.model.toggle_reverse()
        self._view_changed()

    def action_cursor_up(self) -> None:
        self._move(self.model.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.model.cursor + 1)

    def action_page_up(self) -> None:
        self._move(self.model.cursor - self._body_height())

    def action_page_down(self) -> None:
        self._move(self.model.cursor + self._body_height())

    def action_first_row(self) -> None:
        self._move(0)

    def action_last_row(self) -> None:
        self._move(len(self.model.lines) - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            column = self._column_at(offset.x + int(self.scroll_x))
            if column is not None:
                reverse = not self.model.reverse if column == self.model.sort_column else False
                self.model.sort_by(column, reverse)
                self._view_changed()
        else:
            self._move(int(self.scroll_y) + offset.y - 1)

    # --- internals --------------------------------------------------------------------------

    def _body_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    def _move(self, index: int) -> None:
        before = self.model.cursor
        self.model.cursor_to(index)
        if self.model.cursor != before:
            self._refresh_row(before)
            self._refresh_row(self.model.cursor)
            self._scroll_to_cursor()
            self.post_message(self.CursorMoved(self, self.model.cursor_key))

    def _refresh_row(self, index: int) -> None:
        y = index - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh_line(y)

    def _scroll_to_cursor(self) -> None:
        cursor, top, body = self.model.cursor, int(self.scroll_y), self._body_height()
        if cursor < top:
            self.scroll_to(y=cursor, animate=False, immediate=True)
        elif cursor >= top + body:
            self.scroll_to(y=cursor - body + 1, animate=False, immediate=True)

    def _set_titles(self) -> None:
        model = self.model
        title = model.title()
        self.border_title = Content(f"{title} · {self.note}" if self.note else title)
        self.border_subtitle = Content(model.subtitle()) if model.subtitle() else None

    def _view_changed(self) -> None:
        model = self.model
        self._set_titles()
        self._update_virtual_size()
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.CursorMoved(self, model.cursor_key))

    def _column_widths(self) -> list[int]:
        available = self.scrollable_content_region.width
        if self._widths[0] != available or self._widths[1] is not self._preferred:
            widths = fit_widths(self.spec.columns, self._preferred, available, _GAP, _MARKS + _GAP)
            self._widths = (available, self._preferred, widths)
        return self._widths[2]

    def _update_virtual_size(self) -> None:
        widths = [w for w in self._column_widths() if w]
        width = _MARKS + sum(widths) + _GAP * len(widths)
        size = Size(width, len(self.model.lines) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_to_cursor()

    def _column_at(self, x: int) -> int | None:
        start = _MARKS + _GAP
        for i, w in enumerate(self._column_widths()):
            if not w:
                continue
            if start <= x < start + w:
                return i
            start += w + _GAP
        return None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"snapshot-table--{name}")
        return style

    def _header_text(self, widths: list[int]) -> str:
        parts = [" " * _MARKS]
        sort, reverse = self.model.sort_column, self.model.reverse
        for i, (col, w) in enumerate(zip(self.spec.columns, widths, strict=True)):
            if not w:
                continue
            if i == sort:
                arrow = "▼" if reverse else "▲"
                text = arrow + col.label if col.align == "right" else col.label + arrow
                label = fit(text, w, col.align)  # the arrow beside its label, whatever the width
            else:
                label = fit(col.label, w, col.align)
            parts.append(label)
        return " ".join(parts)

    def _row_text(self, row: R, widths: list[int], cursor: bool) -> tuple[str, RowState]:
        state = self.spec.row_state(row)
        now = self.now
        cells: list[str] = [(">" if cursor else " ") + state.marker]
        col: Column[R]
        for col, w in zip(self.spec.columns, widths, strict=True):
            if w:
                cells.append(fit(col.cell(row, now), w, col.align))
        return " ".join(cells), state

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        widths = self._column_widths()
        if y == 0:
            text = self._header_text(widths)
            style = base + self._style("header")
        else:
            index = scroll_y + y - 1
            lines = self.model.lines
            if index >= len(lines):
                return Strip.blank(width, base)
            cursor = index == self.model.cursor
            line = lines[index]
            if isinstance(line, Group):
                text = f"{'>' if cursor else ' '} ── {line.label}"
                style = base + self._style("group")
                if cursor:
                    style += self._style("cursor")
                strip = Strip([Segment(text, style)], cell_len(text))
                return strip.crop_extend(0, width, style)  # headers do not scroll sideways
            text, state = self._row_text(line, widths, cursor)
            style = base
            if state is RowState.STALE:
                style += self._style("stale")
            elif state is RowState.ALERT:
                style += self._style("alert")
            if cursor:
                style += self._style("cursor")
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, style)
