"""Nova of the lab: microversions, listing and paging, policy, services, flavors, and the state
machines (scheduling, live and cold migration, evacuation) driven by a fake clock."""

from __future__ import annotations

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.scenario import Flavor, Host, Server
from sovereign_tui.lab.server import Lab

from .conftest import Api


def movables(lab: Lab, gpus: bool = False) -> list[Server]:
    """ACTIVE servers on healthy hosts, with or without passed-through GPUs."""
    found = []
    for s in lab.scenario.servers.values():
        host = lab.scenario.hosts_by_name.get(s.host or "")
        if s.vm_state != "active" or host is None or host.service is None:
            continue
        if host.service.up and not host.service.disabled and bool(s.gpus) == gpus and not s.vgpu_on:
            found.append(s)
    assert found, "scenario has no such server"
    return found


def movable(lab: Lab, gpus: bool = False) -> Server:
    return movables(lab, gpus)[0]


async def wait_status(api: Api, clock: FakeClock, token: str, sid: str, want: str, step: float = 1.0) -> dict:
    for _ in range(600):
        reply = await api.nova("GET", f"/servers/{sid}", token)
        if reply.body["server"]["status"] == want:
            return dict(reply.body["server"])
        await clock.advance(step)
    raise AssertionError(f"server {sid} never reached {want}")


# --- versions ------------------------------------------------------------------------------------


async def test_version_documents(api: Api, lab: Lab) -> None:
    root = await api.call("GET", lab.urls["compute"].removesuffix("/v2.1") + "/")
    current = next(v for v in root.body["versions"] if v["id"] == "v2.1")
    assert (current["min_version"], current["version"]) == ("2.1", "2.100")
    doc = await api.call("GET", lab.urls["compute"])
    assert doc.body["version"]["version"] == "2.100"


@pytest.mark.parametrize(
    ("headers", "status", "echo"),
    [
        ({}, 200, "2.1"),
        ({"OpenStack-API-Version": "compute 2.53"}, 200, "2.53"),
        ({"X-OpenStack-Nova-API-Version": "2.60"}, 200, "2.60"),
        ({"OpenStack-API-Version": "baremetal 1.9, compute 2.88"}, 200, "2.88"),
        ({"OpenStack-API-Version": "compute latest"}, 200, "2.100"),
        ({"OpenStack-API-Version": "compute 2.101"}, 406, "2.101"),
        ({"OpenStack-API-Version": "compute 3.0"}, 406, None),
        ({"OpenStack-API-Version": "compute two"}, 400, None),
    ],
)
async def test_microversion_negotiation(
    api: Api, lab: Lab, admin: str, headers: dict[str, str], status: int, echo: str | None
) -> None:
    reply = await api.call("GET", lab.urls["compute"] + "/servers", admin, **headers)
    assert reply.status == status
    if status == 200:
        assert reply.headers["OpenStack-API-Version"] == f"compute {echo}"
        assert reply.headers["X-OpenStack-Nova-API-Version"] == echo
    elif status == 406:
        assert reply.body["computeFault"]["code"] == 406
    else:
        assert reply.body["badRequest"]["code"] == 400


async def test_server_shape_follows_the_microversion(api: Api, admin: str) -> None:
    old = (await api.nova("GET", "/servers/detail?all_tenants=1&limit=1", admin, mv="2.1")).body["servers"][0]
    assert set(old["flavor"]) == {"id", "links"}
    assert "host_status" not in old
    assert "locked" not in old
    assert "OS-EXT-SRV-ATTR:hostname" not in old
    mid = (await api.nova("GET", "/servers/detail?all_tenants=1&limit=1", admin, mv="2.47")).body["servers"][
        0
    ]
    assert {"vcpus", "ram", "original_name", "extra_specs"} <= set(mid["flavor"])
    assert "id" not in mid["flavor"]
    assert "host_status" in mid
    assert "tags" in mid
    assert "scheduler_hints" not in mid
    new = (await api.nova("GET", "/servers/detail?all_tenants=1&limit=1", admin, mv="2.100")).body["servers"][
        0
    ]
    assert {"scheduler_hints", "pinned_availability_zone", "locked_reason"} <= set(new)
    assert "properties" in new["image"]


# --- listing -------------------------------------------------------------------------------------


