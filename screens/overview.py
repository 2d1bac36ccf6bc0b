"""The first screen: is everything up, how many GPUs are busy or failing, what is down and why."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content
from textual.widgets import Static

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Snapshot, SourceHealth
from sovereign_tui.render import DOWN_SOURCE_TABLE, down_sources, overview, overview_lines


class OverviewScreen(SnapshotScreen):
    TITLE = "Overview"
    DEFAULT_CSS = """
    OverviewScreen #summary {
        height: auto;
        padding: 0 1;
        border: round $foreground 30%;
        border-title-align: left;
    }
    """

    def compose_body(self) -> ComposeResult:
        summary = Static(id="summary")
        summary.border_title = "Summary"
        yield summary
        yield TablePane(SnapshotTable[SourceHealth](DOWN_SOURCE_TABLE, id="down-sources"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        lines = overview_lines(overview(snapshot))
        width = max(len(label) for label, _ in lines)
        text = "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
        self.query_one("#summary", Static).update(Content(text))
        self.query_one("#down-sources", SnapshotTable).set_rows(down_sources(snapshot))

    def watch_now(self, now: float) -> None:
        self.query_one("#down-sources", SnapshotTable).now = now
