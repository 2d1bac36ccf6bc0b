"""Ironic's nodes: provision state (and where it is heading), power, maintenance and why, the last
error, the instance and the resource class. Enter opens the node's host."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.host_detail import HostDetailScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import IronicFacet, Snapshot
from sovereign_tui.render import down_banner
from sovereign_tui.render_hosts import BAREMETAL_TABLE, node_name


class BaremetalScreen(SnapshotScreen):
    TITLE = "Bare metal"

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[IronicFacet](BAREMETAL_TABLE, openable=True, id="nodes"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, {"ironic"}))
        nodes = tuple(h.ironic for h in snapshot.hosts if h.ironic is not None)
        self.query_one("#nodes", SnapshotTable).set_rows(nodes)

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, IronicFacet):
            self.app.push_screen(HostDetailScreen(node_name(event.row)))
