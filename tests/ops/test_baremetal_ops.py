"""A bare-metal node's provide and undeploy against the lab's Ironic, through openstacksdk: the
states walked (verifying, cleaning, clean wait, deleting), the typed confirmation of an undeploy,
what blocks (a wrong state, maintenance with Ironic's reason, a conductor's lock), a failed clean,
a cancel that aborts cleaning, and the journal and audit log they leave.

The lab's own state says which node is in which state; it counts the provision requests it
received, so "nothing was sent" is checked where it would land."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.scenario import Node
from sovereign_tui.ops.actions.ironic import locked_line
from sovereign_tui.ops.audit import AuditRecord, verify
from sovereign_tui.ops.engine import ConfirmationRequired, Operations
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.plan import StepKind
from sovereign_tui.ops.plan_context import PlanError
from sovereign_tui.ops.roles import PermissionDenied
from tests.ops.conftest import OPERATOR, POLL_S, VIEWER, OpsLab, drive, start_ops_lab, stop_ops_lab

HOSTS = 24  # enough bare-metal nodes for every provision state the lab guarantees


@pytest.fixture
async def bm_lab(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpsLab]:
    ol = await start_ops_lab(tmp_path, clock, hosts=HOSTS, pods_per_node=1, vms=0)
    yield ol
    await stop_ops_lab(ol)


@pytest.fixture
async def bm_ops(bm_lab: OpsLab) -> AsyncIterator[Operations]:
    operations = bm_lab.operations(layers=["ironic"])
    yield operations
    await operations.close()


def node_in(ol: OpsLab, state: str, *, maintenance: bool = False) -> Node:
    return next(
        n for n in ol.lab.scenario.nodes if n.provision_state == state and n.maintenance == maintenance
    )


def progress(history: list[OpEvent]) -> list[str]:
    return [e.message or "" for e in history if e.kind == "step-progress"]  # type: ignore[attr-defined]


def sent(ol: OpsLab, node: Node) -> dict[str, int]:
    prefix = f"ironic.provision:{node.name}:"
    return {k.removeprefix(prefix): n for k, n in ol.counts.items() if k.startswith(prefix) and n}


def audit(ops: Operations) -> list[AuditRecord]:
    return [msgspec.json.decode(line, type=AuditRecord) for line in ops.audit.path.read_text().splitlines()]


async def test_provide_walks_cleaning_to_available(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    node = node_in(bm_lab, "manageable")
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    (step,) = plan.steps
    assert (plan.kind, plan.target, plan.leases) == ("provide", node.name, (node.name,))
    assert step.kind == StepKind.IRONIC_PROVIDE and step.blocker is None and step.target == node.uuid
    assert step.touches == (f"ironic:node:{node.uuid}",)
    assert not plan.destructive and plan.confirm_phrase is None
    with pytest.raises(PermissionDenied, match="carol \\(role viewer\\) may not provide"):
        await bm_ops.start(plan, VIEWER)
    run = await bm_ops.start(plan, OPERATOR)
    result = await drive(clock, run)
    assert result.ok, result.message
    assert node.provision_state == "available" and node.target_provision_state is None
    assert {"ironic: cleaning", "ironic: clean wait"} <= set(progress(run.history))
    assert sent(bm_lab, node) == {"provide": 1}
    rec = bm_ops.journal.get(plan.id)
    assert rec.state == "succeeded" and rec.kind == "provide" and rec.operator == OPERATOR.name
    assert bm_ops.journal.leases() == []
    mine = [(r.action, r.result) for r in audit(bm_ops) if r.operation == plan.id]
    assert mine == [("provide", "started"), ("ironic.provide", "done"), ("provide", "succeeded")]
    assert [(r.who, r.action, r.result) for r in audit(bm_ops) if r.result == "denied"] == [
        (VIEWER.name, "provide", "denied")
    ]
    assert verify(bm_ops.audit.path).ok


async def test_an_enrolled_node_is_managed_then_provided(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    node = node_in(bm_lab, "enroll")
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    assert [s.kind for s in plan.steps] == [StepKind.IRONIC_MANAGE, StepKind.IRONIC_PROVIDE]
    assert "enroll -> manageable" in plan.steps[0].description
    assert all(s.blocker is None for s in plan.steps)
    run = await bm_ops.start(plan, OPERATOR)
    result = await drive(clock, run)
    assert result.ok, result.message
    assert node.provision_state == "available"
    assert "ironic: verifying" in progress(run.history)
    assert sent(bm_lab, node) == {"manage": 1, "provide": 1}


async def test_undeploy_needs_the_typed_name_and_walks_deleting_and_cleaning(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    node = node_in(bm_lab, "active")
    instance = node.instance_uuid
    assert instance is not None and node.host is not None
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "undeploy", node.name)
    (step,) = plan.steps
    assert step.kind == StepKind.IRONIC_UNDEPLOY and step.blocker is None
    assert plan.destructive and plan.confirm_phrase == node.name
    assert f"ironic:instance:{instance}" in step.touches and step.warning and "wiped" in step.warning
    assert any(instance in w for w in plan.warnings)
    for typed in (None, node.name + "x"):
        with pytest.raises(ConfirmationRequired, match=f"type the name '{node.name}'"):
            await bm_ops.start(plan, OPERATOR, confirmation=typed)
    assert sent(bm_lab, node) == {} and bm_ops.recent() == []
    run = await bm_ops.start(plan, OPERATOR, confirmation=node.name)
    result = await drive(clock, run)
    assert result.ok, result.message
    assert node.provision_state == "available" and node.instance_uuid is None and node.instance_info == {}
    assert all(g.holder is None for g in node.host.gpus)
    seen = progress(run.history)
    assert seen.index("ironic: deleting") < seen.index("ironic: clean wait")
    assert sent(bm_lab, node) == {"deleted": 1}
    assert [(r.action, r.target) for r in audit(bm_ops)][:1] == [("undeploy", node.name)]


async def test_wrong_states_are_blockers_and_nothing_is_sent(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    snap = await bm_lab.snapshot()
    active, available = node_in(bm_lab, "active"), node_in(bm_lab, "available")
    cases = [
        ("provide", active, "node is active; provide needs it manageable"),
        ("provide", available, "node is available already: nothing to provide"),
        ("undeploy", available, "node is available already: nothing to undeploy"),
        ("undeploy", node_in(bm_lab, "manageable"), "node is manageable; undeploy needs it active or"),
    ]
    for verb, node, reason in cases:
        plan = await bm_ops.plan_node(snap, verb, node.name)
        blocker = plan.steps[-1].blocker
        assert blocker is not None and blocker.hard and blocker.reason.startswith(reason), (verb, blocker)
    plan = await bm_ops.plan_node(snap, "provide", active.name)
    result = await drive(clock, await bm_ops.start(plan, OPERATOR))
    assert result.state == "failed" and result.steps[0].state == "blocked"
    assert sent(bm_lab, active) == {}
    with pytest.raises(PlanError, match="no Ironic node 'no-such-node'"):
        await bm_ops.plan_node(snap, "provide", "no-such-node")


async def test_a_node_in_maintenance_is_refused_with_ironics_reason(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    failed = node_in(bm_lab, "clean failed", maintenance=True)  # Ironic set maintenance on the failure
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", failed.name)
    manage, provide = plan.steps
    assert manage.kind == StepKind.IRONIC_MANAGE and provide.blocker is None
    assert manage.blocker is not None and manage.blocker.detail == "maintenance"
    assert f"({failed.maintenance_reason})" in manage.blocker.reason
    result = await drive(clock, await bm_ops.start(plan, OPERATOR))
    assert [s.state for s in result.steps] == ["blocked", "skipped"]

    # maintenance set after the plan was made: the step refuses it, quoting Ironic's reason
    node = node_in(bm_lab, "manageable")
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    assert plan.steps[0].blocker is None
    bm_lab.lab.baremetal.set_maintenance(node, True, "fan failure in PSU 2")
    result = await drive(clock, await bm_ops.start(plan, OPERATOR))
    outcome = result.steps[0].outcome or ""
    assert result.state == "failed" and "\n" not in outcome
    assert outcome.startswith(f"node {node.name} is in maintenance (fan failure in PSU 2): no provide")
    assert sent(bm_lab, node) == {} and node.provision_state == "manageable"


async def test_a_failed_clean_fails_the_provide_and_leaves_maintenance(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    node = node_in(bm_lab, "manageable")
    node.fail_next = True  # the lab's cleaning of this node fails, as an NVMe erase that times out
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    run = await bm_ops.start(plan, OPERATOR)
    result = await drive(clock, run)
    assert result.state == "failed"
    outcome = result.steps[0].outcome or ""
    assert outcome.startswith(
        f"provide of {node.name} failed (clean failed): Clean step erase_devices failed"
    )
    assert node.provision_state == "clean failed" and node.maintenance
    assert "ironic: clean wait" in progress(run.history)
    assert bm_ops.journal.get(plan.id).state == "failed" and bm_ops.journal.leases() == []
    assert [r.result for r in audit(bm_ops) if r.operation == plan.id] == ["started", "failed", "failed"]
    # planned again, the node's maintenance (set by Ironic) blocks it, with Ironic's error as reason
    again = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    assert again.steps[0].blocker is not None and "erase_devices" in again.steps[0].blocker.reason


async def test_a_node_locked_by_its_conductor_is_one_line(
    bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock
) -> None:
    node = node_in(bm_lab, "manageable")
    bm_lab.lab.baremetal.set_power(node, "power on", 109)  # the conductor holds the node meanwhile
    assert node.reservation == node.conductor
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    blocker = plan.steps[0].blocker
    assert blocker is not None and not blocker.hard and blocker.kind == "locked"
    assert blocker.detail == node.conductor
    result = await drive(clock, await bm_ops.start(plan, OPERATOR))
    assert result.state == "failed"
    assert result.steps[0].outcome == locked_line(node.name or "", node.conductor)
    assert sent(bm_lab, node) == {}


async def test_a_lock_taken_between_the_read_and_the_request_is_one_line(
    bm_lab: OpsLab, clock: FakeClock
) -> None:
    """Ironic answers 409 to the request itself; with openstacksdk's retries of 409 off (a cloud's
    setting) the step ends at once, naming the conductor that holds the node."""
    text = bm_lab.clouds_yaml.read_text()
    bm_lab.clouds_yaml.write_text(
        text.replace(
            "identity_api_version: 3\n", "identity_api_version: 3\n    baremetal_status_code_retries: 0\n"
        )
    )
    ops = bm_lab.operations(layers=["ironic"])
    try:
        node = node_in(bm_lab, "manageable")
        plan = await ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
        bm = bm_lab.lab.baremetal
        provision = bm.provision

        def lock_first(n: Node, *args: object) -> None:
            if n is node:
                n.reservation = n.conductor  # the conductor took it after our read
            provision(n, *args)

        bm.provision = lock_first  # type: ignore[method-assign]
        result = await drive(clock, await ops.start(plan, OPERATOR))
        assert result.state == "failed"
        assert result.steps[0].outcome == locked_line(node.name or "", node.conductor)
        assert sent(bm_lab, node) == {"provide": 1}  # asked once, answered 409: not retried
        assert node.provision_state == "manageable"
    finally:
        await ops.close()


async def test_cancel_aborts_the_cleaning(bm_lab: OpsLab, bm_ops: Operations, clock: FakeClock) -> None:
    node = node_in(bm_lab, "manageable")
    plan = await bm_ops.plan_node(await bm_lab.snapshot(), "provide", node.name)
    run = await bm_ops.start(plan, OPERATOR)
    async for event in run.events():
        if event.kind == "step-progress" and event.message == "ironic: clean wait":
            run.cancel()
        elif event.kind == "step-progress":
            await clock.advance(POLL_S)
    result = await run.wait()
    assert result.state == "cancelled"
    assert "cleaning aborted (the node goes to clean failed)" in (result.steps[0].outcome or "")
    assert node.provision_state == "clean failed" and sent(bm_lab, node) == {"provide": 1, "abort": 1}
