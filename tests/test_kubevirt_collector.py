"""The kubevirt collector against the lab's KubeVirt API over real HTTP: VMs placed by their
instances with KubeVirt's status, the LiveMigratable verdict, a live migration visible while it
runs, and the VM on its new host once it has succeeded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from collectors.kubevirt import KubevirtCollector
from sovereign_tui.lab.kubevirt import PHASES
from sovereign_tui.model import Workload
from tests.kube_rig import Rig, caught_up, make_rig
from tests.lab_kube.conftest import call

TARGET = "kubevirt:current-context"
G, V, VMIM = "kubevirt.io", "v1", "virtualmachineinstancemigrations"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path)
    r.add(KubevirtCollector(r.session, interval_s=10.0))
    yield r
    await r.close()


def kv(rig: Rig) -> KubevirtCollector:
    c = rig.collectors[0]
    assert isinstance(c, KubevirtCollector)
    return c


async def synced(rig: Rig) -> None:
    c = kv(rig)
    await caught_up(c.vms, rig.lab, "virtualmachines")
    await caught_up(c.vmis, rig.lab, "virtualmachineinstances")
    await caught_up(c.migrations, rig.lab, VMIM)


def vms_by_name(workloads: tuple[Workload, ...]) -> dict[str, Workload]:
    return {w.name: w for w in workloads if w.kind == "kubevirt-vm"}


def lab_vmi(rig: Rig, ns: str, name: str) -> dict[str, Any] | None:
    e = rig.lab.cluster.store.get("virtualmachineinstances", ns, name)
    return None if e is None else e.obj


async def test_vms_equal_the_labs(rig: Rig) -> None:
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    got = vms_by_name(snap.workloads)
    vms = list(rig.lab.cluster.store.entries("virtualmachines"))
    assert len(got) == len(vms) > 0
    for e in vms:
        w = got[e.name]
        vmi = lab_vmi(rig, e.namespace, e.name)
        devices = e.obj["spec"]["template"]["spec"]["domain"]["devices"]
        assert (w.id, w.owner, w.state, w.gpus) == (
            e.obj["metadata"]["uid"],
            e.namespace,
            e.obj["status"]["printableStatus"],
            len(devices.get("gpus", [])),
        )
        assert w.detail["run_strategy"] == e.obj["spec"]["runStrategy"]
        if vmi is None:
            assert w.host is None
            continue
        assert w.host == vmi["status"]["nodeName"]
        cond = next(c for c in vmi["status"]["conditions"] if c["type"] == "LiveMigratable")
        want = "True" if cond["status"] == "True" else f"False: {cond['reason']}"
        assert w.detail["live_migratable"] == want
    assert any(w.detail.get("live_migratable", "").startswith("False") for w in got.values())


async def test_a_migration_is_visible_and_moves_the_vm(rig: Rig) -> None:
    await rig.poll()
    vmi = next(
        e.obj
        for e in rig.lab.cluster.store.entries("virtualmachineinstances")
        if any(c["type"] == "LiveMigratable" and c["status"] == "True" for c in e.obj["status"]["conditions"])
    )
    ns, name, source = vmi["metadata"]["namespace"], vmi["metadata"]["name"], vmi["status"]["nodeName"]
    body = {"metadata": {"name": "move-1"}, "spec": {"vmiName": name}}
    await call(rig.lab.custom.create_namespaced_custom_object, G, V, ns, VMIM, body)
    seen: list[str] = []
    for _, seconds in PHASES:
        await rig.lab.clock.advance(seconds)
        await synced(rig)
        w = vms_by_name((await rig.poll()).workloads)[name]
        assert rig.health(TARGET) == (True, None)
        phase = rig.lab.cluster.store.require(VMIM, ns, "move-1").obj["status"]["phase"]
        if phase in ("Succeeded", "Failed"):
            break
        seen.append(phase)
        assert w.detail["migration"] == f"move-1: {phase}"
        assert w.host == source  # still running where it was
        if phase != "Pending":
            assert w.state == "Migrating"
    assert len(seen) >= 4  # the migration was visible through its phases
    moved = vms_by_name((await rig.poll()).workloads)[name]
    target = lab_vmi(rig, ns, name)
    assert target is not None
    assert moved.host == target["status"]["nodeName"] != source
    assert moved.state == "Running"
    assert "migration" not in moved.detail
    assert moved.detail["last_migration"] == f"completed {source} -> {moved.host}"
