"""Pure rendering of the layers: hosts joined across Nova, Ironic, Kubernetes and StarlingX,
workloads of every kind, runtimes, edge sites and alarms, GPU groups, sparklines and the
Overview; and the table model's grouping and scope. Expectations come from `tui_data`'s tables."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tui_data import (
    ALARMS,
    HOSTS,
    IRONIC_NODES,
    KATA_NODES,
    KUBE_NODES,
    LEAKED_ON,
    NOVA_HOSTS,
    RUNTIME_CLASSES,
    STX_HOSTS,
    SUBCLOUDS,
    WORKLOADS,
    fill_cluster,
    fill_layers,
    gpus_for,
    iso,
    warm_history,
)

from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import WORKLOAD_KINDS, Gpu, Host, Snapshot
from sovereign_tui.render import NA, one_line, parse_time
from sovereign_tui.render_edge import (
    ALARM_TABLE,
    SEVERITIES,
    SITE_TABLE,
    STX_HOST_TABLE,
    severity_counts,
    site_trouble,
)
from sovereign_tui.render_gpus import (
    BLOCKS,
    GPU_TABLE,
    IDLE,
    gpu_busy,
    gpu_erroring,
    gpu_facts,
    gpu_group_summary,
    gpu_model,
    gpu_table,
    spark_cells,
    sparkline,
    trends,
    xid_text,
)
from sovereign_tui.render_hosts import (
    _LABELS,
    _MANY,
    BAREMETAL_TABLE,
    HOST_TABLE,
    LAYERS,
    facet_fields,
    host_detail,
    host_trouble,
    ironic_text,
    kube_text,
    maintenance_text,
    nova_text,
    provision_text,
    starlingx_text,
)
from sovereign_tui.render_overview import overview, overview_lines
from sovereign_tui.render_runtimes import (
    DEFAULT_RUNTIME,
    NODE_TABLE,
    RUNTIME_TABLE,
    SANDBOX_TABLE,
    node_rows,
    runtime_rows,
    sandbox_rows,
)
from sovereign_tui.render_workloads import (
    WORKLOAD_TABLE,
    kind_counts,
    kinds_line,
    next_kind,
    workload_detail,
    workload_trouble,
)
from sovereign_tui.store import Store
from sovereign_tui.table import Group, RowState, TableModel


def cluster() -> tuple[Snapshot, FakeClock]:
    clock = FakeClock()
    store = Store(clock)
    fill_cluster(store, clock)
    return store.snapshot(), clock


def host(snap: Snapshot, name: str) -> Host:
    return next(h for h in snap.hosts if h.name == name)


# --- hosts --------------------------------------------------------------------------------------


def test_every_layer_joins_on_the_host_name() -> None:
    snap, _ = cluster()
    names = {h.name for h in snap.hosts}
    expected = (
        {h.name for h in HOSTS}
        | {n for n, *_ in NOVA_HOSTS}
        | {n.name for n in IRONIC_NODES}
        | {n for n, *_ in KUBE_NODES}
        | {n for n, *_ in STX_HOSTS}
    )
    assert names == expected
    for name, state, status, reason in NOVA_HOSTS:
        h = host(snap, name)
        assert h.nova is not None
        assert (h.nova.state, h.nova.status, h.nova.disabled_reason) == (state, status, reason)
        cell = nova_text(h.nova)
        assert cell.startswith("up" if state == "up" else state.upper())
        assert ("disabled" in cell) == (status == "disabled")
    for node, ready, cordoned in KUBE_NODES:
        cell = kube_text(host(snap, node).kubernetes)
        assert cell.startswith("Ready" if ready else "NotReady")
        assert ("cordoned" in cell) == cordoned


def test_layer_cells_say_what_is_off() -> None:
    snap, _ = cluster()
    for spec in IRONIC_NODES:
        f = host(snap, spec.name).ironic
        assert f is not None
        cell = ironic_text(f)
        assert cell.startswith("MAINT") == spec.maintenance
        assert spec.provision in cell
        assert (spec.target or "") in cell
        assert cell.endswith("on" if spec.power == "power on" else "off")
        assert provision_text(f) == spec.provision + (f"→{spec.target}" if spec.target else "")
        assert maintenance_text(f) == (f"yes: {spec.reason}" if spec.maintenance else "-")
    for name, _, admin, oper, avail, _ in STX_HOSTS:
        cell = starlingx_text(host(snap, name).starlingx)
        assert avail in cell
        assert cell.startswith("locked") == (admin == "locked")
        assert ("disabled" in cell) == (oper == "disabled" and admin == "unlocked")  # locked implies it
    ws = host(snap, "ws-10")  # GPUs only: no layer knows it
    assert [nova_text(ws.nova), ironic_text(ws.ironic), kube_text(ws.kubernetes)] == [NA] * 3
    stale = msgspec.structs.replace(host(snap, "gpu-a01").nova, stale=True)
    assert nova_text(stale).endswith("~")


def test_host_state_and_detail() -> None:
    snap, _ = cluster()
    troubled = {h.name for h in snap.hosts if host_trouble(h)}
    expected = (
        {n for n, state, *_ in NOVA_HOSTS if state != "up"}
        | {n.name for n in IRONIC_NODES if n.maintenance or "fail" in n.provision}
        | {n for n, ready, _ in KUBE_NODES if not ready}
        | {n for n, _, admin, oper, avail, _ in STX_HOSTS
           if admin == "unlocked" and (oper != "enabled" or avail != "available")}
    )  # fmt: skip
    assert troubled == expected
    for h in snap.hosts:
        assert HOST_TABLE.row_state(h) is (RowState.ALERT if h.name in expected else RowState.NORMAL)
    a02 = host(snap, "gpu-a02")
    text = host_detail(a02)
    assert a02.nova is not None and a02.nova.disabled_reason in text
    assert "cordoned" in text and text.endswith("not known to Ironic")
    gpus = next(c for c in HOST_TABLE.columns if c.id == "gpus")
    assert gpus.cell(a02, 0.0) == f"{a02.gpus_busy}/{a02.gpu_count}"
    assert gpus.cell(host(snap, "bm-02"), 0.0) == "-"


def test_facet_fields_list_every_field_and_name_the_unknown_layers() -> None:
    snap, clock = cluster()
    for h in snap.hosts:
        rows = facet_fields(h, clock.time())
        for attr, layer, unknown in LAYERS:
            facet = getattr(h, attr)
            mine = [r for r in rows if r.layer == layer]
            if facet is None:
                assert [(r.known, r.value) for r in mine] == [(False, f"{NA}: {unknown}")]
                continue
            names = {r.field for r in mine}
            fields = [f.name for f in msgspec.structs.fields(facet)]
            shown = [n for n in fields if n not in {"source", "observed_at", "stale"} | _MANY]
            assert len(mine) == len(shown) + 1 + len(_many(facet))  # each field, its source, the lists
            for name in shown:
                assert name.replace("_", " ") in names or _LABELS[name] in names
            assert f"{facet.source} · observed 0s ago" in next(r.value for r in mine if r.field == "source")
    c0 = facet_fields(host(snap, "controller-0"), clock.time())
    machine = host(snap, "controller-0").machine
    assert machine is not None
    assert {f"disk {d.mountpoint}" for d in machine.disks} <= {r.field for r in c0}
    assert {f"nic {n.name}" for n in machine.nics} <= {r.field for r in c0}
    kube = host(snap, "controller-0").kubernetes
    assert kube is not None
    assert {f"label {k}" for k in kube.labels} <= {r.field for r in c0}


def _many(facet: object) -> list[object]:
    """What `facet_fields` lists a row each of."""
    return [item for name in sorted(_MANY) for item in getattr(facet, name, ())]


def test_baremetal_rows_are_ironic_nodes() -> None:
    snap, _ = cluster()
    nodes = [h.ironic for h in snap.hosts if h.ironic is not None]
    assert sorted(n.name or "" for n in nodes) == sorted(n.name for n in IRONIC_NODES)
    for n in nodes:
        spec = next(s for s in IRONIC_NODES if s.name == n.name)
        bad = spec.maintenance or "fail" in spec.provision or spec.last_error is not None
        assert BAREMETAL_TABLE.row_state(n) is (RowState.ALERT if bad else RowState.NORMAL)
        error = next(c for c in BAREMETAL_TABLE.columns if c.id == "last-error").cell(n, 0.0)
        assert error == (spec.last_error or "-")


# --- workloads and runtimes -----------------------------------------------------------------------


def test_workloads_of_every_kind() -> None:
    snap, _ = cluster()
    counts = kind_counts(snap.workloads)
    assert counts == {k: sum(1 for w in WORKLOADS if w.kind == k) for k in WORKLOAD_KINDS}
    assert all(counts.values())
    line = kinds_line(counts, "pod")
    assert f"[pod {counts['pod']}]" in line
    assert f"all {len(WORKLOADS)}" in line
    assert line.count("[") == 1
    order = [None]
    while (k := next_kind(order[-1])) is not None:
        order.append(k)
    assert order[1:] == list(WORKLOAD_KINDS)
    for w in snap.workloads:
        spec = next(s for s in WORKLOADS if s.name == w.name)
        bad = any(word in spec.state.casefold() for word in ("error", "crashloop", "unknown"))
        assert workload_trouble(w) == bad
        cls = next(c for c in WORKLOAD_TABLE.columns if c.id == "class").cell(w, 0.0)
        assert cls == (
            spec.flavor or spec.runtime_class or ("default" if w.kind in ("pod", "kata-pod") else NA)
        )
        text = workload_detail(w)
        assert w.id in text and all(u in text for u in w.gpu_uuids)
        assert all(v in text for v in spec.detail.values())


def test_runtime_classes_follow_the_pods_and_the_cluster() -> None:
    snap, _ = cluster()
    pods = [w for w in WORKLOADS if w.kind in ("pod", "kata-pod")]
    rows = {r.name: r for r in runtime_rows(snap.workloads, snap.runtime_classes)}
    assert set(rows) == {w.runtime_class or DEFAULT_RUNTIME for w in pods} | {n for n, *_ in RUNTIME_CLASSES}
    for name, row in rows.items():
        mine = [w for w in pods if (w.runtime_class or DEFAULT_RUNTIME) == name]
        assert row.pods == len(mine)
        assert row.running == sum(1 for w in mine if w.state == "Running")
        assert row.nodes == len({w.host for w in mine if w.host})
        assert row.gpus == sum(len(w.gpus) for w in mine)
        assert row.kata == name.startswith("kata")
        spec = next((c for c in RUNTIME_CLASSES if c[0] == name), None)
        assert row.defined == (spec is not None or name == DEFAULT_RUNTIME)
        assert RUNTIME_TABLE.row_state(row) is (RowState.NORMAL if row.defined else RowState.ALERT)
        if spec is not None:
            assert row.overhead == f"{spec[1]} {spec[2]}"
    assert any(not r.defined for r in rows.values())  # a pod names a class the cluster lacks
    assert [r.kata for r in runtime_rows(snap.workloads)] == sorted(
        (r.kata for r in rows.values() if r.pods), reverse=True
    )


def test_kata_nodes_and_sandboxes_meet_the_pods() -> None:
    snap, _ = cluster()
    kata = [w for w in WORKLOADS if w.kind == "kata-pod"]
    nodes = {r.node: r for r in node_rows(snap.workloads, snap.hosts)}
    assert set(nodes) == {w.host for w in kata if w.host} | set(KATA_NODES)
    for node, row in nodes.items():
        mine = [w for w in kata if w.host == node]
        assert row.kata_pods == len(mine)
        facet = host(snap, node).kata
        assert facet is not None
        assert row.sandboxes == len(facet.sandboxes)
        assert row.overhead_memory_bytes == sum(s.overhead_memory_bytes or 0 for s in facet.sandboxes)
        assert row.mismatch == (node == LEAKED_ON)
        assert NODE_TABLE.row_state(row) is (RowState.ALERT if node == LEAKED_ON else RowState.NORMAL)
    sandboxes = sandbox_rows(snap.workloads, snap.hosts)
    placed = [w for w in kata if w.host in KATA_NODES]
    assert len(sandboxes) == len(placed) + 1
    joined = {r.pod: r for r in sandboxes if r.state != "no such pod"}
    assert set(joined) == {f"{w.owner}/{w.name}" for w in placed}
    for w in placed:
        assert joined[f"{w.owner}/{w.name}"].runtime_class == w.runtime_class
    leaked = [r for r in sandboxes if r.state == "no such pod"]
    assert [r.node for r in leaked] == [LEAKED_ON]
    assert SANDBOX_TABLE.row_state(leaked[0]) is RowState.ALERT
    model = TableModel(SANDBOX_TABLE)
    model.set_rows(sandboxes)
    memory = [r.sandbox.overhead_memory_bytes for r in model.view]
    assert memory == sorted(memory, reverse=True)  # the costliest sandbox first


# --- edge ------------------------------------------------------------------------------------------


def test_sites_and_stx_hosts() -> None:
    snap, _ = cluster()
    assert len(snap.sites) == len(SUBCLOUDS) + 1
    for s in snap.sites:
        spec = next((sc for sc in SUBCLOUDS if sc[0] == s.name), None)
        bad = spec is not None and (spec[1] == "offline" or spec[4] == "out-of-sync" or "fail" in spec[3])
        assert site_trouble(s) == bad
        assert SITE_TABLE.row_state(s) is (RowState.ALERT if bad else RowState.NORMAL)
    stx = [h for h in snap.hosts if h.starlingx is not None]
    for h in stx:
        _, role, admin, oper, avail, _ = next(s for s in STX_HOSTS if s[0] == h.name)
        cells = {c.id: c.cell(h, 0.0) for c in STX_HOST_TABLE.columns}
        assert (cells["personality"], cells["admin"], cells["oper"], cells["avail"]) == (
            role,
            admin,
            oper,
            avail,
        )


def test_alarms_most_severe_first_then_newest() -> None:
    snap, clock = cluster()
    model = TableModel(ALARM_TABLE)
    model.set_rows(snap.alarms)
    expected = sorted(ALARMS, key=lambda a: (SEVERITIES.index(a[1]), a[4]))
    assert [(a.alarm_id, a.severity) for a in model.view] == [(a[0], a[1]) for a in expected]
    age = next(c for c in ALARM_TABLE.columns if c.id == "age")
    assert [age.cell(a, clock.time()) for a in model.view[:1]] == [f"{expected[0][4]}m00s"]
    counts = severity_counts(snap.alarms)
    assert counts == " · ".join(
        f"{sum(1 for a in ALARMS if a[1] == s)} {s}" for s in SEVERITIES if any(a[1] == s for a in ALARMS)
    )
    crit = [a for a in snap.alarms if a.severity in ("critical", "major")]
    assert all(ALARM_TABLE.row_state(a) is RowState.ALERT for a in crit)
    assert parse_time(iso(1_800_000_000.5)) == pytest.approx(1_800_000_000.5)
    assert parse_time("2027-01-15T08:00:00Z") == parse_time("2027-01-15T08:00:00")
    assert parse_time("yesterday") is None and parse_time(None) is None


# --- GPUs ------------------------------------------------------------------------------------------


def test_gpu_groups_count_and_average_what_they_hold() -> None:
    snap, _ = cluster()
    model = TableModel(GPU_TABLE)
    model.set_rows(snap.gpus)
    model.group_by("host")
    headers = [ln for ln in model.lines if isinstance(ln, Group)]
    assert [g.key for g in headers] == [h.name for h in HOSTS]
    assert len(model.lines) == len(snap.gpus) + len(HOSTS)
    for g in headers:
        mine = [gpu for gpu in snap.gpus if gpu.host == g.key]
        assert list(g.rows) == mine
        n = len(mine)
        assert g.label.startswith(
            f"{g.key}: {n} GPU{'' if n == 1 else 's'} · {sum(map(gpu_busy, mine))} busy"
        )
        utils = [gpu.util_gpu_pct for gpu in mine if gpu.util_gpu_pct is not None]
        assert f"avg util {sum(utils) / len(utils):.0f}%" in g.label
        assert ("erroring" in g.label) == any(gpu_erroring(gpu) for gpu in mine)
    model.group_by("model")
    assert {g.key for g in model.lines if isinstance(g, Group)} == {gpu_model(h.model) for h in HOSTS}
    model.next_grouping()
    assert model.grouping is None and model.lines == model.view


def test_idle_flag_comes_from_the_history() -> None:
    clock = FakeClock()
    store = Store(clock)
    history = GpuHistory()
    import asyncio

    asyncio.run(warm_history(store, clock, history))
    snap = store.snapshot()
    idle = {g.key for g in snap.gpus if history.idle_allocated(g)}
    assert idle == {
        g.key for g in snap.gpus if g.holder and any(w.idle and g.uuid in w.gpus for w in WORKLOADS)
    }
    spec = gpu_table(history.idle_allocated)
    column = next(c for c in spec.columns if c.id == "idle")
    assert {g.key for g in snap.gpus if column.cell(g, 0.0) == IDLE} == idle
    label = gpu_group_summary("all", snap.gpus, history.idle_allocated)
    assert f"{len(idle)} idle-allocated" in label


def test_sparkline_cells_gaps_and_levels() -> None:
    points = [(0.0, 0.0), (10.0, 50.0), (20.0, None), (35.0, 100.0)]
    line = sparkline(points, 0.0, 40.0, 4, 100.0)
    assert line == BLOCKS[0] + BLOCKS[3] + " " + BLOCKS[-1]  # a None sample is a gap
    assert sparkline(points, 0.0, 40.0, 8, 100.0)[5] == " "  # nothing sampled in [25, 30)
    assert sparkline(points, 0.0, 40.0, 0, 100.0) == ""
    assert sparkline([(5.0, 300.0)], 0.0, 10.0, 1, 100.0) == BLOCKS[-1]  # clipped at the top
    assert spark_cells(900.0, 15.0) == 40


def test_trends_cover_the_window() -> None:
    clock = FakeClock()
    store = Store(clock)
    history = GpuHistory()
    import asyncio

    asyncio.run(warm_history(store, clock, history))
    gpu = next(g for g in store.snapshot().gpus if g.processes)
    now = clock.time()
    found = trends(gpu, history.series, now, history.settings.history_s, 40)
    assert [t.metric for t in found] == ["util", "memory", "power", "temperature"]
    assert all(len(t.line) == 40 and " " not in t.line for t in found)  # no missed polls, no gaps
    utils = [v for _, v in history.series(gpu.key, "util") if v is not None]
    assert found[0].stats == f"now {utils[-1]:.0f}% · {min(utils):.0f}%-{max(utils):.0f}%"
    later = trends(gpu, history.series, now + history.settings.history_s / 2, history.settings.history_s, 40)
    assert later[0].line.endswith(" " * 19)  # the source stopped: the last half is empty


def test_gpu_facts_and_xid() -> None:
    gpu: Gpu = msgspec.structs.replace(gpus_for(HOSTS[0], 0.0)[0], xid_last=79)
    facts = dict(gpu_facts(gpu, 5.0, idle=True))
    assert gpu.uuid in facts["GPU"]
    assert xid_text(79) in facts["Errors"] and "fallen off the bus" in xid_text(79)
    assert IDLE in facts["Held by"]
    assert facts["Source"].endswith("observed 5s ago")
    assert xid_text(None) == xid_text(0) == "none"
    assert xid_text(9999) == "9999"


# --- overview --------------------------------------------------------------------------------------


def test_overview_counts_every_layer() -> None:
    snap, _ = cluster()
    o = overview(snap, gpus_idle=2)
    assert o.hosts_trouble == sum(1 for h in snap.hosts if host_trouble(h))
    assert o.workloads == len(WORKLOADS)
    assert dict(o.kinds) == {k: n for k, n in kind_counts(snap.workloads).items() if n}
    assert o.sites == len(SUBCLOUDS) + 1
    assert o.sites_trouble == sum(1 for s in snap.sites if site_trouble(s))
    assert o.alarms == len(ALARMS)
    wide = dict(overview_lines(o))
    assert "kubevirt-vm" in wide["Workloads"] and "warning" in wide["Edge"]
    narrow = overview_lines(o, 60)
    assert all(len(text) <= 60 for _, text in narrow)
    assert "critical" in dict(narrow)["Edge"]  # the most severe count survives the cut


# --- the table model: grouping and scope -----------------------------------------------------------


def test_scope_narrows_before_the_filter_and_says_so() -> None:
    clock = FakeClock()
    store = Store(clock)
    fill_layers(store, clock)
    snap = store.snapshot()
    model = TableModel(WORKLOAD_TABLE)
    model.set_rows(snap.workloads)
    model.set_scope("kind: kata-pod", lambda w: w.kind == "kata-pod")
    kata = [w for w in snap.workloads if w.kind == "kata-pod"]
    assert list(model.view) == kata
    assert model.title() == f"Workloads {len(kata)} of {len(snap.workloads)}"
    assert model.subtitle().startswith("kind: kata-pod")
    model.set_filter("untrusted")
    assert list(model.view) == [w for w in kata if w.owner == "untrusted"]
    model.set_scope(None)
    assert list(model.view) == [w for w in snap.workloads if "untrusted" in (w.owner or "")]


def test_cursor_follows_its_row_and_group_across_groupings() -> None:
    snap, _ = cluster()
    model = TableModel(GPU_TABLE)
    model.set_rows(snap.gpus)
    target = snap.gpus[6]
    model.cursor_to(6)
    model.group_by("host")
    assert model.cursor_row is target
    header = next(i for i, ln in enumerate(model.lines) if isinstance(ln, Group) and ln.key == target.host)
    model.cursor_to(header)
    line = model.cursor_line
    assert isinstance(line, Group) and line.key == target.host
    assert model.cursor_row is None and model.cursor_key == f"group:{target.host}"
    model.set_rows(tuple(msgspec.structs.replace(g) for g in snap.gpus))  # a new snapshot, new objects
    line = model.cursor_line
    assert isinstance(line, Group) and line.key == target.host
    model.sort_by(GPU_TABLE.index_of("util"), reverse=True)
    for g in (ln for ln in model.lines if isinstance(ln, Group)):
        utils = [r.util_gpu_pct or 0 for r in g.rows]
        assert utils == sorted(utils, reverse=True)  # sorted within each group
    assert model.subtitle().startswith("by host · sort: Util ▼")
    with pytest.raises(KeyError):
        model.group_by("colour")


# --- the lab benchmark's measure ------------------------------------------------------------------


def test_table_apply_measure_takes_every_row() -> None:
    from bench.tui_apply import measure, nova_observation

    result = measure(hosts=12, servers=90, repeats=2)
    assert (result.hosts, result.workloads, result.repeats) == (12, 90, 2)
    assert set(result.as_dict()) >= {"table_update_ms", "hosts_ms", "workloads_ms", "table_update_worked_ms"}
    first, second = nova_observation(12, 90, 0.0, 0), nova_observation(12, 90, 0.0, 1)
    changed = sum(
        a.state != b.state or a.host != b.host for a, b in zip(first.workloads, second.workloads, strict=True)
    )
    assert 0 < changed < 90  # successive polls move some servers, not all
    with pytest.raises(ValueError, match="at least 1"):
        measure(hosts=0)


@given(st.text(max_size=40))
def test_one_line_fast_path_agrees_with_the_slow_one(text: str) -> None:
    slow = " ".join(re.sub(r"[\x00-\x1f\x7f]+", " ", text).split())
    assert one_line(text) == slow
