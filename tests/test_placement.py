"""The Placement collector against the embedded lab over real HTTP (openstacksdk's clouds.yaml
loader, keystoneauth), with the lab's GPUs read by nvidia-smi over SSH: a Nova server holds the
GPUs Placement says it holds, from its creation to its deletion and through a move; a missing
endpoint or a malformed answer costs Placement alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from collectors.nova import NovaCollector
from collectors.openstack import CloudRef, CloudSession
from collectors.placement import PlacementCollector, device_address, is_gpu_class, negotiate
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import load_settings
from sovereign_tui.gpu_attribution import MIGRATION, NOVA, attribute
from sovereign_tui.lab.fleet import FleetLab
from sovereign_tui.lab.scenario import Host, Server
from sovereign_tui.lab.server import Lab
from sovereign_tui.model import Snapshot
from sovereign_tui.poller import Poller, PollError
from sovereign_tui.runtime import Runtime
from sovereign_tui.store import Store
from tests.lab.conftest import Api

SEED = 6
"""A scenario with both passed-through and vGPU hypervisors."""
TARGET = "placement:sovereign-lab"


@dataclass
class Fleet:
    clock: FakeClock
    fleet: FleetLab
    runtime: Runtime
    api: Api
    token: str

    @property
    def lab(self) -> Lab:
        return self.fleet.lab

    async def poll(self) -> Snapshot:
        snap = await self.runtime.first_poll(60.0)
        assert all(s.up for s in snap.sources), [(s.target, s.last_error) for s in snap.sources if not s.up]
        return snap

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        self.lab.settle()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    clock = FakeClock()
    lab = FleetLab(hosts=24, seed=SEED, layers=("openstack", "gpus"), clock=clock)
    await lab.start()
    runtime: Runtime | None = None
    try:
        files = lab.write_config(tmp_path)
        settings, _ = load_settings(files.settings)
        assert settings.sources.placement.enabled  # the lab's config turns Placement on
        runtime = Runtime(settings, clock=clock)
        async with aiohttp.ClientSession() as http:
            api = Api(http, lab.lab)
            yield Fleet(clock, lab, runtime, api, await api.token())
    finally:
        if runtime is not None:
            await runtime.close()
        await lab.stop()


def expected_holder(lab: Lab, host: Host, index: int) -> str | None:
    """What the lab's own Nova state says holds one board, spelled as attribution spells it."""
    g = host.gpus[index]
    ids = set(g.vgpu_holders) | ({g.holder} if g.holder else set())
    names = sorted(NOVA + lab.scenario.servers[sid].name for sid in ids)
    return ", ".join(names) or None


def holders(snap: Snapshot, host: str) -> dict[str, str | None]:
    return {g.uuid: g.holder for g in snap.gpus if g.host == host}


def up(host: Host) -> bool:
    return host.service is not None and host.service.up and not host.service.disabled


async def create(f: Fleet, host: Host, name: str) -> Server:
    flavor = next(x for x in f.lab.scenario.flavors if x.name == f"g1.{host.model.alias}.2")
    body = {
        "server": {
            "name": name,
            "flavorRef": flavor.id,
            "imageRef": f.lab.scenario.images[0].id,
            "networks": "auto",
            "availability_zone": f"nova:{host.name}",
        }
    }
    reply = await f.api.nova("POST", "/servers", f.token, body=body)
    assert reply.status == 202, reply.body
    await f.advance(10.0)  # scheduled onto the host, built
    server = f.lab.scenario.servers[reply.body["server"]["id"]]
    assert server.host == host.name and len(server.gpus) == 2
    return server


