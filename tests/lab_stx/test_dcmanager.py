"""dcmanager of the lab: subclouds with dcmanager's hyphenated keys, management changes with a
sync audit over simulated time, refusals and faults."""

from __future__ import annotations

import aiohttp

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.scenario import Scenario
from sovereign_tui.lab.starlingx_sim import StarlingxSim
from sovereign_tui.lab.timeline import Timeline

from .conftest import TIMINGS, Stx

HYPHENATED = {
    "id",
    "name",
    "management-state",
    "availability-status",
    "deploy-status",
    "software-version",
    "region-name",
    "error-description",
}


async def subclouds(stx: Stx, token: str) -> dict[str, dict]:
    reply = await stx.dcmanager("GET", "/subclouds", token)
    assert reply.status == 200
    return {sc["name"]: sc for sc in reply.body["subclouds"]}


def derived_sync(sc: dict) -> str:
    values = {e["sync_status"] for e in sc["endpoint_sync_status"]}
    return "out-of-sync" if "out-of-sync" in values else "in-sync" if values == {"in-sync"} else "unknown"


async def test_subclouds_carry_the_hyphenated_keys(stx: Stx, admin: str) -> None:
    found = await subclouds(stx, admin)
    assert set(found) == {sc.name for sc in stx.sim.subclouds}
    for name, sc in found.items():
        assert HYPHENATED | {"sync_status", "endpoint_sync_status"} <= set(sc), name
        assert not {k.replace("-", "_") for k in HYPHENATED if "-" in k} & set(sc)  # never snake_case
        assert sc["management-state"] in ("managed", "unmanaged")
        assert sc["availability-status"] in ("online", "offline")
        assert all(set(e) == {"endpoint_type", "sync_status"} for e in sc["endpoint_sync_status"])
        assert sc["sync_status"] == derived_sync(sc)
    states = {(sc["management-state"], sc["availability-status"], sc["sync_status"]) for sc in found.values()}
    # The lab's subclouds cover what an operator meets: in sync, drifted, offline, unmanaged.
    assert {("managed", "online", "in-sync"), ("managed", "online", "out-of-sync")} <= states
    assert ("managed", "offline", "unknown") in states
    assert any(sc["management-state"] == "unmanaged" for sc in found.values())


async def test_subclouds_follow_the_scenario_sites(clock: FakeClock) -> None:
    scenario = Scenario.generate(2500, seed=1)
    sim = StarlingxSim(scenario, Timeline(clock), far_edge=2)
    edge = [s.name for s in scenario.sites if s.kind == "edge"]
    assert edge  # a lab that size has more than one site
    assert [s.name for s in sim.subclouds] == [*edge, "edge-01", "edge-02"]
    assert all(s.site == s.name for s in sim.subclouds[: len(edge)])
    assert sim.system.name == scenario.sites[0].name
    standalone = StarlingxSim(scenario, Timeline(clock), distributed=False)
    assert standalone.subclouds == [] and standalone.system.distributed_cloud_role is None


async def test_unmanage_then_manage_audits_the_endpoints(stx: Stx, clock: FakeClock, admin: str) -> None:
    drifted = next(sc for sc in (await subclouds(stx, admin)).values() if sc["sync_status"] == "out-of-sync")
    name = drifted["name"]
    drifted_eps = {
        e["endpoint_type"] for e in drifted["endpoint_sync_status"] if e["sync_status"] == "out-of-sync"
    }
    alarms = {a.entity_instance_id for a in stx.sim.fm.alarms.values() if a.alarm_id == "280.002"}
    assert {f"subcloud={name}.resource={ep}" for ep in drifted_eps} <= alarms

    reply = await stx.dcmanager("PATCH", f"/subclouds/{name}", admin, {"management-state": "unmanaged"})
    assert reply.status == 200
    assert reply.body["management-state"] == "unmanaged" and reply.body["sync_status"] == "unknown"
    assert not any(a.entity_instance_id.startswith(f"subcloud={name}.") for a in stx.sim.fm.alarms.values())

    reply = await stx.dcmanager(
        "PATCH", f"/subclouds/{drifted['id']}", admin, {"management-state": "managed"}
    )
    assert reply.status == 200 and reply.body["management-state"] == "managed"
    assert reply.body["sync_status"] == "unknown"  # until the audit
    await clock.advance(TIMINGS.sync_s - 1)
    assert (await subclouds(stx, admin))[name]["sync_status"] == "unknown"
    await clock.advance(1)
    after = (await subclouds(stx, admin))[name]
    assert after["sync_status"] == "out-of-sync"  # the drift is still there
    assert {
        e["endpoint_type"] for e in after["endpoint_sync_status"] if e["sync_status"] == "out-of-sync"
    } == drifted_eps


async def test_refusals_and_form_data(stx: Stx, admin: str, demo: str) -> None:
    found = await subclouds(stx, admin)
    offline = next(
        sc
        for sc in found.values()
        if sc["availability-status"] == "offline" and sc["management-state"] == "unmanaged"
    )
    refused = await stx.dcmanager(
        "PATCH", f"/subclouds/{offline['name']}", admin, {"management-state": "managed"}
    )
    assert refused.status == 400 and "online" in refused.fault
    again = await stx.dcmanager(
        "PATCH", f"/subclouds/{offline['name']}", admin, {"management-state": "unmanaged"}
    )
    assert again.status == 400 and "already unmanaged" in again.fault
    bogus = await stx.dcmanager(
        "PATCH", f"/subclouds/{offline['name']}", admin, {"management-state": "sideways"}
    )
    assert bogus.status == 400
    assert (await stx.dcmanager("GET", "/subclouds/nowhere", admin)).status == 404
    healthy = next(sc for sc in found.values() if sc["sync_status"] == "in-sync")
    denied = await stx.dcmanager(
        "PATCH", f"/subclouds/{healthy['name']}", demo, {"management-state": "unmanaged"}
    )
    assert denied.status == 403
    form = aiohttp.FormData({"management-state": "unmanaged"})
    reply = await stx.dcmanager("PATCH", f"/subclouds/{healthy['name']}", admin, data=form)
    assert reply.status == 200 and reply.body["management-state"] == "unmanaged"


async def test_faults_hit_dcmanager_alone(stx: Stx, admin: str) -> None:
    stx.lab.faults.set("dcmanager", error_rate=1.0)
    reply = await stx.dcmanager("GET", "/subclouds", admin)
    assert reply.status == 503 and reply.fault == "Injected fault"
    assert (await stx.sysinv("GET", "/ihosts", admin)).status == 200
