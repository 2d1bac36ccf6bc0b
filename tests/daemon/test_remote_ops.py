"""Operations from console sessions run in the daemon: a session's `RemoteOperations` plans,
starts, follows, cancels, lists, resumes and abandons through the real feed socket, and the real
engine in the daemon acts on the embedded lab as the session's operator and role.

Expected results are read from the lab, the daemon's journal and its audit log."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovereign_tui.daemon.protocol import OperationRequest
from sovereign_tui.daemon.remote_ops import RemoteRun
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.ops.audit import verify
from sovereign_tui.ops.engine import Actor
from sovereign_tui.ops.executor import OperationResult, OpEvent
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import encode_plan
from sovereign_tui.ops.provisioning import ProvisionRequest
from sovereign_tui.ops_gateway import OperationError, OperationRun
from tests.ops.conftest import POLL_S, busiest_host, drive, live_movable, pick_host, servers_on

from .feedkit import until
from .opsrig import DaemonRig, daemon_rig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DaemonRig]:
    async with daemon_rig(tmp_path) as rig:
        yield rig


async def follow(rig: DaemonRig, run: OperationRun) -> tuple[list[OpEvent], OperationResult]:
    """Every event the session receives, moving the clock after each progress report."""
    seen = []
    async for event in run.events():
        seen.append(event)
        if event.kind == "step-progress":
            await rig.clock.advance(POLL_S)
    return seen, await run.wait()


async def test_an_operator_session_drains_a_host_in_the_daemon_as_itself(rig: DaemonRig) -> None:
    alice = await rig.session("alice", "operator")
    assert alice.actor == Actor("ssh:alice", "operator")
    host = busiest_host(rig.lab)
    plan = await alice.remote.plan_drain(alice.client.snapshot(), host)
    assert plan.kind == "drain" and plan.target == host and plan.destructive and len(plan.steps) > 3
    assert rig.ops.recent() == []  # shown: nothing journaled, nothing done

    with pytest.raises(OperationError) as unconfirmed:
        await alice.remote.start(plan, alice.actor)
    assert unconfirmed.value.kind == "confirmation" and repr(host) in str(unconfirmed.value)
    assert "\n" not in str(unconfirmed.value)

    run = await alice.remote.start(plan, alice.actor, confirmation=host)
    assert isinstance(run, RemoteRun) and run.op_id == plan.id and run.plan.digest() == plan.digest()
    events, result = await follow(rig, run)
    assert result.state == "succeeded", result.message
    assert [r.state for r in result.steps] == ["done"] * len(plan.steps)
    assert events[0].kind == "operation-started" and events[-1].kind == "operation-finished"
    assert {e.step for e in events if e.kind == "step-finished"} == {s.index for s in plan.steps}
    assert rig.lab.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]

    rec = rig.ops.journal.get(plan.id)
    assert (rec.operator, rec.role, rec.state) == ("ssh:alice", "operator", "succeeded")
    assert rec.digest == plan.digest()
    records = rig.audit()
    mine = [r for r in records if r.operation == plan.id]
    assert (mine[0].action, mine[0].result) == ("drain", "started")
    assert (mine[-1].action, mine[-1].result) == ("drain", "succeeded")
    assert {(r.who, r.role, r.plan_digest) for r in mine} == {("ssh:alice", "operator", plan.digest())}
    requested = [r for r in records if r.action == "operation.requested" and plan.id in (r.detail or "")]
    assert [(r.who, r.result) for r in requested] == [("ssh:alice", "ok")]  # the feed: same chain, same name
    assert verify(rig.ops.audit.path).ok

    await until(
        lambda: any(
            (o.id, o.state, o.operator) == (plan.id, "succeeded", "ssh:alice")
            for o in alice.client.snapshot().operations
        ),
        "the finished drain in the snapshots",
    )


async def test_a_viewer_is_refused_in_one_line_and_the_engine_checks_again(rig: DaemonRig) -> None:
    vera, alice = await rig.session("vera", "viewer"), await rig.session("alice", "operator")
    assert vera.actor == Actor("ssh:vera", "viewer")
    host = busiest_host(rig.lab)
    with pytest.raises(OperationError) as refused:
        await vera.remote.plan_drain(vera.client.snapshot(), host)
    assert refused.value.kind == "denied"
    assert str(refused.value) == "vera (role viewer) may not drain; that needs the role operator or admin"
    assert await vera.remote.recent() == []  # looking is allowed

    # Past the feed's check (as a gateway bug would let it), the engine refuses on its own.
    plan = await alice.remote.plan_drain(alice.client.snapshot(), host)
    who = Identity(operator="vera", role="viewer", via="ssh")
    start = OperationRequest(
        id="x", kind="drain", target=host, confirm=host, plan_id=plan.id, digest=plan.digest()
    )
    answer = await rig.gateway.submit(who, start)
    assert not answer.ok and answer.error_kind == "denied"
    assert answer.error == "ssh:vera (role viewer) may not drain; that needs the role operator or admin"
    denied = [r for r in rig.audit() if r.result == "denied"]
    assert [(r.who, r.action, r.target) for r in denied] == [("ssh:vera", "drain", host)]
    assert rig.ops.recent() == []


async def test_a_plan_that_changed_since_it_was_shown_is_refused(rig: DaemonRig) -> None:
    alice = await rig.session("alice", "operator")
    host = busiest_host(rig.lab)
    plan = await alice.remote.plan_drain(alice.client.snapshot(), host)
    rig.lab.cluster.create_pod(  # a pod lands on the host after the operator read the plan
        "default",
        {"metadata": {"name": "late-arrival"}, "spec": {"nodeName": host, "containers": [{"name": "c"}]}},
    )
    with pytest.raises(OperationError) as refused:
        await alice.remote.start(plan, alice.actor, confirmation=host)
    text = str(refused.value)
    assert refused.value.kind == "plan" and "\n" not in text
    assert text.startswith(f"drain {host}: the plan changed since it was shown") and "plan it again" in text
    assert rig.ops.recent() == [] and not any(k.startswith("nova.") for k in rig.lab.counts)

    again = await alice.remote.plan_drain(alice.client.snapshot(), host)
    assert again.digest() != plan.digest()
    assert any("late-arrival" in s.target for s in again.steps)
    assert f"now {len(again.steps)} steps" in text


async def test_the_operation_goes_on_in_the_daemon_when_its_session_goes(rig: DaemonRig) -> None:
    alice = await rig.session("alice", "operator")
    host = busiest_host(rig.lab)
    plan = await alice.remote.plan_drain(alice.client.snapshot(), host)
    run = await alice.remote.start(plan, alice.actor, confirmation=host)
    async for event in run.events():
        if event.kind == "step-progress":
            break  # under way
    await alice.client.aclose()  # the SSH session ends
    with pytest.raises(OperationError, match="connection to the daemon was lost") as lost:
        await run.wait()
    assert "goes on there" in str(lost.value)

    in_daemon = rig.ops.runs[plan.id]
    result = await drive(rig.clock, in_daemon)
    assert result.state == "succeeded", result.message
    assert rig.ops.journal.get(plan.id).state == "succeeded"
    assert rig.lab.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]
    actions = [r.action for r in rig.audit() if r.who == "ssh:alice"]
    assert actions.index("feed.detach") < len(actions) - 1 and actions[-1] == "drain"  # ended after


async def test_a_stopped_daemon_leaves_its_operations_interrupted_not_aborted(rig: DaemonRig) -> None:
    alice = await rig.session("alice", "operator")
    host = pick_host(rig.lab, lambda h: sum(live_movable(s) for s in servers_on(rig.lab, h)))
    server = next(s for s in servers_on(rig.lab, host) if live_movable(s))
    plan = await alice.remote.plan_migrate(alice.client.snapshot(), server.id)
    run = await alice.remote.start(plan, alice.actor, confirmation=plan.confirm_phrase)
    async for event in run.events():
        if event.kind == "step-progress" and event.fraction is not None and event.fraction > 0:
            break  # the live migration is copying memory
        if event.kind == "step-progress":
            await rig.clock.advance(POLL_S)
    await rig.gateway.close()  # systemctl stop, an upgrade: the daemon goes
    journal = Journal(rig.ops.journal.path)  # as the next daemon reads it
    rec = journal.get(plan.id)
    journal.close()
    assert rec.state == "running" and rec.steps[0].state == "started"  # interrupted once it is gone
    assert f"nova.abort:{server.id}" not in rig.lab.counts  # Nova finishes the move on its own
    finished = [r for r in rig.audit() if r.operation == plan.id and r.result in ("cancelled", "failed")]
    assert finished == []


async def test_a_second_session_cancels_the_operation_of_the_first(rig: DaemonRig) -> None:
    alice, bob = await rig.session("alice", "operator"), await rig.session("bob", "operator")
    host = pick_host(rig.lab, lambda h: sum(live_movable(s) for s in servers_on(rig.lab, h)))
    server = next(s for s in servers_on(rig.lab, host) if live_movable(s))
    plan = await alice.remote.plan_migrate(alice.client.snapshot(), server.id)
    run = await alice.remote.start(plan, alice.actor, confirmation=plan.confirm_phrase)
    async for event in run.events():
        if event.kind == "step-progress" and event.fraction is not None and event.fraction > 0:
            await bob.remote.cancel(run.op_id[:8], bob.actor)  # mid-copy, from another session
        elif event.kind == "step-progress":
            await rig.clock.advance(POLL_S)
    result = await run.wait()
    assert result.state == "cancelled" and result.steps[0].state == "cancelled"
    assert "aborted live migration" in (result.steps[0].outcome or "")
    assert rig.lab.counts[f"nova.abort:{server.id}"] == 1 and server.host == host
    rec = rig.ops.journal.get(plan.id)
    assert (rec.state, rec.operator) == ("cancelled", "ssh:alice")
    asked = [r for r in rig.audit() if r.action == "operation.requested" and "cancel" in (r.detail or "")]
    assert [(r.who, r.target) for r in asked] == [("ssh:bob", run.op_id[:8])]

    with pytest.raises(OperationError, match="no longer runs") as late:
        await bob.remote.cancel(run.op_id, bob.actor)
    assert late.value.kind == "journal"


_DIE = """
import sys
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import decode_plan
j = Journal(sys.argv[1])
for i, path in enumerate(sys.argv[2:]):
    plan = decode_plan(open(path, 'rb').read())
    j.create(plan, operator='alice', role='operator', now=1000.0 + i)
    j.step_started(plan.id, 0, 1000.5 + i)
