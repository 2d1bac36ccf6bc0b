"""The lab against the real services' own samples (tests/fixtures/api-samples, from Nova's
functional tests and Ironic's api-ref): at the sample's microversion, the lab's answer carries
every key of the sample with the same JSON type, recursively; and the lab accepts the samples'
request bodies.

One generic comparator does it. Lists of objects are compared element by element against the
merge of the sample's elements (keys present in every sample element are required, the others
optional); a null in a sample accepts any value; a value the lab leaves null must be nullable
(null in some sample of the same service, or listed with the reason). Every non-null path of the
sample must be matched by a non-null lab value at least once (coverage), so an empty list or an
always-null field cannot pass for the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.scenario import Server
from sovereign_tui.lab.server import Lab

from .conftest import Api, sample

FREE_FORM = frozenset(
    {
        "properties",
        "scheduler_hints",
        "driver_info",
        "driver_internal_info",
        "instance_info",
        "extra",
        "clean_step",
        "deploy_step",
        "raid_config",
        "target_raid_config",
        "network_data",
    }
)
"""Objects whose keys are data (an operator's or a driver's), not schema: only their type counts."""
MAPS = frozenset({"addresses", "extra_specs", "metadata"})
"""Objects keyed by data whose values have a schema: every value is compared with the samples'."""
NOVA_NULLABLE = {
    "OS-EXT-SRV-ATTR:host": "null until a server is scheduled (api-ref: servers)",
    "OS-EXT-SRV-ATTR:hypervisor_hostname": "null until a server is scheduled (api-ref: servers)",
    "OS-SRV-USG:launched_at": "null until a server is launched (api-ref: servers)",
    "pinned_availability_zone": "null when no zone was asked for at creation (api-ref: servers)",
}
IRONIC_UNCOVERED = {
    "nodes[].allocation_uuid": "the lab serves no allocation API, so every node has none (null is valid)",
    "allocation_uuid": "the lab serves no allocation API, so every node has none (null is valid)",
}


def jtype(value: Any) -> str:
    return {
        type(None): "null",
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        list: "list",
        dict: "object",
    }[type(value)]


