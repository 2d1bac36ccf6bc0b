"""Every GPU: host, model, utilisation, memory, temperature, power, ECC, XID, MIG, the idle flag
and the workload that holds it; grouped by host or by model on `b`; Enter opens one GPU. Where the
role allows, `d` plans a drain of the GPU's host and `m` moves the workload that holds it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from screens.base import SnapshotScreen
from screens.gpu_detail import GpuDetailScreen
from screens.migrate import MigrateScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Gpu, Snapshot
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import OperationsBackend
from sovereign_tui.ops_targets import gpu_holder
from sovereign_tui.render import down_banner
from sovereign_tui.render_gpus import gpu_table

GPU_SOURCES = frozenset({"nvml", "nvidia_smi", "nvidia-smi", "dcgm", "prometheus"})
"""Source kinds whose targets report GPUs: when one is down, this screen says so."""


class GpusScreen(SnapshotScreen):
    TITLE = "GPUs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drain_gpu_host", "Drain host", id="drain-gpu-host",
                tooltip="Plan a drain of the host of the GPU under the cursor"),
        Binding("m", "migrate_gpu_holder", "Migrate holder", id="migrate-gpu-holder",
                tooltip="Plan moving the workload that holds the GPU to another host"),
    ]  # fmt: skip
    ACTION_ROLES: ClassVar[dict[str, str]] = {"drain_gpu_host": "drain", "migrate_gpu_holder": "migrate"}

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

    def _cursor_gpu(self) -> Gpu | None:
        row = self.query_one("#gpus", SnapshotTable).model.cursor_row
        return row if isinstance(row, Gpu) else None

    def action_drain_gpu_host(self) -> None:
        gpu = self._cursor_gpu()
        if gpu is None:
            return
        host = gpu.host

        async def make(backend: OperationsBackend, snapshot: Snapshot) -> list[Plan]:
            return [await backend.plan_drain(snapshot, host)]

        self.open_plan(f"Drain {host} (the host of GPU {gpu.index})", make)

    def action_migrate_gpu_holder(self) -> None:
        gpu = self._cursor_gpu()
        if gpu is None:
            return
        holder = gpu_holder(self.snapshot, gpu)
        if holder is None:
            held = (
                f"held by {gpu.holder}, which is not in the snapshot" if gpu.holder else "held by no workload"
            )
            self.notify(f"GPU {gpu.index} on {gpu.host} is {held}: nothing to migrate", severity="warning")
            return
        self.app.push_screen(MigrateScreen(holder, self.snapshot))
