"""Tables over snapshot rows of any kind, without a UI toolkit.

A table is described by a `TableSpec`: its columns, each a function from a row to display text
and a sort key. `TableModel` holds the rows, sort, filter and a cursor that stays on its row (by
key) as snapshots replace each other; the widget only draws what it says.

Work is done on the data and only when it changes: a new snapshot re-sorts and re-filters once;
the filter text of a row is cached by key and reused while the row is the same object (the store
keeps the objects of targets that did not change), so typing in the filter over 100,000 rows
does not format 100,000 rows per key press.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Generic, Literal, TypeVar, cast

R = TypeVar("R")
V = TypeVar("V")

SortKey = Any
"""Whatever one column's sort function returns; comparable within that column."""


class RowState(enum.Enum):
    """How a row stands out; `marker` keeps it visible without colour."""

    NORMAL = ""
    STALE = "~"
    """Last known values of a source that failed or went quiet."""
    ALERT = "!"
    """Needs attention: a source down, a GPU with errors."""

    @property
    def marker(self) -> str:
        return self.value or " "


@dataclass(frozen=True, slots=True)
class Column(Generic[R]):
    id: str
    label: str
    cell: Callable[[R, float], str]
    """Display text from the row and the current wall-clock time (for ages)."""
    width: int
    """Width in cells of a fixed column; the most a shrinkable one takes for its content."""
    min_width: int = 0
    """Narrowest it may shrink to on a small terminal; 0 keeps `width`."""
    align: Literal["left", "right"] = "left"
    sort_key: Callable[[R], SortKey | None] | None = None
    """Sort value; None sorts last whatever the direction. Default: the cell text, naturally."""
    searchable: bool = True
    """Whether the filter looks at it (ages change every second, so they are not)."""
    uses_now: bool = False
    optional: bool = False
    """Hidden when the preferred widths do not fit (the detail line still shows it)."""

    def sort_value(self, row: R) -> SortKey | None:
        if self.sort_key is not None:
            return self.sort_key(row)
        return natural_key(self.cell(row, 0.0))


def _normal(_: object) -> RowState:
    return RowState.NORMAL


@dataclass(frozen=True, slots=True)
class Grouping(Generic[R]):
    """A way to gather rows under header lines: "by host", "by model"."""

    id: str
    label: str
    key: Callable[[R], str]
    """The group a row belongs to (also the header's name)."""
    summary: Callable[[str, Sequence[R]], str]
    """The header's text from the group's name and its rows (those shown): counts, averages."""


@dataclass(eq=False)
class Group(Generic[R]):
    """A header line in a grouped view, followed by its rows."""

    grouping: Grouping[R]
    key: str
    rows: tuple[R, ...]

    @cached_property
    def label(self) -> str:
        """Computed when first drawn: 10,000 groups cost only the ones on screen."""
        return self.grouping.summary(self.key, self.rows)


@dataclass(frozen=True, slots=True)
class TableSpec(Generic[R]):
    name: str
    """What the rows are, for the title: "GPUs 12 of 40"."""
    columns: tuple[Column[R], ...]
    row_key: Callable[[R], str]
    """Stable identity of a row across snapshots (the cursor follows it)."""
    row_state: Callable[[R], RowState] = _normal
    default_sort: str | None = None
    """Column id to sort by at first; None keeps the snapshot's order."""
    default_reverse: bool = False
    detail: Callable[[R, float], str] | None = None
    """Everything about the cursor's row, for the line under the table (cells may be cut)."""
    groupings: tuple[Grouping[R], ...] = ()
    """Ways the rows can be grouped under header lines (none: the table is never grouped)."""

    def index_of(self, column_id: str) -> int:
        for i, col in enumerate(self.columns):
            if col.id == column_id:
                return i
        raise KeyError(f"{self.name} has no column {column_id!r}")

    @property
    def uses_now(self) -> bool:
        return any(c.uses_now for c in self.columns)


# --- table helpers ----------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


@lru_cache(maxsize=65536)
def natural_key(text: str) -> tuple[str | int, ...]:
    """Sort "gpu-2" before "gpu-10", ignoring case. Parts alternate text/number from a text part,
    so two keys always compare like with like. Cached: host names repeat once per GPU."""
    parts = _DIGITS.split(text.casefold())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def order_by(keys: Sequence[SortKey | None], indices: Iterable[int], reverse: bool = False) -> list[int]:
    """`indices` stably sorted by `keys[i]`; those whose key is None go last in either direction."""
    known: list[int] = []
    unknown: list[int] = []
    for i in indices:
        (unknown if keys[i] is None else known).append(i)
    known.sort(key=cast(Callable[[int], Any], keys.__getitem__), reverse=reverse)
    return known + unknown


