"""Operations against the real Ironic (tests/services: standalone, fake hardware, no auth), through
the same engine, adapter and command line an operator uses: maintenance on and off (a drain and an
undrain of a bare-metal host), a deploy (available -> active), an undeploy (active -> available), a
provide (manageable -> available, an enrolled node managed first), and a node in maintenance
refused, by the plan when it is known and at run time when it is set after the plan.

The fixture's Ironic cleans automatically, as Ironic does by default (``[conductor]
automated_clean = true``); fake hardware has no clean steps, so its cleaning passes at once, and
the states of a long clean are walked by the lab's Ironic (tests/ops/test_baremetal_ops.py). Its
deploy interface is ``fake``: it needs no image, but the deploy sets ``instance_info/image_source``
as it would for a real one.

Nodes are enrolled per test under unique names (the Ironic is shared by the session) with
openstacksdk, the client the adapter uses too.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import openstack.config
import openstack.connection
import pytest

from sovereign_tui.clock import SystemClock
from sovereign_tui.config import Settings, parse_settings
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.audit import AuditRecord, verify
from sovereign_tui.ops.engine import Actor, Operations
from sovereign_tui.ops.executor import OperationResult
from sovereign_tui.ops.plan import Plan, StepKind
from sovereign_tui.ops.provisioning import ProvisionRequest
from sovereign_tui.runtime import Runtime, openstack_collectors
from tests.services.realsvc import IronicService

pytestmark = [
    pytest.mark.real_service,
    # openstacksdk warns about its own internals (influxdb, `service_type`), not about these calls.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]
CLOUD = "real-ironic"
OPERATOR = Actor("bob", "operator")
IMAGE = "http://images.example/ubuntu-24.04-gpu.qcow2"


@dataclass
class Rig:
    ironic: IronicService
    clouds_yaml: Path
    config: Path
    state_dir: Path
    bm: Any
    """openstacksdk's baremetal proxy, to enroll nodes and read what Ironic holds."""

    def settings(self) -> Settings:
        return parse_settings(self.config.read_text())

    def operations(self) -> Operations:
        return Operations.from_settings(self.settings(), clock=SystemClock())

    async def snapshot(self) -> Snapshot:
        settings = self.settings()
        runtime = Runtime(settings, clock=SystemClock(), collectors=openstack_collectors(settings))
        try:
            snap = await runtime.first_poll(60.0)
        finally:
            await runtime.close()
        assert all(s.up for s in snap.sources), [s.last_error for s in snap.sources]
        return snap

    def enroll(self, state: str = "enroll") -> str:
        """A new node, taken to `state` (enroll, manageable, available or active) the usual way."""
        name = f"bm-{uuid.uuid4().hex[:10]}"
        node = self.bm.create_node(name=name, driver="fake-hardware", resource_class="gpu-h100-8")
        path = {"enroll": [], "manageable": ["manage"], "available": ["manage", "provide"]}
        path["active"] = [*path["available"], "active"]
        for target in path[state]:
            if target == "active":
                patch = [
                    {"op": "add", "path": "/instance_info/image_source", "value": IMAGE},
                    {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())},
                ]
                node = self.bm.patch_node(node, patch)
            node = self.bm.set_node_provision_state(node, target, wait=True, timeout=60)
        assert node.provision_state == state
        return name


@pytest.fixture
def rig(real_ironic: IronicService, tmp_path: Path) -> Iterator[Rig]:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        f"clouds:\n  {CLOUD}:\n    auth_type: none\n    baremetal_endpoint_override: {real_ironic.url}\n"
    )
    config = tmp_path / "sovereign.toml"
    config.write_text(
        "[sources.host]\nenabled = false\n[sources.nvml]\nenabled = false\n"
        "[sources.nova]\nenabled = false\n"
        f'[sources.ironic]\nenabled = true\ncloud = "{CLOUD}"\nclouds_yaml = "{clouds}"\n'
        f'[ops]\ncloud = "{CLOUD}"\nclouds_yaml = "{clouds}"\nlayers = ["ironic"]\n'
        f'poll_interval_s = 0.05\nstate_dir = "{tmp_path / "state"}"\n'
    )
    cfg = openstack.config.OpenStackConfig(config_files=[str(clouds)], load_envvars=False)
    conn = openstack.connection.Connection(config=cfg.get_one(cloud=CLOUD))
    try:
        yield Rig(real_ironic, clouds, config, tmp_path / "state", conn.baremetal)
    finally:
        conn.close()


