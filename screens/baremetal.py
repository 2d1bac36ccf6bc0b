"""Ironic's nodes: provision state (and where it is heading), power, maintenance and why, the last
error, the instance and the resource class. Enter opens the node's host. Where the role allows,
`p` deploys an image on the node (a provision), `a` provides it (manageable -> available), `U`
undeploys it (active -> available; confirmed by typing its name) and `d` plans a drain of its
host, which sets maintenance on the node. Each shows its plan first (PlanScreen runs it)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from screens.base import SnapshotScreen
from screens.host_detail import HostDetailScreen
from screens.provision import ProvisionScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from sovereign_tui.model import IronicFacet, Snapshot
from sovereign_tui.ops.node_plans import NodeVerb
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import OperationsBackend
from sovereign_tui.render import down_banner
from sovereign_tui.render_hosts import BAREMETAL_TABLE, node_name


class BaremetalScreen(SnapshotScreen):
    TITLE = "Bare metal"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "provision_node", "Deploy", id="provision-node",
                tooltip="Deploy an image on the node under the cursor (it must be available)"),
        Binding("a", "provide_node", "Provide", id="provide-node",
                tooltip="Make the node available: manageable (or enroll, managed first) -> available, "
                "through cleaning"),
        Binding("U", "undeploy_node", "Undeploy", id="undeploy-node",
                tooltip="Take the node's instance down: active -> available through deleting and "
                "cleaning (type its name to confirm)"),
        Binding("d", "drain_node", "Drain", id="drain-node",
                tooltip="Plan a drain of the node's host: its workloads moved, maintenance set"),
    ]  # fmt: skip
    ACTION_ROLES: ClassVar[dict[str, str]] = {
        "provision_node": "provision",
        "provide_node": "provide",
        "undeploy_node": "undeploy",
        "drain_node": "drain",
    }

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

    def _cursor_node(self) -> IronicFacet | None:
        row = self.query_one("#nodes", SnapshotTable).model.cursor_row
        return row if isinstance(row, IronicFacet) else None

    def action_provision_node(self) -> None:
        node = self._cursor_node()
        if node is not None:
            self.app.push_screen(ProvisionScreen("baremetal", node=node.name or node.node_uuid))

    def action_provide_node(self) -> None:
        self._plan_node("provide", "Provide")

    def action_undeploy_node(self) -> None:
        self._plan_node("undeploy", "Undeploy")

    def _plan_node(self, verb: NodeVerb, title: str) -> None:
        node = self._cursor_node()
        if node is None:
            return
        name = node.name or node.node_uuid

        async def make(backend: OperationsBackend, snapshot: Snapshot) -> list[Plan]:
            return [await backend.plan_node(snapshot, verb, name)]

        self.open_plan(f"{title} node {name}", make)

    def action_drain_node(self) -> None:
        node = self._cursor_node()
        if node is None:
            return
        host = node_name(node)

        async def make(backend: OperationsBackend, snapshot: Snapshot) -> list[Plan]:
            return [await backend.plan_drain(snapshot, host)]

        self.open_plan(f"Drain {host} (maintenance on its node)", make)
