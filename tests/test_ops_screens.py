"""The operator's keyboard flow for operations, driven by a Pilot against the real lab: Keystone,
Nova, Ironic, StarlingX and a Kubernetes cluster with KubeVirt on loopback, the snapshot taken by
the real collectors, the real `Operations` engine behind `LocalOperations`, on a FakeClock.

The clock moves only while an operation waits for it (`drive`, as the engine's own tests do): the
app follows the same operation's events in its worker. Expected results are read from the lab,
the journal and the audit log, never written by hand.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from textual.command import CommandList, CommandPalette
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select, Static
from textual.widgets.select import InvalidSelectValueError
from textual.worker import WorkerCancelled
from tui_data import fill, fill_layers

from screens.baremetal import BaremetalScreen
from screens.help import help_rows
from screens.hosts import HostsScreen
from screens.migrate import MigrateScreen
from screens.operations import OperationsScreen
from screens.ops_commands import OPERATION_BINDINGS
from screens.plan import PlanScreen
from screens.provision import ProvisionScreen
from screens.registry import SCREENS
from screens.widgets.snapshot_table import SnapshotTable
from sovereign_tui.app import OperationProgressed, SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.actions import Targets
from sovereign_tui.ops.audit import AuditRecord, verify
from sovereign_tui.ops.engine import Actor, Operations, RunHandle
from sovereign_tui.ops.executor import OperationResult
from sovereign_tui.ops.plan import Plan, Step, StepKind, encode_plan, new_plan
from sovereign_tui.ops.settings import OpsSettings
from sovereign_tui.ops_gateway import LocalOperations
from sovereign_tui.ops_targets import gpu_holder
from sovereign_tui.render_ops import MARK, OpRow
from sovereign_tui.runtime import Runtime, openstack_collectors
from sovereign_tui.store import Store
from sovereign_tui.table import Group
from tests.ops.conftest import (
    OpsLab,
    busiest_host,
    drive,
    start_ops_lab,
    stop_ops_lab,
)

KEY = {e.mode: e.key for e in SCREENS}
SIZE = (160, 48)
OPERATOR = Actor("bob", "operator")
ADMIN = Actor("alice", "admin")
VIEWER = Actor("carol", "viewer")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Rig:
    lab: OpsLab
    clock: FakeClock
    store: Store
    ops: Operations

    def app(self, actor: Actor | None) -> SovereignApp:
        return SovereignApp(
            self.store,
            clock=self.clock,
            operations=LocalOperations(self.ops, owns=False) if actor is not None else None,
            actor=actor,
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    ol = await start_ops_lab(tmp_path, clock)
    settings = ol.settings()
    runtime = Runtime(settings, clock=clock, collectors=openstack_collectors(settings))
    try:
        snap = await runtime.first_poll(60.0)
        assert all(s.up for s in snap.sources), [s.last_error for s in snap.sources]
        ops = ol.operations()
        yield Rig(ol, clock, runtime.store, ops)
        await ops.close()
    finally:
        await runtime.close()
        await stop_ops_lab(ol)


# --- helpers -------------------------------------------------------------------------------------


async def settled(pilot: Pilot[Any], node: object | None = None, name: str | None = None) -> None:
    """Wait for the workers of `node` (or named `name`) to finish; then for the messages they sent."""
    for worker in list(pilot.app.workers):
        if (node is not None and worker.node is node) or (name is not None and worker.name == name):
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
    await pilot.pause()
    await pilot.pause()


async def palette_searched(pilot: Pilot[Any], palette: CommandPalette) -> None:
    await pilot.pause()
    for worker in [w for w in pilot.app.workers if w.node is palette]:
        with contextlib.suppress(WorkerCancelled):
            await worker.wait()
    await pilot.pause()


async def until(pilot: Pilot[Any], cond: Callable[[], bool], what: str) -> None:
    """Let the app process its messages until `cond` holds (bounded, no sleeping)."""
    for _ in range(500):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"never happened: {what}")


async def cursor_on(pilot: Pilot[Any], table: SnapshotTable[Any], key: str) -> None:
    """Move the cursor with the keys to the row whose key is `key`."""
    keys = [None if isinstance(r, Group) else table.spec.row_key(r) for r in table.model.lines]
    target = keys.index(key)
    await pilot.press("home", *["down"] * target)
    assert table.model.cursor_key == key


def quiet_host(ol: OpsLab) -> str:
    """A host whose drain succeeds in the lab (every layer; GPU servers cold-migrated)."""
    return busiest_host(ol)


def audit_records(ops: Operations) -> list[AuditRecord]:
    lines = ops.audit.path.read_text().splitlines()
    return [msgspec.json.decode(line, type=AuditRecord) for line in lines]


async def running(pilot: Pilot[Any], rig: Rig, op_id: str) -> RunHandle:
    await until(pilot, lambda: op_id in rig.ops.runs, "the operation started")
    return rig.ops.runs[op_id]


async def run_to_end(
    pilot: Pilot[Any], rig: Rig, op_id: str, run: RunHandle | None = None
) -> OperationResult:
    """Move the clock while the operation waits for it, until it ends; then let the app catch up."""
    result = await drive(rig.clock, run or await running(pilot, rig, op_id))
    await settled(pilot, name="run-plans")
    await settled(pilot, name="follow-run")
    return result


def action_ids(app: SovereignApp) -> set[str]:
    return {b.binding.id or "" for b in app.screen.active_bindings.values()} & OPERATION_BINDINGS


# --- the flow --------------------------------------------------------------------------------------


async def test_drain_a_host_from_plan_to_progress_to_journal_and_audit(rig: Rig) -> None:
    host = quiet_host(rig.lab)
    app = rig.app(OPERATOR)
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await pilot.press(KEY["hosts"])
        hosts = app.screen.query_one("#hosts", SnapshotTable)
        await cursor_on(pilot, hosts, host)
        await pilot.press("d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        assert plan_screen.state == "ready", plan_screen.error
        (plan,) = plan_screen.plans
        assert plan.kind == "drain" and plan.target == host and plan.destructive
        steps = plan_screen.query_one("#plan-steps", SnapshotTable)
        assert len(steps.model.rows) == len(plan.steps)
        touched = {t for s in plan.steps for t in s.touches}
        assert any(host in t or t.startswith("nova:service:") for t in touched)
        summary = str(plan_screen.query_one("#plan-summary", Static).render())
        assert f"type {host} to run it" in summary and "DESTRUCTIVE" in summary

        run = plan_screen.query_one("#run", Button)
        assert run.disabled and plan_screen.check_action("run_plan", ()) is None  # shown, not enabled
        await pilot.press(*host[:-1])
        assert run.disabled  # not the whole name yet
        await pilot.press(host[-1])
        assert not run.disabled
        await pilot.press("enter")

        result = await run_to_end(pilot, rig, plan.id)
        assert result.state == "succeeded", result.message
        assert rig.lab.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]

        progress = [m.event for m in seen if isinstance(m, OperationProgressed)]
        assert {e.kind for e in progress} >= {"operation-started", "step-started", "step-finished"}
        assert progress[-1].kind == "operation-finished" and progress[-1].state == "succeeded"
        assert plan_screen.state == "over"
        shown = str(plan_screen.query_one("#plan-progress", Static).render())
        assert (
            f"drain {host}: succeeded" in shown and f"{len(plan.steps)}/{len(plan.steps)} steps done" in shown
        )
        assert {r.live.state for r in steps.model.rows if r.live is not None} == {"done"}

        await pilot.press("o")
        ops_screen = app.screen
        assert isinstance(ops_screen, OperationsScreen)
        await settled(pilot, ops_screen)
        table = ops_screen.query_one("#operations", SnapshotTable)
        await cursor_on(pilot, table, plan.id)
        row = table.model.cursor_row
        assert isinstance(row, OpRow) and row.state == "succeeded" and row.record.operator == OPERATOR.name
        journal = ops_screen.query_one("#journal", SnapshotTable)
        assert [r.step.index for r in journal.model.rows] == [s.index for s in plan.steps]
        assert {r.step.state for r in journal.model.rows} == {"done"}
        assert all(
            r.step.started_at is not None and r.step.finished_at is not None for r in journal.model.rows
        )

    records = [r for r in audit_records(rig.ops) if r.operation == plan.id]
    assert (records[0].action, records[0].result, records[0].who) == ("drain", "started", OPERATOR.name)
    assert (records[-1].action, records[-1].result) == ("drain", "succeeded")
    assert all(r.plan_digest == plan.digest() for r in records)
    assert verify(rig.ops.audit.path).ok


async def test_a_viewer_sees_no_action_key_and_d_does_nothing(rig: Rig) -> None:
    viewer, operator = rig.app(VIEWER), rig.app(OPERATOR)
    async with operator.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"])
        assert {"drain-host", "undrain-host", "mark-host", "new-provision"} <= action_ids(operator)
    async with viewer.run_test(size=SIZE) as pilot:
        for entry in SCREENS:
            await pilot.press(entry.key)
            assert action_ids(viewer) == set(), entry.mode
            assert not {r.id for r in help_rows(viewer.screen)} & OPERATION_BINDINGS
        await pilot.press(KEY["hosts"], "d", "space", "u", "n")
        assert isinstance(viewer.screen, HostsScreen)
        await pilot.press("question_mark")
        assert not {r.id for r in viewer.screen.rows} & OPERATION_BINDINGS  # type: ignore[attr-defined]
    assert rig.ops.recent() == []  # nothing was planned to run, nothing journaled


async def test_a_host_held_by_another_operation_is_refused_naming_the_holder(rig: Rig) -> None:
    host = quiet_host(rig.lab)
    other = await rig.ops.plan_undrain(rig.store.snapshot(), host)
    rig.ops.journal.create(other, operator=ADMIN.name, role=ADMIN.role, now=rig.clock.time())
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"])
        await cursor_on(pilot, app.screen.query_one("#hosts", SnapshotTable), host)
        await pilot.press("d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        await pilot.press(*host, "enter")
        await settled(pilot, name="run-plans")
        assert plan_screen.state == "ready"  # it may be run again once the host is free
        error = str(plan_screen.query_one("#plan-error", Static).render())
        assert f"{host} is held by {ADMIN.name} since" in error and other.id in error
        assert "\n" not in error
    refused = [r for r in audit_records(rig.ops) if r.result == "refused"]
    assert [(r.who, r.target) for r in refused] == [(OPERATOR.name, host)]


async def test_marked_hosts_are_planned_together_and_confirmed_by_every_name(rig: Rig) -> None:
    first, second = sorted(rig.lab.compute_hosts())[:2]
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"])
        hosts = app.screen.query_one("#hosts", SnapshotTable)
        for name in (first, second):
            await cursor_on(pilot, hosts, name)
            await pilot.press("space")
        drawn = [hosts.render_line(y).text for y in range(1, len(hosts.model.lines) + 1)]
        marked = {line.split()[1] for line in drawn if line[2:].lstrip().startswith(MARK)}
        assert marked == {first, second}
        assert str(hosts.border_title).endswith(f"2 marked {MARK}")
        await pilot.press("d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        assert [(p.kind, p.target) for p in plan_screen.plans] == [("drain", first), ("drain", second)]
        rows = plan_screen.query_one("#plan-steps", SnapshotTable).model.rows
        assert {r.plan.target for r in rows} == {first, second}
        assert len(rows) == sum(len(p.steps) for p in plan_screen.plans)
        run = plan_screen.query_one("#run", Button)
        await pilot.press(*first)
        assert run.disabled  # one name of two
        await pilot.press("space", *second)
        assert not run.disabled
        await pilot.press("escape")
        assert isinstance(app.screen, HostsScreen)
    assert rig.ops.recent() == []


async def test_cancel_from_the_plan_screen_stops_the_drain(rig: Rig) -> None:
    host = quiet_host(rig.lab)
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"])
        await cursor_on(pilot, app.screen.query_one("#hosts", SnapshotTable), host)
        await pilot.press("d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        plan = plan_screen.plans[0]
        await pilot.press(*host, "enter")
        run = await running(pilot, rig, plan.id)
        await until(pilot, lambda: plan_screen.state == "running", "the plan screen shows the run")
        await until(pilot, lambda: plan_screen.check_action("cancel_operation", ()) is True, "cancel offered")
        await pilot.press("c")
        await settled(pilot, plan_screen)
        result = await run_to_end(pilot, rig, plan.id, run)
        assert result.state == "cancelled"
        assert plan_screen.state == "over"
        assert f"drain {host}: cancelled" in str(plan_screen.query_one("#plan-progress", Static).render())
    assert rig.ops.journal.get(plan.id).state == "cancelled" and rig.ops.journal.leases() == []


_DIE = """
import sys
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import decode_plan
j = Journal(sys.argv[1])
plan = decode_plan(open(sys.argv[2], 'rb').read())
j.create(plan, operator='dave', role='operator', now=1000.0)
j.step_started(plan.id, 0, 1001.0)
"""


def died_mid_way(db: Path, plan: Plan, tmp_path: Path) -> None:
    """A real process journals the operation, starts its first step and exits: interrupted."""
    (tmp_path / "plan.json").write_bytes(encode_plan(plan))
    subprocess.run([sys.executable, "-c", _DIE, str(db), str(tmp_path / "plan.json")], cwd=ROOT, check=True)


async def test_an_interrupted_drain_is_resumed_from_the_operations_screen(rig: Rig, tmp_path: Path) -> None:
    host = quiet_host(rig.lab)
    plan = await rig.ops.plan_drain(rig.store.snapshot(), host)
    died_mid_way(rig.ops.journal.path, plan, tmp_path)
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["operations"])
        screen = app.screen
        assert isinstance(screen, OperationsScreen)
        await settled(pilot, screen)
        table = screen.query_one("#operations", SnapshotTable)
        await cursor_on(pilot, table, plan.id)
        row = table.model.cursor_row
        assert isinstance(row, OpRow) and row.state == "interrupted" and row.section == "2 interrupted"
        assert "resume-operation" in action_ids(app) and "abandon-operation" not in action_ids(app)
        await pilot.press("R")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen) and plan_screen.mode == "resume"
        assert plan_screen.query_one("#plan-steps", SnapshotTable).model.rows[0].live.state == "started"
        await pilot.press(*host, "enter")
        result = await run_to_end(pilot, rig, plan.id)
        assert result.state == "succeeded", result.message
        await until(pilot, lambda: plan_screen.state == "over", "the resumed run is shown finished")
    rec = rig.ops.journal.get(plan.id)
    assert rec.state == "succeeded" and rec.operator == "dave"
    assert [r.action for r in audit_records(rig.ops) if r.operation == plan.id][:1] == ["resume"]


async def test_deploy_an_available_node_from_the_bare_metal_screen(rig: Rig) -> None:
    node = next(
        n for n in rig.lab.lab.scenario.nodes if n.provision_state == "available" and not n.maintenance
    )
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["baremetal"])
        assert isinstance(app.screen, BaremetalScreen)
        await cursor_on(pilot, app.screen.query_one("#nodes", SnapshotTable), node.uuid)
        await pilot.press("p")
        form = app.screen
        assert isinstance(form, ProvisionScreen)
        await settled(pilot, form)
        assert form.query_one("#kind", Select).value == "baremetal"
        assert form.query_one("#node", Select).value == node.name
        await pilot.press(*"trainer-9")
        form.query_one("#image", Input).focus()
        await pilot.press(*"http://img/t9.qcow2", "enter")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        (plan,) = plan_screen.plans
        assert plan.kind == "provision" and not plan.destructive and plan.steps[0].blocker is None
        assert not plan_screen.query_one("#confirm", Input).display  # y is enough
        await pilot.press("y")
        result = await run_to_end(pilot, rig, plan.id)
        assert result.ok, result.message
    assert node.provision_state == "active" and node.instance_info["image_source"] == "http://img/t9.qcow2"


async def test_new_provision_offers_only_the_flavors_that_fit(rig: Rig) -> None:
    app = rig.app(OPERATOR)
    offered = await rig.ops.offered_flavors(rig.store.snapshot())
    assert offered
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, ProvisionScreen)
        await settled(pilot, form)
        flavors = form.query_one("#flavor", Select)
        for fit in offered:
            flavors.value = fit.flavor.name  # each one offered can be chosen
        names = {f.flavor.name for f in offered}
        others = [f.name for f in rig.lab.lab.scenario.flavors if f.name not in names]
        assert others, "the lab has flavors that are not offered"
        with pytest.raises(InvalidSelectValueError):
            flavors.value = others[0]
        flavors.clear()
        await pilot.press("ctrl+s")
        assert "give the new workload a name" in str(form.query_one("#provision-error", Static).render())
        await pilot.press(*"eval-box")
        flavors.value = offered[0].flavor.name
        form.query_one("#image", Input).value = rig.lab.lab.scenario.images[0].id
        await pilot.press("ctrl+s")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        (plan,) = plan_screen.plans
        assert plan.steps[0].kind.value == "nova.create-server"
        assert plan.steps[0].params["flavor_id"] == offered[0].flavor.id


async def test_migrate_a_server_cold_to_a_chosen_host(rig: Rig) -> None:
    snap = rig.store.snapshot()
    server = next(w for w in snap.workloads if w.kind == "nova-vm" and w.state == "ACTIVE" and not w.gpu_kind)
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["workloads"])
        workloads = app.screen.query_one("#workloads", SnapshotTable)
        await cursor_on(pilot, workloads, workloads.spec.row_key(server))
        await pilot.press("m")
        form = app.screen
        assert isinstance(form, MigrateScreen)
        to = form.query_one("#to", Select)
        assert form.destinations and server.host not in form.destinations
        form.query_one("#how", Select).value = "cold"
        to.value = form.destinations[0]
        await pilot.press("ctrl+s")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        (plan,) = plan_screen.plans
        (step,) = plan.steps
        assert plan.kind == "migrate" and step.kind.value == "nova.cold-migrate" and step.target == server.id
        assert step.params == {"source": server.host, "dest": form.destinations[0]}
    assert rig.ops.recent() == []


@pytest.mark.parametrize("actor", [OPERATOR, VIEWER], ids=["operator", "viewer"])
async def test_the_palette_offers_the_actions_the_role_allows(rig: Rig, actor: Actor) -> None:
    app = rig.app(actor)
    offered = actor.role != "viewer"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["hosts"], "ctrl+p")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await pilot.press(*"drain")
        await palette_searched(pilot, palette)
        options = palette.query_one(CommandList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(p.startswith("Drain (d)") for p in prompts) is offered, prompts
        if offered:
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, PlanScreen), "the palette opened the plan")
            await settled(pilot, app.screen)
            assert app.screen.plans[0].kind == "drain"  # type: ignore[attr-defined]


async def test_an_admin_abandons_an_interrupted_operation_typing_its_target(tmp_path: Path) -> None:
    clock = FakeClock()
    ops = Operations(OpsSettings(), Targets(), clock=clock, state_dir=tmp_path / "state")
    steps = [
        Step(
            index=0, kind=StepKind.NOVA_DISABLE, target="svc-1", target_name="gpu-01", description="disable"
        ),
        Step(index=0, kind=StepKind.STX_LOCK, target="ihost-1", target_name="gpu-01", description="lock"),
    ]
    plan = new_plan("drain", "gpu-01", steps, now=clock.time(), leases=["gpu-01"])
    died_mid_way(ops.journal.path, plan, tmp_path)
    app = SovereignApp(Store(clock), clock=clock, operations=LocalOperations(ops, owns=False), actor=ADMIN)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["operations"])
        await settled(pilot, app.screen)
        assert "abandon-operation" in action_ids(app)
        await pilot.press("A")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen) and plan_screen.mode == "abandon"
        assert plan_screen.phrase == plan.target and plan_screen.query_one("#run", Button).disabled
        await pilot.press(*plan.target, "enter")
        await settled(pilot, plan_screen)
        assert plan_screen.state == "over"
        assert "abandoned by alice at step 1" in str(plan_screen.query_one("#plan-progress", Static).render())
    assert ops.journal.get(plan.id).state == "abandoned" and ops.journal.leases() == []
    assert [(r.action, r.who) for r in audit_records(ops)] == [("abandon", ADMIN.name)]
    await ops.close()


# --- GPUs, on the deterministic cluster (plans from the snapshot; no layer is reachable) ------------


async def test_on_gpus_d_drains_the_host_and_m_moves_the_holder(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock)
    fill_layers(store, clock)
    snap = store.snapshot()
    ops = Operations(OpsSettings(), Targets(), clock=clock, state_dir=tmp_path)
    gpu = next(g for g in snap.gpus if (h := gpu_holder(snap, g)) is not None and h.kind == "nova-vm")
    holder = gpu_holder(snap, gpu)
    assert holder is not None and gpu.uuid in holder.gpu_uuids
    app = SovereignApp(store, clock=clock, operations=LocalOperations(ops), actor=OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        gpus = app.screen.query_one("#gpus", SnapshotTable)
        await cursor_on(pilot, gpus, gpus.spec.row_key(gpu))
        await pilot.press("m")
        form = app.screen
        assert isinstance(form, MigrateScreen) and form.workload == holder
        await pilot.press("escape", "d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        assert plan_screen.state == "ready", plan_screen.error
        (plan,) = plan_screen.plans
        assert plan.kind == "drain" and plan.target == gpu.host
        assert holder.id in {s.target for s in plan.steps}  # its server is moved off (or listed as stuck)