async def test_every_gpu_is_held_by_the_server_placement_names(fleet: Fleet) -> None:
    snap = await fleet.poll()
    compute = fleet.lab.scenario.compute_hosts
    assert any(h.vgpu for h in compute) and any(not h.vgpu for h in compute)
    held = 0
    for h in compute:
        got = holders(snap, h.name)
        assert len(got) == len(h.gpus)  # nvidia-smi read every board of the hypervisor
        for g in h.gpus:
            assert got[g.uuid] == expected_holder(fleet.lab, h, g.index), (h.name, g.index)
            held += got[g.uuid] is not None
    assert held > 10
    # The lab's GPUs run something only when held: a free board is idle, as an operator expects.
    free = [g for g in snap.gpus if g.holder is None]
    assert free and all(g.util_gpu_pct == 0 and not g.processes for g in free)
    assert any((g.util_gpu_pct or 0) > 0 and g.processes for g in snap.gpus if g.holder)
    vms = {w.id: w for w in snap.workloads if w.kind == "nova-vm"}
    for sid, s in fleet.lab.scenario.servers.items():
        if s.gpus and s.host:
            boards = fleet.lab.scenario.hosts_by_name[s.host].gpus
            assert set(vms[sid].gpu_uuids) == {boards[i].uuid for i in s.gpus}


async def test_a_server_built_then_deleted_holds_then_frees_its_gpus(fleet: Fleet) -> None:
    await fleet.poll()
    host = max(
        (h for h in fleet.lab.scenario.compute_hosts if not h.vgpu and up(h)),
        key=lambda h: len(h.free_gpus()),
    )
    server = await create(fleet, host, "train-placed")
    before = fleet.lab.requests["placement"]
    snap = await fleet.poll()
    # One listing, the two boards whose generation moved, the new consumer's type.
    assert fleet.lab.requests["placement"] - before == 4
    boards = {host.gpus[i].uuid for i in server.gpus}
    got = holders(snap, host.name)
    assert {u for u, holder in got.items() if holder == NOVA + "train-placed"} == boards
    vm = next(w for w in snap.workloads if w.id == server.id)
    assert set(vm.gpu_uuids) == boards
    assert next(h for h in snap.hosts if h.name == host.name).gpus_busy >= len(boards)

    before = fleet.lab.requests["placement"]
    await fleet.poll()
    assert fleet.lab.requests["placement"] - before == 1  # nothing moved: the listing alone

    assert (await fleet.api.nova("DELETE", f"/servers/{server.id}", fleet.token)).status == 204
    snap = await fleet.poll()
    got = holders(snap, host.name)
    assert all(got[u] is None for u in boards)
    assert server.id not in {w.id for w in snap.workloads}


async def test_a_cold_migration_shows_the_migration_holding_the_source(fleet: Fleet) -> None:
    await fleet.poll()
    sc = fleet.lab.scenario
    s = next(
        s
        for s in sc.servers.values()
        if s.gpus and s.vm_state == "active" and up(sc.hosts_by_name[s.host or ""])
    )
    source = sc.hosts_by_name[s.host or ""]
    src_boards = {source.gpus[i].uuid for i in s.gpus}
    reply = await fleet.api.nova("POST", f"/servers/{s.id}/action", fleet.token, body={"migrate": None})
    assert reply.status == 202
    await fleet.advance(30.0)
    assert s.vm_state == "resized"
    migration = next(m for m in sc.migrations if m.server_id == s.id)
    dest = sc.hosts_by_name[s.host or ""]
    snap = await fleet.poll()
    assert {holders(snap, source.name)[u] for u in src_boards} == {MIGRATION + migration.uuid}
    assert {holders(snap, dest.name)[dest.gpus[i].uuid] for i in s.gpus} == {NOVA + s.name}

    reply = await fleet.api.nova("POST", f"/servers/{s.id}/action", fleet.token, body={"confirmResize": None})
    assert reply.status == 204
    snap = await fleet.poll()
    assert {holders(snap, source.name)[u] for u in src_boards} == {None}


# --- failures cost Placement alone ---------------------------------------------------------------


class Rig:
    def __init__(self, lab: Lab, clouds_yaml: Path) -> None:
        ref = CloudRef("sovereign-lab", str(clouds_yaml))
        session = CloudSession(ref)
        self.nova = NovaCollector(ref, interval_s=30, session=session)
        self.placement = PlacementCollector(ref, interval_s=30, session=session)
        self.store = Store(enrichers=(attribute,))
        self.poller = Poller(self.store)
        self.poller.set_targets(self.nova.targets() + self.placement.targets())

    async def poll(self) -> None:
        await self.poller.run_once()

    def health(self, target: str) -> tuple[bool | None, str | None]:
        h = self.poller.health(target)
        return h.up, h.last_error


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(hosts=24, seed=SEED)
    await lab.start()
    yield lab
    await lab.stop()