@pytest.fixture
async def ops(rig: Rig) -> AsyncIterator[Operations]:
    operations = rig.operations()
    yield operations
    await operations.close()


async def run(ops: Operations, plan: Plan, confirmation: str | None = None) -> OperationResult:
    handle = await ops.start(plan, OPERATOR, confirmation=confirmation)
    return await handle.wait()


def node(rig: Rig, name: str) -> Any:
    return rig.bm.get_node(name)


def audited(ops: Operations, plan: Plan) -> list[tuple[str, str]]:
    lines = ops.audit.path.read_text().splitlines()
    records = [msgspec.json.decode(line, type=AuditRecord) for line in lines]
    return [(r.action, r.result) for r in records if r.operation == plan.id]


async def test_maintenance_on_and_off_through_the_adapter(rig: Rig, ops: Operations) -> None:
    name = await asyncio.to_thread(rig.enroll, "available")
    drain = await ops.plan_drain(await rig.snapshot(), name)
    (step,) = drain.steps
    assert step.kind == StepKind.IRONIC_MAINTENANCE_ON and drain.confirm_phrase == name
    result = await run(ops, drain, confirmation=name)
    assert result.ok, result.message
    held = node(rig, name)
    assert held.is_maintenance and held.maintenance_reason == f"drained by sovereign-tui ({name})"

    undrain = await ops.plan_undrain(await rig.snapshot(), name)
    assert [s.kind for s in undrain.steps] == [StepKind.IRONIC_MAINTENANCE_OFF]
    result = await run(ops, undrain)
    assert result.ok, result.message
    freed = node(rig, name)
    assert not freed.is_maintenance and freed.maintenance_reason is None
    assert audited(ops, drain)[0] == ("drain", "started") and audited(ops, undrain)[-1] == (
        "undrain",
        "succeeded",
    )
    assert verify(ops.audit.path).ok


async def test_deploy_takes_an_available_node_to_active(rig: Rig, ops: Operations) -> None:
    name = await asyncio.to_thread(rig.enroll, "available")
    request = ProvisionRequest(kind="baremetal", name="trainer-01", node=name, image=IMAGE)
    plan = await ops.plan_provision(await rig.snapshot(), request)
    assert plan.steps[0].kind == StepKind.IRONIC_DEPLOY and plan.steps[0].blocker is None
    result = await run(ops, plan)
    assert result.ok, result.message
    deployed = node(rig, name)
    assert deployed.provision_state == "active" and deployed.target_provision_state is None
    assert deployed.instance_info["image_source"] == IMAGE
    assert audited(ops, plan) == [
        ("provision", "started"),
        ("ironic.deploy", "done"),
        ("provision", "succeeded"),
    ]


async def test_undeploy_takes_an_active_node_back_to_available(rig: Rig, ops: Operations) -> None:
    name = await asyncio.to_thread(rig.enroll, "active")
    instance = node(rig, name).instance_id
    plan = await ops.plan_node(await rig.snapshot(), "undeploy", name)
    (step,) = plan.steps
    assert step.kind == StepKind.IRONIC_UNDEPLOY and step.blocker is None
    assert plan.destructive and plan.confirm_phrase == name
    assert f"ironic:instance:{instance}" in step.touches
    result = await run(ops, plan, confirmation=name)
    assert result.ok, result.message
    assert result.steps[0].outcome == f"node {name} available (undeploy done)"
    after = node(rig, name)
    assert after.provision_state == "available" and after.instance_id is None and after.instance_info == {}
    assert ops.journal.get(plan.id).state == "succeeded" and ops.journal.leases() == []