async def test_paging_covers_every_server_once_in_nova_order(api: Api, lab: Lab, admin: str) -> None:
    seen: list[str] = []
    url = "/servers/detail?all_tenants=1&limit=7"
    pages = 0
    while url:
        reply = await api.nova("GET", url, admin)
        assert reply.status == 200
        seen += [s["id"] for s in reply.body["servers"]]
        links = reply.body.get("servers_links") or []
        assert len(links) == (1 if len(reply.body["servers"]) == 7 else 0)
        url = links[0]["href"].removeprefix(lab.urls["compute"]) if links else ""
        pages += 1
    expected = sorted(lab.scenario.servers.values(), key=lambda s: (s.created, s.id), reverse=True)
    assert seen == [s.id for s in expected]
    assert pages == len(expected) // 7 + 1


async def test_unknown_marker_is_400(api: Api, admin: str) -> None:
    reply = await api.nova("GET", "/servers/detail?all_tenants=1&marker=nope", admin)
    assert reply.status == 400
    assert "marker" in reply.body["badRequest"]["message"]


async def test_host_filter(api: Api, lab: Lab, admin: str) -> None:
    host = movable(lab).host
    reply = await api.nova("GET", f"/servers/detail?all_tenants=1&host={host}", admin)
    got = {s["id"] for s in reply.body["servers"]}
    assert got == {s.id for s in lab.scenario.servers.values() if s.host == host}
    assert {s["OS-EXT-SRV-ATTR:host"] for s in reply.body["servers"]} == {host}


async def test_project_scope_and_admin_policy(api: Api, lab: Lab, demo: str, admin: str) -> None:
    project = next(p for p in lab.scenario.projects if p.name == lab.credentials.demo_project_name)
    mine = await api.nova("GET", "/servers/detail", demo)
    assert {s["id"] for s in mine.body["servers"]} == {
        s.id for s in lab.scenario.servers.values() if s.project_id == project.id
    }
    assert all("OS-EXT-SRV-ATTR:host" not in s for s in mine.body["servers"])
    for path in ("/servers/detail?all_tenants=1", "/os-hypervisors/detail", "/os-services", "/os-migrations"):
        denied = await api.nova("GET", path, demo)
        assert denied.status == 403, path
        assert "forbidden" in denied.body
    # an admin without all_tenants sees its own project only, as in Nova
    own = await api.nova("GET", "/servers", admin)
    admin_project = lab.scenario.projects[0].id
    assert len(own.body["servers"]) == sum(
        1 for s in lab.scenario.servers.values() if s.project_id == admin_project
    )


async def test_hypervisor_shapes_and_paging(api: Api, lab: Lab, admin: str) -> None:
    hosts = lab.scenario.compute_hosts
    old = (await api.nova("GET", "/os-hypervisors/detail?with_servers=true", admin, mv="2.53")).body[
        "hypervisors"
    ]
    assert len(old) == len(hosts)
    by_name = {h.fqdn: h for h in hosts}
    for hyp in old:
        host = by_name[hyp["hypervisor_hostname"]]
        assert hyp["id"] == host.hypervisor_id
        assert hyp["service"]["host"] == host.name
        assert hyp["running_vms"] == len(host.server_ids)
        assert hyp["vcpus_used"] == host.vcpus_used
        assert {s["uuid"] for s in hyp.get("servers", [])} == host.server_ids
    new = (await api.nova("GET", "/os-hypervisors/detail?limit=5", admin, mv="2.88")).body
    assert len(new["hypervisors"]) == 5
    assert "uptime" in new["hypervisors"][0]
    assert "vcpus" not in new["hypervisors"][0]
    assert "marker=" + new["hypervisors"][-1]["id"] in new["hypervisors_links"][0]["href"]


async def test_flavors_and_extra_specs(api: Api, lab: Lab, admin: str) -> None:
    flavors = (await api.nova("GET", "/flavors/detail", admin, mv="2.75")).body["flavors"]
    assert {f["name"] for f in flavors} == {f.name for f in lab.scenario.flavors}
    for f in flavors:
        specs = (await api.nova("GET", f"/flavors/{f['id']}/os-extra_specs", admin)).body["extra_specs"]
        assert specs == f["extra_specs"]
    aliases = {f["extra_specs"].get("pci_passthrough:alias") for f in flavors} - {None}
    assert {a.split(":")[0] for a in aliases} == {"h100", "h200", "a100", "l40s"}
    assert any(f["extra_specs"].get("resources:VGPU") == "1" for f in flavors)


# --- services ------------------------------------------------------------------------------------


