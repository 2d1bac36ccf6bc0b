"""Quitting while operations run in this console asks first: a Pilot against the real lab and the
real engine (a KubeVirt live migration in flight, on a FakeClock that nobody moves, so it stays
in flight). Cancel-and-quit aborts it at the lab and journals it cancelled; leave-and-quit aborts
nothing and leaves it running in the journal (interrupted once this process is gone); Esc stays.
Nothing is asked with nothing running, nor when the operations run in an engine the console does
not own. And the modal at 80x24 as an SVG snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from screens.help import help_rows
from screens.quit_confirm import QuitConfirmScreen
from sovereign_tui.app import OperationProgressed, OperationStarted, SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.audit import AuditRecord
from sovereign_tui.ops.engine import Operations
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import LocalOperations
from sovereign_tui.store import Store
from tests.ops.conftest import OPERATOR, OpsLab, migratable, start_ops_lab, stop_ops_lab
from tests.test_snapshots_ops import ops_app

SIZE = (120, 40)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[OpsLab, FakeClock]]:
    clock = FakeClock()
    ol = await start_ops_lab(tmp_path, clock)
    yield ol, clock
    await stop_ops_lab(ol)


async def until(pilot: Pilot[Any], cond: Callable[[], bool], what: str) -> None:
    """Let the app (and the lab, on this loop) work until `cond` holds; bounded, no sleeping."""
    for _ in range(500):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"never happened: {what}")


async def migration_plan(ol: OpsLab, ops: Operations) -> tuple[Plan, str]:
    vmi = next(e.obj for e in ol.cluster.store.entries("virtualmachineinstances") if migratable(e.obj))
    ref = f"{vmi['metadata']['namespace']}/{vmi['metadata']['name']}"
    return await ops.plan_migrate(await ol.snapshot(), ref), ref


async def in_flight(pilot: Pilot[Any], ol: OpsLab, app: SovereignApp, plan: Plan, ref: str) -> None:
    """Start `plan` as the plan screen does and wait until its migration exists at the lab."""
    app.start_plans([plan], plan.confirm_phrase or "")
    await until(pilot, lambda: ol.counts[f"kubevirt.migrate:{ref}"] == 1, "the migration was created")
    await until(
        pilot,
        lambda: (run := app.board.runs.get(plan.id)) is not None and run.current is not None,
        "the step shows as running",
    )


def body(app: SovereignApp) -> str:
    return str(app.screen.query_one("#quit-body", Static).render())


async def test_cancel_and_quit_aborts_the_operation_and_journals_it(lab: tuple[OpsLab, FakeClock]) -> None:
    ol, clock = lab
    ops = ol.operations()
    plan, ref = await migration_plan(ol, ops)
    app = SovereignApp(Store(clock), clock=clock, operations=LocalOperations(ops), actor=OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await in_flight(pilot, ol, app, plan, ref)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), "the modal")
        text = body(app)
        assert f"migrate {plan.target} ({plan.id[:8]})" in text and "step 1/1 " in text
        assert "(not in a daemon): quitting stops it." in text
        assert f"sovereign-tui operations resume {plan.id[:8]}" in text
        assert app.return_code is None  # asked, not quitting yet
        await pilot.press("c")
        assert app.return_code == 0
    journal = Journal(ol.state_dir / "operations.db")  # the app closed its engine's
    try:
        assert journal.get(plan.id).state == "cancelled"
    finally:
        journal.close()
    deleted = sum(n for k, n in ol.counts.items() if k.startswith("kubevirt.delete:"))
    assert deleted == 1 and not list(ol.cluster.store.entries("virtualmachineinstancemigrations"))
    lines = (ol.state_dir / "audit.log").read_text().splitlines()
    last = msgspec.json.decode(lines[-1], type=AuditRecord)
    assert (last.operation, last.action, last.result) == (plan.id, "migrate", "cancelled")


async def test_escape_stays_and_leave_quits_without_aborting(lab: tuple[OpsLab, FakeClock]) -> None:
    ol, clock = lab
    ops = ol.operations()
    plan, ref = await migration_plan(ol, ops)
    app = SovereignApp(Store(clock), clock=clock, operations=LocalOperations(ops), actor=OPERATOR)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await in_flight(pilot, ol, app, plan, ref)
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), "the modal")
            await pilot.press("ctrl+q")  # asked already: the modal stays, once
            assert len([s for s in app.screen_stack if isinstance(s, QuitConfirmScreen)]) == 1
            shown = {row.id for row in help_rows(app.screen)}
            assert {"quit-cancel-operations", "quit-leave-operations", "quit-stay"} <= shown
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, QuitConfirmScreen), "the modal closed")
            assert app.return_code is None and plan.id in ops.runs
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), "the modal again")
            await pilot.press("l")
            assert app.return_code == 0
        assert ops.journal.get(plan.id).state == "running" and plan.id in ops.runs
        assert not any(k.startswith("kubevirt.delete:") for k, n in ol.counts.items() if n)
        assert len(list(ol.cluster.store.entries("virtualmachineinstancemigrations"))) == 1
        # the process ending cancels its tasks (asyncio.run does): nothing journals an end
        task = ops.runs[plan.id].task
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert ops.journal.get(plan.id).state == "running"  # interrupted, once this pid is gone
        assert not any(k.startswith("kubevirt.delete:") for k, n in ol.counts.items() if n)
    finally:
        await ops.close()  # this test process lives on: stop what a real quit would have left


async def test_nothing_running_or_not_ours_quits_at_once(lab: tuple[OpsLab, FakeClock]) -> None:
    ol, clock = lab
    app = SovereignApp(Store(clock), clock=clock, operations=LocalOperations(ol.operations()), actor=OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert app.return_code == 0 and not isinstance(app.screen, QuitConfirmScreen)
    ops = ol.operations()
    try:
        # an engine this console does not own (as a daemon's): its operations go on, nothing asked
        plan, ref = await migration_plan(ol, ops)
        shared = SovereignApp(
            Store(clock), clock=clock, operations=LocalOperations(ops, owns=False), actor=OPERATOR
        )
        async with shared.run_test(size=SIZE) as pilot:
            await in_flight(pilot, ol, shared, plan, ref)
            await pilot.press("q")
            assert shared.return_code == 0 and not isinstance(shared.screen, QuitConfirmScreen)
        assert ops.journal.get(plan.id).state == "running" and plan.id in ops.runs
    finally:
        await ops.close()


Compare = Any


def test_quit_modal_80x24(snap_compare: Compare, tmp_path: Path) -> None:
    app, drain, events = ops_app(tmp_path)

    async def ask(pilot: Pilot[Any]) -> None:
        pilot.app.post_message(OperationStarted(drain.id, drain))
        for event in events:
            pilot.app.post_message(OperationProgressed(event))
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        with contextlib.suppress(Exception):
            await pilot.wait_for_scheduled_animations()

    assert snap_compare(app, run_before=ask, terminal_size=(80, 24))
