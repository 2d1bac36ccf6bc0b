"""VirtualMachines created and deleted through the lab's KubeVirt API with the real kubernetes
client: the API server's and KubeVirt's refusals as their `Status` bodies, a new VM's VMI walking
Pending -> Scheduling -> Scheduled -> Running under the fake clock (seen by a watch) onto a node
with room for its GPUs, a VM no node has room for staying Unschedulable until one has, and
deletion of a VM with its VMI and launcher pod."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from sovereign_tui.lab.kube_objects import GPU
from sovereign_tui.lab.kubevirt_vms import START_PHASES
from tests.lab_kube.conftest import Lab, call, start_lab, stop_lab

G, V = "kubevirt.io", "v1"
NS = "vms"


def vm_body(name: str, *, gpus: int = 0, device: str = GPU, **spec: Any) -> dict[str, Any]:
    devices: dict[str, Any] = {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}
    if gpus:
        devices["gpus"] = [{"name": f"gpu{i}", "deviceName": device} for i in range(gpus)]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            **(spec or {"runStrategy": "Always"}),
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}, "devices": devices},
                    "volumes": [
                        {"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:41"}}
                    ],
                },
            },
        },
    }


async def create(lab: Lab, body: dict[str, Any], ns: str = NS) -> dict[str, Any]:
    out: dict[str, Any] = await call(
        lab.custom.create_namespaced_custom_object, G, V, ns, "virtualmachines", body
    )
    return out


async def refused(lab: Lab, body: Any, ns: str = NS) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as err:
        await create(lab, body, ns)
    return int(err.value.status), json.loads(err.value.body)


def vmi(lab: Lab, name: str) -> dict[str, Any] | None:
    e = lab.cluster.store.get("virtualmachineinstances", NS, name)
    return None if e is None else e.obj


def vm(lab: Lab, name: str) -> dict[str, Any]:
    return lab.cluster.store.require("virtualmachines", NS, name).obj


def launchers(lab: Lab, name: str) -> list[dict[str, Any]]:
    return [
        e.obj for e in lab.cluster.store.entries("pods", NS) if e.labels.get("vm.kubevirt.io/name") == name
    ]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == kind), None)


async def advance(lab: Lab, seconds: float) -> None:
    """Move the clock; the lab runs what fell due (as it does when the next request arrives)."""
    await lab.clock.advance(seconds)
    lab.cluster.timeline.run_due()


def free(lab: Lab) -> dict[str, int]:
    return {n: lab.cluster.free_gpus(n) for n in lab.cluster.node_names}


@pytest.mark.parametrize(
    "run", [{"runStrategy": "Always"}, {"running": True}], ids=["runStrategy", "running"]
)
async def test_a_new_vm_walks_the_start_phases_onto_a_node_with_room(lab: Lab, run: dict[str, Any]) -> None:
    before = free(lab)
    rv = str(lab.cluster.store.rv)

    def watched() -> list[str | None]:
        phases: list[str | None] = []
        for ev in watch.Watch().stream(
            lab.custom.list_namespaced_custom_object,
            G,
            V,
            NS,
            "virtualmachineinstances",
            resource_version=rv,
            timeout_seconds=600,
        ):
            if ev["object"]["metadata"]["name"] == "ws-1":
                phase = ev["object"]["status"].get("phase")
                if not phases or phases[-1] != phase:
                    phases.append(phase)
                if phase == "Running":
                    return phases
        return phases

    seen = asyncio.ensure_future(call(watched))
    await lab.cluster.store.wait_for_watchers(1)
    made = await create(lab, vm_body("ws-1", gpus=2, **run))
    assert (
        made["kind"] == "VirtualMachine" and made["metadata"]["uid"] and made["metadata"]["generation"] == 1
    )
    walked = []
    for _, seconds in START_PHASES:
        now = vmi(lab, "ws-1")
        assert now is not None
        walked.append(now["status"]["phase"])
        assert vm(lab, "ws-1")["status"]["printableStatus"] == "Starting"
        assert condition(now, "Ready")["status"] == "False"  # type: ignore[index]
        await advance(lab, seconds)
    assert walked == [p for p, _ in START_PHASES]
    assert await seen == [*walked, "Running"]

    running = vmi(lab, "ws-1")
    assert running is not None and running["status"]["phase"] == "Running"
    node = running["status"]["nodeName"]
    assert before[node] >= 2 and lab.cluster.free_gpus(node) == before[node] - 2
    assert [p["status"]["phase"] for p in launchers(lab, "ws-1")] == ["Running"]
    (pod,) = launchers(lab, "ws-1")
    assert pod["spec"]["nodeName"] == node and pod["spec"]["containers"][0]["resources"]["limits"][GPU] == "2"
    assert running["status"]["activePods"] == {pod["metadata"]["uid"]: node}
    assert [s["phase"] for s in running["status"]["phaseTransitionTimestamps"]] == [*walked, "Running"]
    assert condition(running, "LiveMigratable")["reason"] == "HostDeviceNotLiveMigratable"  # type: ignore[index]
    status = vm(lab, "ws-1")["status"]
    assert (status["printableStatus"], status["ready"], status["created"]) == ("Running", True, True)
    assert condition(vm(lab, "ws-1"), "Ready")["status"] == "True"  # type: ignore[index]
    listed = await call(lab.custom.list_namespaced_custom_object, G, V, NS, "virtualmachines")
    assert "ws-1" in [o["metadata"]["name"] for o in listed["items"]]


async def test_a_halted_vm_is_stored_stopped_without_a_vmi(lab: Lab) -> None:
    await create(lab, vm_body("cold-1", runStrategy="Halted"))
    await advance(lab, 10)
    assert vmi(lab, "cold-1") is None and launchers(lab, "cold-1") == []
    status = vm(lab, "cold-1")["status"]
    assert (status["printableStatus"], status["created"], status["runStrategy"]) == (
        "Stopped",
        False,
        "Halted",
    )


async def test_refusals_are_the_apis_own(lab: Lab) -> None:
    body = vm_body("x")
    del body["metadata"]["name"]
    code, status = await refused(lab, body)
    assert (code, status["kind"], status["reason"], status["code"]) == (422, "Status", "Invalid", 422)
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert 'VirtualMachine.kubevirt.io "" is invalid: metadata.name: Required value' in status["message"]

    code, status = await refused(lab, vm_body("Bad_Name"))
    assert code == 422 and "a lowercase RFC 1123 subdomain" in status["message"]

    no_template = vm_body("x")
    del no_template["spec"]["template"]
    code, status = await refused(lab, no_template)
    assert (
        code == 422
        and status["message"] == 'VirtualMachine.kubevirt.io "x" is invalid: spec.template: Required value'
    )
    assert status["details"] | {"causes": None} == {
        "name": "x",
        "group": "kubevirt.io",
        "kind": "VirtualMachine",
        "causes": None,
    }

    no_devices = vm_body("x")
    del no_devices["spec"]["template"]["spec"]["domain"]["devices"]
    code, status = await refused(lab, no_devices)
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.template.spec.domain.devices"

    no_memory = vm_body("x")
    del no_memory["spec"]["template"]["spec"]["domain"]["memory"]
    code, status = await refused(lab, no_memory)
    assert code == 422 and status["message"].startswith(
        'admission webhook "virtualmachine-validator.kubevirt.io" denied the request: no memory requested'
    )

    code, status = await refused(lab, vm_body("x", running=True, runStrategy="Always"))
    assert code == 422 and "Running and RunStrategy are mutually exclusive" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.running"

    code, status = await refused(lab, vm_body("x"), ns="no-such-namespace")
    assert code == 404 and status["reason"] == "NotFound"
    assert lab.cluster.store.get("virtualmachines", NS, "x") is None

    await create(lab, vm_body("twice"))
    code, status = await refused(lab, vm_body("twice"))
    assert (code, status["reason"], status["message"]) == (
        409,
        "AlreadyExists",
        'virtualmachines.kubevirt.io "twice" already exists',
    )
    assert status["details"] == {"name": "twice", "group": "kubevirt.io", "kind": "virtualmachines"}


async def test_with_no_node_with_room_the_vmi_waits_unschedulable(lab: Lab) -> None:
    c = lab.cluster
    for n in c.node_names:
        c.cordon(n)
    await create(lab, vm_body("big-1", gpus=1))
    await advance(lab, sum(s for _, s in START_PHASES) + 30)
    stuck = vmi(lab, "big-1")
    assert (
        stuck is not None and stuck["status"]["phase"] == "Scheduling" and not stuck["status"].get("nodeName")
    )
    cond = condition(stuck, "PodScheduled")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    n = len(c.node_names)
    assert cond["message"].startswith(f"0/{n} nodes are available: {n} node(s) were unschedulable.")
    status = vm(lab, "big-1")["status"]
    assert status["printableStatus"] == "ErrorUnschedulable" and condition(vm(lab, "big-1"), "PodScheduled")
    (pod,) = launchers(lab, "big-1")
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]

    # room appears: the next try places it, and it runs
    target = next(n for n in c.node_names if c.free_gpus(n) >= 1)
    c.cordon(target, False)
    await advance(lab, 30)
    running = vmi(lab, "big-1")
    assert running is not None and running["status"]["phase"] == "Running"
    assert running["status"]["nodeName"] == target and condition(running, "PodScheduled") is None
    assert vm(lab, "big-1")["status"]["printableStatus"] == "Running"
    assert [p["spec"].get("nodeName") for p in launchers(lab, "big-1")] == [target]


async def test_a_gpu_no_node_advertises_is_insufficient(lab: Lab) -> None:
    await create(lab, vm_body("h100-1", gpus=1, device="nvidia.com/GH100_H100_SXM5_80GB"))
    await advance(lab, sum(s for _, s in START_PHASES))
    stuck = vmi(lab, "h100-1")
    assert stuck is not None and stuck["status"]["phase"] == "Scheduling"
    n = len(lab.cluster.node_names)
    message = condition(stuck, "PodScheduled")["message"]  # type: ignore[index]
    assert f"{n} Insufficient nvidia.com/GH100_H100_SXM5_80GB" in message
    (pod,) = launchers(lab, "h100-1")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/GH100_H100_SXM5_80GB"] == "1"
    body = {"metadata": {"name": "m1"}, "spec": {"vmiName": "h100-1"}}
    with pytest.raises(ApiException) as err:
        await call(
            lab.custom.create_namespaced_custom_object, G, V, NS, "virtualmachineinstancemigrations", body
        )
    assert err.value.status == 422 and "not running yet" in json.loads(err.value.body)["message"]


@pytest.fixture
async def slow_lab(tmp_path: Path) -> Any:
    running = await start_lab(tmp_path, pod_termination_s=30)
    yield running
    await stop_lab(running)


async def test_deleting_a_vm_takes_its_vmi_and_launcher_with_it(slow_lab: Lab) -> None:
    lab = slow_lab
    before = free(lab)
    await create(lab, vm_body("gone-1", gpus=1))
    await advance(lab, sum(s for _, s in START_PHASES))
    node = vmi(lab, "gone-1")["status"]["nodeName"]  # type: ignore[index]
    assert lab.cluster.free_gpus(node) == before[node] - 1

    marked = await call(lab.custom.delete_namespaced_custom_object, G, V, NS, "virtualmachines", "gone-1")
    assert marked["metadata"]["deletionTimestamp"] and marked["status"]["printableStatus"] == "Terminating"
    assert vmi(lab, "gone-1")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    assert vm(lab, "gone-1")["status"]["printableStatus"] == "Terminating"
    (pod,) = launchers(lab, "gone-1")
    assert pod["metadata"]["deletionTimestamp"]
    await advance(lab, 30)
    assert lab.cluster.store.get("virtualmachines", NS, "gone-1") is None
    assert vmi(lab, "gone-1") is None and launchers(lab, "gone-1") == []
    assert lab.cluster.free_gpus(node) == before[node]
    await advance(lab, 60)
    assert vmi(lab, "gone-1") is None  # not started again
    with pytest.raises(ApiException) as err:
        await call(lab.custom.delete_namespaced_custom_object, G, V, NS, "virtualmachines", "gone-1")
    assert err.value.status == 404


async def test_deleting_a_vm_that_waits_for_room_drops_its_pending_pod(lab: Lab) -> None:
    await create(lab, vm_body("h100-2", gpus=1, device="nvidia.com/GH100_H100_SXM5_80GB"))
    await advance(lab, sum(s for _, s in START_PHASES))
    assert len(launchers(lab, "h100-2")) == 1
    await call(lab.custom.delete_namespaced_custom_object, G, V, NS, "virtualmachines", "h100-2")
    await advance(lab, 60)
    assert lab.cluster.store.get("virtualmachines", NS, "h100-2") is None
    assert vmi(lab, "h100-2") is None and launchers(lab, "h100-2") == []


async def test_deleting_a_migrating_vm_fails_its_migration(slow_lab: Lab) -> None:
    lab = slow_lab
    moving = next(
        e.obj
        for e in lab.cluster.store.entries("virtualmachineinstances")
        if condition(e.obj, "LiveMigratable")["status"] == "True"  # type: ignore[index]
    )
    ns, name = moving["metadata"]["namespace"], moving["metadata"]["name"]
    body = {"metadata": {"name": "m1"}, "spec": {"vmiName": name}}
    await call(lab.custom.create_namespaced_custom_object, G, V, ns, "virtualmachineinstancemigrations", body)
    await advance(lab, 2)
    await call(lab.custom.delete_namespaced_custom_object, G, V, ns, "virtualmachines", name)
    migration = lab.cluster.store.require("virtualmachineinstancemigrations", ns, "m1").obj
    assert migration["status"]["phase"] == "Failed"
    assert (
        lab.cluster.store.require("virtualmachines", ns, name).obj["status"]["printableStatus"]
        == "Terminating"
    )
    await advance(lab, 30)
    assert lab.cluster.store.get("virtualmachines", ns, name) is None
    assert lab.cluster.store.get("virtualmachineinstances", ns, name) is None
