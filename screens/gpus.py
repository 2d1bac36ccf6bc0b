"""Every GPU: host, model, utilisation, memory, temperature, power, errors, MIG, processes and
the workload that holds it."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Gpu, Snapshot
from sovereign_tui.render import GPU_TABLE, down_banner

GPU_SOURCES = frozenset({"nvml", "nvidia_smi", "nvidia-smi", "dcgm"})
"""Source kinds whose targets report GPUs: when one is down, this screen says so."""


class GpusScreen(SnapshotScreen):
    TITLE = "GPUs"

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[Gpu](GPU_TABLE, id="gpus"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        feeding = {g.source for g in snapshot.gpus}
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, GPU_SOURCES, feeding))
        self.query_one("#gpus", SnapshotTable).set_rows(snapshot.gpus)
