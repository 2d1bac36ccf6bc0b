"""The operations screens as SVG snapshots at 80x24 and 160x48 (review them like code): a
destructive drain plan with a blocked step, a step that may block and warnings; the Operations
screen with a finished operation and a running one, its progress part-way.

The data is deterministic: the `tui_data` cluster on a FakeClock, plans with fixed ids built here
from its workloads, a real journal (in tmp_path) written at the clock's times, and the running
operation's progress delivered as the app's own `OperationProgressed` messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from textual.pilot import Pilot
from textual.worker import WorkerCancelled
from tui_data import WORKLOADS, cluster_store

from screens.plan import PlanScreen
from screens.registry import SCREENS
from sovereign_tui.app import OperationProgressed, OperationStarted, SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.actions import Targets
from sovereign_tui.ops.engine import Actor, Operations
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.plan import Blocker, Plan, Step, StepKind
from sovereign_tui.ops.planners import LOCK_WARNING
from sovereign_tui.ops.settings import OpsSettings
from sovereign_tui.ops_gateway import LocalOperations

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
KEY = {e.mode: e.key for e in SCREENS}
HOST = "gpu-a01"
DRAIN_ID = "5e1c0f3a-7b2d-4c8e-9a61-0d4f2b7c9e13"
UNDRAIN_ID = "a07d9b42-1e6f-4d3a-8c55-6f2e1b0c4d98"
Compare = Any


def _step(kind: StepKind, target: str, name: str, description: str, **kw: Any) -> Step:
    return Step(index=0, kind=kind, target=target, target_name=name, host=HOST, description=description, **kw)


def drain_plan(now: float) -> Plan:
    """A drain of gpu-a01 as the planner makes one: its servers (GPU passthrough: one cold-migrated,
    one that may not move), its Kubernetes node and a pod whose budget has no room, the lock."""
    servers = [w for w in WORKLOADS if w.kind == "nova-vm" and w.host == HOST]
    pod = next(w for w in WORKLOADS if w.kind == "kata-pod" and w.host == HOST)
    cold, stuck = servers[0], servers[1]
    steps = [
        _step(StepKind.NOVA_DISABLE, "svc-a01", HOST, f"disable nova-compute on {HOST}",
              touches=("nova:service:svc-a01",)),
        _step(StepKind.NOVA_COLD_MIGRATE, f"srv-{cold.name}", cold.name,
              f"cold-migrate server {cold.name} ({cold.flavor}); the scheduler chooses",
              touches=(f"nova:server:srv-{cold.name}",),
              warning="PCI passthrough GPU: it cannot live-migrate; the guest restarts"),
        _step(StepKind.NOVA_CANNOT_MOVE, f"srv-{stuck.name}", stuck.name, f"server {stuck.name} stays",
              blocker=Blocker(reason="no other hypervisor has a free H100 for its flavor", kind="capacity",
                              detail=stuck.flavor)),
        _step(StepKind.KUBE_CORDON, HOST, HOST, f"cordon node {HOST}", touches=(f"kubernetes:node:{HOST}",)),
        _step(StepKind.KUBE_EVICT, f"{pod.owner}/{pod.name}", f"{pod.owner}/{pod.name}",
              f"evict pod {pod.owner}/{pod.name}", touches=(f"kubernetes:pod:{pod.owner}/{pod.name}",),
              blocker=Blocker(reason=f"disruption budget {pod.owner}/scan-pdb allows 0 disruptions now",
                              kind="budget", hard=False, detail=f"{pod.owner}/scan-pdb")),
        _step(StepKind.STX_LOCK, "ihost-a01", HOST, f"lock StarlingX host {HOST}",
              touches=("starlingx:ihost:ihost-a01", f"kubernetes:node:{HOST}"), warning=LOCK_WARNING),
    ]  # fmt: skip
    return Plan(
        id=DRAIN_ID,
        kind="drain",
        target=HOST,
        steps=tuple(msgspec.structs.replace(s, index=i) for i, s in enumerate(steps)),
        created_at=now,
        warnings=(f"{stuck.name} stays on {HOST}: the drain ends failed unless it is moved or deleted",),
        leases=(HOST,),
    )


def undrain_plan(now: float) -> Plan:
    host = "gpu-b01"
    steps = (
        Step(index=0, kind=StepKind.STX_UNLOCK, target="ihost-b01", target_name=host,
             description=f"unlock StarlingX host {host}", touches=("starlingx:ihost:ihost-b01",)),
        Step(index=1, kind=StepKind.KUBE_UNCORDON, target=host, target_name=host,
             description=f"uncordon node {host}", touches=(f"kubernetes:node:{host}",)),
        Step(index=2, kind=StepKind.NOVA_ENABLE, target="svc-b01", target_name=host,
             description=f"enable nova-compute on {host}", touches=("nova:service:svc-b01",)),
    )  # fmt: skip
    return Plan(id=UNDRAIN_ID, kind="undrain", target=host, steps=steps, created_at=now, leases=(host,))


def journaled(tmp_path: Path, clock: FakeClock) -> tuple[Operations, Plan, list[OpEvent]]:
    """A journal with an undrain that ran to its end 10 minutes ago and a drain under way: its
    first step done, its second (a cold migration) copying; and the drain's events so far."""
    ops = Operations(OpsSettings(), Targets(), clock=clock, state_dir=tmp_path)
    j, t = ops.journal, clock.time()
    undrain = undrain_plan(t - 600)
    j.create(undrain, operator="alice", role="operator", now=t - 600)
    for i, s in enumerate(undrain.steps):
        j.step_started(undrain.id, i, t - 598 + 20 * i)
        j.step_finished(undrain.id, i, "done", f"{s.kind.value.split('.')[1]} done", t - 590 + 20 * i)
    j.finish(undrain.id, "succeeded", "3 steps done", t - 540)
    drain = drain_plan(t - 95)
    j.create(drain, operator="bob", role="operator", now=t - 95)
    j.step_started(drain.id, 0, t - 94)
    j.step_finished(drain.id, 0, "done", "nova-compute disabled", t - 93)
    j.step_started(drain.id, 1, t - 92)
    cold = drain.steps[1]
    events = [
        OpEvent(op_id=drain.id, kind="operation-started", at=t - 94, state="running",
                message=f"drain {HOST}"),
        OpEvent(op_id=drain.id, kind="step-started", at=t - 94, step=0, state="started", target=HOST),
        OpEvent(op_id=drain.id, kind="step-finished", at=t - 93, step=0, state="done",
                message="nova-compute disabled", target=HOST),
        OpEvent(op_id=drain.id, kind="step-started", at=t - 92, step=1, state="started",
                message=cold.description, target=cold.target_name),
        OpEvent(op_id=drain.id, kind="step-progress", at=t - 10, step=1, state="started",
                message="nova: resize_migrating (disk copied 40%)", fraction=0.4, target=cold.target_name),
    ]  # fmt: skip
    return ops, drain, events


