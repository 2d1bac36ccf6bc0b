"""One row per physical host, joined across the layers: Nova, Ironic, Kubernetes, StarlingX, its
GPUs and workloads. Enter opens every layer's view of the host."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.host_detail import HostDetailScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Host, Snapshot
from sovereign_tui.render import down_banner
from sovereign_tui.render_hosts import HOST_TABLE

HOST_SOURCES = frozenset({"nova", "ironic", "kubernetes", "starlingx", "kata", "host"})
"""Source kinds whose targets describe hosts."""


class HostsScreen(SnapshotScreen):
    TITLE = "Hosts"

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[Host](HOST_TABLE, openable=True, id="hosts"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, HOST_SOURCES))
        self.query_one("#hosts", SnapshotTable).set_rows(snapshot.hosts)

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, Host):
            self.app.push_screen(HostDetailScreen(event.row.name))