async def test_disable_enable_and_force_down(api: Api, lab: Lab, admin: str) -> None:
    server = movable(lab)
    svc = lab.scenario.hosts_by_name[server.host or ""].service
    assert svc is not None
    off = await api.nova(
        "PUT", f"/os-services/{svc.id}", admin, "2.53", {"status": "disabled", "disabled_reason": "drain"}
    )
    assert off.status == 200
    assert (off.body["service"]["status"], off.body["service"]["disabled_reason"]) == ("disabled", "drain")
    shown = (await api.nova("GET", f"/servers/{server.id}", admin)).body["server"]
    assert shown["host_status"] == "MAINTENANCE"
    listed = (await api.nova("GET", f"/os-services?host={svc.host}&binary=nova-compute", admin, "2.53")).body
    assert [s["status"] for s in listed["services"]] == ["disabled"]
    on = await api.nova("PUT", f"/os-services/{svc.id}", admin, "2.53", {"status": "enabled"})
    assert on.body["service"]["disabled_reason"] is None
    down = await api.nova("PUT", f"/os-services/{svc.id}", admin, "2.53", {"forced_down": True})
    assert (down.body["service"]["state"], down.body["service"]["forced_down"]) == ("down", True)
    assert (await api.nova("GET", f"/servers/{server.id}", admin)).body["server"]["host_status"] == "DOWN"


@pytest.mark.parametrize(
    "body",
    [{}, {"status": "enabled", "disabled_reason": "x"}, {"status": "sideways"}, {"forced_down": "yes"}],
)
async def test_bad_service_updates_are_400(api: Api, lab: Lab, admin: str, body: dict) -> None:
    svc = next(s for s in lab.scenario.services if s.binary == "nova-compute")
    assert (await api.nova("PUT", f"/os-services/{svc.id}", admin, "2.53", body)).status == 400


async def test_only_compute_services_can_be_updated(api: Api, lab: Lab, admin: str) -> None:
    svc = next(s for s in lab.scenario.services if s.binary == "nova-scheduler")
    reply = await api.nova("PUT", f"/os-services/{svc.id}", admin, "2.53", {"status": "disabled"})
    assert reply.status == 400
    assert "nova-scheduler" in reply.body["badRequest"]["message"]


# --- state machines ------------------------------------------------------------------------------


async def test_live_migration_progresses_with_time_and_moves_the_server(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    s = movable(lab)
    source = s.host
    lab.compute.timings.live_bandwidth_bps = 2**30  # 1 GiB/s: at least 4 s of copying for any flavor
    body = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    assert (await api.nova("POST", f"/servers/{s.id}/action", admin, body=body)).status == 202
    shown = (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("MIGRATING", "migrating")
    statuses, processed = [], []
    for _ in range(400):
        moving = (await api.nova("GET", f"/servers/{s.id}/migrations", admin)).body["migrations"]
        if not moving:
            break
        statuses.append(moving[0]["status"])
        if moving[0]["status"] == "running":
            processed.append(moving[0]["memory_processed_bytes"])
            assert moving[0]["memory_total_bytes"] == s.flavor.ram * 2**20
            assert moving[0]["memory_remaining_bytes"] == moving[0]["memory_total_bytes"] - processed[-1]
        await clock.advance(0.5)
    assert [st for i, st in enumerate(statuses) if i == 0 or statuses[i - 1] != st] == [
        "queued",
        "preparing",
        "running",
        "post-migrating",
    ]
    assert processed == sorted(processed)
    assert processed[-1] > processed[0]
    done = (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]
    assert done["status"] == "ACTIVE"
    assert done["OS-EXT-SRV-ATTR:host"] not in (None, source)
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin)).body["migrations"][0]
    assert (record["status"], record["source_compute"], record["dest_compute"]) == (
        "completed",
        source,
        done["OS-EXT-SRV-ATTR:host"],
    )
    assert s.id not in lab.scenario.hosts_by_name[source or ""].server_ids


