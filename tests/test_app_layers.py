"""The layers' screens driven by a Pilot: Hosts and a host's detail, GPUs (grouping, detail with
history), Workloads (kind filter), Bare metal, Edge, Runtimes, and the Overview's GPU alerts.

The app is fed by a real Store filled the way the poller fills it, on a FakeClock; its GPU history
is warmed with 15 minutes of polls first. Expectations are derived from the store's snapshot.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static
from tui_data import (
    KUBE,
    SYSINV,
    WORKLOADS,
    fail_target,
    fill,
    fill_layers,
    warm_history,
)

from screens.baremetal import BaremetalScreen
from screens.edge import EdgeScreen
from screens.gpu_detail import GpuDetailScreen
from screens.gpus import GpusScreen
from screens.help import HelpScreen
from screens.host_detail import HostDetailScreen
from screens.hosts import HostsScreen
from screens.registry import SCREENS
from screens.runtimes import RuntimesScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.table_pane import TablePane
from screens.workloads import WorkloadsScreen
from sovereign_tui.app import SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_analytics import GpuHistory, analyse
from sovereign_tui.model import WORKLOAD_KINDS
from sovereign_tui.render_edge import ALARM_TABLE
from sovereign_tui.render_gpus import BLOCKS, IDLE, alert_counts
from sovereign_tui.render_hosts import facet_fields
from sovereign_tui.render_runtimes import node_rows, runtime_rows, sandbox_rows
from sovereign_tui.store import Store
from sovereign_tui.table import Group, TableModel

KEY = {e.mode: e.key for e in SCREENS}
SIZE = (120, 40)


async def make() -> tuple[SovereignApp, Store, FakeClock]:
    clock = FakeClock()
    store = Store(clock)
    history = GpuHistory()
    await warm_history(store, clock, history)
    fill_layers(store, clock)
    return SovereignApp(store, clock=clock, history=history), store, clock


async def caught_up(pilot: Pilot[Any], store: Store) -> None:
    for _ in range(200):
        if pilot.app.snapshot.generation == store.generation:  # type: ignore[attr-defined]
            break
        await pilot.pause()
    assert pilot.app.snapshot.generation == store.generation  # type: ignore[attr-defined]
    await pilot.pause()


def table(app: SovereignApp, id: str | None = None) -> SnapshotTable[Any]:
    if id is None:
        return app.screen.query_one(SnapshotTable)
    return app.screen.query_one(f"#{id}", SnapshotTable)


def lines(t: SnapshotTable[Any]) -> list[str]:
    return [t.render_line(y).text for y in range(t.scrollable_content_region.height)]


def keys(t: SnapshotTable[Any]) -> list[str]:
    return [t.spec.row_key(r) for r in t.model.view]


async def filter_to(pilot: Pilot[Any], text: str) -> None:
    await pilot.press("slash", *text, "enter")


async def test_every_screen_fits_80x24() -> None:
    app, _, _ = await make()
    async with app.run_test(size=(80, 24)) as pilot:
        for entry in SCREENS:
            await pilot.press(entry.key)
            tables = list(app.screen.query(SnapshotTable))
            assert tables, entry.mode
            for t in tables:
                assert t.virtual_size.width <= t.scrollable_content_region.width, (entry.mode, t.id)
                header = lines(t)[0]
                assert all(c.optional or c.label in header for c in t.spec.columns), (entry.mode, header)
                if t.model.lines:
                    assert lines(t)[1].strip(), (entry.mode, t.id)  # at least one row shows


async def test_hosts_filter_sort_and_host_detail() -> None:
    app, store, clock = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"])
        assert isinstance(app.screen, HostsScreen)
        t = table(app)
        assert keys(t) == [h.name for h in snap.hosts]
        assert str(t.border_title) == f"Hosts {len(snap.hosts)} of {len(snap.hosts)}"
        await pilot.press(*["s"] * (t.spec.index_of("work") + 1))
        counts = [h.workload_count for h in t.model.view]
        assert counts == sorted(counts)
        name = "gpu-a02"
        await filter_to(pilot, name)
        assert keys(t) == [name]
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, HostDetailScreen)
        h = next(h for h in snap.hosts if h.name == name)
        facets = table(app, "facets")
        assert list(facets.model.view) == list(facet_fields(h, clock.time()))
        assert keys(table(app, "gpus")) == [g.key for g in snap.gpus if g.host == name]
        assert keys(table(app, "workloads")) == [f"{w.kind}/{w.id}" for w in snap.workloads if w.host == name]
        assert {"Nova", "Kubernetes", "StarlingX"} <= {f.layer for f in facets.model.view if f.known}
        assert {f.layer for f in facets.model.view if not f.known} == {"Machine", "Ironic"}
        # live: a new Kubernetes poll reaches the open detail
        fill_layers(store, clock)
        await caught_up(pilot, store)
        assert detail.host is not None
        assert detail.host is next(x for x in store.snapshot().hosts if x.name == name)
        await pilot.press("escape")
        assert isinstance(app.screen, HostsScreen)
        assert t.model.cursor_key == name


async def test_gpus_group_and_open_a_gpu_with_its_history() -> None:
    app, store, clock = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        hosts = list(dict.fromkeys(g.host for g in snap.gpus))
        await pilot.press("b")
        assert t.model.grouping is not None and t.model.grouping.id == "host"
        assert [ln.key for ln in t.model.lines if isinstance(ln, Group)] == hosts
        assert str(t.border_subtitle).startswith("by host")
        shown = lines(t)
        assert shown[1].startswith("  ── " + hosts[0])  # the first line under the header is a group's
        assert str(t.border_title) == f"GPUs {len(snap.gpus)} of {len(snap.gpus)}"
        await pilot.press("b")
        models = {ln.key for ln in t.model.lines if isinstance(ln, Group)}
        assert len(models) == len({g.name for g in snap.gpus})
        await pilot.press("b")
        assert t.model.grouping is None and list(t.model.lines) == list(t.model.view)
        # the idle GPU is flagged, and opening it shows its history
        idle = [g for g in snap.gpus if app.history.idle_allocated(g)]
        assert [g.uuid for g in idle] == [u for w in WORKLOADS if w.idle for u in w.gpus]
        await filter_to(pilot, IDLE.lower())
        assert keys(t) == [g.key for g in idle]
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, GpuDetailScreen)
        assert detail.gpu is not None and detail.gpu.key == idle[0].key
        facts = str(detail.query_one("#facts", Static).render())
        assert idle[0].uuid in facts and IDLE in facts
        trends = str(detail.query_one("#trends", Static).render()).splitlines()
        assert [row.split()[0] for row in trends[:4]] == ["Util", "Memory", "Power", "Temp"]
        assert all(any(ch in BLOCKS for ch in row) for row in trends[:4])
        assert table(app, "processes").model.total == len(idle[0].processes)
        before = len(app.history.series(idle[0].key, "util"))
        await clock.advance(15)
        fill(store, clock, tick=99, anomalies=True)
        await caught_up(pilot, store)
        assert len(app.history.series(idle[0].key, "util")) == before + 1  # the app fed its history
        assert detail.gpu is next(g for g in store.snapshot().gpus if g.key == idle[0].key)
        await pilot.press("escape")
        assert isinstance(app.screen, GpusScreen)


async def test_workloads_kind_filter_cycles_every_kind() -> None:
    app, store, _ = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["workloads"])
        screen = app.screen
        assert isinstance(screen, WorkloadsScreen)
        t = table(app)
        assert t.model.total == len(snap.workloads) == len(WORKLOADS)
        for kind in WORKLOAD_KINDS:
            await pilot.press("t")
            assert screen.kind == kind
            assert keys(t) == [f"{w.kind}/{w.id}" for w in snap.workloads if w.kind == kind]
            assert f"[{kind} " in str(screen.query_one("#kinds", Static).render())
            assert str(t.border_subtitle).startswith(f"kind: {kind}")
        await pilot.press("t")
        assert screen.kind is None and t.model.total == len(t.model.view)
        await pilot.press("t", "t", "t", "t")  # kata-pod
        await filter_to(pilot, "untrusted")
        expected = [w for w in snap.workloads if w.kind == "kata-pod" and w.owner == "untrusted"]
        assert keys(t) == [f"{w.kind}/{w.id}" for w in expected]
        await pilot.press(*["s"] * (t.spec.index_of("state") + 1), "r")
        states = [w.state for w in t.model.view]
        assert states == sorted(states, key=str.casefold, reverse=True)


async def test_baremetal_nodes_open_their_host() -> None:
    app, store, _ = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["baremetal"])
        assert isinstance(app.screen, BaremetalScreen)
        t = table(app)
        nodes = [h.ironic for h in snap.hosts if h.ironic is not None]
        assert list(t.model.view) == nodes
        await pilot.press("end", "enter")
        assert isinstance(app.screen, HostDetailScreen)
        assert app.screen.host_name == (nodes[-1].name or nodes[-1].node_uuid)
        await pilot.press("escape")
        assert isinstance(app.screen, BaremetalScreen)


async def test_edge_three_tables_alarms_ordered_tab_moves_between() -> None:
    app, store, _ = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["edge"])
        assert isinstance(app.screen, EdgeScreen)
        assert list(table(app, "sites").model.view) == list(snap.sites)
        assert keys(table(app, "stx-hosts")) == [h.name for h in snap.hosts if h.starlingx is not None]
        alarms = table(app, "alarms")
        expected = TableModel(ALARM_TABLE)
        expected.set_rows(snap.alarms)
        assert list(alarms.model.view) == list(expected.view)
        assert "critical" in str(alarms.border_title)
        assert app.focused is table(app, "sites")
        details = [p.query_one(".detail", Static) for p in app.screen.query(TablePane)]
        assert [d.display for d in details] == [True, False, False]  # only the focused table's
        await pilot.press("tab")
        assert app.focused is table(app, "stx-hosts")
        await pilot.pause()
        assert [d.display for d in details] == [False, True, False]
        await pilot.press("enter")
        assert isinstance(app.screen, HostDetailScreen)


async def test_runtimes_from_the_pods() -> None:
    app, store, _ = await make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["runtimes"])
        assert isinstance(app.screen, RuntimesScreen)
        classes = runtime_rows(snap.workloads, snap.runtime_classes)
        assert list(table(app, "runtime-classes").model.view) == list(classes)
        assert list(table(app, "kata-nodes").model.view) == list(node_rows(snap.workloads, snap.hosts))
        sandboxes = table(app, "sandboxes")
        assert sorted(sandboxes.model.view, key=repr) == sorted(
            sandbox_rows(snap.workloads, snap.hosts), key=repr
        )
        assert "sort: Mem ovh ▼" in str(sandboxes.border_subtitle)


async def test_a_down_layer_source_is_named_where_it_feeds() -> None:
    app, store, clock = await make()
    error = "kubernetes: GET /api/v1/nodes: 401 Unauthorized; renew the token in the kubeconfig"
    async with app.run_test(size=(160, 48)) as pilot:
        fail_target(store, clock, KUBE, error)
        await caught_up(pilot, store)
        for mode, named in (("hosts", True), ("workloads", True), ("runtimes", True), ("edge", False)):
            await pilot.press(KEY[mode])
            banner = app.screen.query_one(SourceBanner)
            assert banner.display == named, mode
            assert (error in str(banner.render())) == named, mode
        hosts = table(app)
        fail_target(store, clock, SYSINV, "sysinv: connection refused")
        await caught_up(pilot, store)
        assert "sysinv: connection refused" in str(app.screen.query_one(SourceBanner).render())
        await pilot.press(KEY["hosts"])
        hosts = table(app)
        kube_only = [h for h in store.snapshot().hosts if h.stale]
        assert kube_only and all(h.kubernetes is not None or h.starlingx is not None for h in kube_only)
        rows = lines(hosts)[1:]
        for h in kube_only:
            assert any(line[1] == "~" and f" {h.name} " in line for line in rows)


async def test_overview_lists_gpu_alerts_most_severe_first() -> None:
    app, store, _ = await make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        alerts = table(app, "alerts")
        expected = analyse(store.snapshot(), app.history)
        assert [a.severity for a in expected][:1] == ["critical"]
        assert list(alerts.model.view) == expected
        assert str(alerts.border_title).endswith(alert_counts(expected))
        assert any(a.kind == "idle" for a in expected)


async def test_help_names_the_new_keys() -> None:
    app, _, _ = await make()
    async with app.run_test(size=(160, 48)) as pilot:
        for mode, ids in (("gpus", {"open-row", "group-by"}), ("workloads", {"next-kind"})):
            await pilot.press(KEY[mode], "question_mark")
            assert isinstance(app.screen, HelpScreen)
            assert ids <= {r.id for r in app.screen.rows}, mode
            await pilot.press("escape")
        assert "group-by" not in {r.id for r in _help_rows(app)}  # the workloads table has no groupings
        await pilot.press(KEY["gpus"], "enter", "question_mark")
        assert "close-detail" in {r.id for r in app.screen.rows}


def _help_rows(app: SovereignApp) -> list[Any]:
    from screens.help import help_rows

    return help_rows(app.screen)
