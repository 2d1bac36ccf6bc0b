"""Ironic of the lab: versions, listing and paging, the provisioning state machine over simulated
time, power, maintenance, and errors as Ironic and its clients expect them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openstack.config
import openstack.connection
import openstack.exceptions
import orjson
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.ironic_views import FIELD_MIN
from sovereign_tui.lab.scenario import Node
from sovereign_tui.lab.server import CLOUD, Lab

from .conftest import Api


def in_state(lab: Lab, state: str, maintenance: bool = False) -> Node:
    for n in lab.scenario.nodes:
        if n.provision_state == state and n.maintenance == maintenance:
            return n
    raise AssertionError(f"scenario has no node in {state}")


def fault(body: dict) -> dict:
    """Ironic's error body: a JSON document inside the error_message string."""
    return dict(orjson.loads(body["error_message"]))


async def states_until(api: Api, clock: FakeClock, token: str, uuid: str, stable: set[str]) -> list[str]:
    """Provision states seen, one step of the clock at a time, until one in `stable`."""
    seen: list[str] = []
    for _ in range(300):
        state = (await api.ironic("GET", f"/v1/nodes/{uuid}/states", token)).body["provision_state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in stable:
            return seen
        await clock.advance(1)
    raise AssertionError(f"node {uuid} stuck after {seen}")


async def test_root_and_v1_documents(api: Api, lab: Lab) -> None:
    root = await api.call("GET", lab.urls["baremetal"] + "/")
    assert root.body["default_version"]["min_version"] == "1.1"
    assert root.body["default_version"]["version"] == "1.109"
    v1 = await api.call("GET", lab.urls["baremetal"] + "/v1")
    assert v1.body["id"] == "v1"
    assert v1.headers["X-OpenStack-Ironic-API-Minimum-Version"] == "1.1"
    assert v1.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.109"


async def test_without_a_version_header_the_api_is_1_1(api: Api, lab: Lab, admin: str) -> None:
    old = await api.ironic("GET", "/v1/nodes/detail", admin, mv=None)
    assert old.headers["X-OpenStack-Ironic-API-Version"] == "1.1"
    node = old.body["nodes"][0]
    assert "name" not in node
    assert "resource_class" not in node
    assert "traits" not in node
    available = {n.uuid for n in lab.scenario.nodes if n.provision_state == "available"}
    assert available  # the scenario has some
    assert all(n["provision_state"] is None for n in old.body["nodes"] if n["uuid"] in available)
    new = await api.ironic("GET", "/v1/nodes/detail", admin, mv="latest")
    assert new.headers["X-OpenStack-Ironic-API-Version"] == "1.109"
    assert set(new.body["nodes"][0]) >= set(FIELD_MIN)
    mid = await api.ironic("GET", "/v1/nodes/detail", admin, mv="1.37")
    keys = set(mid.body["nodes"][0])
    assert {k for k, v in FIELD_MIN.items() if v <= 37} <= keys
    assert not {k for k, v in FIELD_MIN.items() if v > 37} & keys


@pytest.mark.parametrize("version", ["1.110", "2.1", "one"])
async def test_unsupported_versions_are_406(api: Api, admin: str, version: str) -> None:
    reply = await api.ironic("GET", "/v1/nodes", admin, mv=version)
    assert reply.status == 406
    assert reply.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.109"
    assert fault(reply.body)["faultcode"] == "Client"


async def test_paging_with_next_links(api: Api, lab: Lab, admin: str) -> None:
    seen: list[str] = []
    url = "/v1/nodes/detail?limit=4"
    while url:
        reply = await api.ironic("GET", url, admin)
        page = reply.body["nodes"]
        seen += [n["uuid"] for n in page]
        assert ("next" in reply.body) == (len(page) == 4)
        url = reply.body["next"].removeprefix(lab.urls["baremetal"]) if "next" in reply.body else ""
    assert seen == [n.uuid for n in lab.scenario.nodes]


async def test_filters_and_fields(api: Api, lab: Lab, admin: str) -> None:
    reply = await api.ironic("GET", "/v1/nodes?provision_state=active&fields=uuid,name,instance_uuid", admin)
    assert {n["uuid"] for n in reply.body["nodes"]} == {
        n.uuid for n in lab.scenario.nodes if n.provision_state == "active"
    }
    assert all(set(n) == {"uuid", "name", "instance_uuid"} for n in reply.body["nodes"])
    held = await api.ironic("GET", "/v1/nodes?maintenance=true", admin)
    assert {n["uuid"] for n in held.body["nodes"]} == {n.uuid for n in lab.scenario.nodes if n.maintenance}
    bad = await api.ironic("GET", "/v1/nodes?fields=uuid,nonsense", admin)
    assert bad.status == 400


async def test_show_by_uuid_and_name(api: Api, lab: Lab, admin: str) -> None:
    node = lab.scenario.nodes[0]
    by_name = await api.ironic("GET", f"/v1/nodes/{node.name}", admin)
    assert by_name.body["uuid"] == node.uuid
    assert by_name.body["extra"]["gpu_model"] == node.host.model.name if node.host else True
    missing = await api.ironic("GET", "/v1/nodes/no-such-node", admin)
    assert missing.status == 404
    assert "could not be found" in fault(missing.body)["faultstring"]


async def test_provide_walks_cleaning_and_holds_the_lock(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    node = in_state(lab, "manageable")
    reply = await api.ironic(
        "PUT", f"/v1/nodes/{node.uuid}/states/provision", admin, body={"target": "provide"}
    )
    assert reply.status == 202
    shown = (await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)).body
    assert (shown["provision_state"], shown["target_provision_state"]) == ("cleaning", "available")
    assert shown["reservation"] == node.conductor
    locked = await api.ironic(
        "PUT", f"/v1/nodes/{node.uuid}/states/power", admin, body={"target": "power on"}
    )
    assert locked.status == 409
    seen = await states_until(api, clock, admin, node.uuid, {"available", "clean failed"})
    assert seen == ["cleaning", "clean wait", "cleaning", "available"]
    done = (await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)).body
    assert (done["target_provision_state"], done["reservation"], done["power_state"]) == (
        None,
        None,
        "power off",
    )


