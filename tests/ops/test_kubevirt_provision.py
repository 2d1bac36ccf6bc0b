"""Provisioning a KubeVirt VM end to end against the lab's KubeVirt API: the plan runs, the step
reports the VMI's start phases as progress, the VM runs on a node with room for its GPU, the
journal and the audit log record it, and the kubevirt collector then shows the new workload. With
no node with room the VMI stays Scheduling (Unschedulable), the step times out with the
scheduler's reason in one line and the half-made VM is deleted. Then the command line, in its own
process against the lab on the system clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collectors.kube_client import KubeOptions, KubeRef, KubeSession
from collectors.kubevirt import KubevirtCollector
from sovereign_tui.clock import FakeClock, SystemClock
from sovereign_tui.ops.audit import AuditRecord, verify
from sovereign_tui.ops.engine import Operations, RunHandle
from sovereign_tui.ops.executor import OperationResult, OpEvent
from sovereign_tui.ops.plan import StepKind
from sovereign_tui.ops.provisioning import ProvisionRequest
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store
from tests.ops.conftest import (
    OPERATOR,
    POLL_S,
    OpsLab,
    cli_env,
    start_fast_lab,
    stop_ops_lab,
    write_settings,
)
from tests.ops.test_ops_cli import run_cli

NS = "vms"
IMAGE = "quay.io/containerdisks/fedora:41"


async def driven(clock: FakeClock, run: RunHandle) -> tuple[OperationResult, list[OpEvent]]:
    """Run the operation to its end, the clock moving after each progress report; its events."""
    events = []
    async for event in run.events():
        events.append(event)
        if event.kind == "step-progress":
            await clock.advance(POLL_S)
    return await run.wait(), events


def request(name: str, gpus: int) -> ProvisionRequest:
    return ProvisionRequest(
        kind="kubevirt-vm", name=name, namespace=NS, image=IMAGE, cores=4, memory="16Gi", gpus=gpus
    )


def audit(ol: OpsLab) -> list[AuditRecord]:
    lines = (ol.state_dir / "audit.log").read_text().splitlines()
    return [msgspec.json.decode(line, type=AuditRecord) for line in lines]


def lab_vm(ol: OpsLab, name: str) -> dict[str, Any] | None:
    ol.cluster.timeline.run_due()
    e = ol.cluster.store.get("virtualmachines", NS, name)
    return None if e is None else e.obj


async def collected(ol: OpsLab, clock: Any) -> dict[str, Any]:
    """The kubevirt collector's workloads, polled once against the lab."""
    store = Store(clock)
    poller = Poller(store, clock=clock)
    collector = KubevirtCollector(KubeSession(KubeRef(str(ol.kubeconfig)), KubeOptions(page_size=50)))
    poller.set_targets(collector.targets())
    try:
        await poller.run_once()
        return {w.name: w for w in store.snapshot().workloads if w.kind == "kubevirt-vm"}
    finally:
        await collector.aclose()
        await poller.close()


