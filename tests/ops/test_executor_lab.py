"""Operations run against the lab through the real SDKs: drains across every layer and their
undoing, the concurrency cap, failures (a migration that fails, a budget that blocks, a node in
maintenance refused by Ironic, a step timeout), cancel, migrations and provisioning.

Expected results are read from the lab's own state before the run; the lab counts the actions it
received, so "exactly once" is checked where the action lands."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.nova_sim import Timings
from sovereign_tui.ops.audit import verify
from sovereign_tui.ops.engine import Operations
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.plan import StepKind
from sovereign_tui.ops.provisioning import ProvisionRequest, fitting_flavors
from sovereign_tui.ops.roles import PermissionDenied
from tests.ops.conftest import (
    ADMIN,
    OPERATOR,
    POLL_S,
    OpsLab,
    busiest_host,
    drive,
    gpu_flavor,
    live_movable,
    migratable,
    pick_host,
    pods_on,
    servers_on,
    start_ops_lab,
    stop_ops_lab,
    vmis_on,
)


def _max_concurrent(events: list[OpEvent], indexes: set[int]) -> int:
    running: set[int] = set()
    peak = 0
    for e in events:
        if e.step in indexes and e.kind == "step-started":
            running.add(e.step)
            peak = max(peak, len(running))
        elif e.step in indexes and e.kind == "step-finished":
            running.discard(e.step)
    return peak


async def test_a_drain_empties_the_host_across_every_layer(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    host = busiest_host(ol)
    movers = [s for s in servers_on(ol, host) if s.vm_state in ("active", "stopped")]
    app_pods = {f"{e.namespace}/{e.name}" for e in pods_on(ol, host)}
    daemon_pods = {f"{e.namespace}/{e.name}" for e in pods_on(ol, host, daemons=True)}
    vmis = {
        f"{v['metadata']['namespace']}/{v['metadata']['name']}" for v in vmis_on(ol, host) if migratable(v)
    }
    plan = await ops.plan_drain(await ol.snapshot(), host)
    kinds = [s.kind for s in plan.steps]
    assert kinds[0] == StepKind.NOVA_DISABLE and kinds[-1] == StepKind.STX_LOCK
    assert plan.steps[-1].warning and "NoExecute" in plan.steps[-1].warning

    run = await ops.start(plan, OPERATOR, confirmation=host)
    result = await drive(clock, run)

    assert result.state == "succeeded", result.message
    sc = ol.lab.scenario
    assert {s.id: sc.servers[s.id].host for s in movers if sc.servers[s.id].host == host} == {}
    assert sc.hosts_by_name[host].service.disabled  # type: ignore[union-attr]
    node = ol.cluster.store.require("nodes", "", host).obj
    assert node["spec"].get("unschedulable") is True
    left = {f"{e.namespace}/{e.name}" for e in pods_on(ol, host)}
    assert left == set(), f"pods still on {host}: {left}"
    assert {f"{e.namespace}/{e.name}" for e in pods_on(ol, host, daemons=True)} == daemon_pods  # skipped
    assert not vmis & {f"{v['metadata']['namespace']}/{v['metadata']['name']}" for v in vmis_on(ol, host)}
    assert ol.stx.sim.hosts_by_name[host].administrative == "locked"
    # each action landed once: one move per server, one eviction per pod, one lock
    for s in movers:
        kind = "live-migrate" if live_movable(s) else "cold-migrate"
        assert ol.counts[f"nova.{kind}:{s.id}"] == 1, s.name
    evicted = {k.split(":", 1)[1] for k, n in ol.counts.items() if k.startswith("kube.evict:") and n == 1}
    assert app_pods <= evicted | {p for p in app_pods if "virt-launcher" in p}
    assert ol.counts[f"stx.lock:{host}"] == 1
    assert ol.counts[f"nova.service:{host}:disabled"] == 1
    # progress came from the APIs themselves: Nova's memory copied, KubeVirt's 429 and phases
    progress = [e for e in run.history if e.kind == "step-progress"]
    assert any(e.fraction is not None and 0 < e.fraction <= 1 for e in progress)
    assert any("429" in (e.message or "") for e in progress)
    assert any((e.message or "").startswith("kubevirt migration ") for e in progress)
    # at most two live migrations off the host at once, and the cap was used
    live = {s.index for s in plan.steps if s.kind == StepKind.NOVA_LIVE_MIGRATE}
    assert _max_concurrent(run.history, live) == min(2, len(live))
    assert verify(ops.audit.path).ok
    assert ops.journal.leases(host) == []


async def test_the_concurrency_cap_is_a_setting(tmp_path: Path, clock: FakeClock) -> None:
    ol = await start_ops_lab(tmp_path, clock)
    ops = ol.operations(live_migrations_per_host=1)
    try:
        host = busiest_host(ol)
        plan = await ops.plan_drain(await ol.snapshot(), host)
        live = {s.index for s in plan.steps if s.kind == StepKind.NOVA_LIVE_MIGRATE}
        run = await ops.start(plan, ADMIN, confirmation=host)
        result = await drive(clock, run)
        assert result.ok, result.message
        assert len(live) >= 2 and _max_concurrent(run.history, live) == 1
    finally:
        await ops.close()
        await stop_ops_lab(ol)


async def test_undrain_puts_the_host_back_in_service(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    host = busiest_host(ol)
    drained = await drive(
        clock, await ops.start(await ops.plan_drain(await ol.snapshot(), host), ADMIN, confirmation=host)
    )
    assert drained.ok, drained.message
    plan = await ops.plan_undrain(await ol.snapshot(), host)
    assert plan.confirm_phrase is None  # putting capacity back is not destructive
    assert next(s.kind for s in plan.steps) == StepKind.STX_UNLOCK
    result = await drive(clock, await ops.start(plan, OPERATOR))
    assert result.ok, result.message
    assert not ol.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]
    assert not ol.cluster.store.require("nodes", "", host).obj["spec"].get("unschedulable")
    stx = ol.stx.sim.hosts_by_name[host]
    assert (stx.administrative, stx.operational) == ("unlocked", "enabled")


async def test_a_failed_live_migration_stops_the_drain(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    host = busiest_host(ol)
    plan = await ops.plan_drain(await ol.snapshot(), host)
    first_live = next(s for s in plan.steps if s.kind == StepKind.NOVA_LIVE_MIGRATE)
    ol.lab.compute.fail_next_migration(first_live.target)
    result = await drive(clock, await ops.start(plan, ADMIN, confirmation=host))
    assert result.state == "failed"
    failed = [r for r in result.steps if r.state == "failed"]
    assert [r.index for r in failed] == [first_live.index]
    assert "guest dirtied memory" in (failed[0].outcome or "")  # Nova's own reason, from the instance action
    assert ol.lab.scenario.servers[first_live.target].host == host
    # nothing after the failed group ran: no cordon, no lock
    assert ol.counts[f"kube.patch-node:{host}"] == 0 and ol.counts[f"stx.lock:{host}"] == 0
    rec = ops.journal.get(plan.id)
    assert rec.state == "failed" and ops.journal.leases(host) == []
    assert {
        s.state for s in rec.steps if s.index > max(r.index for r in result.steps if r.state != "skipped")
    } == {"skipped"}


async def test_continue_on_failure_tries_every_step(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    host = busiest_host(ol)
    plan = await ops.plan_drain(await ol.snapshot(), host)
    first_live = next(s for s in plan.steps if s.kind == StepKind.NOVA_LIVE_MIGRATE)
    ol.lab.compute.fail_next_migration(first_live.target)
    run = await ops.start(plan, ADMIN, confirmation=host, continue_on_failure=True)
    result = await drive(clock, run)
    assert result.state == "failed"
    assert [r.state for r in result.steps].count("failed") == 1
    assert all(r.state == "done" for r in result.steps if r.index != first_live.index)
    assert ol.stx.sim.hosts_by_name[host].administrative == "locked"


async def test_a_budget_that_blocks_holds_the_eviction_until_its_timeout(
    tmp_path: Path, clock: FakeClock
) -> None:
    ol = await start_ops_lab(tmp_path, clock)
    ops = ol.operations(step_timeouts={"kubernetes.evict": 6 * POLL_S})
    try:
        budgets = {
            e.name: e.obj
            for e in ol.cluster.store.entries("poddisruptionbudgets")
            if e.obj["status"].get("disruptionsAllowed") == 0
        }
        blocked = next(
            e
            for e in ol.cluster.store.entries("pods")
            if e.labels.get("app") in budgets and e.obj["status"].get("phase") == "Running"
        )
        budget = blocked.labels["app"]
        plan = await ops.plan_migrate(await ol.snapshot(), f"{blocked.namespace}/{blocked.name}")
        (step,) = plan.steps
        assert step.blocker is not None and step.blocker.detail == budget and not step.blocker.hard
        run = await ops.start(plan, OPERATOR, confirmation=plan.confirm_phrase)
        result = await drive(clock, run)
        assert result.state == "failed"
        assert (result.steps[0].outcome or "").startswith("timed out after 6s")
        refusals = [e.message or "" for e in run.history if e.kind == "step-progress"]
        assert refusals and all(f"budget {budget}" in m for m in refusals)
        assert ol.counts[f"kube.evict:{blocked.namespace}/{blocked.name}"] >= 2  # retried, as kubectl does
        assert ol.cluster.store.get("pods", blocked.namespace, blocked.name) is not None
    finally:
        await ops.close()
        await stop_ops_lab(ol)


async def test_ironic_refuses_a_deploy_on_a_node_in_maintenance(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    node = next(n for n in ol.lab.scenario.nodes if n.provision_state == "available" and not n.maintenance)
    plan = await ops.plan_provision(
        await ol.snapshot(),
        ProvisionRequest(kind="baremetal", name="trainer-1", node=node.name, image="http://img/x.qcow2"),
    )
    assert plan.steps[0].blocker is None
    ol.lab.baremetal.set_maintenance(node, True, "fan failure")  # after the plan: the snapshot is stale
    result = await drive(clock, await ops.start(plan, OPERATOR, confirmation=plan.confirm_phrase))
    assert result.state == "failed"
    assert "maintenance" in (result.steps[0].outcome or "") and "HTTP 400" in (result.steps[0].outcome or "")
    assert node.provision_state == "available"
    # and a plan made now says so before anything runs
    again = await ops.plan_provision(
        await ol.snapshot(),
        ProvisionRequest(kind="baremetal", name="trainer-1", node=node.name, image="http://img/x.qcow2"),
    )
    assert again.steps[0].blocker is not None and again.steps[0].blocker.detail == "maintenance"


async def test_a_baremetal_deploy_walks_ironic_states_to_active(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    node = next(n for n in ol.lab.scenario.nodes if n.provision_state == "available" and not n.maintenance)
    plan = await ops.plan_provision(
        await ol.snapshot(),
        ProvisionRequest(kind="baremetal", name="trainer-2", node=node.name, image="http://img/y.qcow2"),
    )
    run = await ops.start(plan, OPERATOR)
    result = await drive(clock, run)
    assert result.ok, result.message
    assert node.provision_state == "active" and node.instance_info["image_source"] == "http://img/y.qcow2"
    seen = {e.message for e in run.history if e.kind == "step-progress"}
    assert {"ironic: deploying", "ironic: wait call-back"} <= seen
    assert ol.counts[f"ironic.provision:{node.name}:active"] == 1


async def test_a_step_timeout_aborts_the_live_migration(tmp_path: Path, clock: FakeClock) -> None:
    ol = await start_ops_lab(tmp_path, clock, nova_timings=Timings(live_bandwidth_bps=2**30))
    ops = ol.operations(step_timeouts={"nova.live-migrate": 8 * POLL_S})
    try:
        host = pick_host(ol, lambda h: sum(live_movable(s) for s in servers_on(ol, h)))
        server = next(s for s in servers_on(ol, host) if live_movable(s))
        plan = await ops.plan_migrate(await ol.snapshot(), server.id)
        result = await drive(clock, await ops.start(plan, OPERATOR, confirmation=plan.confirm_phrase))
        assert result.state == "failed"
        outcome = result.steps[0].outcome or ""
        assert outcome.startswith("timed out after 8s") and "aborted live migration" in outcome
        assert ol.counts[f"nova.abort:{server.id}"] == 1
        assert server.host == host and server.task_state is None
        assert ol.lab.scenario.migrations[-1].status == "cancelled"
    finally:
        await ops.close()
        await stop_ops_lab(ol)


async def test_cancel_aborts_a_running_nova_live_migration(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    host = pick_host(ol, lambda h: sum(live_movable(s) for s in servers_on(ol, h)))
    server = next(s for s in servers_on(ol, host) if live_movable(s))
    run = await ops.start(
        await ops.plan_migrate(await ol.snapshot(), server.id), OPERATOR, confirmation=server.name
    )
    async for event in run.events():
        if event.kind == "step-progress" and event.fraction is not None and event.fraction > 0:
            run.cancel()  # mid-copy
        elif event.kind == "step-progress":
            await clock.advance(POLL_S)
    result = await run.wait()
    assert result.state == "cancelled" and result.steps[0].state == "cancelled"
    assert "aborted live migration" in (result.steps[0].outcome or "")
    assert ol.counts[f"nova.abort:{server.id}"] == 1 and server.host == host
    assert ops.journal.get(run.op_id).state == "cancelled"


async def test_cancel_deletes_a_running_kubevirt_migration(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    vmi = next(e.obj for e in ol.cluster.store.entries("virtualmachineinstances") if migratable(e.obj))
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    run = await ops.start(
        await ops.plan_migrate(await ol.snapshot(), f"{ns}/{name}"), OPERATOR, confirmation=f"{ns}/{name}"
    )
    async for event in run.events():
        if event.kind == "step-progress" and event.message == "kubevirt migration PreparingTarget":
            run.cancel()
        elif event.kind == "step-progress":
            await clock.advance(POLL_S)
    result = await run.wait()
    assert result.state == "cancelled" and "deleted migration" in (result.steps[0].outcome or "")
    assert ol.counts[f"kubevirt.migrate:{ns}/{name}"] == 1
    assert sum(n for k, n in ol.counts.items() if k.startswith("kubevirt.delete:")) == 1
    assert ol.cluster.store.require("virtualmachineinstances", ns, name).obj["status"]["nodeName"] == source
    assert not list(ol.cluster.store.entries("virtualmachineinstancemigrations", ns))


async def test_a_failed_kubevirt_migration_is_reported(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    vmi = next(e.obj for e in ol.cluster.store.entries("virtualmachineinstances") if migratable(e.obj))
    ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
    ol.cluster.kubevirt.migrations.fail_next = 1
    result = await drive(
        clock,
        await ops.start(
            await ops.plan_migrate(await ol.snapshot(), f"{ns}/{name}"), ADMIN, confirmation=f"{ns}/{name}"
        ),
    )
    assert result.state == "failed"
    assert "failed: Live migration failed" in (result.steps[0].outcome or "")


async def test_a_vm_that_cannot_live_migrate_is_blocked_not_attempted(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    vmi = next(
        e.obj
        for e in ol.cluster.store.entries("virtualmachineinstances")
        if not migratable(e.obj) and e.obj["spec"].get("evictionStrategy") == "LiveMigrate"
    )
    ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
    plan = await ops.plan_migrate(await ol.snapshot(), f"{ns}/{name}")
    assert plan.steps[0].blocked and plan.steps[0].blocker.kind == "not-migratable"  # type: ignore[union-attr]
    result = await drive(clock, await ops.start(plan, ADMIN, confirmation=f"{ns}/{name}"))
    assert result.state == "failed" and result.steps[0].state == "blocked"
    assert ol.counts[f"kubevirt.migrate:{ns}/{name}"] == 0


async def test_migrate_a_server_to_a_chosen_host(ops_lab: OpsLab, ops: Operations, clock: FakeClock) -> None:
    ol = ops_lab
    host = pick_host(ol, lambda h: sum(live_movable(s) for s in servers_on(ol, h)))
    server = next(s for s in servers_on(ol, host) if live_movable(s))
    dest = next(h for h in ol.compute_hosts() if h != host)
    plan = await ops.plan_migrate(await ol.snapshot(), server.name, to=dest)
    assert plan.steps[0].kind == StepKind.NOVA_LIVE_MIGRATE and set(plan.leases) == {host, dest}
    result = await drive(clock, await ops.start(plan, OPERATOR, confirmation=server.name))
    assert result.ok, result.message
    assert server.host == dest


async def test_a_gpu_server_is_cold_migrated_and_confirmed(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    server = next(s for s in ol.lab.scenario.servers.values() if gpu_flavor(s) and s.vm_state == "active")
    source = server.host
    plan = await ops.plan_migrate(await ol.snapshot(), server.id)
    assert plan.steps[0].kind == StepKind.NOVA_COLD_MIGRATE
    result = await drive(clock, await ops.start(plan, OPERATOR, confirmation=server.name))
    assert result.ok, result.message
    assert server.host != source and server.vm_state == "active"
    assert ol.counts[f"nova.confirm:{server.id}"] == 1


async def test_provision_a_gpu_server_and_a_kata_pod(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    snap = await ol.snapshot()
    offered = fitting_flavors(snap, await ops.inventory.flavors())
    flavor = next(f.flavor for f in offered if f.gpus == 1 and f.gpu_kind == "passthrough")
    image = ol.lab.scenario.images[0]
    plan = await ops.plan_provision(
        snap, ProvisionRequest(kind="vm", name="eval-box", flavor=flavor.name, image=image.id)
    )
    result = await drive(clock, await ops.start(plan, OPERATOR))
    assert result.ok, result.message
    made = [s for s in ol.lab.scenario.servers.values() if s.name == "eval-box"]
    assert len(made) == 1 and made[0].vm_state == "active" and made[0].flavor.id == flavor.id

    pod_plan = await ops.plan_provision(
        snap,
        ProvisionRequest(
            kind="kata-pod", name="sandboxed-eval", namespace="sandbox", image="reg/eval:1", gpus=1
        ),
    )
    assert pod_plan.steps[0].params["runtime_class"] == "kata-qemu-nvidia-gpu"
    result = await drive(clock, await ops.start(pod_plan, OPERATOR))
    assert result.ok, result.message
    pod = ol.cluster.store.require("pods", "sandbox", "sandboxed-eval").obj
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-nvidia-gpu" and pod["status"]["phase"] == "Running"


async def test_force_locks_the_starlingx_host_and_needs_admin(ops_lab: OpsLab, clock: FakeClock) -> None:
    ol = ops_lab
    only_stx = ol.operations(layers=["starlingx"])
    try:
        host = busiest_host(ol)
        plan = await only_stx.plan_drain(await ol.snapshot(), host, force=True)
        assert [s.kind for s in plan.steps] == [StepKind.STX_LOCK]
        with pytest.raises(PermissionDenied, match="may not force"):
            await only_stx.start(plan, OPERATOR, confirmation=host)
        result = await drive(clock, await only_stx.start(plan, ADMIN, confirmation=host))
        assert result.ok, result.message
        assert ol.counts[f"stx.force-lock:{host}"] == 1 and ol.counts[f"stx.lock:{host}"] == 0
        assert ol.stx.sim.hosts_by_name[host].administrative == "locked"
    finally:
        await only_stx.close()
