"""Every workload of every kind in one table: Nova VMs, Ironic instances, pods, Kata pods and
KubeVirt VMs, with owner, state, host, GPUs and flavor or runtime class. `t` shows one kind at a
time (each in turn, then all again); the line above the table counts each kind. Where the role
allows, `m` migrates the workload under the cursor (live or cold, to a host or where the scheduler
puts it)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import Static

from screens.base import SnapshotScreen
from screens.migrate import MigrateScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Snapshot, Workload, WorkloadKind
from sovereign_tui.render import down_banner
from sovereign_tui.render_workloads import WORKLOAD_TABLE, kind_counts, kinds_line, next_kind

WORKLOAD_SOURCES = frozenset({"nova", "ironic", "kubernetes", "kubevirt", "kata"})
"""Source kinds whose targets report workloads."""


class WorkloadsScreen(SnapshotScreen):
    TITLE = "Workloads"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "t",
            "next_kind",
            "Kind",
            id="next-kind",
            tooltip="Show one kind of workload, each in turn, then all",
        ),
        Binding(
            "m",
            "migrate_workload",
            "Migrate",
            id="migrate-workload",
            tooltip="Plan moving the workload under the cursor to another host",
        ),
    ]
    ACTION_ROLES: ClassVar[dict[str, str]] = {"migrate_workload": "migrate"}
    DEFAULT_CSS = """
    WorkloadsScreen #kinds { height: 1; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.kind: WorkloadKind | None = None
        """The kind shown; None: every kind."""

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield Static(id="kinds")
        yield TablePane(SnapshotTable[Workload](WORKLOAD_TABLE, id="workloads"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        feeding = {w.source for w in snapshot.workloads}
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, WORKLOAD_SOURCES, feeding))
        self.query_one("#workloads", SnapshotTable).set_rows(snapshot.workloads)
        self._show_kinds()

    def show_kind(self, kind: WorkloadKind | None) -> None:
        self.kind = kind
        table = self.query_one("#workloads", SnapshotTable)
        if kind is None:
            table.set_scope(None)
        else:
            table.set_scope(f"kind: {kind}", lambda w: w.kind == kind)
        self._show_kinds()

    def action_next_kind(self) -> None:
        self.show_kind(next_kind(self.kind))

    def _show_kinds(self) -> None:
        line = kinds_line(kind_counts(self.snapshot.workloads), self.kind)
        self.query_one("#kinds", Static).update(Content(f"Kind  {line}"))

    def action_migrate_workload(self) -> None:
        row = self.query_one("#workloads", SnapshotTable).model.cursor_row
        if not isinstance(row, Workload):
            return
        if row.kind == "baremetal":
            self.notify(f"{row.name} is a bare-metal instance: it runs on its own machine and cannot migrate")
            return
        self.app.push_screen(MigrateScreen(row, self.snapshot))