def ops_app(tmp_path: Path) -> tuple[SovereignApp, Plan, list[OpEvent]]:
    store, clock, history = cluster_store()
    ops, drain, events = journaled(tmp_path, clock)
    app = SovereignApp(
        store, clock=clock, history=history, operations=LocalOperations(ops), actor=Actor("bob", "operator")
    )
    return app, drain, events


async def _settled(pilot: Pilot[Any]) -> None:
    for worker in list(pilot.app.workers):
        if worker.group in ("operations-list", "plan"):
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
    await pilot.pause()


def showing(*steps: Callable[[Pilot[Any]], Awaitable[None]]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        for step in steps:
            await step(pilot)
        await _settled(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
class TestPlan:
    def test_destructive_drain_plan(
        self, snap_compare: Compare, size: tuple[int, int], tmp_path: Path
    ) -> None:
        app, drain, _ = ops_app(tmp_path)

        async def push(pilot: Pilot[Any]) -> None:
            await pilot.press(KEY["hosts"])
            await pilot.app.push_screen(PlanScreen(f"Drain {HOST}", plans=[drain]))
            await pilot.press("shift+tab", "down", "down")  # to the steps: the blocked one's detail

        assert snap_compare(app, run_before=showing(push), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestOperations:
    def test_finished_and_running(self, snap_compare: Compare, size: tuple[int, int], tmp_path: Path) -> None:
        app, drain, events = ops_app(tmp_path)

        async def progress(pilot: Pilot[Any]) -> None:
            pilot.app.post_message(OperationStarted(drain.id, drain))
            for event in events:
                pilot.app.post_message(OperationProgressed(event))
            await pilot.pause()
            await pilot.press(KEY["operations"])

        assert snap_compare(app, run_before=showing(progress), terminal_size=size)
