"""KubeVirt in the lab through CustomObjectsApi: migrations walking their phases under the fake
clock and moving the VMI, refusal for non-migratable VMIs, the on-purpose 429 of a LiveMigrate
launcher pod's eviction, abort by deletion, and a failed migration."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sovereign_tui.lab.kubevirt import PHASES
from tests.lab_kube.conftest import Lab, call

G, V = "kubevirt.io", "v1"
VMIM = "virtualmachineinstancemigrations"


def _vmi(lab: Lab, *, migratable: bool, strategy: str = "LiveMigrate") -> dict[str, Any]:
    for e in lab.cluster.store.entries("virtualmachineinstances"):
        cond = {c["type"]: c["status"] for c in e.obj["status"]["conditions"]}
        if (cond["LiveMigratable"] == "True") == migratable and e.obj["spec"]["evictionStrategy"] == strategy:
            return e.obj
    raise AssertionError("the lab has no such VMI")


async def _get(lab: Lab, plural: str, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = await call(lab.custom.get_namespaced_custom_object, G, V, ns, plural, name)
    return obj


def _launcher(lab: Lab, vmi: dict[str, Any]) -> Any:
    ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
    pods = [e for e in lab.cluster.store.entries("pods", ns) if e.labels.get("vm.kubevirt.io/name") == name]
    running = [p for p in pods if p.obj["status"]["phase"] == "Running"]
    assert len(running) == 1
    return running[0]


async def test_a_migration_walks_its_phases_and_moves_the_vmi(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=True)
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    source_pod = _launcher(lab, vmi)
    rv = str(lab.cluster.store.rv)

    def phases() -> list[str]:
        out = []
        for ev in watch.Watch().stream(
            lab.custom.list_namespaced_custom_object, G, V, ns, VMIM, resource_version=rv, timeout_seconds=600
        ):
            out.append(ev["object"]["status"].get("phase"))
            if out[-1] in ("Succeeded", "Failed"):
                return out
        return out

    watched = asyncio.ensure_future(call(phases))
    await lab.cluster.store.wait_for_watchers(1)
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move-1"},
        "spec": {"vmiName": name},
    }
    created = await call(lab.custom.create_namespaced_custom_object, G, V, ns, VMIM, body)
    assert created["status"]["phase"] == "Pending"
    assert created["metadata"]["labels"]["kubevirt.io/vmi-name"] == name

    walked = ["Pending"]
    for phase, seconds in PHASES:
        assert (await _get(lab, VMIM, ns, "move-1"))["status"]["phase"] == phase
        await lab.clock.advance(seconds)
        walked.append((await _get(lab, VMIM, ns, "move-1"))["status"]["phase"])
    assert walked == [p for p, _ in PHASES] + ["Succeeded"]
    assert await watched == walked

    moved = await _get(lab, "virtualmachineinstances", ns, name)
    state = moved["status"]["migrationState"]
    target = moved["status"]["nodeName"]
    assert target != source
    assert (state["sourceNode"], state["targetNode"], state["completed"], state["failed"]) == (
        source,
        target,
        True,
        False,
    )
    assert state["startTimestamp"] <= state["endTimestamp"]
    assert moved["metadata"]["labels"]["kubevirt.io/nodeName"] == target
    launcher = _launcher(lab, moved)
    assert launcher.obj["spec"]["nodeName"] == target
    assert launcher.name != source_pod.name
    assert lab.cluster.store.get("pods", ns, source_pod.name) is None
    vm = await _get(lab, "virtualmachines", ns, name)
    assert vm["status"]["printableStatus"] == "Running"


async def test_the_vm_reads_migrating_while_it_moves(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=True)
    ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
    body = {"metadata": {"generateName": "move-"}, "spec": {"vmiName": name}}
    mig = await call(lab.custom.create_namespaced_custom_object, G, V, ns, VMIM, body)
    await lab.clock.advance(PHASES[0][1])
    assert (await _get(lab, "virtualmachines", ns, name))["status"]["printableStatus"] == "Migrating"
    assert mig["metadata"]["name"].startswith("move-")
    with pytest.raises(ApiException) as err:  # one migration at a time
        await call(lab.custom.create_namespaced_custom_object, G, V, ns, VMIM, body)
    assert err.value.status == 422
    assert "in-flight migration detected" in json.loads(err.value.body)["message"]


async def test_a_vmi_that_cannot_live_migrate_refuses_a_migration(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=False, strategy="None")
    ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
    reason = next(c["reason"] for c in vmi["status"]["conditions"] if c["type"] == "LiveMigratable")
    with pytest.raises(ApiException) as err:
        await call(lab.custom.create_namespaced_custom_object, G, V, ns, VMIM, {"spec": {"vmiName": name}})
    assert err.value.status == 422
    assert f"Cannot migrate VMI, Reason: {reason}" in json.loads(err.value.body)["message"]
    listed = await call(lab.custom.list_namespaced_custom_object, G, V, ns, VMIM)
    assert listed["items"] == []


async def test_evicting_a_live_migrate_launcher_is_429_and_starts_an_evacuation(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=True)
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    pod = _launcher(lab, vmi)
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.name, namespace=ns))
    for _ in range(2):  # a drain retries; each retry is answered the same while the VMI moves
        with pytest.raises(ApiException) as err:
            await call(lab.core.create_namespaced_pod_eviction, pod.name, ns, eviction)
        assert err.value.status == 429
        assert f'Eviction triggered evacuation of VMI "{ns}/{name}"' in json.loads(err.value.body)["message"]
    migrations = (await call(lab.custom.list_cluster_custom_object, G, V, VMIM))["items"]
    assert len(migrations) == 1
    mig = migrations[0]
    assert mig["metadata"]["name"].startswith("kubevirt-evacuation-")
    assert mig["metadata"]["annotations"]["kubevirt.io/evacuationMigration"] == source
    assert (await _get(lab, "virtualmachineinstances", ns, name))["status"]["evacuationNodeName"] == source
    assert (await call(lab.core.read_namespaced_pod, pod.name, ns)).metadata.deletion_timestamp is None

    await lab.clock.advance(sum(s for _, s in PHASES))
    assert (await _get(lab, VMIM, ns, mig["metadata"]["name"]))["status"]["phase"] == "Succeeded"
    moved = await _get(lab, "virtualmachineinstances", ns, name)
    assert moved["status"]["nodeName"] != source
    assert "evacuationNodeName" not in moved["status"]
    with pytest.raises(ApiException) as err:  # the drain's next retry finds the pod gone
        await call(lab.core.create_namespaced_pod_eviction, pod.name, ns, eviction)
    assert err.value.status == 404


async def test_evicting_a_launcher_without_live_migration_restarts_the_vm_elsewhere(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=False, strategy="None")
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    pod = _launcher(lab, vmi)
    await call(
        lab.core.create_namespaced_pod_eviction,
        pod.name,
        ns,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.name)),
    )
    again = await _get(lab, "virtualmachineinstances", ns, name)
    assert again["metadata"]["uid"] != vmi["metadata"]["uid"]
    assert again["status"]["nodeName"] != source
    assert _launcher(lab, again).obj["spec"]["nodeName"] == again["status"]["nodeName"]


async def test_deleting_a_migration_in_flight_aborts_it(lab: Lab) -> None:
    vmi = _vmi(lab, migratable=True)
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    await call(
        lab.custom.create_namespaced_custom_object,
        G,
        V,
        ns,
        VMIM,
        {"metadata": {"name": "m"}, "spec": {"vmiName": name}},
    )
    await lab.clock.advance(PHASES[0][1] + PHASES[1][1])
    mig = await _get(lab, VMIM, ns, "m")
    assert mig["status"]["phase"] == "Scheduled"
    target_pod = mig["status"]["migrationState"]["targetPod"]
    assert lab.cluster.store.get("pods", ns, target_pod) is not None

    await call(lab.custom.delete_namespaced_custom_object, G, V, ns, VMIM, "m")
    with pytest.raises(ApiException) as err:
        await _get(lab, VMIM, ns, "m")
    assert err.value.status == 404
    after = await _get(lab, "virtualmachineinstances", ns, name)
    state = after["status"]["migrationState"]
    assert after["status"]["nodeName"] == source
    assert state["abortRequested"] is True
    assert state["failed"] is True
    assert state["completed"] is False
    assert lab.cluster.store.get("pods", ns, target_pod) is None
    await lab.clock.advance(sum(s for _, s in PHASES))  # nothing of the aborted migration goes on
    assert (await _get(lab, "virtualmachineinstances", ns, name))["status"]["nodeName"] == source


async def test_a_failed_migration_leaves_the_vmi_where_it_was(lab: Lab) -> None:
    lab.cluster.kubevirt.migrations.fail_next = 1
    vmi = _vmi(lab, migratable=True)
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    await call(
        lab.custom.create_namespaced_custom_object,
        G,
        V,
        ns,
        VMIM,
        {"metadata": {"name": "f"}, "spec": {"vmiName": name}},
    )
    await lab.clock.advance(sum(s for _, s in PHASES))
    mig = await _get(lab, VMIM, ns, "f")
    assert mig["status"]["phase"] == "Failed"
    after = await _get(lab, "virtualmachineinstances", ns, name)
    assert after["status"]["nodeName"] == source
    assert after["status"]["migrationState"]["failed"] is True
    assert after["status"]["migrationState"]["failureReason"]
    assert _launcher(lab, after).obj["spec"]["nodeName"] == source


async def test_kubevirt_lists_per_namespace_and_cluster_wide(lab: Lab) -> None:
    for plural in ("virtualmachines", "virtualmachineinstances"):
        everywhere = (await call(lab.custom.list_cluster_custom_object, G, V, plural))["items"]
        assert len(everywhere) == lab.cluster.store.count(plural) > 0
        per_ns = []
        for ns in sorted({o["metadata"]["namespace"] for o in everywhere}):
            per_ns += (await call(lab.custom.list_namespaced_custom_object, G, V, ns, plural))["items"]
        assert per_ns == everywhere
    vms = {
        v["metadata"]["name"]: v
        for v in (await call(lab.custom.list_cluster_custom_object, G, V, "virtualmachines"))["items"]
    }
    vmis = {
        v["metadata"]["name"]
        for v in (await call(lab.custom.list_cluster_custom_object, G, V, "virtualmachineinstances"))["items"]
    }
    for vm_name, vm in vms.items():
        running = vm["spec"]["runStrategy"] == "Always"
        assert (vm_name in vmis) == running
        assert vm["status"]["printableStatus"] == ("Running" if running else "Stopped")