def sort_rows(rows: Sequence[R], column: Column[R], reverse: bool = False) -> list[R]:
    """Stable sort on one column; rows whose value is unknown go last in either direction."""
    keys = [column.sort_value(r) for r in rows]
    return [rows[i] for i in order_by(keys, range(len(rows)), reverse)]


def search_text(spec: TableSpec[R], row: R, now: float = 0.0) -> str:
    """What the filter matches against: the searchable cells, case-folded, kept apart so that a
    needle never matches across two cells."""
    return "\x1f".join([c.cell(row, now) for c in spec.columns if c.searchable]).casefold()


def matching(texts: Sequence[str], needle: str) -> list[int]:
    """Indices of the texts that contain `needle` (case-insensitive); all for an empty needle."""
    needle = needle.strip().casefold()
    if not needle:
        return list(range(len(texts)))
    return [i for i, text in enumerate(texts) if needle in text]


def filter_rows(rows: Sequence[R], needle: str, text_of: Callable[[R], str]) -> list[R]:
    """Rows whose text contains `needle` (case-insensitive); all rows for an empty needle."""
    return [rows[i] for i in matching([text_of(r) for r in rows], needle)]


def carry_over(
    old_rows: Sequence[R], old_values: Sequence[V], new_rows: Sequence[R], compute: Callable[[R], V]
) -> list[V]:
    """Values for `new_rows`, reusing the value of every row that is the same object as before
    (the store keeps the rows of targets that did not change) and computing only the others.

    Rows are matched by position, allowing for a shift where rows were inserted or removed; only
    after a long run of misses is an index of the old rows built to find where they went."""
    values: list[V] = []
    n_old = len(old_rows)
    shift = 0
    misses = 0
    where: dict[int, int] | None = None
    for i, row in enumerate(new_rows):
        j = i + shift
        if 0 <= j < n_old and old_rows[j] is row:
            values.append(old_values[j])
            misses = 0
            continue
        misses += 1
        if where is None and misses > _RESYNC_AFTER:
            where = {id(r): k for k, r in enumerate(old_rows)}
        k = None if where is None else where.get(id(row))
        if k is None:
            values.append(compute(row))
        else:
            shift = k - i
            values.append(old_values[k])
    return values


_RESYNC_AFTER = 32
"""Misses in a row before `carry_over` looks the rows up: more than a changed target's rows."""


def natural_widths(spec: TableSpec[R], sample: Sequence[R], now: float = 0.0) -> list[int]:
    """Preferred widths for these rows: a shrinkable column takes what its label and the widest
    sampled cell need, up to its `width`; a fixed column keeps its `width`."""
    widths = []
    for col in spec.columns:
        if not col.min_width:
            widths.append(max(col.width, len(col.label) + 1))  # room for the sort arrow
            continue
        widest = max((len(col.cell(row, now)) for row in sample), default=0)
        widths.append(min(col.width, max(widest, len(col.label) + 1)))
    return widths


