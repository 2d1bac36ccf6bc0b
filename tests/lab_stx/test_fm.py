"""fm of the lab: alarms and their summary agree, suppression, queries, paging, and the alarms
that host locks and subcloud audits set and clear."""

from __future__ import annotations

from collections import Counter

from sovereign_tui.clock import FakeClock

from .conftest import TIMINGS, Stx

FIELDS = {
    "uuid",
    "alarm_id",
    "entity_instance_id",
    "severity",
    "timestamp",
    "reason_text",
    "mgmt_affecting",
    "degrade_affecting",
    "suppression_status",
}


async def alarms(stx: Stx, token: str, query: str = "") -> list[dict]:
    reply = await stx.fm("GET", f"/v1/alarms{query}", token)
    assert reply.status == 200, reply.body
    return list(reply.body["alarms"])


def expected_summary(listed: list[dict]) -> dict:
    n = Counter(a["severity"] for a in listed)
    status = "critical" if n["critical"] else "degraded" if n["major"] else "OK"
    return {
        "critical": n["critical"],
        "major": n["major"],
        "minor": n["minor"],
        "warnings": n["warning"],
        "status": status,
    }


async def test_alarms_and_summary_agree_with_and_without_suppressed(stx: Stx, admin: str) -> None:
    shown = await alarms(stx, admin)
    everything = await alarms(stx, admin, "?include_suppress=True")
    assert shown and all(set(a) >= FIELDS for a in everything)
    assert all(a["severity"] in ("critical", "major", "minor", "warning") for a in everything)
    assert all(a["mgmt_affecting"] in ("True", "False") for a in everything)
    suppressed = [a for a in everything if a["suppression_status"] == "suppressed"]
    assert suppressed  # the lab suppresses one kind of alarm
    assert {a["uuid"] for a in shown} == {a["uuid"] for a in everything} - {a["uuid"] for a in suppressed}
    summary = (await stx.fm("GET", "/v1/alarms/summary", admin)).body
    assert summary == expected_summary(shown)
    with_suppressed = (await stx.fm("GET", "/v1/alarms/summary?include_suppress=True", admin)).body
    assert with_suppressed == expected_summary(everything)
    timestamps = [a["timestamp"] for a in shown]
    assert timestamps == sorted(timestamps, reverse=True)  # newest first


async def test_host_alarms_name_hosts_that_sysinv_knows(stx: Stx, admin: str) -> None:
    names = {h["hostname"] for h in (await stx.sysinv("GET", "/ihosts", admin)).body["ihosts"]}
    hosts = {
        a["entity_instance_id"].split(".")[0].removeprefix("host=")
        for a in await alarms(stx, admin, "?include_suppress=True")
        if a["entity_instance_id"].startswith("host=")
    }
    assert hosts and hosts <= names
    locked = {
        h["hostname"]
        for h in (await stx.sysinv("GET", "/ihosts", admin)).body["ihosts"]
        if h["administrative"] == "locked"
    }
    flagged = {
        a["entity_instance_id"].removeprefix("host=")
        for a in await alarms(stx, admin)
        if a["alarm_id"] == "200.001"
    }
    assert flagged == locked


async def test_lock_sets_200_001_and_unlock_clears_it(stx: Stx, clock: FakeClock, admin: str) -> None:
    alarmed = {a["entity_instance_id"] for a in await alarms(stx, admin, "?include_suppress=True")}
    host = next(h for h in stx.sim.hosts if h.personality == "worker" and f"host={h.hostname}" not in alarmed)
    assert host.availability == "available"
    before = (await stx.fm("GET", "/v1/alarms/summary", admin)).body
    await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": "/action", "value": "lock"}]
    )
    await clock.advance(TIMINGS.lock_s)
    mine = await alarms(stx, admin, f"?q.field=entity_instance_id&q.op=eq&q.value=host={host.hostname}")
    assert [a["alarm_id"] for a in mine] == ["200.001"]
    assert mine[0]["severity"] == "warning" and host.hostname in mine[0]["reason_text"]
    during = (await stx.fm("GET", "/v1/alarms/summary", admin)).body
    assert during["warnings"] == before["warnings"] + 1
    await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": "/action", "value": "unlock"}]
    )
    await clock.advance(TIMINGS.unlock_s)
    assert await alarms(stx, admin, f"?q.field=entity_instance_id&q.value=host={host.hostname}") == []
    assert (await stx.fm("GET", "/v1/alarms/summary", admin)).body == before


async def test_queries_paging_show_and_delete(stx: Stx, admin: str, demo: str) -> None:
    everything = await alarms(stx, admin, "?include_suppress=True")
    critical = await alarms(stx, admin, "?include_suppress=True&q.field=severity&q.op=eq&q.value=critical")
    assert [a["uuid"] for a in critical] == [a["uuid"] for a in everything if a["severity"] == "critical"]
    assert (await stx.fm("GET", "/v1/alarms?q.field=colour&q.value=red", admin)).status == 400
    assert (await stx.fm("GET", "/v1/alarms?q.field=severity&q.op=lt&q.value=major", admin)).status == 400
    collected: list[str] = []
    url: str | None = stx.services.urls["faultmanagement"] + "/v1/alarms?include_suppress=True&limit=2"
    while url is not None:
        body = (await stx.call("GET", url, admin)).body
        collected += [a["uuid"] for a in body["alarms"]]
        url = body.get("next") if body["alarms"] else None
    assert collected == [a["uuid"] for a in everything]
    first = everything[0]
    shown = (await stx.fm("GET", f"/v1/alarms/{first['uuid']}", admin)).body
    assert shown["alarm_id"] == first["alarm_id"] and {"alarm_type", "probable_cause", "alarm_state"} <= set(
        shown
    )
    assert (await stx.fm("DELETE", f"/v1/alarms/{first['uuid']}", demo)).status == 403
    assert (await stx.fm("DELETE", f"/v1/alarms/{first['uuid']}", admin)).status == 204
    assert (await stx.fm("GET", f"/v1/alarms/{first['uuid']}", admin)).status == 404
    assert len(await alarms(stx, admin, "?include_suppress=True")) == len(everything) - 1


async def test_ialarms_clients_and_faults(stx: Stx, admin: str) -> None:
    assert (await stx.fm("GET", "/v1/alarms", None)).status == 401
    stx.lab.faults.set("fm", malformed_rate=1.0, path="/v1/alarms")
    cut = await stx.fm("GET", "/v1/alarms", admin)
    assert cut.status == 200 and cut.body is None
    stx.lab.faults.set("fm", malformed_rate=0.0, error_rate=1.0, error_status=500)
    broken = await stx.fm("GET", "/v1/alarms", admin)
    assert broken.status == 500 and broken.fault == "Injected fault"
    assert (await stx.dcmanager("GET", "/subclouds", admin)).status == 200
