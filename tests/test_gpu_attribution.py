"""Bare-metal GPU attribution, run as the store's enricher on real observations."""

from __future__ import annotations

from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_attribution import PREFIX, attribute
from sovereign_tui.model import FacetOf, Gpu, IronicFacet, Observation, Snapshot, SourceHealth, Workload
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
