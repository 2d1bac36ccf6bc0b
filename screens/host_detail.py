"""One host, opened from the Hosts table (or any table of hosts): every layer's view of it, field
by field (N/A for a layer that does not know it), its GPUs and its workloads.

It follows the snapshots by the host's name; a host gone from the latest snapshot keeps its last
values and says so. Enter on a GPU opens it; Escape goes back."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from screens.base import SnapshotScreen
from screens.gpu_detail import GpuDetailScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Gpu, Host, Snapshot, Workload
from sovereign_tui.render import down_banner
from sovereign_tui.render_gpus import gpu_table
from sovereign_tui.render_hosts import FACET_TABLE, LAYERS, FacetField, facet_fields
from sovereign_tui.render_workloads import WORKLOAD_TABLE


class HostDetailScreen(SnapshotScreen):
    BINDING_GROUP_TITLE = "Host"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="close-detail", tooltip="Back to the list"),
    ]
    DEFAULT_CSS = """
    HostDetailScreen {
        & TablePane { height: 1fr; min-height: 5; }
        & #facets-pane { height: 2fr; }
        & TablePane:focus-within, & #facets-pane:focus-within { height: 3fr; }
    }
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.host_name = name
        self.host: Host | None = None
        self.gone = False
        self.title = f"Host {name}"

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[FacetField](FACET_TABLE, id="facets"), id="facets-pane")
        yield TablePane(SnapshotTable[Gpu](gpu_table(self.history.idle_allocated), openable=True, id="gpus"))
        yield TablePane(SnapshotTable[Workload](WORKLOAD_TABLE, id="workloads"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        name = self.host_name
        found = next((h for h in snapshot.hosts if h.name == name), None)
        self.gone = found is None and self.host is not None
        if found is not None:
            self.host = found
        host = self.host
        feeding = set()
        if host is not None:
            feeding = {getattr(host, attr).source for attr, _, _ in LAYERS if getattr(host, attr) is not None}
        lines = down_banner(snapshot, feeding=feeding)
        if self.gone:
            lines.insert(0, f"{name} is not in the latest snapshot: these are its last known values")
        self.query_one("#banner", SourceBanner).show_lines(lines)
        self._show_facets()
        self.query_one("#gpus", SnapshotTable).set_rows(tuple(g for g in snapshot.gpus if g.host == name))
        self.query_one("#workloads", SnapshotTable).set_rows(
            tuple(w for w in snapshot.workloads if w.host == name)
        )

    def watch_now(self, now: float) -> None:
        self._show_facets()

    def _show_facets(self) -> None:
        host = self.host
        self.query_one("#facets", SnapshotTable).set_rows(facet_fields(host, self.now) if host else ())

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, Gpu):
            self.app.push_screen(GpuDetailScreen(event.row))
