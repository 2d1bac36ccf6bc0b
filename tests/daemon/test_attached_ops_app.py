"""The console a session gets (`sovereign-tui --attach`, built by `attached_app`) drains a lab
host by keyboard, the operation running in the daemon as the session's operator; a viewer's
console shows no action key at all. The real app, feed, engine and lab, on one FakeClock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static
from textual.worker import WorkerCancelled

from screens.help import help_rows
from screens.hosts import HostsScreen
from screens.ops_commands import OPERATION_BINDINGS
from screens.plan import PlanScreen
from screens.registry import SCREENS
from screens.widgets.snapshot_table import SnapshotTable
from sovereign_tui.app import SovereignApp
from sovereign_tui.commands import attached_app
from sovereign_tui.ops.audit import verify
from sovereign_tui.ops.engine import Actor
from sovereign_tui.table import Group
from tests.ops.conftest import busiest_host, drive

from .opsrig import DaemonRig, daemon_rig

KEY = {e.mode: e.key for e in SCREENS}
SIZE = (160, 48)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DaemonRig]:
    async with daemon_rig(tmp_path) as rig:
        yield rig


async def until(pilot: Pilot[Any], cond: Callable[[], bool], what: str) -> None:
    """Let the app (and the feed under it) run until `cond` holds (bounded)."""
    for _ in range(2000):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"never happened: {what}")


async def settled(pilot: Pilot[Any], node: object) -> None:
    for worker in list(pilot.app.workers):
        if worker.node is node:
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
    await pilot.pause()
    await pilot.pause()


async def cursor_on(pilot: Pilot[Any], table: SnapshotTable[Any], key: str) -> None:
    keys = [None if isinstance(r, Group) else table.spec.row_key(r) for r in table.model.lines]
    await pilot.press("home", *["down"] * keys.index(key))
    assert table.model.cursor_key == key


def action_ids(app: SovereignApp) -> set[str]:
    return {b.binding.id or "" for b in app.screen.active_bindings.values()} & OPERATION_BINDINGS


async def attached(pilot: Pilot[Any], app: SovereignApp, rig: DaemonRig) -> None:
    """Connected, welcomed, and showing the daemon's hosts."""
    hosts = {h.name for h in rig.store.snapshot().hosts}
    await until(
        pilot,
        lambda: app.actor is not None and {h.name for h in app.snapshot.hosts} == hosts,
        "the daemon's welcome and snapshot",
    )


async def test_an_attached_operator_drains_a_host_by_keyboard_in_the_daemon(rig: DaemonRig) -> None:
    host = busiest_host(rig.lab)
    app = attached_app(rig.path, token=rig.token("alice", "operator"), clock=rig.clock)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot, app, rig)
        assert app.actor == Actor("ssh:alice", "operator")
        await pilot.press(KEY["hosts"])
        assert {"drain-host", "undrain-host"} <= action_ids(app)
        await cursor_on(pilot, app.screen.query_one("#hosts", SnapshotTable), host)
        await pilot.press("d")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        assert plan_screen.state == "ready", plan_screen.error
        (plan,) = plan_screen.plans
        assert plan.kind == "drain" and plan.target == host
        summary = str(plan_screen.query_one("#plan-summary", Static).render())
        assert f"type {host} to run it" in summary and "DESTRUCTIVE" in summary
        assert rig.ops.recent() == []  # planned in the daemon, nothing started

        await pilot.press(*host, "enter")
        await until(pilot, lambda: plan.id in rig.ops.runs, "the drain running in the daemon")
        result = await drive(rig.clock, rig.ops.runs[plan.id])
        assert result.state == "succeeded", result.message
        await until(pilot, lambda: plan_screen.state == "over", "the plan screen to show the end")
        shown = str(plan_screen.query_one("#plan-progress", Static).render())
        n = len(plan.steps)
        assert f"drain {host}: succeeded" in shown and f"{n}/{n} steps done" in shown

    rec = rig.ops.journal.get(plan.id)
    assert (rec.operator, rec.role, rec.state) == ("ssh:alice", "operator", "succeeded")
    assert rig.lab.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]
    started = next(r for r in rig.audit() if r.operation == plan.id)
    assert (started.who, started.role, started.action, started.result) == (
        "ssh:alice",
        "operator",
        "drain",
        "started",
    )
    assert verify(rig.ops.audit.path).ok


async def test_an_attached_viewer_sees_no_action_key(rig: DaemonRig) -> None:
    app = attached_app(rig.path, token=rig.token("vera", "viewer"), clock=rig.clock)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot, app, rig)
        assert app.actor == Actor("ssh:vera", "viewer")
        for entry in SCREENS:
            await pilot.press(entry.key)
            assert action_ids(app) == set(), entry.mode
            assert not {r.id for r in help_rows(app.screen)} & OPERATION_BINDINGS
        await pilot.press(KEY["hosts"], "d", "n")
        assert isinstance(app.screen, HostsScreen)
    assert rig.ops.recent() == []
