"""Every GPU: host, model, utilisation, memory, temperature, power, ECC, XID, MIG, the idle flag
and the workload that holds it; grouped by host or by model on `b`; Enter opens one GPU."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.gpu_detail import GpuDetailScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Gpu, Snapshot
from sovereign_tui.render import down_banner
from sovereign_tui.render_gpus import gpu_table

GPU_SOURCES = frozenset({"nvml", "nvidia_smi", "nvidia-smi", "dcgm", "prometheus"})
"""Source kinds whose targets report GPUs: when one is down, this screen says so."""


class GpusScreen(SnapshotScreen):
    TITLE = "GPUs"

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        spec = gpu_table(self.history.idle_allocated)
        yield TablePane(SnapshotTable[Gpu](spec, openable=True, id="gpus"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        feeding = {g.source for g in snapshot.gpus}
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, GPU_SOURCES, feeding))
        self.query_one("#gpus", SnapshotTable).set_rows(snapshot.gpus)

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, Gpu):
            self.app.push_screen(GpuDetailScreen(event.row))
