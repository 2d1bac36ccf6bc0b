"""Nova and Ironic collectors against the embedded lab over real HTTP, through openstacksdk's
clouds.yaml loader and keystoneauth: what they read equals the lab's own scenario, and each
fault leaves the other source fresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collectors.ironic import IronicCollector
from collectors.nova import NovaCollector, gpus_of, negotiate
from collectors.openstack import CloudRef, CloudSession
from sovereign_tui.clock import SystemClock
from sovereign_tui.lab.server import Lab
from sovereign_tui.poller import Poller, PollError
from sovereign_tui.store import Store


class Rig:
    def __init__(self, lab: Lab, clouds_yaml: Path, page_size: int = 1000) -> None:
        self.lab = lab
        self.ref = CloudRef("sovereign-lab", str(clouds_yaml))
        session = CloudSession(self.ref)
        self.nova = NovaCollector(self.ref, interval_s=30, session=session, page_size=page_size)
        self.ironic = IronicCollector(self.ref, interval_s=30, session=session, page_size=page_size)
        self.store = Store()
        self.poller = Poller(self.store)
        self.poller.set_targets(self.nova.targets() + self.ironic.targets())

    async def poll(self, timeout_s: float | None = None) -> None:
        await self.poller.run_once(timeout_s)

    def health(self, target: str) -> tuple[bool | None, str | None]:
        h = self.poller.health(target)
        return h.up, h.last_error


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    lab = Lab(hosts=24, seed=3, clock=SystemClock())
    await lab.start()
    files = lab.write_config(tmp_path)
    r = Rig(lab, files.clouds_yaml, page_size=7)
    try:
        yield r
    finally:
        await r.poller.close()
        await lab.stop()


async def test_nova_reads_every_hypervisor_and_server_across_pages(rig: Rig) -> None:
    await rig.poll()
    assert rig.health("nova:sovereign-lab") == (True, None)
    assert rig.nova.version == (2, 100)  # negotiated from the lab's version document
    snap = rig.store.snapshot()
    scenario = rig.lab.scenario
    hypervisors = {h.name: h for h in scenario.compute_hosts}
    nova_hosts = {h.name: h.nova for h in snap.hosts if h.nova is not None}
    assert set(nova_hosts) == set(hypervisors)
    for name, facet in nova_hosts.items():
        svc = hypervisors[name].service
        assert svc is not None
        assert facet.status == ("disabled" if svc.disabled else "enabled")
        assert facet.vcpus == hypervisors[name].vcpus  # usage fields read at 2.87
    vms = {w.id: w for w in snap.workloads if w.kind == "nova-vm"}
    assert set(vms) == set(scenario.servers)  # every server once, across 7-server pages
    for sid, server in scenario.servers.items():
        vm = vms[sid]
        assert vm.host == server.host
        assert vm.owner == scenario.projects_by_id[server.project_id].name  # named through Keystone
        expected = server.flavor.gpu_count or server.flavor.vgpus
        assert vm.gpus == expected
        assert vm.gpu_kind == (
            "passthrough" if server.flavor.gpu_count else "vgpu" if server.flavor.vgpus else None
        )


async def test_ironic_reads_every_node_with_the_negotiated_version(rig: Rig) -> None:
    await rig.poll()
    assert rig.health("ironic:sovereign-lab") == (True, None)
    assert rig.ironic.version == "1.109"
    snap = rig.store.snapshot()
    facets = {h.ironic.node_uuid: h.ironic for h in snap.hosts if h.ironic is not None}
    nodes = {n.uuid: n for n in rig.lab.scenario.nodes}
    assert set(facets) == set(nodes)
    for uuid, node in nodes.items():
        assert facets[uuid].provision_state == node.provision_state
        assert facets[uuid].maintenance == node.maintenance
    deployed = {w.id for w in snap.workloads if w.kind == "baremetal"}
    assert deployed == {n.instance_uuid for n in nodes.values() if n.instance_uuid}


async def test_an_expired_token_reauthenticates_once_and_polls_on(rig: Rig) -> None:
    await rig.poll()
    issued = rig.lab.tokens.issued
    rig.lab.tokens.expire_all()
    await rig.poll()
    assert rig.health("nova:sovereign-lab") == (True, None)
    assert rig.health("ironic:sovereign-lab") == (True, None)
    # One shared session: both services recover with one new token (keystoneauth caches it).
    assert rig.lab.tokens.issued == issued + 1


async def test_nova_errors_mark_nova_down_and_leave_ironic_fresh(rig: Rig) -> None:
    await rig.poll()
    rig.lab.faults.set("nova", error_rate=1.0, error_status=500)
    await rig.poll()
    up, error = rig.health("nova:sovereign-lab")
    assert up is False and error is not None
    assert error.startswith("nova: HTTP 500 from /v2.1/")
    assert rig.health("ironic:sovereign-lab") == (True, None)
    snap = rig.store.snapshot()
    assert all(w.stale for w in snap.workloads if w.kind == "nova-vm")
    assert not any(w.stale for w in snap.workloads if w.kind == "baremetal")
    rig.lab.faults.clear("nova")
    await rig.poll()
    assert rig.health("nova:sovereign-lab") == (True, None)
    assert not any(w.stale for w in rig.store.snapshot().workloads)


async def test_malformed_bodies_are_one_line_errors(rig: Rig) -> None:
    rig.lab.faults.set("ironic", malformed_rate=1.0)
    await rig.poll()
    up, error = rig.health("ironic:sovereign-lab")
    assert up is False
    assert error is not None and error.startswith("ironic: malformed JSON from /")
    assert "\n" not in error
    assert rig.health("nova:sovereign-lab") == (True, None)


async def test_a_hanging_service_times_out_without_holding_up_the_other(rig: Rig) -> None:
    await rig.poll()  # authenticate and negotiate first
    rig.lab.faults.set("nova", timeout_rate=1.0, hang_s=30.0)
    await rig.poll(timeout_s=3.0)
    up, error = rig.health("nova:sovereign-lab")
    assert up is False and error is not None and "no answer within 3s" in error
    assert rig.health("ironic:sovereign-lab") == (True, None)


async def test_bad_credentials_are_one_line_naming_the_cloud(tmp_path: Path, rig: Rig) -> None:
    text = Path(rig.ref.clouds_yaml or "").read_text()
    bad = tmp_path / "bad-clouds.yaml"
    bad.write_text(text.replace(rig.lab.credentials.password, "wrong-password"))
    nova = NovaCollector(CloudRef("sovereign-lab", str(bad)), interval_s=30)
    poller = Poller(Store())
    poller.set_targets(nova.targets())
    await poller.run_once()
    h = poller.health("nova:sovereign-lab")
    assert h.up is False
    assert h.last_error == "cloud 'sovereign-lab': Keystone refused the credentials (check clouds.yaml)"
    await poller.close()


async def test_unknown_cloud_name_is_one_line(tmp_path: Path, rig: Rig) -> None:
    nova = NovaCollector(CloudRef("no-such-cloud", rig.ref.clouds_yaml), interval_s=30)
    poller = Poller(Store())
    poller.set_targets(nova.targets())
    await poller.run_once()
    err = poller.health("nova:no-such-cloud").last_error or ""
    assert "no-such-cloud" in err and "\n" not in err
    await poller.close()


def test_flavor_gpu_counts_and_microversion_negotiation() -> None:
    assert gpus_of({"pci_passthrough:alias": "h100:2,l40s:1"}) == (3, "passthrough")
    assert gpus_of({"resources:VGPU": "1"}) == (1, "vgpu")
    assert gpus_of({}) == (0, None)
    assert negotiate("2.1", "2.103") == (2, 100)
    assert negotiate("2.1", "2.60") == (2, 60)
    assert negotiate("", "") == (2, 1)
    with pytest.raises(PollError, match=r"needs microversion 2\.101"):
        negotiate("2.101", "2.110")


# --- against a real Ironic and a real Keystone ---------------------------------------------------


@pytest.mark.real_service
async def test_ironic_collector_against_a_real_standalone_ironic(real_ironic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ironicclient import client as ironic_client

    api = ironic_client.get_client(
        1, endpoint=real_ironic.url, auth_type="none", os_ironic_api_version="1.78"
    )
    names = [f"collector-{tmp_path.name[-8:]}-{i}" for i in range(2)]
    created = [api.node.create(driver="fake-hardware", name=n, resource_class="gpu-h100-8") for n in names]
    api.node.set_maintenance(created[1].uuid, True, maint_reason="fan failure")
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        f"clouds:\n  real-ironic:\n    auth_type: none\n    baremetal_endpoint_override: {real_ironic.url}\n"
    )
    collector = IronicCollector(CloudRef("real-ironic", str(clouds)), interval_s=30)
    poller = Poller(Store())
    poller.set_targets(collector.targets())
    await poller.run_once()
    health = poller.health("ironic:real-ironic")
    assert health.up is True, health.last_error
    hosts = {h.name: h.ironic for h in poller.store.snapshot().hosts}
    assert hosts[names[0]] is not None and hosts[names[0]].provision_state == "enroll"
    assert hosts[names[1]] is not None and hosts[names[1]].maintenance_reason == "fan failure"
    assert collector.version is not None
    assert tuple(map(int, collector.version.split("."))) <= (1, 109)
    await poller.close()


@pytest.mark.real_service
async def test_ironic_collector_through_a_real_keystone_catalog(real_cloud, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ks = real_cloud.keystone
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  real:\n    auth:\n"
        f"      auth_url: {ks.auth_url}\n      username: {ks.username}\n      password: {ks.password}\n"
        f"      project_name: {ks.project_name}\n      user_domain_id: {ks.user_domain_id}\n"
        f"      project_domain_id: {ks.project_domain_id}\n    region_name: {ks.region_name}\n"
    )
    collector = IronicCollector(CloudRef("real", str(clouds), region=ks.region_name), interval_s=30)
    poller = Poller(Store())
    poller.set_targets(collector.targets())
    await poller.run_once()
    health = poller.health("ironic:real")
    assert health.up is True, health.last_error
    await poller.close()