async def test_deploy_needs_an_image_then_reaches_active(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    node = in_state(lab, "available")
    path = f"/v1/nodes/{node.uuid}/states/provision"
    refused = await api.ironic("PUT", path, admin, body={"target": "active"})
    assert refused.status == 400
    assert "image_source" in fault(refused.body)["faultstring"]
    patch = [
        {"op": "add", "path": "/instance_info/image_source", "value": lab.scenario.images[0].id},
        {"op": "add", "path": "/instance_info/display_name", "value": "train-7b"},
    ]
    assert (await api.ironic("PATCH", f"/v1/nodes/{node.uuid}", admin, body=patch)).status == 200
    assert (await api.ironic("PUT", path, admin, body={"target": "active"})).status == 202
    seen = await states_until(api, clock, admin, node.uuid, {"active", "deploy failed"})
    assert seen == ["deploying", "wait call-back", "deploying", "active"]
    shown = (await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)).body
    assert (shown["power_state"], shown["instance_name"]) == ("power on", "train-7b")
    assert node.host is not None
    assert all(g.holder == node.uuid for g in node.host.gpus)
    assert (await api.ironic("PUT", path, admin, body={"target": "deleted"})).status == 202
    seen = await states_until(api, clock, admin, node.uuid, {"available", "clean failed"})
    assert seen == ["deleting", "cleaning", "clean wait", "cleaning", "available"]
    assert all(g.holder is None for g in node.host.gpus)


@pytest.mark.parametrize(
    ("state", "target"), [("available", "provide"), ("active", "active"), ("enroll", "provide")]
)
async def test_invalid_transitions_are_400_with_ironics_message(
    api: Api, lab: Lab, admin: str, state: str, target: str
) -> None:
    node = in_state(lab, state)
    path = f"/v1/nodes/{node.uuid}/states/provision"
    reply = await api.ironic("PUT", path, admin, body={"target": target})
    assert reply.status == 400
    assert fault(reply.body) == {
        "faultstring": f'The requested action "{target}" can not be performed on node "{node.uuid}" '
        f'while it is in state "{state}".',
        "faultcode": "Client",
        "debuginfo": None,
    }


async def test_verbs_newer_than_the_version_are_406(api: Api, lab: Lab, admin: str) -> None:
    node = in_state(lab, "manageable")
    reply = await api.ironic(
        "PUT", f"/v1/nodes/{node.uuid}/states/provision", admin, mv="1.3", body={"target": "provide"}
    )
    assert reply.status == 406


