"""Fault injection: errors, latency and hangs on the lab's clock, malformed bodies, the admin
endpoint, and the behaviour knobs (failure rates, dead compute hosts)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.faults import FaultSpec
from sovereign_tui.lab.server import Lab

from .conftest import Api


def healthy(lab: Lab, host: str | None) -> bool:
    h = lab.scenario.hosts_by_name.get(host or "")
    return h is not None and h.service is not None and h.service.up and not h.service.disabled


async def test_errors_in_each_services_own_format(api: Api, lab: Lab, admin: str) -> None:
    lab.faults.set("nova", error_rate=1.0, error_status=503)
    lab.faults.set("ironic", error_rate=1.0, error_status=500)
    nova = await api.nova("GET", "/servers", admin)
    assert nova.status == 503
    assert nova.body["serviceUnavailable"]["code"] == 503
    ironic = await api.ironic("GET", "/v1/nodes", admin)
    assert ironic.status == 500
    assert "faultstring" in orjson.loads(ironic.body["error_message"])
    lab.faults.clear("nova")
    assert (await api.nova("GET", "/servers", admin)).status == 200
    assert (await api.ironic("GET", "/v1/nodes", admin)).status == 500
    assert lab.faults.injected["nova:error"] == 1


async def test_path_limits_a_fault(api: Api, lab: Lab, admin: str) -> None:
    lab.faults.set("nova", error_rate=1.0, path="/v2.1/os-hypervisors")
    assert (await api.nova("GET", "/servers/detail", admin)).status == 200
    assert (await api.nova("GET", "/os-hypervisors/detail", admin)).status == 503


async def test_error_draws_are_repeatable_for_a_seed(clock: FakeClock) -> None:
    async def statuses() -> list[int]:
        async with Lab(hosts=4, seed=3, clock=clock) as lab, aiohttp.ClientSession() as http:
            api = Api(http, lab)
            token = await api.token()
            lab.faults.set("nova", error_rate=0.5)
            return [(await api.nova("GET", "/flavors", token)).status for _ in range(30)]

    first, second = await statuses(), await statuses()
    assert first == second
    assert set(first) == {200, 503}


async def test_latency_waits_on_the_lab_clock(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    lab.faults.set("nova", latency_s=2.0)
    task = asyncio.create_task(api.nova("GET", "/servers", admin))
    await lab.faults.wait_waiting(1)
    await clock.advance(1.9)
    assert not task.done()
    await clock.advance(0.2)
    assert (await task).status == 200


async def test_a_hang_outlasts_the_client_and_ends_in_504(
    api: Api, lab: Lab, clock: FakeClock, admin: str
) -> None:
    lab.faults.set("ironic", timeout_rate=1.0, hang_s=600)
    patient = asyncio.create_task(api.ironic("GET", "/v1/nodes", admin))
    await lab.faults.wait_waiting(1)
    await clock.advance(601)
    assert (await patient).status == 504
    quick = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(asyncio.TimeoutError):
        async with api.http.get(
            lab.urls["baremetal"] + "/v1/nodes", headers={"X-Auth-Token": admin}, timeout=quick
        ):
            pass


async def test_stopping_the_lab_ends_hangs(clock: FakeClock) -> None:
    lab = Lab(hosts=4, seed=1, clock=clock)
    await lab.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, lab)
        token = await api.token()
        lab.faults.set("nova", timeout_rate=1.0)
        hung = asyncio.create_task(api.nova("GET", "/servers", token))
        await lab.faults.wait_waiting(1)
        await lab.stop()
        reply = await hung
        assert reply.status == 504


async def test_malformed_bodies_keep_status_and_type(api: Api, lab: Lab, admin: str) -> None:
    lab.faults.set("nova", malformed_rate=1.0)
    reply = await api.nova("GET", "/servers/detail?all_tenants=1", admin)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body is None  # not parseable
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(reply.raw)


def test_fault_specs_are_checked() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultSpec(error_rate=1.5)
    with pytest.raises(ValueError, match="error_status"):
        FaultSpec(error_status=200)


async def test_admin_endpoint(api: Api, lab: Lab, admin: str) -> None:
    url = lab.urls["lab"]
    set_reply = await api.call("PUT", f"{url}/faults/nova", body={"error_rate": 1.0, "error_status": 502})
    assert set_reply.status == 200
    assert set_reply.body["error_status"] == 502
    assert (await api.nova("GET", "/servers", admin)).status == 502
    listed = await api.call("GET", f"{url}/faults")
    assert listed.body["nova"]["error_rate"] == 1.0
    assert (await api.call("PUT", f"{url}/faults/nova", body={"nonsense": 1})).status == 400
    assert (await api.call("PUT", f"{url}/faults/nova", body={"error_rate": 2})).status == 400
    assert (await api.call("DELETE", f"{url}/faults/nova")).status == 204
    assert (await api.nova("GET", "/servers", admin)).status == 200
    index = await api.call("GET", url + "/")
    assert index.body["urls"] == lab.urls
    assert index.body["scenario"]["servers"] == len(lab.scenario.servers)


async def test_migration_failure_rate(api: Api, lab: Lab, clock: FakeClock, admin: str) -> None:
    reply = await api.call("PUT", lab.urls["lab"] + "/behaviour", body={"migration_failure_rate": 1.0})
    assert reply.body["migration_failure_rate"] == 1.0
    assert (
        await api.call("PUT", lab.urls["lab"] + "/behaviour", body={"provision_failure_rate": 3})
    ).status == 400
    s = next(
        s
        for s in lab.scenario.servers.values()
        if s.vm_state == "active" and not s.gpus and not s.vgpu_on and healthy(lab, s.host)
    )
    body = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    await api.nova("POST", f"/servers/{s.id}/action", admin, body=body)
    await clock.advance(600)
    record = (await api.nova("GET", f"/os-migrations?instance_uuid={s.id}", admin)).body["migrations"][0]
    assert record["status"] == "failed"


async def test_a_compute_host_that_stops_reporting(api: Api, lab: Lab, admin: str) -> None:
    s = next(s for s in lab.scenario.servers.values() if s.vm_state == "active" and healthy(lab, s.host))
    reply = await api.call("PUT", f"{lab.urls['lab']}/nova/hosts/{s.host}/alive", body={"alive": False})
    assert reply.status == 204
    services = (await api.nova("GET", f"/os-services?host={s.host}", admin, "2.53")).body["services"]
    assert [x["state"] for x in services] == ["down"]
    shown = (await api.nova("GET", f"/servers/{s.id}", admin)).body["server"]
    assert shown["host_status"] == "UNKNOWN"
    evacuated = await api.nova("POST", f"/servers/{s.id}/action", admin, body={"evacuate": {}})
    assert evacuated.status == 200
