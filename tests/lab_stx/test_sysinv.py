"""sysinv of the lab: hosts built from the scenario, lock and unlock walking their states over
simulated time, refusals in sysinv's error format, paging, auth and faults."""

from __future__ import annotations

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.starlingx_sim import StxHost

from .conftest import TIMINGS, Stx

FIELDS = {
    "uuid",
    "hostname",
    "personality",
    "subfunctions",
    "administrative",
    "operational",
    "availability",
    "task",
    "uptime",
    "mgmt_ip",
    "capabilities",
    "config_status",
}
State = tuple[str, str, str, str]


def state(host: dict) -> State:
    return host["administrative"], host["operational"], host["availability"], host["task"]


async def walk(
    stx: Stx, clock: FakeClock, token: str, uuid: str, until: State, limit_s: int = 300
) -> list[State]:
    """The distinct states a host goes through, one simulated second at a time, until `until`."""
    seen: list[State] = []
    for _ in range(limit_s):
        current = state((await stx.sysinv("GET", f"/ihosts/{uuid}", token)).body)
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == until:
            return seen
        await clock.advance(1)
    raise AssertionError(f"host {uuid} stuck after {seen}")


def idle_worker(stx: Stx) -> StxHost:
    return next(
        h
        for h in stx.sim.hosts
        if h.personality == "worker"
        and (h.administrative, h.availability, h.task) == ("unlocked", "available", "")
    )


def alarm_ids(stx: Stx, entity: str) -> set[str]:
    return {a.alarm_id for a in stx.sim.fm.alarms.values() if a.entity_instance_id == entity}


async def test_hosts_are_the_central_controllers_and_hypervisors(stx: Stx, admin: str) -> None:
    reply = await stx.sysinv("GET", "/ihosts", admin)
    assert reply.status == 200
    hosts = {h["hostname"]: h for h in reply.body["ihosts"]}
    sc = stx.lab.scenario
    central = sc.sites[0].name
    workers = {h.name: h for h in sc.hosts if h.role == "compute" and h.site == central}
    assert set(hosts) == set(sc.controllers[:2]) | set(workers)
    for name, h in hosts.items():
        assert set(h) >= FIELDS, name
        assert h["personality"] == ("worker" if name in workers else "controller")
    for name, host in workers.items():
        h, svc = hosts[name], host.service
        assert h["mgmt_ip"] == host.ip  # the same machine as the Nova hypervisor
        assert svc is not None
        if svc.disabled:
            assert state(h)[:3] == ("locked", "disabled", "online")
        elif not svc.alive:
            assert state(h)[:3] == ("unlocked", "disabled", "offline")
        else:
            assert state(h)[:2] == ("unlocked", "enabled")
    roles = sorted(
        h["capabilities"]["Personality"] for h in hosts.values() if h["personality"] == "controller"
    )
    assert roles == ["Controller-Active", "Controller-Standby"]


async def test_a_host_by_uuid_or_name_and_the_system(stx: Stx, admin: str) -> None:
    host = stx.sim.hosts[3]
    by_uuid = await stx.sysinv("GET", f"/ihosts/{host.uuid}", admin)
    by_name = await stx.sysinv("GET", f"/ihosts/{host.hostname}", admin)
    assert by_uuid.body["hostname"] == by_name.body["hostname"] == host.hostname
    missing = await stx.sysinv("GET", "/ihosts/no-such-host", admin)
    assert missing.status == 404 and "no-such-host" in missing.fault
    system = (await stx.sysinv("GET", "/isystems", admin)).body["isystems"][0]
    assert system["name"] == stx.lab.scenario.sites[0].name
    assert system["distributed_cloud_role"] == "systemcontroller"
    assert system["uuid"] == by_uuid.body["isystem_uuid"]


async def test_lock_then_unlock_walk_their_states_and_the_alarm(
    stx: Stx, clock: FakeClock, admin: str
) -> None:
    host = idle_worker(stx)
    entity = f"host={host.hostname}"
    reply = await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": "/action", "value": "lock"}]
    )
    assert reply.status == 200
    assert state(reply.body) == ("unlocked", "enabled", "available", "Locking")
    locked = ("locked", "disabled", "online", "")
    assert await walk(stx, clock, admin, host.uuid, locked) == [state(reply.body), locked]
    assert "200.001" in alarm_ids(stx, entity)

    reply = await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": "/action", "value": "unlock"}]
    )
    assert reply.status == 200 and reply.body["task"] == "Unlocking"
    available = ("unlocked", "enabled", "available", "")
    seen = await walk(stx, clock, admin, host.uuid, available)
    assert seen[0] == ("locked", "disabled", "online", "Unlocking")
    assert ("unlocked", "disabled", "offline", "Rebooting") in seen  # it reboots on the way
    assert seen[-1] == available
    assert "200.001" not in alarm_ids(stx, entity)
    again = (await stx.sysinv("GET", f"/ihosts/{host.uuid}", admin)).body
    assert again["uptime"] < TIMINGS.unlock_s  # it rebooted


