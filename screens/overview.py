"""The first screen: one summary line per layer, the GPU alerts (most severe first, with their
count) and what is down and why."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.content import Content
from textual.widgets import Static

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.gpu_analytics import GpuAlert, analyse
from sovereign_tui.model import Snapshot, SourceHealth
from sovereign_tui.render import DOWN_SOURCE_TABLE, down_sources
from sovereign_tui.render_gpus import ALERT_TABLE, alert_counts
from sovereign_tui.render_overview import Overview, overview, overview_lines

_LABEL = len("Workloads")


class OverviewScreen(SnapshotScreen):
    TITLE = "Overview"
    DEFAULT_CSS = """
    OverviewScreen #summary {
        height: auto;
        padding: 0 1;
        border: round $foreground 30%;
        border-title-align: left;
    }
    OverviewScreen #alerts-pane { height: 3fr; }
    OverviewScreen #down-pane { height: 2fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.summary: Overview | None = None

    def compose_body(self) -> ComposeResult:
        summary = Static(id="summary")
        summary.border_title = "Summary"
        yield summary
        yield TablePane(SnapshotTable[GpuAlert](ALERT_TABLE, id="alerts"), id="alerts-pane")
        yield TablePane(SnapshotTable[SourceHealth](DOWN_SOURCE_TABLE, id="down-sources"), id="down-pane")

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        alerts = analyse(snapshot, self.history)
        self.summary = overview(snapshot, gpus_idle=sum(1 for a in alerts if a.kind == "idle"))
        self._show_summary()
        table = self.query_one("#alerts", SnapshotTable)
        table.set_rows(alerts)
        table.set_note(alert_counts(alerts))
        self.query_one("#down-sources", SnapshotTable).set_rows(down_sources(snapshot))

    def on_resize(self, event: events.Resize) -> None:
        self._show_summary()

    def _show_summary(self) -> None:
        if self.summary is None:
            return
        box = self.query_one("#summary", Static)
        room = box.content_region.width - _LABEL - 2
        lines = overview_lines(self.summary, room if room > 0 else None)
        box.update(Content("\n".join(f"{label:<{_LABEL}}  {text}" for label, text in lines)))

    def watch_now(self, now: float) -> None:
        self.query_one("#down-sources", SnapshotTable).now = now
