"""GPU attribution (bare metal, Nova through Placement, pods by their request), run as the store's
enricher on real observations."""

from __future__ import annotations

import msgspec
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_analytics import AnalyticsSettings, GpuHistory, analyse
from sovereign_tui.gpu_attribution import MIGRATION, NOVA, PREFIX, attribute, pci_address
from sovereign_tui.model import (
    FacetOf,
    Gpu,
    GpuAllocation,
    IronicFacet,
    NovaFacet,
    Observation,
    Snapshot,
    SourceHealth,
    Workload,
)
from sovereign_tui.store import Store

NOW = 1_700_000_000.0
DEPLOYED = "bm-deployed"  # Ironic node with an instance, its workload reported
ORPHAN = "bm-orphan"  # Ironic node with an instance, no workload reported for it
AVAILABLE = "bm-available"  # Ironic node without an instance
HYPERVISOR = "hv-1"  # no Ironic facet at all
INSTANCES = {DEPLOYED: ("0b6c3c1e-1111-4aaa-8bbb-000000000001", "train-01"), ORPHAN: ("0b6c-orphan", None)}
PRE_HELD = "pod/ml/already"


def _health(target: str, source: str) -> SourceHealth:
    return SourceHealth(target=target, source=source, endpoint="lab", interval_s=10.0, up=True)


def _ironic() -> Observation:
    facets = []
    workloads = []
    for host in (DEPLOYED, ORPHAN, AVAILABLE):
        instance, name = INSTANCES.get(host, (None, None))
        facet = IronicFacet(
            source="ironic",
            observed_at=NOW,
            node_uuid=f"node-{host}",
            name=host,
            provision_state="active" if instance else "available",
            instance_uuid=instance,
        )
        facets.append(FacetOf(host, facet))
        if instance and name:
            workloads.append(
                Workload(
                    source="ironic",
                    observed_at=NOW,
                    kind="baremetal",
                    id=instance,
                    name=name,
                    state="active",
                    host=host,
                )
            )
    return Observation(facets=tuple(facets), workloads=tuple(workloads))


def _gpus() -> Observation:
    gpus = []
    for host in (DEPLOYED, ORPHAN, AVAILABLE, HYPERVISOR):
        for i in range(4):
            holder = PRE_HELD if host == DEPLOYED and i == 0 else None
            gpus.append(
                Gpu(source="dcgm", observed_at=NOW, host=host, index=i, uuid=f"GPU-{host}-{i}", holder=holder)
            )
    return Observation(gpus=tuple(gpus))


def _store() -> Store:
    store = Store(FakeClock(start=NOW), enrichers=[attribute])
    store.apply(_health("ironic", "ironic"), _ironic())
    store.apply(_health("dcgm", "dcgm"), _gpus())
    return store


def test_unheld_gpus_of_deployed_hosts_are_held_by_their_instance() -> None:
    snap = _store().snapshot()
    names = {w.host: w.name for w in snap.workloads if w.kind == "baremetal"}
    for gpu in snap.gpus:
        original = next(g for g in _gpus().gpus if g.uuid == gpu.uuid)
        if original.holder is not None:
            assert gpu.holder == original.holder  # an existing holder is kept
        elif gpu.host == DEPLOYED:
            assert gpu.holder == PREFIX + names[DEPLOYED]
        elif gpu.host == ORPHAN:
            assert gpu.holder == PREFIX + INSTANCES[ORPHAN][0]  # no workload: the instance UUID
        else:
            assert gpu.holder is None  # no instance on the host: nobody known holds it


def test_busy_counts_follow_the_new_holders() -> None:
    snap = _store().snapshot()
    for host in snap.hosts:
        assert host.gpus_busy == sum(1 for g in snap.gpus if g.host == host.name and g.holder is not None)
    assert {h.name for h in snap.hosts if h.gpus_busy} == {DEPLOYED, ORPHAN}


def test_nothing_to_attribute_returns_the_same_snapshot() -> None:
    plain = Store(FakeClock(start=NOW))
    plain.apply(_health("dcgm", "dcgm"), _gpus())
    snap = plain.snapshot()
    assert attribute(snap) is snap
    empty = Snapshot(generation=0, taken_at=NOW)
    assert attribute(empty) is empty


# --- Nova servers through Placement --------------------------------------------------------------

NOVA_HOST = "cn-01"
HV_ID = "5d5b1e7a-0000-4000-8000-0000000000c1"
SERVERS = {"srv-1": "train-01", "srv-2": "infer-02", "srv-3": "infer-03"}