async def test_invalid_actions_are_refused_with_sysinv_faults(stx: Stx, admin: str) -> None:
    async def act(host: StxHost, action: str, path: str = "/action") -> tuple[int, str]:
        r = await stx.sysinv(
            "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": path, "value": action}]
        )
        return r.status, r.fault if r.status >= 400 else ""

    worker = idle_worker(stx)
    status, fault = await act(worker, "unlock")
    assert status == 400 and "already 'unlocked'" in fault
    active = next(h for h in stx.sim.hosts if h.capabilities.get("Personality") == "Controller-Active")
    assert await act(active, "lock") == (400, "Rejected: Can not lock an active controller.")
    status, fault = await act(worker, "explode")
    assert status == 400 and "Invalid action 'explode'" in fault
    status, fault = await act(worker, "lock", path="/hostname")
    assert status == 400 and "/hostname" in fault
    assert (await act(worker, "lock"))[0] == 200
    status, fault = await act(worker, "unlock")
    assert status == 400 and "in progress (Locking)" in fault
    not_a_patch = await stx.sysinv("PATCH", f"/ihosts/{worker.uuid}", admin, {"action": "lock"})
    assert not_a_patch.status == 400
    locked = next(h for h in stx.sim.hosts if h.administrative == "locked" and not h.task)
    status, fault = await act(locked, "lock")
    assert status == 400 and "already 'locked'" in fault


async def test_force_lock_of_the_active_controller_needs_a_standby(
    stx: Stx, clock: FakeClock, admin: str
) -> None:
    active, standby = (
        next(h for h in stx.sim.hosts if h.capabilities.get("Personality") == p)
        for p in ("Controller-Active", "Controller-Standby")
    )
    patch = [{"op": "replace", "path": "/action", "value": "force-lock"}]
    reply = await stx.sysinv("PATCH", f"/ihosts/{active.uuid}", admin, patch)
    assert reply.status == 200 and reply.body["task"] == "Locking"
    assert reply.body["capabilities"]["Personality"] == "Controller-Standby"
    now_active = (await stx.sysinv("GET", f"/ihosts/{standby.uuid}", admin)).body
    assert now_active["capabilities"]["Personality"] == "Controller-Active"
    await walk(stx, clock, admin, active.uuid, ("locked", "disabled", "online", ""))
    # The old active controller is locked now: the new one has no standby to hand over to.
    reply = await stx.sysinv("PATCH", f"/ihosts/{standby.uuid}", admin, patch)
    assert reply.status == 400 and "only active controller" in reply.fault


async def test_swact_hands_activity_to_the_standby(stx: Stx, admin: str) -> None:
    active = next(h for h in stx.sim.hosts if h.capabilities.get("Personality") == "Controller-Active")
    standby = next(h for h in stx.sim.hosts if h.capabilities.get("Personality") == "Controller-Standby")
    patch = [{"op": "replace", "path": "/action", "value": "swact"}]
    assert (await stx.sysinv("PATCH", f"/ihosts/{standby.uuid}", admin, patch)).status == 400
    assert (await stx.sysinv("PATCH", f"/ihosts/{active.uuid}", admin, patch)).status == 200
    after = {
        h["hostname"]: h["capabilities"]["Personality"]
        for h in (await stx.sysinv("GET", "/ihosts", admin)).body["ihosts"]
        if h["personality"] == "controller"
    }
    assert after == {active.hostname: "Controller-Standby", standby.hostname: "Controller-Active"}


async def test_listeners_see_every_change_of_a_host(stx: Stx, clock: FakeClock, admin: str) -> None:
    seen: list[tuple[str, str]] = []
    stx.sim.listeners.append(lambda h: seen.append((h.hostname, h.administrative)))
    host = idle_worker(stx)
    await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", admin, [{"op": "replace", "path": "/action", "value": "lock"}]
    )
    await walk(stx, clock, admin, host.uuid, ("locked", "disabled", "online", ""))
    assert seen == [(host.hostname, "unlocked"), (host.hostname, "locked")]


async def test_pages_follow_next_links_to_every_host(stx: Stx, admin: str) -> None:
    full = [h["uuid"] for h in (await stx.sysinv("GET", "/ihosts", admin)).body["ihosts"]]
    assert len(full) > 3
    collected: list[str] = []
    url: str | None = stx.services.urls["platform"] + "/ihosts?limit=3"
    pages = 0
    while url is not None:
        body = (await stx.call("GET", url, admin)).body
        collected += [h["uuid"] for h in body["ihosts"]]
        url = body.get("next") if body["ihosts"] else None
        pages += 1
    assert collected == full
    assert pages >= -(-len(full) // 3)


async def test_auth_roles_and_faults(stx: Stx, admin: str, demo: str) -> None:
    anonymous = await stx.sysinv("GET", "/ihosts", None)
    assert anonymous.status == 401 and "WWW-Authenticate" in anonymous.headers
    assert (await stx.sysinv("GET", "/ihosts", demo)).status == 200
    host = idle_worker(stx)
    denied = await stx.sysinv(
        "PATCH", f"/ihosts/{host.uuid}", demo, [{"op": "replace", "path": "/action", "value": "lock"}]
    )
    assert denied.status == 403 and host.task == ""
    stx.lab.faults.set("sysinv", error_rate=1.0, error_status=500)
    broken = await stx.sysinv("GET", "/ihosts", admin)
    assert broken.status == 500 and broken.fault == "Injected fault"
    assert (await stx.fm("GET", "/v1/alarms", admin)).status == 200  # only sysinv is hit
    stx.lab.faults.set("sysinv", error_rate=0.0, malformed_rate=1.0)
    cut = await stx.sysinv("GET", "/ihosts", admin)
    assert cut.status == 200 and cut.body is None  # half a JSON document