async def test_a_catalog_without_placement_is_one_line_and_nova_stays_fresh(lab: Lab, tmp_path: Path) -> None:
    lab.tokens.endpoints = [e for e in lab.tokens.endpoints if e.service_type != "placement"]
    rig = Rig(lab, lab.write_config(tmp_path).clouds_yaml)
    try:
        await rig.poll()
        up, error = rig.health(TARGET)
        assert up is False and error is not None
        assert error == (
            "placement: cloud 'sovereign-lab': no public 'placement' endpoint in the catalog "
            "(register Placement in Keystone, or set sources.placement.enabled = false)"
        )
        assert rig.health("nova:sovereign-lab") == (True, None)
    finally:
        await rig.poller.close()


async def test_a_malformed_answer_marks_placement_down_and_keeps_the_last_allocations(
    lab: Lab, tmp_path: Path
) -> None:
    rig = Rig(lab, lab.write_config(tmp_path).clouds_yaml)
    try:
        await rig.poll()
        known = rig.store.snapshot().gpu_allocations
        assert known and rig.health(TARGET) == (True, None)
        lab.faults.set("placement", malformed_rate=1.0)
        await rig.poll()
        up, error = rig.health(TARGET)
        assert up is False
        assert error == "placement: malformed JSON from /placement/resource_providers"
        assert rig.health("nova:sovereign-lab") == (True, None)
        snap = rig.store.snapshot()
        assert len(snap.gpu_allocations) == len(known) and all(a.stale for a in snap.gpu_allocations)
        assert not any(w.stale for w in snap.workloads)
        lab.faults.clear("placement")
        await rig.poll()
        assert rig.health(TARGET) == (True, None)
        assert not any(a.stale for a in rig.store.snapshot().gpu_allocations)
    finally:
        await rig.poller.close()


async def test_an_error_answer_quotes_placements_own_detail(lab: Lab, tmp_path: Path) -> None:
    rig = Rig(lab, lab.write_config(tmp_path).clouds_yaml)
    try:
        lab.faults.set("placement", error_rate=1.0, error_status=503)
        await rig.poll()
        up, error = rig.health(TARGET)
        assert up is False and error is not None
        assert error.startswith("placement: ") and "503" in error
        assert error.endswith(": Injected fault"), error  # the detail of Placement's errors[] body
        assert rig.health("nova:sovereign-lab") == (True, None)
    finally:
        await rig.poller.close()


# --- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "root", "address"),
    [
        ("gpu-node-01_0000:18:00.0", "gpu-node-01", "0000:18:00.0"),
        ("cn1.lab_0000:AF:00.0", "cn1.lab", "0000:af:00.0"),
        ("cn1_pci_0000_af_00_0", "cn1", "0000:af:00.0"),
        ("cn1_0000:18:00.0", "cn2", None),  # not under this compute node
        ("cn1_NET_PHYSNET1", "cn1", None),  # a bandwidth provider, not a device
    ],
)
def test_device_addresses_from_provider_names(name: str, root: str, address: str | None) -> None:
    assert device_address(name, root) == address


def test_other_vendors_pci_classes_are_not_gpus() -> None:
    assert is_gpu_class("CUSTOM_PCI_10DE_2330") and is_gpu_class("VGPU") and is_gpu_class("CUSTOM_A100")
    assert not is_gpu_class("CUSTOM_PCI_8086_1572")


def test_negotiation_needs_nested_providers() -> None:
    assert negotiate("1.0", "1.39") == (1, 39)
    assert negotiate("1.0", "1.45") == (1, 39)
    with pytest.raises(PollError, match="nested providers"):
        negotiate("1.0", "1.10")