async def test_a_kubevirt_vm_is_provisioned_and_shows_up(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    phases = ol.cluster.kubevirt.vms.phase_s
    for phase in phases:  # longer than the clock moves between two looks (two progress reports)
        phases[phase] = 3 * POLL_S
    free_before = {n: ol.cluster.free_gpus(n) for n in ol.cluster.node_names}
    plan = await ops.plan_provision(await ol.snapshot(), request("eval-vm", gpus=1))
    assert plan.steps[0].kind == StepKind.KUBEVIRT_CREATE_VM
    result, events = await driven(clock, await ops.start(plan, OPERATOR))
    assert result.ok, result.message

    said = [e.message or "" for e in events if e.kind == "step-progress"]
    phases = [m.split()[1] for m in said if m.startswith("VMI ")]
    walked = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert walked == ["Pending", "Scheduling", "Scheduled"], said
    fractions = [e.fraction for e in events if e.kind == "step-progress" and e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0

    vm = lab_vm(ol, "eval-vm")
    assert vm is not None and vm["status"]["printableStatus"] == "Running"
    vmi = ol.cluster.store.require("virtualmachineinstances", NS, "eval-vm").obj
    node = vmi["status"]["nodeName"]
    assert free_before[node] >= 1 and ol.cluster.free_gpus(node) == free_before[node] - 1
    assert vm["spec"]["template"]["spec"]["domain"]["devices"]["gpus"][0]["deviceName"] == "nvidia.com/gpu"
    assert vm["metadata"]["annotations"]["sovereign-tui/operation"] == f"{plan.id}/0"

    rec = ops.journal.get(plan.id)
    assert rec.state == "succeeded" and rec.steps[0].outcome == f"VM {NS}/eval-vm running on {node}"
    records = [r for r in audit(ol) if r.operation == plan.id]
    assert [(r.action, r.result) for r in records] == [
        ("provision", "started"),
        ("kubevirt.create-vm", "done"),
        ("provision", "succeeded"),
    ]
    assert {r.who for r in records} == {OPERATOR.name} and verify(ol.state_dir / "audit.log").ok

    workloads = await collected(ol, clock)
    w = workloads["eval-vm"]
    assert (w.state, w.host, w.owner, w.gpus) == ("Running", node, NS, 1)


async def test_no_node_with_room_times_out_with_the_reason_and_leaves_nothing(
    ops_lab: OpsLab, clock: FakeClock
) -> None:
    ol = ops_lab
    most = max(ol.cluster.free_gpus(n) for n in ol.cluster.node_names)
    ops = ol.operations(step_timeouts={"kubevirt.create-vm": 20.0})
    try:
        plan = await ops.plan_provision(await ol.snapshot(), request("too-big", gpus=most + 1))
        result, events = await driven(clock, await ops.start(plan, OPERATOR))
    finally:
        await ops.close()
    assert result.state == "failed"
    (step,) = result.steps
    assert step.state == "failed" and step.outcome is not None and "\n" not in step.outcome
    assert step.outcome.startswith("timed out after 20s; VMI was still Scheduling (Unschedulable: 0/")
    assert "Insufficient nvidia.com/gpu" in step.outcome
    assert step.outcome.endswith(f"; deleted VM {NS}/too-big")
    waiting = [
        e.message for e in events if e.kind == "step-progress" and "Unschedulable" in (e.message or "")
    ]
    assert waiting, "the wait for a node was never reported"
    assert lab_vm(ol, "too-big") is None
    assert ol.cluster.store.get("virtualmachineinstances", NS, "too-big") is None


async def test_a_vm_of_that_name_made_by_someone_else_is_not_taken_over(
    ops_lab: OpsLab, ops: Operations, clock: FakeClock
) -> None:
    ol = ops_lab
    theirs = next(e for e in ol.cluster.store.entries("virtualmachines", NS))
    plan = await ops.plan_provision(await ol.snapshot(), request(theirs.name, gpus=0))
    result, _ = await driven(clock, await ops.start(plan, OPERATOR))
    assert result.state == "failed"
    assert result.steps[0].outcome == (
        f"VM {NS}/{theirs.name} already exists and this operation did not make it; choose another name"
    )
    still = lab_vm(ol, theirs.name)
    assert still is not None and still["metadata"]["uid"] == theirs.obj["metadata"]["uid"]


@pytest.fixture
async def running_lab(tmp_path: Path) -> AsyncIterator[tuple[OpsLab, Path, dict[str, str]]]:
    ol = await start_fast_lab(tmp_path, SystemClock())
    phases = ol.cluster.kubevirt.vms.phase_s
    for phase in phases:
        phases[phase] = 0.1
    yield ol, write_settings(ol, tmp_path / "sovereign.toml"), cli_env(tmp_path)
    await stop_ops_lab(ol)


async def test_the_command_line_provisions_a_kubevirt_vm(
    running_lab: tuple[OpsLab, Path, dict[str, str]],
) -> None:
    ol, config, env = running_lab
    code, out, err = await run_cli(
        config,
        env,
        "provision",
        "kubevirt-vm",
        "cli-vm",
        "--namespace",
        NS,
        "--image",
        IMAGE,
        "--gpus",
        "1",
        "--yes",
        "--json",
    )
    assert code == 0, err
    vmi = ol.cluster.store.require("virtualmachineinstances", NS, "cli-vm").obj
    node = vmi["status"]["nodeName"]
    assert vmi["status"]["phase"] == "Running"
    assert "[1/1] kubevirt.create-vm cli-vm: VMI " in err
    assert f"[1/1] kubevirt.create-vm cli-vm: done: VM {NS}/cli-vm running on {node}" in err
    doc = json.loads(out.splitlines()[-1])
    assert doc["result"]["state"] == "succeeded" and doc["plan"]["kind"] == "provision"
    code, out, _ = await run_cli(config, env, "operations", "--json")
    (listed,) = json.loads(out)
    assert listed["state"] == "succeeded" and listed["target"] == "cli-vm"
    code, out, _ = await run_cli(config, env, "audit", "verify")
    assert code == 0 and verify(ol.state_dir / "audit.log").records == 3
