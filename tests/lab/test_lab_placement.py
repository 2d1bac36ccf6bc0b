"""Placement of the lab: Placement's own shapes (version document, microversions, errors,
providers, inventories, traits, allocations), and allocations that follow the Nova simulation
as servers are built, moved and deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.scenario import Host, Server
from sovereign_tui.lab.server import Lab

from .conftest import Api
from .test_nova import movable, wait_status

SEED = 6
"""A scenario with both passed-through and vGPU hypervisors."""
PROVIDER_KEYS = {"uuid", "name", "generation", "links"}
INVENTORY_KEYS = {"allocation_ratio", "max_unit", "min_unit", "reserved", "step_size", "total"}


@pytest.fixture
async def lab(clock: FakeClock) -> AsyncIterator[Lab]:
    lab = Lab(hosts=24, seed=SEED, clock=clock)
    await lab.start()
    yield lab
    await lab.stop()


@pytest.fixture
async def api(lab: Lab) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, lab)


async def place(api: Api, path: str, token: str | None, mv: str | None = "1.39") -> Any:
    headers = {"OpenStack-API-Version": f"placement {mv}"} if mv else {}
    return await api.call("GET", api.lab.urls["placement"] + path, token, **headers)


def address(bus_id: str) -> str:
    return "0000:" + bus_id.split(":", 1)[1].lower()


def device_name(h: Host, index: int) -> str:
    addr = address(h.gpus[index].bus_id)
    if h.vgpu:
        return f"{h.fqdn}_pci_" + addr.replace(":", "_").replace(".", "_")
    return f"{h.fqdn}_{addr.upper()}"


async def providers(api: Api, token: str) -> dict[str, dict[str, Any]]:
    reply = await place(api, "/resource_providers", token)
    assert reply.status == 200
    return {p["name"]: p for p in reply.body["resource_providers"]}


async def allocations(api: Api, token: str, rp: dict[str, Any]) -> dict[str, Any]:
    reply = await place(api, f"/resource_providers/{rp['uuid']}/allocations", token)
    assert reply.status == 200 and set(reply.body) == {"allocations", "resource_provider_generation"}
    return dict(reply.body)


def passthrough_hosts(lab: Lab) -> list[Host]:
    return [h for h in lab.scenario.compute_hosts if not h.vgpu and h.service and h.service.up]


# --- shapes ----------------------------------------------------------------------------------------


async def test_root_document_needs_no_token_and_names_the_versions(api: Api, lab: Lab) -> None:
    reply = await place(api, "/", None, mv=None)
    assert reply.status == 200
    assert reply.body == {
        "versions": [
            {
                "id": "v1.0",
                "max_version": "1.39",
                "min_version": "1.0",
                "status": "CURRENT",
                "links": [{"rel": "self", "href": ""}],
            }
        ]
    }
    assert reply.headers["OpenStack-API-Version"] == "placement 1.0"


@pytest.mark.parametrize(
    ("mv", "status", "echo"),
    [
        (None, 200, "1.0"),
        ("1.14", 200, "1.14"),
        ("latest", 200, "1.39"),
        ("1.40", 406, None),
        ("one", 400, None),
    ],
)
async def test_microversions(api: Api, admin: str, mv: str | None, status: int, echo: str | None) -> None:
    reply = await place(api, "/resource_providers", admin, mv=mv)
    assert reply.status == status
    if echo is not None:
        assert reply.headers["OpenStack-API-Version"] == f"placement {echo}"
    else:
        (error,) = reply.body["errors"]
        assert error["status"] == status and error["code"] == "placement.undefined_code"


async def test_tokens_and_policy(api: Api, demo: str) -> None:
    assert (await place(api, "/resource_providers", None)).status == 401
    refused = await place(api, "/resource_providers", demo)
    assert refused.status == 403
    assert "placement:resource_providers:list" in refused.body["errors"][0]["detail"]


async def test_provider_trees_follow_nova(api: Api, lab: Lab, admin: str) -> None:
    listed = await providers(api, admin)
    compute = lab.scenario.compute_hosts
    assert len(listed) == sum(1 + len(h.gpus) for h in compute)
    assert any(h.vgpu for h in compute) and any(not h.vgpu for h in compute)
    for h in compute:
        root = listed[h.fqdn]  # the compute node: its hypervisor's hostname and id
        assert set(root) == PROVIDER_KEYS | {"parent_provider_uuid", "root_provider_uuid"}
        assert (root["uuid"], root["parent_provider_uuid"], root["root_provider_uuid"]) == (
            h.hypervisor_id,
            None,
            h.hypervisor_id,
        )
        for g in h.gpus:
            child = listed[device_name(h, g.index)]
            assert (child["parent_provider_uuid"], child["root_provider_uuid"]) == (h.hypervisor_id,) * 2
            rels = [link["rel"] for link in child["links"]]
            assert rels == ["self", "inventories", "usages", "aggregates", "traits", "allocations"]
            assert child["links"][0]["href"] == f"/placement/resource_providers/{child['uuid']}"
    old = await place(api, "/resource_providers", admin, mv="1.13")
    assert set(old.body["resource_providers"][0]) == PROVIDER_KEYS  # no nesting before 1.14


async def test_filters(api: Api, lab: Lab, admin: str) -> None:
    h = lab.scenario.compute_hosts[0]
    named = await place(api, f"/resource_providers?name={h.fqdn}", admin)
    assert [p["uuid"] for p in named.body["resource_providers"]] == [h.hypervisor_id]
    tree = await place(api, f"/resource_providers?in_tree={h.hypervisor_id}", admin)
    assert len(tree.body["resource_providers"]) == 1 + len(h.gpus)
    too_new = await place(api, f"/resource_providers?in_tree={h.hypervisor_id}", admin, mv="1.13")
    assert too_new.status == 400
    assert "'in_tree' was unexpected" in too_new.body["errors"][0]["detail"]
    unserved = await place(api, "/resource_providers?member_of=in:agg-1", admin)
    assert unserved.status == 400 and "does not filter on 'member_of'" in unserved.body["errors"][0]["detail"]
    missing = await place(api, "/resource_providers/00000000-0000-4000-8000-000000000000", admin)
    assert missing.status == 404


async def test_device_inventories_and_traits(api: Api, lab: Lab, admin: str) -> None:
    listed = await providers(api, admin)
    pt = next(h for h in lab.scenario.compute_hosts if not h.vgpu)
    vg = next(h for h in lab.scenario.compute_hosts if h.vgpu)
    for h, rc, total, traits in (
        (pt, f"CUSTOM_PCI_10DE_{pt.model.product_id.upper()}", 1, ["COMPUTE_MANAGED_PCI_DEVICE"]),
        (vg, "VGPU", vg.model.vgpus_per_gpu, []),
    ):
        rp = listed[device_name(h, 0)]
        inv = (await place(api, f"/resource_providers/{rp['uuid']}/inventories", admin)).body
        assert set(inv) == {"inventories", "resource_provider_generation"}
        assert list(inv["inventories"]) == [rc]
        assert set(inv["inventories"][rc]) == INVENTORY_KEYS
        assert (inv["inventories"][rc]["total"], inv["inventories"][rc]["max_unit"]) == (total, total)
        shown = (await place(api, f"/resource_providers/{rp['uuid']}/traits", admin)).body
        assert shown == {"traits": traits, "resource_provider_generation": rp["generation"]}
    early = await place(api, f"/resource_providers/{listed[device_name(pt, 0)]['uuid']}/traits", admin, "1.5")
    assert early.status == 404


async def test_allocations_name_the_servers_holding_each_board(api: Api, lab: Lab, admin: str) -> None:
    listed = await providers(api, admin)
    for h in lab.scenario.compute_hosts:
        for g in h.gpus:
            doc = await allocations(api, admin, listed[device_name(h, g.index)])
            if h.vgpu:
                want = {sid: g.vgpu_holders.count(sid) for sid in set(g.vgpu_holders)}
                assert {c: a["resources"]["VGPU"] for c, a in doc["allocations"].items()} == want
            else:
                assert list(doc["allocations"]) == ([g.holder] if g.holder else [])
            for alloc in doc["allocations"].values():
                assert set(alloc) == {"resources", "consumer_generation"}


# --- allocations follow Nova ---------------------------------------------------------------------


async def create(api: Api, lab: Lab, clock: FakeClock, admin: str, host: Host, flavor_name: str) -> Server:
    flavor = next(f for f in lab.scenario.flavors if f.name == flavor_name)
    body = {
        "server": {
            "name": "placed-1",
            "flavorRef": flavor.id,
            "imageRef": lab.scenario.images[0].id,
            "networks": "auto",
            "availability_zone": f"nova:{host.name}",
        }
    }
    reply = await api.nova("POST", "/servers", admin, body=body)
    assert reply.status == 202
    await wait_status(api, clock, admin, reply.body["server"]["id"], "ACTIVE")
    return lab.scenario.servers[reply.body["server"]["id"]]


async def test_a_server_built_and_deleted_comes_and_goes(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    host = max(passthrough_hosts(lab), key=lambda h: len(h.free_gpus()))
    before = await providers(api, admin)
    s = await create(api, lab, clock, admin, host, f"g1.{host.model.alias}.2")
    assert s.host == host.name and len(s.gpus) == 2
    after = await providers(api, admin)
    rc = f"CUSTOM_PCI_10DE_{host.model.product_id.upper()}"
    for i in s.gpus:
        rp = after[device_name(host, i)]
        assert rp["generation"] == before[device_name(host, i)]["generation"] + 1
        doc = await allocations(api, admin, rp)
        assert doc["allocations"] == {s.id: {"resources": {rc: 1}, "consumer_generation": 1}}
        assert doc["resource_provider_generation"] == rp["generation"]
    mine = (await place(api, f"/allocations/{s.id}", admin)).body
    assert set(mine) == {"allocations", "project_id", "user_id", "consumer_generation", "consumer_type"}
    assert (mine["project_id"], mine["consumer_type"]) == (s.project_id, "INSTANCE")
    assert all(set(a) == {"generation", "resources"} for a in mine["allocations"].values())
    assert mine["allocations"][host.hypervisor_id]["resources"]["VCPU"] == s.flavor.vcpus
    devices = {after[device_name(host, i)]["uuid"] for i in s.gpus}
    assert set(mine["allocations"]) == {host.hypervisor_id} | devices
    assert set((await place(api, f"/allocations/{s.id}", admin, "1.11")).body) == {"allocations"}

    assert (await api.nova("DELETE", f"/servers/{s.id}", admin)).status == 204
    gone = await providers(api, admin)
    for i in s.gpus:
        assert (await allocations(api, admin, gone[device_name(host, i)]))["allocations"] == {}
    assert (await place(api, f"/allocations/{s.id}", admin)).body == {"allocations": {}}


async def test_a_moving_server_leaves_its_source_to_the_migration(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    s = movable(lab, gpus=True)
    source = lab.scenario.hosts_by_name[s.host or ""]
    boards = list(s.gpus)
    assert (await api.nova("POST", f"/servers/{s.id}/action", admin, body={"migrate": None})).status == 202
    await wait_status(api, clock, admin, s.id, "VERIFY_RESIZE")
    migration = next(m for m in lab.scenario.migrations if m.server_id == s.id)
    dest = lab.scenario.hosts_by_name[s.host or ""]
    listed = await providers(api, admin)
    for i in boards:
        held = await allocations(api, admin, listed[device_name(source, i)])
        assert list(held["allocations"]) == [migration.uuid]
    for i in s.gpus:
        assert list((await allocations(api, admin, listed[device_name(dest, i)]))["allocations"]) == [s.id]
    theirs = (await place(api, f"/allocations/{migration.uuid}", admin)).body
    assert theirs["consumer_type"] == "MIGRATION"
    assert source.hypervisor_id in theirs["allocations"]

    await api.nova("POST", f"/servers/{s.id}/action", admin, body={"confirmResize": None})
    listed = await providers(api, admin)
    for i in boards:
        assert (await allocations(api, admin, listed[device_name(source, i)]))["allocations"] == {}
    assert (await place(api, f"/allocations/{migration.uuid}", admin)).body == {"allocations": {}}