def _bus(i: int) -> str:
    return f"00000000:{0x18 + i:02X}:00.0"  # nvidia-smi's spelling: 8-digit domain, upper case


def _nova() -> Observation:
    facet = NovaFacet(source="nova", observed_at=NOW, hypervisor_id=HV_ID, state="up", status="enabled")
    servers = tuple(
        Workload(
            source="nova", observed_at=NOW, kind="nova-vm", id=sid, name=name, state="ACTIVE", host=NOVA_HOST
        )
        for sid, name in SERVERS.items()
    )
    return Observation(facets=(FacetOf(NOVA_HOST, facet),), workloads=servers)


def _alloc(
    index: int, consumer: str, *, kind: str | None = "INSTANCE", rc: str = "CUSTOM_PCI_10DE_2330"
) -> GpuAllocation:
    return GpuAllocation(
        source="placement",
        observed_at=NOW,
        hypervisor=f"{NOVA_HOST}.dc1.example",
        hypervisor_id=HV_ID,
        bus_id=f"0000:{0x18 + index:02x}:00.0",  # Nova's spelling: 4-digit domain, lower case
        provider=f"rp-{index}",
        consumer=consumer,
        consumer_type=kind,
        resource_class=rc,
    )


def _nova_gpus(count: int = 6, util: float | None = None, at: float = NOW) -> Observation:
    return Observation(
        gpus=tuple(
            Gpu(
                source="nvidia-smi",
                observed_at=at,
                host=NOVA_HOST,
                index=i,
                uuid=f"GPU-nova-{i}",
                bus_id=_bus(i),
                util_gpu_pct=util,
            )
            for i in range(count)
        )
    )


def _nova_store(*allocations: GpuAllocation, nova: bool = True, clock: FakeClock | None = None) -> Store:
    store = Store(clock or FakeClock(start=NOW), enrichers=[attribute])
    if nova:
        store.apply(_health("nova", "nova"), _nova())
    store.apply(_health("placement", "placement"), Observation(gpu_allocations=allocations))
    store.apply(_health("nvidia-smi", "nvidia-smi"), _nova_gpus())
    return store


def test_placement_names_the_server_holding_each_device() -> None:
    snap = _nova_store(
        _alloc(0, "srv-1"),
        _alloc(1, "srv-1"),
        _alloc(2, "mig-9", kind="MIGRATION"),  # what a move holds on its source
        _alloc(3, "srv-gone"),  # a consumer Nova does not report
        _alloc(4, "srv-2", rc="VGPU"),  # one board shared as vGPUs
        _alloc(4, "srv-3", rc="VGPU"),
    ).snapshot()
    got = {g.index: g.holder for g in snap.gpus}
    assert got == {
        0: NOVA + "train-01",
        1: NOVA + "train-01",
        2: MIGRATION + "mig-9",
        3: NOVA + "srv-gone",
        4: f"{NOVA}infer-02, {NOVA}infer-03",
        5: None,
    }
    uuids = {w.id: w.gpu_uuids for w in snap.workloads}
    assert uuids == {
        "srv-1": ("GPU-nova-0", "GPU-nova-1"),
        "srv-2": ("GPU-nova-4",),
        "srv-3": ("GPU-nova-4",),
    }
    assert next(h for h in snap.hosts if h.name == NOVA_HOST).gpus_busy == 5


def test_without_nova_the_hypervisor_is_found_by_its_short_name() -> None:
    snap = _nova_store(_alloc(0, "srv-1"), nova=False).snapshot()
    assert [g.holder for g in snap.gpus] == [NOVA + "srv-1"] + [None] * 5  # the consumer's id, no name


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("00000000:AF:00.0", "0000:af:00.0"),
        ("0000:af:00.0", "0000:af:00.0"),
        ("0000:AF:00.0", "0000:af:00.0"),
        ("af:00.1", "0000:af:00.1"),
        ("0001:3b:00.0", "0001:3b:00.0"),
        ("GPU-1234", None),
        ("", None),
        (None, None),
    ],
)
def test_pci_addresses_compare_in_one_spelling(text: str | None, address: str | None) -> None:
    assert pci_address(text) == address