async def test_provide_takes_a_manageable_node_to_available(rig: Rig, ops: Operations) -> None:
    manageable, enrolled = await asyncio.gather(
        asyncio.to_thread(rig.enroll, "manageable"), asyncio.to_thread(rig.enroll, "enroll")
    )
    snap = await rig.snapshot()
    plan = await ops.plan_node(snap, "provide", manageable)
    assert [s.kind for s in plan.steps] == [StepKind.IRONIC_PROVIDE] and not plan.destructive
    result = await run(ops, plan)
    assert result.ok, result.message
    assert node(rig, manageable).provision_state == "available"

    plan = await ops.plan_node(snap, "provide", enrolled)
    assert [s.kind for s in plan.steps] == [StepKind.IRONIC_MANAGE, StepKind.IRONIC_PROVIDE]
    result = await run(ops, plan)
    assert result.ok, result.message
    assert node(rig, enrolled).provision_state == "available"
    assert audited(ops, plan) == [
        ("provide", "started"),
        ("ironic.manage", "done"),
        ("ironic.provide", "done"),
        ("provide", "succeeded"),
    ]


async def test_a_node_in_maintenance_is_refused(rig: Rig, ops: Operations) -> None:
    available, manageable = await asyncio.gather(
        asyncio.to_thread(rig.enroll, "available"), asyncio.to_thread(rig.enroll, "manageable")
    )
    request = ProvisionRequest(kind="baremetal", name="trainer-02", node=available, image=IMAGE)
    deploy = await ops.plan_provision(await rig.snapshot(), request)
    provide = await ops.plan_node(await rig.snapshot(), "provide", manageable)
    reason = "fan failure in PSU 2"
    for name in (available, manageable):
        rig.bm.set_node_maintenance(name, reason=reason)

    # known when planning: the plan carries a blocker with Ironic's reason, and nothing runs
    again = await ops.plan_node(await rig.snapshot(), "provide", manageable)
    blocker = again.steps[0].blocker
    assert blocker is not None and blocker.detail == "maintenance" and f"({reason})" in blocker.reason
    fresh = await ops.plan_provision(await rig.snapshot(), request)
    assert fresh.steps[0].blocker is not None and fresh.steps[0].blocker.detail == "maintenance"

    # set after planning: Ironic itself refuses the deploy ...
    result = await run(ops, deploy)
    assert result.state == "failed"
    outcome = result.steps[0].outcome or ""
    assert outcome.startswith("HTTP 400") and "in maintenance mode" in outcome
    assert node(rig, available).provision_state == "available"
    # ... and would provide a node in maintenance: the step refuses it, quoting the reason
    result = await run(ops, provide)
    assert result.state == "failed"
    assert result.steps[0].outcome == (
        f"node {manageable} is in maintenance ({reason}): no provide while it is; unset maintenance first"
    )
    assert node(rig, manageable).provision_state == "manageable"


async def _cli(rig: Rig, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "xdgc")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sovereign_tui",
        "--config",
        str(rig.config),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_line_provides_and_undeploys(rig: Rig, tmp_path: Path) -> None:
    manageable, active = await asyncio.gather(
        asyncio.to_thread(rig.enroll, "manageable"), asyncio.to_thread(rig.enroll, "active")
    )
    code, out, err = await _cli(rig, tmp_path, "provide", manageable, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["kind"] == "provide" and plan["steps"][0]["kind"] == "ironic.provide"
    assert node(rig, manageable).provision_state == "manageable"  # a dry run changes nothing

    code, _, err = await _cli(rig, tmp_path, "provide", "no-such-node", "--dry-run")
    assert code == 2 and "provide: no Ironic node 'no-such-node'" in err and "Traceback" not in err
    code, _, err = await _cli(rig, tmp_path, "undeploy", active)
    assert code == 3 and "confirmation needed" in err
    code, out, err = await _cli(rig, tmp_path, "undeploy", active, "--yes", "--json")
    assert code == 0, err
    assert f"[1/1] ironic.undeploy {active}: done" in err
    assert json.loads(out.splitlines()[-1])["result"]["state"] == "succeeded"
    assert node(rig, active).provision_state == "available"

    code, _, err = await _cli(rig, tmp_path, "provide", manageable, "--yes")
    assert code == 0, err
    assert node(rig, manageable).provision_state == "available"
    code, out, _ = await _cli(rig, tmp_path, "operations", "--json")
    assert [(o["kind"], o["state"]) for o in json.loads(out)] == [
        ("provide", "succeeded"),
        ("undeploy", "succeeded"),
    ]