"""


async def test_interrupted_operations_are_listed_resumed_and_abandoned_from_sessions(
    rig: DaemonRig, tmp_path: Path
) -> None:
    drained = busiest_host(rig.lab)  # a drain that succeeds in the lab, and another host
    hosts = [drained, next(h for h in sorted(rig.lab.compute_hosts()) if h != drained)]
    snapshot = rig.store.snapshot()
    plans = [await rig.ops.plan_drain(snapshot, h) for h in hosts]
    files = []
    for plan in plans:
        files.append(tmp_path / f"{plan.id}.json")
        files[-1].write_bytes(encode_plan(plan))
    died = await asyncio.create_subprocess_exec(  # a process that journaled two drains and died
        sys.executable, "-c", _DIE, str(rig.ops.journal.path), *map(str, files), cwd=ROOT
    )
    assert await died.wait() == 0
    vera = await rig.session("vera", "viewer")
    alice, ada = await rig.session("alice", "operator"), await rig.session("ada", "admin")

    listed = await vera.remote.interrupted()
    assert [(r.id, r.interrupted, r.state) for r in listed] == [(p.id, True, "running") for p in plans]
    assert listed == rig.ops.interrupted()
    assert [r.step_reached.index for r in listed if r.step_reached is not None] == [0, 0]

    resumed, abandoned = plans
    run = await alice.remote.resume(resumed.id[:8], alice.actor)
    assert run.op_id == resumed.id and run.plan == resumed
    _, result = await follow(rig, run)
    assert result.state == "succeeded", result.message
    with pytest.raises(OperationError, match=r"needs the role admin") as denied:
        await alice.remote.abandon(abandoned.id, alice.actor)
    assert denied.value.kind == "denied"
    rec = await ada.remote.abandon(abandoned.id, ada.actor)
    assert (rec.id, rec.state) == (abandoned.id, "abandoned")
    assert rec.message == "abandoned by ssh:ada at step 1"

    assert await vera.remote.interrupted() == []
    recent = await vera.remote.recent()
    assert recent == rig.ops.recent() and {r.id: r.state for r in recent} == {
        resumed.id: "succeeded",
        abandoned.id: "abandoned",
    }
    audit = [(r.who, r.action, r.result) for r in rig.audit() if r.operation in (resumed.id, abandoned.id)]
    assert ("ssh:alice", "resume", "started") in audit and ("ssh:ada", "abandon", "abandoned") in audit


async def test_the_provision_form_and_bare_metal_plans_come_from_the_daemon(rig: DaemonRig) -> None:
    alice, vera = await rig.session("alice", "operator"), await rig.session("vera", "viewer")
    snapshot = rig.store.snapshot()
    offered = await alice.remote.offered_flavors(alice.client.snapshot())
    assert offered and offered == await rig.ops.offered_flavors(snapshot)
    classes = await alice.remote.kata_runtime_classes()
    assert "kata-qemu-nvidia-gpu" in classes and classes == await rig.ops.kata_runtime_classes()
    with pytest.raises(OperationError, match=r"^vera \(role viewer\) may not provision;") as refused:
        await vera.remote.offered_flavors(vera.client.snapshot())
    assert refused.value.kind == "denied"

    request = ProvisionRequest(
        kind="kata-pod", name="sandboxed-eval", namespace="sandbox", image="reg/e:1", gpus=1
    )
    plan = await alice.remote.plan_provision(alice.client.snapshot(), request)
    assert plan.digest() == (await rig.ops.plan_provision(snapshot, request)).digest()
    assert plan.steps[0].params["runtime_class"] == "kata-qemu-nvidia-gpu"
    _, result = await follow(rig, await alice.remote.start(plan, alice.actor))
    assert result.ok, result.message
    pod = rig.lab.cluster.store.require("pods", "sandbox", "sandboxed-eval").obj
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-nvidia-gpu"
    assert rig.ops.journal.get(plan.id).operator == "ssh:alice"

    node = next(n for n in rig.lab.lab.scenario.nodes if n.provision_state == "active" and not n.maintenance)
    undeploy = await alice.remote.plan_node(alice.client.snapshot(), "undeploy", node.name)
    assert (undeploy.kind, undeploy.target, undeploy.confirm_phrase) == ("undeploy", node.name, node.name)
    assert undeploy.digest() == (await rig.ops.plan_node(snapshot, "undeploy", node.name)).digest()
