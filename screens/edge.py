"""StarlingX: its sites (the system controller and its subclouds), its hosts and its alarms (most
severe first, then newest), three tables on one screen; Tab moves between them."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.host_detail import HostDetailScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Alarm, Host, Site, Snapshot
from sovereign_tui.render import down_banner
from sovereign_tui.render_edge import ALARM_TABLE, SITE_TABLE, STX_HOST_TABLE, severity_counts


class EdgeScreen(SnapshotScreen):
    TITLE = "Edge"
    DEFAULT_CSS = """
    EdgeScreen TablePane { height: 1fr; min-height: 5; }
    EdgeScreen TablePane:focus-within { height: 2fr; }
    """

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[Site](SITE_TABLE, id="sites"))
        yield TablePane(SnapshotTable[Host](STX_HOST_TABLE, openable=True, id="stx-hosts"))
        yield TablePane(SnapshotTable[Alarm](ALARM_TABLE, id="alarms"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, {"starlingx"}))
        self.query_one("#sites", SnapshotTable).set_rows(snapshot.sites)
        hosts = tuple(h for h in snapshot.hosts if h.starlingx is not None)
        self.query_one("#stx-hosts", SnapshotTable).set_rows(hosts)
        alarms = self.query_one("#alarms", SnapshotTable)
        alarms.set_rows(snapshot.alarms)
        alarms.set_note(severity_counts(snapshot.alarms))

    def watch_now(self, now: float) -> None:
        self.query_one("#alarms", SnapshotTable).now = now

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, Host):
            self.app.push_screen(HostDetailScreen(event.row.name))
