"""One row per physical host, joined across the layers: Nova, Ironic, Kubernetes, StarlingX, its
GPUs and workloads. Enter opens every layer's view of the host.

Where the role allows: `d` plans a drain of the host under the cursor, or of every host marked with
space (one after another), `u` plans putting it back in service."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from screens.base import SnapshotScreen
from screens.host_detail import HostDetailScreen
from screens.plan import may
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import Host, Snapshot
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import OperationsBackend
from sovereign_tui.render import down_banner
from sovereign_tui.render_hosts import HOST_TABLE
from sovereign_tui.render_ops import MARK, with_marks

HOST_SOURCES = frozenset({"nova", "ironic", "kubernetes", "starlingx", "kata", "host"})
"""Source kinds whose targets describe hosts."""


class HostsScreen(SnapshotScreen):
    TITLE = "Hosts"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drain_host", "Drain", id="drain-host",
                tooltip="Plan a drain of the host under the cursor, or of every marked host"),
        Binding("u", "undrain_host", "Undrain", id="undrain-host",
                tooltip="Plan putting the host back in service (unlock, uncordon, enable)"),
        Binding("space", "mark_host", "Mark", id="mark-host",
                tooltip=f"Mark the host ({MARK}) for a drain of several; again to unmark"),
    ]  # fmt: skip
    ACTION_ROLES: ClassVar[dict[str, str]] = {
        "drain_host": "drain",
        "undrain_host": "undrain",
        "mark_host": "drain",
    }

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[str] = set()
        """Hosts marked for a batch drain."""

    def compose_body(self) -> ComposeResult:
        yield SourceBanner(id="banner")
        spec = (
            with_marks(HOST_TABLE, lambda h: h.name in self.marked) if may(self.app, "drain") else HOST_TABLE
        )
        yield TablePane(SnapshotTable[Host](spec, openable=True, id="hosts"))

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#banner", SourceBanner).show_lines(down_banner(snapshot, HOST_SOURCES))
        self.query_one("#hosts", SnapshotTable).set_rows(snapshot.hosts)

    def on_snapshot_table_row_opened(self, event: SnapshotTable.RowOpened) -> None:
        if isinstance(event.row, Host):
            self.app.push_screen(HostDetailScreen(event.row.name))

    def _cursor_host(self) -> Host | None:
        row = self.query_one("#hosts", SnapshotTable).model.cursor_row
        return row if isinstance(row, Host) else None

    def action_mark_host(self) -> None:
        host = self._cursor_host()
        if host is None:
            return
        self.marked ^= {host.name}
        table = self.query_one("#hosts", SnapshotTable)
        table.set_note(f"{len(self.marked)} marked {MARK}" if self.marked else "")
        table.refresh()
        table.action_cursor_down()

    def action_drain_host(self) -> None:
        host = self._cursor_host()
        hosts = sorted(self.marked) or ([host.name] if host is not None else [])
        if not hosts:
            return

        async def make(backend: OperationsBackend, snapshot: Snapshot) -> list[Plan]:
            return [await backend.plan_drain(snapshot, h) for h in hosts]

        many = f"{len(hosts)} hosts, one after another: {', '.join(hosts)}"
        self.open_plan(f"Drain {hosts[0] if len(hosts) == 1 else many}", make)

    def action_undrain_host(self) -> None:
        host = self._cursor_host()
        if host is None:
            return
        name = host.name

        async def make(backend: OperationsBackend, snapshot: Snapshot) -> list[Plan]:
            return [await backend.plan_undrain(snapshot, name)]

        self.open_plan(f"Undrain {name}", make)