def sample_rows(rows: Sequence[R], limit: int = 256) -> Sequence[R]:
    """At most `limit` rows spread evenly over `rows`, for sizing columns without reading all."""
    if len(rows) <= limit:
        return rows
    return rows[:: -(-len(rows) // limit)]


def fit_widths(
    columns: Sequence[Column[Any]], preferred: Sequence[int], available: int, gap: int = 1, fixed: int = 0
) -> list[int]:
    """Column widths for `available` cells, 0 for a hidden column. While the preferred widths do
    not fit, optional columns are hidden (rightmost first); then the shrinkable columns give up
    cells, the one with the most room to give first, until the row fits or none can give more."""
    widths = list(preferred)

    def excess() -> int:
        shown = [w for w in widths if w]
        return fixed + sum(shown) + gap * max(len(shown) - 1, 0) - available

    for i in reversed(range(len(columns))):
        if excess() <= 0:
            break
        if columns[i].optional:
            widths[i] = 0
    floors = [min(c.min_width or c.width, w) for c, w in zip(columns, widths, strict=True)]
    over = excess()
    while over > 0:
        slack, i = max((w - f, i) for i, (w, f) in enumerate(zip(widths, floors, strict=True)))
        if slack <= 0:
            break
        widths[i] -= 1
        over -= 1
    return widths


# --- the model ---------------------------------------------------------------------------------


class TableModel(Generic[R]):
    def __init__(self, spec: TableSpec[R]) -> None:
        self.spec = spec
        self._rows: Sequence[R] = ()
        self._view: list[R] = []
        self._lines: list[R | Group[R]] = []
        self._sort: int | None = None if spec.default_sort is None else spec.index_of(spec.default_sort)
        self._reverse = spec.default_reverse
        self._filter = ""
        self._scope: tuple[str, Callable[[R], bool]] | None = None
        self._grouping: Grouping[R] | None = None
        self._texts: list[str] | None = None
        """Filter text of each row, aligned with `_rows`; built when a filter is first typed."""
        self._keys: tuple[int, list[SortKey | None]] | None = None
        """Sort values of each row for one column, aligned with `_rows`."""
        self._groups: tuple[str, list[str]] | None = None
        """Group of each row for one grouping, aligned with `_rows`."""
        self._stale = 0
        self._states: list[RowState] = []
        self.cursor = 0
        """Index in `lines` (header lines included)."""

    # --- what is shown --------------------------------------------------------------------------

    @property
    def rows(self) -> Sequence[R]:
        return self._rows

    @property
    def view(self) -> Sequence[R]:
        """The rows shown, scoped, filtered and sorted (group headers left out)."""
        return self._view

    @property
    def lines(self) -> Sequence[R | Group[R]]:
        """What the table draws, one per line: `view`, with a header before each group if grouped."""
        return self._lines

    @property
    def total(self) -> int:
        return len(self._rows)

    @property
    def stale(self) -> int:
        return self._stale

    @property
    def sort_column(self) -> int | None:
        return self._sort

    @property
    def reverse(self) -> bool:
        return self._reverse

    @property
    def filter(self) -> str:
        return self._filter

    @property
    def scope(self) -> str | None:
        return None if self._scope is None else self._scope[0]

    @property
    def grouping(self) -> Grouping[R] | None:
        return self._grouping

    @property
    def cursor_line(self) -> R | Group[R] | None:
        lines = self._lines
        return lines[self.cursor] if 0 <= self.cursor < len(lines) else None

    @property
    def cursor_row(self) -> R | None:
        """The row under the cursor; None on a group's header or in an empty table."""
        line = self.cursor_line
        return None if isinstance(line, Group) else line

    @property
    def cursor_key(self) -> str | None:
        line = self.cursor_line
        if line is None:
            return None
        return f"group:{line.key}" if isinstance(line, Group) else self.spec.row_key(line)

    def title(self) -> str:
        """ "GPUs 12 of 40", with the stale count when there are any."""
        text = f"{self.spec.name} {len(self._view)} of {len(self._rows)}"
        return f"{text} · {self._stale} stale (~)" if self._stale else text

    def subtitle(self) -> str:
        parts = []
        if self._scope is not None:
            parts.append(self._scope[0])
        if self._grouping is not None:
            parts.append(f"by {self._grouping.label}")
        if self._sort is not None:
            parts.append(f"sort: {self.spec.columns[self._sort].label} {'▼' if self._reverse else '▲'}")
        if self._filter:
            parts.append(f"filter: {self._filter}")
        return " · ".join(parts)

    # --- changes --------------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[R]) -> bool:
        """Show new rows, keeping the cursor on the same row. False when they are the same."""
        old = self._rows
        if rows is old:
            return False
        keep = self.cursor_line
        if self._texts is not None:
            self._texts = carry_over(old, self._texts, rows, self._text)
        if self._keys is not None:
            column, keys = self._keys
            self._keys = (column, carry_over(old, keys, rows, self.spec.columns[column].sort_value))
        if self._groups is not None and self._grouping is not None:
            self._groups = (self._groups[0], carry_over(old, self._groups[1], rows, self._grouping.key))
        self._states = carry_over(old, self._states, rows, self.spec.row_state)
        self._stale = self._states.count(RowState.STALE)
        self._rows = rows
        self._rebuild(keep)
        return True

    def set_filter(self, text: str) -> None:
        if text == self._filter:
            return
        self._filter = text
        self._rebuild(self.cursor_line)

    def set_scope(self, label: str | None, predicate: Callable[[R], bool] | None = None) -> None:
        """Show only the rows `predicate` keeps (before the filter); `label` says which in the
        subtitle ("kind: pod"). None shows every row again."""
        self._scope = None if label is None or predicate is None else (label, predicate)
        self._rebuild(self.cursor_line)

    def group_by(self, grouping_id: str | None) -> None:
        """Gather the rows under a header per group (None: no groups)."""
        found = None
        if grouping_id is not None:
            found = next((g for g in self.spec.groupings if g.id == grouping_id), None)
            if found is None:
                raise KeyError(f"{self.spec.name} has no grouping {grouping_id!r}")
        self._grouping = found
        self._rebuild(self.cursor_line)

    def next_grouping(self) -> None:
        """No groups, then each of the spec's groupings in turn, then no groups again."""
        options = [None, *(g.id for g in self.spec.groupings)]
        now = None if self._grouping is None else self._grouping.id
        self.group_by(options[(options.index(now) + 1) % len(options)])

    def sort_by(self, column: int | None, reverse: bool | None = None) -> None:
        self._sort = column
        if reverse is not None:
            self._reverse = reverse
        self._rebuild(self.cursor_line)

    def sort_next(self) -> None:
        """Sort by the next column (from none to the first), ascending."""
        nxt = 0 if self._sort is None else (self._sort + 1) % len(self.spec.columns)
        self.sort_by(nxt, reverse=False)

    def toggle_reverse(self) -> None:
        self.sort_by(self._sort if self._sort is not None else 0, reverse=not self._reverse)

    def move_cursor(self, delta: int) -> None:
        self.cursor_to(self.cursor + delta)

    def cursor_to(self, index: int) -> None:
        self.cursor = max(0, min(index, len(self._lines) - 1))

    # --- work -----------------------------------------------------------------------------------

    def _text(self, row: R) -> str:
        return search_text(self.spec, row)

    def _indices(self) -> Sequence[int]:
        rows = self._rows
        indices: Sequence[int] = range(len(rows))
        if self._scope is not None:
            keep = self._scope[1]
            indices = [i for i in indices if keep(rows[i])]
        needle = self._filter.strip().casefold()
        if needle:
            if self._texts is None:
                self._texts = [self._text(r) for r in rows]
            texts = self._texts
            indices = [i for i in indices if needle in texts[i]]
        return indices

    def _sort_keys(self, column: int) -> list[SortKey | None]:
        if self._keys is None or self._keys[0] != column:
            sort_value = self.spec.columns[column].sort_value
            self._keys = (column, [sort_value(r) for r in self._rows])
        return self._keys[1]

    def _group_keys(self, grouping: Grouping[R]) -> list[str]:
        if self._groups is None or self._groups[0] != grouping.id:
            self._groups = (grouping.id, [grouping.key(r) for r in self._rows])
        return self._groups[1]

    def _rebuild(self, keep: R | Group[R] | None) -> None:
        rows = self._rows
        indices = self._indices()
        if self._sort is not None:
            indices = order_by(self._sort_keys(self._sort), indices, self._reverse)
        self._view = list(rows) if isinstance(indices, range) else [rows[i] for i in indices]
        grouping = self._grouping
        if grouping is None:
            self._lines = self._view  # type: ignore[assignment]  # a list of rows is a list of lines
        else:
            group_of = self._group_keys(grouping)
            buckets: dict[str, list[int]] = {}
            for i in indices:
                buckets.setdefault(group_of[i], []).append(i)
            lines: list[R | Group[R]] = []
            view: list[R] = []
            for name in sorted(buckets, key=natural_key):
                members = tuple(rows[i] for i in buckets[name])
                lines.append(Group(grouping, name, members))
                lines.extend(members)
                view.extend(members)
            self._lines, self._view = lines, view
        if keep is not None:
            self._restore(keep)
        self.cursor_to(self.cursor)

    def _restore(self, keep: R | Group[R]) -> None:
        """Put the cursor back on `keep`: the same object if it is still there, else the line with
        its key (the row was updated, the group rebuilt)."""
        lines = self._lines
        if not isinstance(keep, Group):
            for i, line in enumerate(lines):
                if line is keep:
                    self.cursor = i
                    return
        key_of = self.spec.row_key
        if isinstance(keep, Group):
            found = (i for i, ln in enumerate(lines) if isinstance(ln, Group) and ln.key == keep.key)
        else:
            key = key_of(keep)
            found = (i for i, ln in enumerate(lines) if not isinstance(ln, Group) and key_of(ln) == key)
        index = next(found, None)
        if index is not None:
            self.cursor = index
