"""The StarlingX collector against the lab's sysinv, dcmanager and fm over real HTTP, through
openstacksdk's clouds.yaml loader and keystoneauth: what it reads equals the lab's own state,
one failing service leaves the others fresh, and an expired token costs one re-authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from collectors.nova import NovaCollector
from collectors.openstack import CloudRef, CloudSession
from collectors.starlingx import StarlingxCollector, _Alarms, entity_part
from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.server import CLOUD, Lab
from sovereign_tui.lab.starlingx import StarlingxServices, start_starlingx
from sovereign_tui.lab.starlingx_sim import StxTimings
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store

TIMINGS = StxTimings(lock_s=10.0)
SYSINV, DCMANAGER, FM = (f"starlingx-{s}:{CLOUD}" for s in ("sysinv", "dcmanager", "fm"))


class Rig:
    def __init__(
        self, lab: Lab, services: StarlingxServices, clouds_yaml: Path, page_size: int = 1000
    ) -> None:
        self.lab = lab
        self.clock = lab.clock
        self.sim = services.sim
        self.ref = CloudRef(CLOUD, str(clouds_yaml))
        session = CloudSession(self.ref)
        self.stx = StarlingxCollector(self.ref, interval_s=30, session=session, page_size=page_size)
        self.nova = NovaCollector(self.ref, interval_s=30, session=session)
        self.store = Store(self.clock)
        self.poller = Poller(self.store, clock=self.clock)
        self.poller.set_targets(self.stx.targets() + self.nova.targets())

    async def poll(self) -> None:
        await self.poller.run_once()

    def health(self, target: str) -> tuple[bool | None, str | None]:
        h = self.poller.health(target)
        return h.up, h.last_error


async def make_rig(
    tmp_path: Path, *, page_size: int = 1000, distributed: bool = True
) -> tuple[Rig, StarlingxServices]:
    lab = Lab(hosts=24, seed=5, clock=FakeClock())
    await lab.start()
    services = await start_starlingx(lab, timings=TIMINGS, distributed=distributed)
    files = lab.write_config(tmp_path)
    return Rig(lab, services, files.clouds_yaml, page_size), services


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r, services = await make_rig(tmp_path)
    try:
        yield r
    finally:
        await r.poller.close()
        await services.stop()
        await r.lab.stop()


async def test_hosts_sites_and_alarms_equal_the_labs(rig: Rig) -> None:
    await rig.poll()
    for target in (SYSINV, DCMANAGER, FM, f"nova:{CLOUD}"):
        assert rig.health(target) == (True, None)
    snap = rig.store.snapshot()
    system = rig.sim.system.name
    facets = {h.name: h for h in snap.hosts if h.starlingx is not None}
    assert set(facets) == {h.hostname for h in rig.sim.hosts}
    for h in rig.sim.hosts:
        host = facets[h.hostname]
        f = host.starlingx
        assert f is not None
        assert (f.uuid, f.personality, f.administrative, f.operational, f.availability, f.task) == (
            h.uuid,
            h.personality,
            h.administrative,
            h.operational,
            h.availability,
            h.task or None,
        )
        assert f.site == host.site == system
        if h.personality == "worker":
            assert host.nova is not None  # the same machine as the hypervisor: joined by name
    sites = {s.name: s for s in snap.sites}
    assert set(sites) == {system} | {sc.name for sc in rig.sim.subclouds}
    assert sites[system].region == rig.sim.system.region_name
    for sc in rig.sim.subclouds:
        s = sites[sc.name]
        assert (
            s.management,
            s.availability,
            s.deploy_status,
            s.sync_status,
            s.software_version,
            s.region,
        ) == (
            sc.management_state,
            sc.availability_status,
            sc.deploy_status,
            sc.sync_status,
            sc.software_version,
            sc.region_name,
        )
    expected = {a.uuid: a for a in rig.sim.fm.active()}
    got = {a.id: a for a in snap.alarms}
    assert set(got) == set(expected)  # suppressed ones are left out, as fm alarm-list does
    for uuid, a in expected.items():
        alarm = got[uuid]
        assert (alarm.alarm_id, alarm.severity, alarm.entity, alarm.reason) == (
            a.alarm_id,
            a.severity,
            a.entity_instance_id,
            a.reason_text,
        )
        if a.entity_instance_id.startswith("host="):
            assert alarm.host == a.entity_instance_id.split(".")[0].removeprefix("host=")
            assert alarm.site == system
        elif a.entity_instance_id.startswith("subcloud="):
            assert alarm.host is None
            assert alarm.site == a.entity_instance_id.split(".")[0].removeprefix("subcloud=")


async def test_small_pages_read_the_same(tmp_path: Path) -> None:
    rig, services = await make_rig(tmp_path, page_size=3)
    try:
        await rig.poll()
        assert rig.health(SYSINV) == (True, None) and rig.health(FM) == (True, None)
        snap = rig.store.snapshot()
        assert sorted(h.name for h in snap.hosts if h.starlingx) == sorted(h.hostname for h in rig.sim.hosts)
        assert sorted(a.id for a in snap.alarms) == sorted(a.uuid for a in rig.sim.fm.active())
    finally:
        await rig.poller.close()
        await services.stop()
        await rig.lab.stop()


async def test_a_lock_shows_as_it_walks(rig: Rig) -> None:
    host = next(h for h in rig.sim.hosts if h.personality == "worker" and h.availability == "available")
    rig.sim.act(host, "lock")
    await rig.poll()
    f = next(h.starlingx for h in rig.store.snapshot().hosts if h.name == host.hostname)
    assert f is not None and (f.administrative, f.task) == ("unlocked", "Locking")
    await rig.clock.advance(TIMINGS.lock_s)  # type: ignore[attr-defined]
    await rig.poll()
    snap = rig.store.snapshot()
    f = next(h.starlingx for h in snap.hosts if h.name == host.hostname)
    assert f is not None and (f.administrative, f.operational, f.availability, f.task) == (
        "locked",
        "disabled",
        "online",
        None,
    )
    assert any(a.alarm_id == "200.001" and a.host == host.hostname for a in snap.alarms)


async def test_fm_errors_leave_hosts_and_subclouds_fresh(rig: Rig) -> None:
    await rig.poll()
    rig.lab.faults.set("fm", error_rate=1.0, error_status=500)
    await rig.poll()
    up, error = rig.health(FM)
    assert up is False
    assert error == "fm: HTTP 500 from /v1/alarms: Injected fault"
    assert rig.health(SYSINV) == (True, None) and rig.health(DCMANAGER) == (True, None)
    snap = rig.store.snapshot()
    assert snap.alarms and all(a.stale for a in snap.alarms)  # the last known, marked as such
    assert not any(h.starlingx.stale for h in snap.hosts if h.starlingx is not None)
    assert snap.sites and not any(s.stale for s in snap.sites)
    rig.lab.faults.clear("fm")
    await rig.poll()
    assert rig.health(FM) == (True, None)
    assert not any(a.stale for a in rig.store.snapshot().alarms)


async def test_a_malformed_sysinv_body_is_one_line_and_hits_sysinv_alone(rig: Rig) -> None:
    await rig.poll()
    rig.lab.faults.set("sysinv", malformed_rate=1.0)
    await rig.poll()
    up, error = rig.health(SYSINV)
    assert up is False and error is not None
    assert error.startswith("sysinv: malformed JSON from /v1/") and "\n" not in error
    assert rig.health(FM) == (True, None) and rig.health(DCMANAGER) == (True, None)
    snap = rig.store.snapshot()
    assert all(h.starlingx.stale for h in snap.hosts if h.starlingx is not None)
    assert not any(a.stale for a in snap.alarms)


async def test_an_expired_token_reauthenticates_once(rig: Rig) -> None:
    await rig.poll()
    issued = rig.lab.tokens.issued
    rig.lab.tokens.expire_all()
    await rig.poll()
    for target in (SYSINV, DCMANAGER, FM, f"nova:{CLOUD}"):
        assert rig.health(target) == (True, None)
    assert rig.lab.tokens.issued == issued + 1  # four targets, one shared session, one new token


async def test_a_standalone_system_has_no_dcmanager_and_that_is_no_error(tmp_path: Path) -> None:
    rig, services = await make_rig(tmp_path, distributed=False)
    try:
        assert "dcmanager" not in services.urls
        await rig.poll()
        assert rig.health(DCMANAGER) == (True, None)
        assert rig.health(SYSINV) == (True, None) and rig.health(FM) == (True, None)
        sites = rig.store.snapshot().sites
        assert [s.name for s in sites] == [rig.sim.system.name]
        assert not any(a.alarm_id.startswith("280.") for a in rig.store.snapshot().alarms)
    finally:
        await rig.poller.close()
        await services.stop()
        await rig.lab.stop()


def test_entity_ids_name_their_host_or_subcloud() -> None:
    assert entity_part("host=ctl-02", "host") == "ctl-02"
    assert entity_part("host=ctl-02.ntp=10.10.0.1", "host") == "ctl-02"
    assert entity_part("host=compute-0.processor=0", "host") == "compute-0"
    assert entity_part("subcloud=edge-03.resource=platform", "subcloud") == "edge-03"
    assert entity_part("subcloud=edge-03.resource=platform", "host") is None
    assert entity_part("system.certificate.mode=ssl", "host") is None
    assert entity_part("system=0f3c.host=node.a.b", "host") == "node.a.b"


def test_alarms_decode_under_either_key() -> None:
    item = {"uuid": "u1", "alarm_id": "200.001", "entity_instance_id": "host=a", "severity": "warning"}
    for key in ("alarms", "ialarms"):
        doc = msgspec.convert({key: [item]}, _Alarms)
        assert [a.uuid for a in (doc.alarms or doc.ialarms or [])] == ["u1"]


async def test_fm_goes_on_without_sysinv(rig: Rig) -> None:
    rig.lab.faults.set("sysinv", error_rate=1.0)
    await rig.poll()
    up, error = rig.health(SYSINV)
    assert up is False and error == "sysinv: HTTP 503 from /v1/isystems: Injected fault"
    assert rig.health(FM) == (True, None)
    alarms = rig.store.snapshot().alarms
    assert alarms
    for a in alarms:  # no system name to be had: the subcloud's own, or none
        assert a.site == entity_part(a.entity, "subcloud")