async def test_live_migration_of_a_gpu_server_fails_its_precheck(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    s = movable(lab, gpus=True)
    source, boards = s.host, list(s.gpus)
    body = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    assert (await api.nova("POST", f"/servers/{s.id}/action", admin, body=body)).status == 202
    await clock.advance(5)
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin)).body["migrations"][0]
    assert record["status"] == "error"
    shown = (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
    host = lab.scenario.hosts_by_name[source or ""]
    assert [g.index for g in host.gpus if g.holder == s.id] == boards
    actions = (await api.nova("GET", f"/servers/{s.id}/os-instance-actions", admin)).body["instanceActions"]
    live = next(a for a in actions if a["action"] == "live-migration")
    detail = (await api.nova("GET", f"/servers/{s.id}/os-instance-actions/{live['request_id']}", admin)).body
    assert detail["instanceAction"]["events"][-1]["result"] == "Error"
    assert "PCI passthrough" in detail["instanceAction"]["events"][-1]["details"]


@pytest.mark.parametrize("how", ["fail-next", "abort"])
async def test_failed_or_aborted_live_migration_leaves_the_server(
    api: Api, lab: Lab, clock: FakeClock, admin: str, how: str
) -> None:
    s = movable(lab)
    source = s.host
    lab.compute.timings.live_bandwidth_bps = 2**30  # 1 GiB/s: at least 4 s of copying for any flavor
    if how == "fail-next":
        assert (await api.call("POST", f"{lab.urls['lab']}/nova/servers/{s.id}/fail-next")).status == 204
    body = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    await api.nova("POST", f"/servers/{s.id}/action", admin, body=body)
    await clock.advance(3.5)  # queued 1 s + preparing 2 s: now running
    (running,) = (await api.nova("GET", f"/servers/{s.id}/migrations", admin)).body["migrations"]
    assert running["status"] == "running"
    dest = lab.scenario.hosts_by_name[running["dest_compute"]]
    assert s.id in dest.server_ids  # the destination holds a claim while copying
    if how == "abort":
        assert (await api.nova("DELETE", f"/servers/{s.id}/migrations/{running['id']}", admin)).status == 202
    else:
        await clock.advance(600)
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin)).body["migrations"][0]
    assert record["status"] == ("cancelled" if how == "abort" else "failed")
    shown = (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
    assert s.id not in dest.server_ids


async def test_cold_migration_needs_confirm_and_moves_the_gpus(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    s = movable(lab, gpus=True)
    source = lab.scenario.hosts_by_name[s.host or ""]
    assert (await api.nova("POST", f"/servers/{s.id}/action", admin, body={"migrate": None})).status == 202
    shown = await wait_status(api, clock, admin, s.id, "VERIFY_RESIZE")
    dest = lab.scenario.hosts_by_name[shown["OS-EXT-SRV-ATTR:host"]]
    assert dest is not source
    assert dest.model.alias == source.model.alias
    assert sum(g.holder == s.id for g in dest.gpus) == s.flavor.gpu_count
    assert sum(g.holder == s.id for g in source.gpus) == s.flavor.gpu_count  # held until confirmed
    assert (
        await api.nova("POST", f"/servers/{s.id}/action", admin, body={"confirmResize": None})
    ).status == 204
    assert (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]["status"] == "ACTIVE"
    assert not any(g.holder == s.id for g in source.gpus)
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin)).body["migrations"][0]
    assert (record["migration_type"], record["status"]) == ("migration", "confirmed")


async def test_revert_resize_goes_back(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    s = movable(lab)
    source = s.host
    await api.nova("POST", f"/servers/{s.id}/action", admin, mv="2.56", body={"migrate": {"host": None}})
    await wait_status(api, clock, admin, s.id, "VERIFY_RESIZE")
    assert (
        await api.nova("POST", f"/servers/{s.id}/action", admin, body={"revertResize": None})
    ).status == 202
    back = await wait_status(api, clock, admin, s.id, "ACTIVE")
    assert back["OS-EXT-SRV-ATTR:host"] == source


async def test_confirm_without_resize_is_409(api: Api, lab: Lab, admin: str) -> None:
    s = movable(lab)
    reply = await api.nova("POST", f"/servers/{s.id}/action", admin, body={"confirmResize": None})
    assert reply.status == 409
    assert "conflictingRequest" in reply.body


@pytest.mark.parametrize(("mv", "final"), [("2.94", "ACTIVE"), ("2.95", "SHUTOFF")])
async def test_evacuate_only_from_a_down_host(
    api: Api, lab: Lab, clock: FakeClock, admin: str, mv: str, final: str
) -> None:
    s = movable(lab)
    host = lab.scenario.hosts_by_name[s.host or ""]
    refused = await api.nova("POST", f"/servers/{s.id}/action", admin, mv=mv, body={"evacuate": {}})
    assert refused.status == 400
    assert "still in use" in refused.body["badRequest"]["message"]
    assert host.service is not None
    await api.nova("PUT", f"/os-services/{host.service.id}", admin, "2.53", {"forced_down": True})
    accepted = await api.nova("POST", f"/servers/{s.id}/action", admin, mv=mv, body={"evacuate": {}})
    assert accepted.status == 200
    assert (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]["status"] == "REBUILD"
    shown = await wait_status(api, clock, admin, s.id, final)
    assert shown["OS-EXT-SRV-ATTR:host"] != host.name
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin, "2.80")).body[
        "migrations"
    ][0]
    assert (record["migration_type"], record["status"]) == ("evacuation", "done")