def null_keys(*docs: Any) -> set[str]:
    """Names of keys that are null somewhere in these samples."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if x is None:
                    found.add(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for d in docs:
        walk(d)
    return found


def merge(items: list[Any]) -> tuple[Any, set[str]]:
    """One sample element from several, and the keys that every element has."""
    if not items or not all(isinstance(i, dict) for i in items):
        return (next((i for i in items if i is not None), None), set())
    keys: dict[str, list[Any]] = {}
    for item in items:
        for k, v in item.items():
            keys.setdefault(k, []).append(v)
    required = set.intersection(*(set(i) for i in items))
    merged = {}
    for k, values in keys.items():
        nested = [v for v in values if v is not None]
        if nested and all(isinstance(v, dict) for v in nested):
            merged[k] = merge(nested)[0]
        elif nested and all(isinstance(v, list) for v in nested):
            merged[k] = [x for v in nested for x in v]
        else:
            merged[k] = nested[0] if nested else None
    return merged, required


@dataclass
class Shape:
    nullable: set[str]
    mismatches: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    covered: set[str] = field(default_factory=set)

    def expect(self, s: Any, path: str, key: str) -> None:
        """Every path with a non-null sample value must be covered."""
        if s is None:
            return
        self.expected.add(path)
        if key in FREE_FORM:
            return
        if isinstance(s, dict):
            if key in MAPS:
                value, _ = merge(list(s.values()))
                if s:
                    self.expect(value, path + "{}", "")
            else:
                for k, v in s.items():
                    self.expect(v, f"{path}.{k}".lstrip("."), k)
        elif isinstance(s, list) and s:
            self.expect(merge(s)[0], path + "[]", key)

    def compare(self, s: Any, a: Any, path: str = "", key: str = "", required: bool = True) -> None:
        if s is None:
            return
        if a is None:
            if key not in self.nullable:
                self.mismatches.append(f"{path}: null in the lab, {jtype(s)} in the sample")
            return
        if jtype(s) != jtype(a):
            self.mismatches.append(f"{path}: {jtype(a)} in the lab, {jtype(s)} in the sample")
            return
        self.covered.add(path)
        if key in FREE_FORM:
            return
        if isinstance(s, dict):
            if key in MAPS:
                value, _ = merge(list(s.values()))
                for v in a.values():
                    self.compare(value, v, path + "{}", "")
                return
            for k, v in s.items():
                sub = f"{path}.{k}".lstrip(".")
                if k not in a:
                    self.mismatches.append(f"{sub}: missing in the lab")
                else:
                    self.compare(v, a[k], sub, k)
        elif isinstance(s, list) and s:
            value, keys = merge(s)
            for item in a:
                if isinstance(value, dict) and isinstance(item, dict):
                    for k in keys - set(item):
                        self.mismatches.append(f"{path}[].{k}: missing in the lab")
                    for k, v in value.items():
                        if k in item:
                            self.compare(v, item[k], f"{path}[].{k}".lstrip("."), k)
                    self.covered.add(path + "[]")
                else:
                    self.compare(value, item, path + "[]", key)


def check(
    sample_doc: Any, lab_doc: Any, nullable: set[str], uncovered_ok: dict[str, str] | None = None
) -> None:
    shape = Shape(nullable)
    shape.expect(sample_doc, "", "")
    shape.compare(sample_doc, lab_doc)
    assert shape.mismatches == []
    missing = shape.expected - shape.covered - {""} - set(uncovered_ok or {})
    assert missing == set(), "sample paths the lab never produced"


def test_the_comparator_catches_what_it_should() -> None:
    good = {"a": 1, "b": [{"c": "x", "d": None}], "metadata": {"k": "v"}}
    check(good, {"a": 2, "b": [{"c": "y", "d": 3}], "metadata": {"z": "w"}, "extra": True}, set())
    for bad in (
        {"a": "1", "b": [{"c": "y"}], "metadata": {}},  # wrong type
        {"b": [{"c": "y"}], "metadata": {}},  # missing key
        {"a": 1, "b": [{"d": 1}], "metadata": {}},  # missing key in a list element
        {"a": 1, "b": [], "metadata": {}},  # never produced b[].c
        {"a": 1, "b": [{"c": "y"}], "metadata": {"k": 1}},  # map value of the wrong type
    ):
        with pytest.raises(AssertionError):
            check(good, bad, set())
    with pytest.raises(AssertionError):
        check({"a": 1}, {"a": None}, set())  # null where the sample is not
    check({"a": 1}, {"a": None}, {"a"}, {"a": "nullable and never set"})


# --- Nova ----------------------------------------------------------------------------------------

NOVA_SERVER_NULLS = null_keys(
    sample("nova/servers/v2.100/server-get-resp.json"),
    sample("nova/servers/v2.100/servers-details-resp.json"),
    sample("nova/servers/v2.47/servers-details-resp.json"),
) | set(NOVA_NULLABLE)


@pytest.mark.parametrize(
    ("relpath", "mv", "path"),
    [
        ("nova/servers/v2.47/servers-details-resp.json", "2.47", "/servers/detail?all_tenants=1&limit=40"),
        ("nova/servers/v2.100/servers-details-resp.json", "2.100", "/servers/detail?all_tenants=1&limit=40"),
        ("nova/os-hypervisors/v2.53/hypervisors-detail-resp.json", "2.53", "/os-hypervisors/detail?limit=5"),
        ("nova/os-hypervisors/v2.88/hypervisors-detail-resp.json", "2.88", "/os-hypervisors/detail?limit=5"),
        ("nova/os-services/v2.53/services-list-get-resp.json", "2.53", "/os-services"),
        ("nova/flavors/v2.75/flavors-detail-resp.json", "2.75", "/flavors/detail"),
    ],
)
async def test_nova_lists(api: Api, admin: str, relpath: str, mv: str, path: str) -> None:
    reply = await api.nova("GET", path, admin, mv=mv)
    assert reply.status == 200
    check(sample(relpath), reply.body, NOVA_SERVER_NULLS | null_keys(sample(relpath)))


async def test_nova_versions(api: Api, lab: Lab) -> None:
    reply = await api.call("GET", lab.urls["compute"].removesuffix("/v2.1") + "/")
    check(sample("nova/versions/versions-get-resp.json"), reply.body, set())


async def test_nova_server_show(api: Api, lab: Lab, admin: str) -> None:
    s = next(s for s in lab.scenario.servers.values() if s.volumes and s.host and s.pinned_az)
    reply = await api.nova("GET", f"/servers/{s.id}", admin, mv="2.100")
    check(sample("nova/servers/v2.100/server-get-resp.json"), reply.body, NOVA_SERVER_NULLS)


async def test_flavor_extra_specs(api: Api, lab: Lab, admin: str) -> None:
    flavor = next(f for f in lab.scenario.flavors if f.gpu_alias)
    reply = await api.nova("GET", f"/flavors/{flavor.id}/os-extra_specs", admin)
    check(sample("nova/flavor-extra-specs/flavor-extra-specs-list-resp.json"), reply.body, set())


@pytest.mark.parametrize(
    ("request_sample", "response_sample"),
    [
        ("service-disable-log-put-req.json", "service-disable-log-put-resp.json"),
        ("service-enable-put-req.json", "service-enable-put-resp.json"),
    ],
)
async def test_service_updates(
    api: Api, lab: Lab, admin: str, request_sample: str, response_sample: str
) -> None:
    svc = next(s for s in lab.scenario.services if s.binary == "nova-compute")
    body = sample(f"nova/os-services/v2.53/{request_sample}")
    reply = await api.nova("PUT", f"/os-services/{svc.id}", admin, mv="2.53", body=body)
    assert reply.status == 200
    expected = sample(f"nova/os-services/v2.53/{response_sample}")
    check(expected, reply.body, null_keys(expected))
    assert reply.body["service"]["status"] == expected["service"]["status"]


def healthy_servers(lab: Lab) -> list[Server]:
    out = []
    for s in lab.scenario.servers.values():
        host = lab.scenario.hosts_by_name.get(s.host or "")
        ok = host is not None and host.service is not None and host.service.up and not host.service.disabled
        if ok and s.vm_state == "active" and not s.gpus and not s.vgpu_on:
            out.append(s)
    return out


async def test_migrations(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    """Real request bodies start the moves; the lists of moves match the real answers."""
    lab.compute.timings.live_bandwidth_bps = 2**28  # a slow copy keeps the live migration running
    live, cold, other = healthy_servers(lab)[:3]
    dests = [
        h.name
        for h in lab.scenario.compute_hosts
        if h.name not in (live.host, cold.host)
        and h.service is not None
        and h.service.up
        and not h.service.disabled
    ]
    body = sample("nova/os-migrate-server/v2.68/live-migrate-server.json")
    body["os-migrateLive"]["host"] = dests[0]
    assert (await api.nova("POST", f"/servers/{live.id}/action", admin, mv="2.68", body=body)).status == 202
    body = sample("nova/os-migrate-server/v2.56/migrate-server.json")
    body["migrate"]["host"] = dests[0]
    assert (await api.nova("POST", f"/servers/{cold.id}/action", admin, mv="2.56", body=body)).status == 202
    assert other.host is not None
    source = lab.scenario.hosts_by_name[other.host]
    assert source.service is not None
    await api.nova("PUT", f"/os-services/{source.service.id}", admin, mv="2.53", body={"forced_down": True})
    body = sample("nova/os-evacuate/v2.95/server-evacuate-req.json")
    body["evacuate"]["host"] = dests[1]
    assert (await api.nova("POST", f"/servers/{other.id}/action", admin, mv="2.95", body=body)).status == 200
    await clock.advance(5)

    listed = await api.nova("GET", "/os-migrations", admin, mv="2.80")
    assert {m["migration_type"] for m in listed.body["migrations"]} == {
        "live-migration",
        "migration",
        "evacuation",
    }
    expected = sample("nova/os-migrations/v2.80/migrations-get.json")
    check(expected, listed.body, null_keys(expected))

    index = await api.nova("GET", f"/servers/{live.id}/migrations", admin, mv="2.80")
    assert [m["status"] for m in index.body["migrations"]] == ["running"]
    expected = sample("nova/server-migrations/v2.80/migrations-index.json")
    check(expected, index.body, null_keys(expected))
    mid = index.body["migrations"][0]["id"]
    one = await api.nova("GET", f"/servers/{live.id}/migrations/{mid}", admin, mv="2.80")
    expected = sample("nova/server-migrations/v2.80/migrations-get.json")
    check(expected, one.body, null_keys(expected))


# --- Ironic --------------------------------------------------------------------------------------

IRONIC_NULLS = null_keys(
    sample("ironic/nodes-list-details-response.json"),
    sample("ironic/node-show-response.json"),
    sample("ironic/node-create-response.json"),
    sample("ironic/node-get-state-response.json"),
)


async def test_ironic_node_list(api: Api, admin: str) -> None:
    reply = await api.ironic("GET", "/v1/nodes/detail", admin)
    check(sample("ironic/nodes-list-details-response.json"), reply.body, IRONIC_NULLS, IRONIC_UNCOVERED)


async def test_ironic_node_show_and_states(api: Api, lab: Lab, admin: str) -> None:
    node = next(n for n in lab.scenario.nodes if n.provision_state == "active")
    shown = await api.ironic("GET", f"/v1/nodes/{node.uuid}", admin)
    check(sample("ironic/node-show-response.json"), shown.body, IRONIC_NULLS, IRONIC_UNCOVERED)
    states = await api.ironic("GET", f"/v1/nodes/{node.uuid}/states", admin)
    check(sample("ironic/node-get-state-response.json"), states.body, IRONIC_NULLS)


async def test_ironic_node_create(api: Api, admin: str) -> None:
    reply = await api.ironic(
        "POST", "/v1/nodes", admin, body=sample("ironic/node-create-request-dynamic.json")
    )
    assert reply.status == 201
    check(sample("ironic/node-create-response.json"), reply.body, IRONIC_NULLS, IRONIC_UNCOVERED)


@pytest.mark.parametrize(
    ("state", "request_sample", "path"),
    [
        ("enroll", "node-set-manage-state.json", "states/provision"),
        ("manageable", "node-set-available-state.json", "states/provision"),
        ("manageable", "node-set-provision-state.json", "states/provision"),
        ("available", "node-set-active-state.json", "states/provision"),
        ("available", "node-set-power-off.json", "states/power"),
        ("active", "node-maintenance-request.json", "maintenance"),
    ],
)
async def test_ironic_accepts_the_request_samples(
    api: Api, lab: Lab, admin: str, state: str, request_sample: str, path: str
) -> None:
    node = next(n for n in lab.scenario.nodes if n.provision_state == state and not n.maintenance)
    node.instance_info.setdefault("image_source", lab.scenario.images[0].id)
    reply = await api.ironic(
        "PUT", f"/v1/nodes/{node.uuid}/{path}", admin, body=sample(f"ironic/{request_sample}")
    )
    assert reply.status == 202, reply.body
