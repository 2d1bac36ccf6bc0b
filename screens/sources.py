"""Every poll target: is it up, when did it last answer, how long it took, what went wrong."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Snapshot, SourceHealth
from sovereign_tui.render import SOURCE_TABLE


class SourcesScreen(SnapshotScreen):
    TITLE = "Sources"

    def compose_body(self) -> ComposeResult:
        yield TablePane(SnapshotTable[SourceHealth](SOURCE_TABLE, id="sources"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#sources", SnapshotTable).set_rows(snapshot.sources)

    def watch_now(self, now: float) -> None:
        self.query_one("#sources", SnapshotTable).now = now