async def test_an_idle_gpu_held_by_a_nova_server_is_flagged() -> None:
    clock = FakeClock(start=NOW)
    settings = AnalyticsSettings(interval_s=15.0, history_s=900.0, idle_window_s=600.0)
    store = _nova_store(_alloc(0, "srv-1"), _alloc(1, "srv-1"), clock=clock)
    history = GpuHistory(settings)
    for _ in range(45):  # 11 minutes of polls at 15 s: GPU 0 idle, GPU 1 busy, the rest unheld
        gpus = _nova_gpus(util=0.0, at=clock.time()).gpus
        gpus = tuple(msgspec.structs.replace(g, util_gpu_pct=90.0) if g.index == 1 else g for g in gpus)
        store.apply(_health("nvidia-smi", "nvidia-smi"), Observation(gpus=gpus))
        store.apply(_health("nova", "nova"), _nova())
        store.apply(
            _health("placement", "placement"),
            Observation(gpu_allocations=(_alloc(0, "srv-1"), _alloc(1, "srv-1"))),
        )
        history.observe(store.snapshot())
        await clock.advance(15.0)
    snap = store.snapshot()
    assert [g.index for g in history.idle_gpus(snap)] == [0]
    (alert,) = [a for a in analyse(snap, history) if a.kind == "idle"]
    assert alert.reason.startswith(f"GPU 0: held by {NOVA}train-01 but under 5% for 10 min")


# --- pods by their nvidia.com/gpu request -------------------------------------------------------

NODE = "k8s-01"


def _pod(name: str, gpus: int, state: str = "Running", *, kind: str = "pod", host: str = NODE) -> Workload:
    return Workload(
        source="kubernetes",
        observed_at=NOW,
        kind=kind,  # type: ignore[arg-type]
        id=f"uid-{name}",
        name=name,
        state=state,
        host=host,
        owner="ml",
        gpus=gpus,
    )


def _node_gpus(count: int = 4, holders: dict[int, str] | None = None, mig: bool = False) -> Observation:
    return Observation(
        gpus=tuple(
            Gpu(
                source="dcgm",
                observed_at=NOW,
                host=NODE,
                index=i,
                uuid=f"GPU-k8s-{i}",
                holder=(holders or {}).get(i),
                mig_instance=1 if mig and i == 0 else None,
            )
            for i in range(count)
        )
    )


def _pod_holders(*pods: Workload, gpus: Observation | None = None, ironic: bool = False) -> list[str | None]:
    store = Store(FakeClock(start=NOW), enrichers=[attribute])
    store.apply(_health("kubernetes", "kubernetes"), Observation(workloads=pods))
    store.apply(_health("dcgm", "dcgm"), gpus or _node_gpus())
    if ironic:
        facet = IronicFacet(
            source="ironic",
            observed_at=NOW,
            node_uuid="n-k8s",
            name=NODE,
            provision_state="active",
            instance_uuid="i-k8s",
        )
        store.apply(_health("ironic", "ironic"), Observation(facets=(FacetOf(NODE, facet),)))
    return [g.holder for g in store.snapshot().gpus]


def test_the_one_running_pod_asking_for_every_free_gpu_holds_them() -> None:
    held = _pod_holders(
        _pod("train", 4), _pod("web", 0), _pod("done", 2, "Succeeded"), _pod("far", 4, host="k8s-02")
    )
    assert held == ["pod:ml/train"] * 4
    # A kata pod too, and under the same spelling as dcgm-exporter's labels.
    assert _pod_holders(_pod("sandboxed", 4, kind="kata-pod")) == ["pod:ml/sandboxed"] * 4


def test_a_pod_named_by_dcgm_leaves_the_rest_to_the_only_other_pod() -> None:
    gpus = _node_gpus(holders={0: "pod:ml/labelled", 1: "pod:ml/labelled"})
    held = _pod_holders(_pod("labelled", 2), _pod("other", 2), gpus=gpus)
    assert held == ["pod:ml/labelled"] * 2 + ["pod:ml/other"] * 2


@pytest.mark.parametrize(
    ("pods", "mig"),
    [
        ((_pod("a", 2), _pod("b", 2)), False),  # two pods: which GPU is whose is unknown
        ((_pod("a", 3),), False),  # fewer than the free GPUs: which three is unknown
        ((_pod("a", 4, "Pending (ContainerCreating)"),), False),  # not running yet
        ((_pod("a", 4), _pod("b", 1, "Pending")), False),  # another pod on the node wants GPUs
        ((_pod("a", 4),), True),  # MIG instances are not requested as whole GPUs
    ],
)
def test_an_ambiguous_request_is_never_guessed(pods: tuple[Workload, ...], mig: bool) -> None:
    assert set(_pod_holders(*pods, gpus=_node_gpus(mig=mig))) == {None}


def test_a_pod_on_bare_metal_is_more_precise_than_its_instance() -> None:
    assert _pod_holders(_pod("train", 4), ironic=True) == ["pod:ml/train"] * 4
    assert _pod_holders(_pod("a", 2), _pod("b", 2), ironic=True) == [PREFIX + "i-k8s"] * 4  # no guess
