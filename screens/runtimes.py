"""Container runtimes: the runtime classes (Kata's VM-isolated ones first) with their pods and
fixed pod overhead, the Kata nodes (pods the API placed against sandboxes kata-monitor runs), and
what each sandbox costs in CPU and memory. Tab moves between the three tables."""

from __future__ import annotations

from textual.app import ComposeResult

from screens.base import SnapshotScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Snapshot
from sovereign_tui.render import down_banner
from sovereign_tui.render_runtimes import (
    NODE_TABLE,
    RUNTIME_TABLE,
    SANDBOX_TABLE,
    NodeSandboxRow,
    RuntimeClassRow,
    SandboxRow,
    node_rows,
    runtime_rows,
    sandbox_rows,
)

RUNTIME_SOURCES = frozenset({"kubernetes", "kata"})


class RuntimesScreen(SnapshotScreen):
    TITLE = "Runtimes"
    DEFAULT_CSS = """
    RuntimesScreen TablePane { height: 1fr; min-height: 5; }
    RuntimesScreen TablePane:focus-within { height: 2fr; }
    """

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        yield TablePane(SnapshotTable[RuntimeClassRow](RUNTIME_TABLE, id="runtime-classes"))
        yield TablePane(SnapshotTable[NodeSandboxRow](NODE_TABLE, id="kata-nodes"))
        yield TablePane(SnapshotTable[SandboxRow](SANDBOX_TABLE, id="sandboxes"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        pods = [w for w in snapshot.workloads if w.kind in ("pod", "kata-pod")]
        feeding = {w.source for w in pods} | {h.kata.source for h in snapshot.hosts if h.kata is not None}
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, RUNTIME_SOURCES, feeding))
        self.query_one("#runtime-classes", SnapshotTable).set_rows(
            runtime_rows(pods, snapshot.runtime_classes)
        )
        self.query_one("#kata-nodes", SnapshotTable).set_rows(node_rows(pods, snapshot.hosts))
        self.query_one("#sandboxes", SnapshotTable).set_rows(sandbox_rows(pods, snapshot.hosts))
