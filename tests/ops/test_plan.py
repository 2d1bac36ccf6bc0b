"""Plans computed from the lab's snapshot and live lookups, before anything runs: what each step
touches, the order across layers, blockers (GPU servers, disruption budgets, VMs that cannot
live-migrate, Ironic maintenance), choices offered only among what fits, and the plan's digest."""

from __future__ import annotations

import re

import msgspec
import pytest

from sovereign_tui.ops.engine import Operations
from sovereign_tui.ops.inventory import BudgetInfo, PodInfo
from sovereign_tui.ops.plan import StepKind, decode_plan, encode_plan, plan_rows
from sovereign_tui.ops.plan_context import PlanError
from sovereign_tui.ops.planners import budget_blocker
from sovereign_tui.ops.provisioning import ProvisionRequest, fitting_flavors
from tests.ops.conftest import (
    OpsLab,
    busiest_host,
    gpu_flavor,
    live_movable,
    migratable,
    pick_host,
    pods_on,
    servers_on,
    vmis_on,
)

LAYER_ORDER = ["nova", "kubernetes", "kubevirt", "ironic", "starlingx"]


async def test_a_drain_plan_covers_every_layer_in_order(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    host = busiest_host(ol)
    plan = await ops.plan_drain(await ol.snapshot(), host)
    # Nova: the service first, then one step per server on the host, live ones first
    assert plan.steps[0].kind == StepKind.NOVA_DISABLE
    moves = [
        s
        for s in plan.steps
        if s.kind in (StepKind.NOVA_LIVE_MIGRATE, StepKind.NOVA_COLD_MIGRATE, StepKind.NOVA_CANNOT_MOVE)
    ]
    assert {s.target for s in moves} == {s.id for s in servers_on(ol, host)}
    assert {s.target for s in moves if s.kind == StepKind.NOVA_LIVE_MIGRATE} == {
        s.id for s in servers_on(ol, host) if live_movable(s)
    }
    # Kubernetes: cordon, then the pods (DaemonSet pods are not evicted); KubeVirt VMs as VMs
    cordon = next(i for i, s in enumerate(plan.steps) if s.kind == StepKind.KUBE_CORDON)
    assert all(s.layer != "kubernetes" for s in plan.steps[:cordon])
    evicted = {s.target for s in plan.steps if s.kind == StepKind.KUBE_EVICT}
    daemons = {f"{e.namespace}/{e.name}" for e in pods_on(ol, host, daemons=True)}
    assert daemons and not evicted & daemons
    assert any("DaemonSet pods stay" in w for w in plan.warnings)
    for v in vmis_on(ol, host):
        key = f"{v['metadata']['namespace']}/{v['metadata']['name']}"
        if migratable(v) and v["spec"].get("evictionStrategy") == "LiveMigrate":
            assert any(s.kind == StepKind.KUBEVIRT_EVACUATE and s.target == key for s in plan.steps)
    # layers in order, StarlingX last with its warning; every step says what it touches
    layers = [s.layer for s in plan.steps]
    assert layers == sorted(layers, key=LAYER_ORDER.index) and layers[-1] == "starlingx"
    assert all(s.touches and s.description and s.timeout_s for s in plan.steps)
    assert plan.destructive and plan.confirm_phrase == host and plan.leases == (host,)
    rows = plan_rows(plan)
    assert len(rows) == len(plan.steps) and "NoExecute" in rows[-1]["note"]


async def test_gpu_servers_are_cold_migrated_or_listed_as_cannot_move(
    ops_lab: OpsLab, ops: Operations
) -> None:
    ol = ops_lab
    host = pick_host(ol, lambda h: sum(gpu_flavor(s) and s.vm_state == "active" for s in servers_on(ol, h)))
    gpu = {s.id for s in servers_on(ol, host) if gpu_flavor(s) and s.vm_state == "active"}
    plan = await ops.plan_drain(await ol.snapshot(), host)
    cold = {s.target: s for s in plan.steps if s.kind == StepKind.NOVA_COLD_MIGRATE}
    assert gpu <= set(cold) and all("cannot live-migrate" in (cold[i].warning or "") for i in gpu)
    refusing = ol.operations(gpu_vm_policy="refuse")
    try:
        plan = await refusing.plan_drain(await ol.snapshot(), host)
    finally:
        await refusing.close()
    stays = {s.target: s.blocker for s in plan.steps if s.kind == StepKind.NOVA_CANNOT_MOVE}
    assert gpu <= set(stays)
    assert all(b is not None and b.hard and b.kind == "cannot-move" for i, b in stays.items() if i in gpu)


async def test_a_paused_gpu_server_cannot_move(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    paused = [s for s in ol.lab.scenario.servers.values() if gpu_flavor(s) and s.vm_state == "paused"]
    if not paused:
        pytest.skip("this lab scenario has no paused GPU server")
    plan = await ops.plan_migrate(await ol.snapshot(), paused[0].id)
    (step,) = plan.steps
    assert step.kind == StepKind.NOVA_CANNOT_MOVE and step.blocked and "PAUSED" in step.blocker.reason  # type: ignore[union-attr]


async def test_a_budget_with_no_room_is_named_on_the_pod_it_would_block(
    ops_lab: OpsLab, ops: Operations
) -> None:
    ol = ops_lab
    full = {
        e.name
        for e in ol.cluster.store.entries("poddisruptionbudgets")
        if e.obj["status"]["disruptionsAllowed"] == 0
    }
    host = pick_host(ol, lambda h: sum(e.labels.get("app") in full for e in pods_on(ol, h)))
    plan = await ops.plan_drain(await ol.snapshot(), host)
    blocked = {s.target: s.blocker for s in plan.steps if s.kind == StepKind.KUBE_EVICT and s.blocker}
    expected = {
        f"{e.namespace}/{e.name}": e.labels["app"] for e in pods_on(ol, host) if e.labels.get("app") in full
    }
    assert {k: b.detail for k, b in blocked.items() if b is not None} == expected
    assert all(b is not None and not b.hard and b.kind == "budget" for b in blocked.values())


def test_budget_selection_follows_policy_v1() -> None:
    pod = PodInfo(
        "web", "cache-0", "uid", "n1", "Running", "StatefulSet", {"app": "cache", "tier": "critical"}
    )
    by_app = BudgetInfo("web", "cache", {"app": "cache"}, disruptions_allowed=1)
    by_tier = BudgetInfo(
        "web", "critical", {}, [{"key": "tier", "operator": "In", "values": ["critical"]}], True, 1
    )
    everything = BudgetInfo("web", "all", {}, has_selector=True, disruptions_allowed=0, desired_healthy=3)
    nothing = BudgetInfo("web", "none", {}, has_selector=False)
    other_ns = BudgetInfo("db", "cache", {"app": "cache"})
    assert budget_blocker(pod, [by_app, nothing, other_ns]) is None
    several = budget_blocker(pod, [by_app, by_tier])
    assert several is not None and several.hard and several.detail == "cache, critical"
    full = budget_blocker(pod, [everything])
    assert full is not None and not full.hard and full.detail == "all" and "needs 3 healthy" in full.reason
    excluded = BudgetInfo(
        "web", "x", {}, [{"key": "tier", "operator": "NotIn", "values": ["critical"]}], True, 0
    )
    assert budget_blocker(pod, [excluded]) is None


async def test_kubevirt_vms_are_evacuated_migrated_restarted_or_blocked(
    ops_lab: OpsLab, ops: Operations
) -> None:
    ol = ops_lab
    snap = await ol.snapshot()
    for host in ol.compute_hosts():
        vms = vmis_on(ol, host)
        if not vms:
            continue
        plan = await ops.plan_drain(snap, host)
        for v in vms:
            key = f"{v['metadata']['namespace']}/{v['metadata']['name']}"
            step = next(s for s in plan.steps if s.target == key or key in " ".join(s.touches))
            strategy = v["spec"].get("evictionStrategy")
            if migratable(v):
                assert step.kind == (
                    StepKind.KUBEVIRT_EVACUATE if strategy == "LiveMigrate" else StepKind.KUBEVIRT_MIGRATE
                )
            elif strategy == "LiveMigrate":
                assert step.blocked and step.blocker.kind == "not-migratable"  # type: ignore[union-attr]
            else:
                assert step.kind == StepKind.KUBE_EVICT and "restarts elsewhere" in (step.warning or "")


async def test_a_bare_metal_host_is_put_in_maintenance(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    node = next(n for n in ol.lab.scenario.nodes if n.provision_state == "active" and n.instance_uuid)
    plan = await ops.plan_drain(await ol.snapshot(), node.name)  # type: ignore[arg-type]
    kinds = [s.kind for s in plan.steps]
    assert StepKind.IRONIC_MAINTENANCE_ON in kinds and StepKind.NOVA_DISABLE not in kinds
    step = plan.steps[kinds.index(StepKind.IRONIC_MAINTENANCE_ON)]
    assert step.target == node.uuid and node.instance_uuid in (step.warning or "")


async def test_what_cannot_be_planned_is_one_line(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    snap = await ol.snapshot()
    with pytest.raises(PlanError, match="not known to any configured layer"):
        await ops.plan_drain(snap, "no-such-host")
    with pytest.raises(PlanError, match="no server, KubeVirt VM or pod"):
        await ops.plan_migrate(snap, "web/no-such-pod")
    node = next(n for n in ol.lab.scenario.nodes if n.instance_uuid)
    with pytest.raises(PlanError, match="bare-metal instance"):
        await ops.plan_migrate(snap, node.instance_uuid)  # type: ignore[arg-type]
    pod = next(e for e in pods_on(ol, ol.compute_hosts()[0]))
    with pytest.raises(PlanError, match="scheduler choose"):
        await ops.plan_migrate(snap, f"{pod.namespace}/{pod.name}", to=ol.compute_hosts()[1])


async def test_layers_left_out_are_not_touched_and_said_so(ops_lab: OpsLab) -> None:
    ol = ops_lab
    only_nova = ol.operations(layers=["nova"])
    try:
        plan = await only_nova.plan_drain(await ol.snapshot(), busiest_host(ol))
    finally:
        await only_nova.close()
    assert {s.layer for s in plan.steps} == {"nova"}


async def test_only_gpu_flavors_that_fit_are_offered(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    snap = await ol.snapshot()
    flavors = await ops.inventory.flavors()
    offered = fitting_flavors(snap, flavors)
    present = {h.model.alias for h in ol.lab.scenario.hosts if h.role == "compute" and not h.vgpu}
    aliases = {f.flavor.extra_specs.get("pci_passthrough:alias", "").split(":")[0] for f in offered} - {""}
    assert offered and aliases <= present and all(f.gpus > 0 for f in offered)
    absent = next(
        (
            f
            for f in flavors
            if f.extra_specs.get("pci_passthrough:alias", "x:").split(":")[0] not in present
            and "pci_passthrough:alias" in f.extra_specs
        ),
        None,
    )
    image = ol.lab.scenario.images[0].id
    if absent is not None:
        with pytest.raises(PlanError, match="fits on no enabled hypervisor"):
            await ops.plan_provision(
                snap, ProvisionRequest(kind="vm", name="x", flavor=absent.name, image=image)
            )
    plain = next(f for f in flavors if not f.extra_specs)
    with pytest.raises(PlanError, match="not a GPU flavor"):
        await ops.plan_provision(snap, ProvisionRequest(kind="vm", name="x", flavor=plain.name, image=image))
    # a GPU source that reports every board busy leaves nothing to offer for those hosts
    from sovereign_tui.model import Gpu

    busy = tuple(
        Gpu(
            source="t",
            observed_at=0,
            host=h.name,
            index=i,
            uuid=f"{h.name}-{i}",
            name=f"NVIDIA {h.model.alias.upper()}",
            holder="someone",
        )
        for h in ol.lab.scenario.hosts
        if h.role == "compute"
        for i in range(len(h.gpus))
    )
    full = msgspec.structs.replace(snap, gpus=busy)
    assert [f for f in fitting_flavors(full, flavors) if f.gpu_kind == "passthrough"] == []


async def test_kata_pods_choose_among_the_runtime_classes_present(ops_lab: OpsLab, ops: Operations) -> None:
    snap = await ops_lab.snapshot()
    kata = sorted(
        e.name
        for e in ops_lab.cluster.store.entries("runtimeclasses")
        if e.obj.get("handler", "").startswith("kata")
    )
    plain = await ops.plan_provision(
        snap, ProvisionRequest(kind="kata-pod", name="p", image="i", namespace="sandbox")
    )
    assert plain.steps[0].params["runtime_class"] in kata
    with pytest.raises(PlanError, match=re.escape("present Kata classes: " + ", ".join(kata))):
        await ops.plan_provision(
            snap, ProvisionRequest(kind="kata-pod", name="p", image="i", runtime_class="kata-nonesuch")
        )


async def test_the_digest_names_what_a_plan_does_not_when(ops_lab: OpsLab, ops: Operations) -> None:
    ol = ops_lab
    snap = await ol.snapshot()
    host = busiest_host(ol)
    a = await ops.plan_drain(snap, host)
    b = await ops.plan_drain(snap, host)
    assert a.id != b.id and a.digest() == b.digest()
    assert decode_plan(encode_plan(a)) == a
    changed = msgspec.structs.replace(a, steps=a.steps[:-1])
    assert changed.digest() != a.digest()
    forced = await ops.plan_drain(snap, host, force=True)
    assert forced.digest() != a.digest() and "force-lock" in forced.steps[-1].description


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[ops]\nrole = "root"', "ops.role must be viewer, operator or admin"),
        ('[ops]\nlayers = ["nova", "vmware"]', "unknown layer(s) ['vmware']"),
        ("[ops]\nlive_migrations_per_host = 0", "must be at least 1"),
        ('[ops]\nstep_timeouts = {"nova.teleport" = 5}', "unknown step kind(s) ['nova.teleport']"),
        ('[ops]\ngpu_vm_policy = "yolo"', "ops.gpu_vm_policy must be 'cold' or 'refuse'"),
    ],
)
def test_ops_settings_are_checked_with_one_line(toml: str, message: str) -> None:
    from sovereign_tui.config import ConfigError, parse_settings

    with pytest.raises(ConfigError) as err:
        parse_settings(toml, "s.toml")
    assert message in str(err.value) and str(err.value).startswith("s.toml: ") and "\n" not in str(err.value)


async def test_a_kubevirt_vm_plan_carries_its_manifest(ops_lab: OpsLab, ops: Operations) -> None:
    from sovereign_tui.ops.actions.kubevirt import vm_manifest

    plan = await ops.plan_provision(
        await ops_lab.snapshot(),
        ProvisionRequest(
            kind="kubevirt-vm",
            name="ws-1",
            namespace="vms",
            image="quay.io/containerdisks/fedora:40",
            cores=4,
            memory="16Gi",
            gpus=1,
        ),
    )
    (step,) = plan.steps
    assert step.kind == StepKind.KUBEVIRT_CREATE_VM and plan.leases == ("workload:kubevirt-vm/vms/ws-1",)
    vm = vm_manifest(step.params)
    spec = vm["spec"]["template"]["spec"]
    assert vm["spec"]["runStrategy"] == "Always" and spec["evictionStrategy"] == "LiveMigrate"
    assert spec["domain"]["cpu"]["cores"] == 4 and spec["domain"]["memory"]["guest"] == "16Gi"
    assert len(spec["domain"]["devices"]["gpus"]) == 1