async def test_abort_in_clean_wait(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    node = in_state(lab, "manageable")
    path = f"/v1/nodes/{node.uuid}/states/provision"
    body = {"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata"}]}
    assert (await api.ironic("PUT", path, admin, body=body)).status == 202
    early = await api.ironic("PUT", path, admin, body={"target": "abort"})
    assert early.status == 409  # cleaning holds the lock
    await states_until(api, clock, admin, node.uuid, {"clean wait"})
    assert (await api.ironic("PUT", path, admin, body={"target": "abort"})).status == 202
    shown = (await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)).body
    assert shown["provision_state"] == "clean failed"
    assert "aborted" in shown["last_error"]


async def test_forced_deploy_failure(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    node = in_state(lab, "available")
    node.instance_info["image_source"] = lab.scenario.images[0].id
    assert (await api.call("POST", f"{lab.urls['lab']}/ironic/nodes/{node.name}/fail-next")).status == 204
    await api.ironic("PUT", f"/v1/nodes/{node.uuid}/states/provision", admin, body={"target": "active"})
    seen = await states_until(api, clock, admin, node.uuid, {"active", "deploy failed"})
    assert seen[-1] == "deploy failed"
    shown = (await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)).body
    assert node.uuid in shown["last_error"]


async def test_power_and_maintenance(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    node = in_state(lab, "available")
    base = f"/v1/nodes/{node.uuid}"
    assert (await api.ironic("PUT", base + "/states/power", admin, body={"target": "power on"})).status == 202
    assert (await api.ironic("GET", base, admin)).body["target_power_state"] == "power on"
    await clock.advance(3)
    shown = (await api.ironic("GET", base, admin)).body
    assert (shown["power_state"], shown["target_power_state"]) == ("power on", None)
    bad = await api.ironic("PUT", base + "/states/power", admin, body={"target": "sideways"})
    assert bad.status == 400
    reason = {"reason": "Replacing GPU 3"}
    assert (await api.ironic("PUT", base + "/maintenance", admin, body=reason)).status == 202
    held = (await api.ironic("GET", base, admin)).body
    assert (held["maintenance"], held["maintenance_reason"]) == (True, "Replacing GPU 3")
    node.instance_info["image_source"] = lab.scenario.images[0].id
    refused = await api.ironic("PUT", base + "/states/provision", admin, body={"target": "active"})
    assert refused.status == 400
    assert "maintenance" in fault(refused.body)["faultstring"]
    assert (await api.ironic("DELETE", base + "/maintenance", admin)).status == 202
    cleared = (await api.ironic("GET", base, admin)).body
    assert (cleared["maintenance"], cleared["maintenance_reason"]) == (False, None)


async def test_members_see_only_their_nodes_and_cannot_act(api: Api, lab: Lab, demo: str) -> None:
    project = next(p for p in lab.scenario.projects if p.name == lab.credentials.demo_project_name)
    mine = await api.ironic("GET", "/v1/nodes", demo)
    assert {n["uuid"] for n in mine.body["nodes"]} == {
        n.uuid for n in lab.scenario.nodes if project.id in (n.owner, n.lessee)
    }
    other = next(n for n in lab.scenario.nodes if project.id not in (n.owner, n.lessee))
    assert (await api.ironic("GET", f"/v1/nodes/{other.uuid}", demo)).status == 404


async def test_enroll_at_old_and_new_versions(api: Api, admin: str) -> None:
    new = await api.ironic("POST", "/v1/nodes", admin, body={"driver": "redfish", "name": "spare-1"})
    assert new.status == 201
    assert new.body["provision_state"] == "enroll"
    old = await api.ironic(
        "POST", "/v1/nodes", admin, mv="1.10", body={"driver": "redfish", "name": "spare-2"}
    )
    assert old.status == 201
    assert old.body["provision_state"] == "available"


async def test_openstacksdk_sees_ironic_errors_and_acts(lab: Lab, clock: FakeClock, tmp_path: Path) -> None:
    """The real SDK parses the lab's error body and drives a transition the lab then walks."""
    files = lab.write_config(tmp_path)
    config = openstack.config.OpenStackConfig(config_files=[str(files.clouds_yaml)])
    available, manageable = in_state(lab, "available"), in_state(lab, "manageable")

    def use_sdk() -> str:
        conn = openstack.connection.Connection(config=config.get_one(cloud=CLOUD))
        try:
            conn.baremetal.set_node_provision_state(available.uuid, "provide")
        except openstack.exceptions.BadRequestException as exc:
            message = str(exc)
        else:
            message = ""
        conn.baremetal.set_node_provision_state(manageable.uuid, "provide")
        return message

    message = await asyncio.to_thread(use_sdk)
    assert "can not be performed on node" in message
    assert available.uuid in message
    await clock.advance(60)
    lab.settle()
    assert manageable.provision_state == "available"
