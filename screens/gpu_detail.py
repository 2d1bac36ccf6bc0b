"""One GPU, opened from a GPU table: its facts, its last 15 minutes as sparklines, its processes.

It follows the snapshots by the GPU's key, so the values stay live; a GPU gone from the latest
snapshot keeps its last values and says so. Escape goes back."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import Static

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Gpu, GpuProcess, Snapshot
from sovereign_tui.render_gpus import PROCESS_TABLE, gpu_facts, spark_cells, trends

_LABEL = 7
"""Width of the sparklines' labels ("Memory")."""


class GpuDetailScreen(SnapshotScreen):
    BINDING_GROUP_TITLE = "GPU"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="close-detail", tooltip="Back to the list"),
    ]
    DEFAULT_CSS = """
    GpuDetailScreen {
        & .box {
            height: auto;
            padding: 0 1;
            border: round $foreground 30%;
            border-title-align: left;
        }
        & #processes { height: 1fr; min-height: 4; }
    }
    """

    def __init__(self, gpu: Gpu) -> None:
        super().__init__()
        self.key = gpu.key
        self.gpu: Gpu | None = gpu
        self.gone = False
        mig = f" MIG {gpu.mig_instance}" if gpu.mig_instance is not None else ""
        self.title = f"GPU {gpu.host} #{gpu.index}{mig}"

    def compose_body(self) -> ComposeResult:
        facts = Static(classes="box", id="facts")
        facts.border_title = "GPU"
        yield facts
        history = Static(classes="box", id="trends")
        history.border_title = f"Last {self.history.settings.history_s / 60:g} minutes"
        yield history
        yield TablePane(SnapshotTable[GpuProcess](PROCESS_TABLE, id="processes"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        found = next((g for g in snapshot.gpus if g.key == self.key), None)
        self.gone = found is None and self.gpu is not None
        if found is not None:
            self.gpu = found
        gpu = self.gpu
        self.query_one("#processes", SnapshotTable).set_rows(gpu.processes if gpu else ())
        self._show()

    def watch_now(self, now: float) -> None:
        self._show()

    def on_resize(self, event: events.Resize) -> None:
        self._show()

    def _show(self) -> None:
        gpu = self.gpu
        facts = self.query_one("#facts", Static)
        trend_box = self.query_one("#trends", Static)
        if gpu is None:
            facts.update(Content(f"{self.key}: not in the snapshot (yet)"))
            trend_box.update(Content("no samples"))
            return
        lines = gpu_facts(gpu, self.now, self.history.idle_allocated(gpu))
        if self.gone:
            lines.insert(0, ("GONE", "not in the latest snapshot; these are its last known values"))
        width = max(len(label) for label, _ in lines)
        facts.update(Content("\n".join(f"{label:<{width}}  {text}" for label, text in lines)))
        history = self.history
        window = history.settings.history_s
        room = max(trend_box.content_region.width, 40)
        found = trends(gpu, history.series, self.now, window, 1)
        stats = max(len(t.stats) for t in found)
        spark = max(min(room - _LABEL - stats - 2, spark_cells(window, history.settings.interval_s)), 8)
        rows = [
            f"{t.label:<{_LABEL}}{t.line} {t.stats}"
            for t in trends(gpu, history.series, self.now, window, spark)
        ]
        ago = f"-{window / 60:g} min"
        rows.append(" " * _LABEL + ago + "now".rjust(spark - len(ago)))
        trend_box.update(Content("\n".join(rows)))