def gpu_flavor(lab: Lab, alias: str, count: int) -> Flavor:
    return next(f for f in lab.scenario.flavors if f.gpu_alias == alias and f.gpu_count == count)


def free_hosts(lab: Lab, flavor: Flavor) -> list[Host]:
    return [
        h
        for h in lab.scenario.compute_hosts
        if h.service is not None
        and h.service.up
        and not h.service.disabled
        and not h.vgpu
        and h.model.alias == flavor.gpu_alias
        and len(h.free_gpus()) >= flavor.gpu_count
    ]


async def test_create_schedules_onto_free_gpus_until_none_fit(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    alias = next(h.model.alias for h in lab.scenario.compute_hosts if not h.vgpu)
    flavor = gpu_flavor(lab, alias, 1)
    image = lab.scenario.images[0].id
    created: list[str] = []
    while True:
        fits_before = bool(free_hosts(lab, flavor))
        body = {
            "server": {
                "name": f"job-{len(created)}",
                "flavorRef": flavor.id,
                "imageRef": image,
                "networks": "auto",
            }
        }
        reply = await api.nova("POST", "/servers", admin, body=body)
        assert reply.status == 202
        sid = reply.body["server"]["id"]
        assert (await api.nova("GET", f"/servers/{sid}", admin)).body["server"]["status"] == "BUILD"
        await clock.advance(10)
        shown = (await api.nova("GET", f"/servers/{sid}", admin)).body["server"]
        if not fits_before:
            assert shown["status"] == "ERROR"
            assert shown["fault"]["message"].startswith("No valid host was found")
            break
        assert shown["status"] == "ACTIVE"
        host = lab.scenario.hosts_by_name[shown["OS-EXT-SRV-ATTR:host"]]
        assert host.model.alias == alias
        assert [g.holder for g in host.gpus].count(sid) == 1
        created.append(sid)
    assert created  # at least one fitted before the GPUs ran out
    assert (await api.nova("DELETE", f"/servers/{created[0]}", admin)).status == 204
    assert free_hosts(lab, flavor)  # deleting gave a board back
    assert (await api.nova("GET", f"/servers/{created[0]}", admin)).status == 404


@pytest.mark.parametrize(
    ("mv", "patch", "fragment"),
    [
        ("2.37", {"networks": None}, "networks"),
        ("2.100", {"flavorRef": "no-such-flavor"}, "Flavor"),
        ("2.100", {"imageRef": "no-such-image"}, "image"),
    ],
)
async def test_create_validation(api: Api, lab: Lab, admin: str, mv: str, patch: dict, fragment: str) -> None:
    server = {
        "name": "x",
        "flavorRef": lab.scenario.flavors[0].id,
        "imageRef": lab.scenario.images[0].id,
        "networks": "none",
    }
    server.update(patch)
    server = {k: v for k, v in server.items() if v is not None}
    reply = await api.nova("POST", "/servers", admin, mv=mv, body={"server": server})
    assert reply.status == 400
    assert fragment in reply.body["badRequest"]["message"]


async def test_os_migrations_paging(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    moved = movables(lab)[:3]
    for s in moved:
        assert (
            await api.nova("POST", f"/servers/{s.id}/action", admin, body={"migrate": None})
        ).status == 202
    first = (await api.nova("GET", "/os-migrations?limit=2", admin, "2.59")).body
    assert len(first["migrations"]) == 2
    assert "migrations_links" in first
    marker = first["migrations"][-1]["uuid"]
    rest = (await api.nova("GET", f"/os-migrations?limit=2&marker={marker}", admin, "2.59")).body
    ids = [m["instance_uuid"] for m in first["migrations"] + rest["migrations"]]
    assert sorted(ids) == sorted(s.id for s in moved)
