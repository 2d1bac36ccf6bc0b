"""Store generations, immutable snapshots, host joins and staleness."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import FacetOf, Gpu, IronicFacet, NovaFacet, Observation, SourceHealth, Workload
from sovereign_tui.store import Store


def health(target: str, clock: FakeClock, *, up: bool = True, interval: float = 5.0) -> SourceHealth:
    return SourceHealth(
        target=target,
        source=target.split(":")[0],
        endpoint="e",
        interval_s=interval,
        up=up,
        last_success=clock.time() if up else None,
        last_error=None if up else "refused",
    )


def nova_obs(clock: FakeClock, hosts: list[str]) -> Observation:
    facets = tuple(
        FacetOf(
            h,
            NovaFacet(source="nova", observed_at=clock.time(), hypervisor_id=h, state="up", status="enabled"),
        )
        for h in hosts
    )
    workloads = tuple(
        Workload(
            source="nova",
            observed_at=clock.time(),
            kind="nova-vm",
            id=f"vm-{h}",
            name=f"vm-{h}",
            state="ACTIVE",
            host=h,
        )
        for h in hosts
    )
    return Observation(facets=facets, workloads=workloads)


def ironic_obs(clock: FakeClock, hosts: list[str]) -> Observation:
    return Observation(
        facets=tuple(
            FacetOf(
                h,
                IronicFacet(
                    source="ironic", observed_at=clock.time(), node_uuid=f"n-{h}", provision_state="active"
                ),
            )
            for h in hosts
        )
    )


def test_generations_count_changes_and_snapshots_are_cached_and_frozen() -> None:
    clock = FakeClock()
    store = Store(clock)
    first = store.snapshot()
    assert store.snapshot() is first  # nothing changed: same object, no rebuild
    store.apply(health("nova", clock), nova_obs(clock, ["h1"]))
    second = store.snapshot()
    assert second.generation > first.generation
    assert first.hosts == ()  # the old snapshot is untouched
    with pytest.raises(AttributeError):
        second.hosts = ()  # type: ignore[misc]


def test_hosts_join_facets_from_every_layer_by_name() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.apply(health("nova", clock), nova_obs(clock, ["gpu-a", "gpu-b"]))
    store.apply(health("ironic", clock), ironic_obs(clock, ["gpu-b", "bm-c"]))
    gpus = Observation(
        gpus=tuple(
            Gpu(
                source="nvml",
                observed_at=clock.time(),
                host="gpu-b",
                index=i,
                uuid=f"G{i}",
                util_gpu_pct=50.0 * i,
            )
            for i in range(3)
        )
    )
    store.apply(health("nvml", clock), gpus)
    hosts = {h.name: h for h in store.snapshot().hosts}
    assert set(hosts) == {"gpu-a", "gpu-b", "bm-c"}
    b = hosts["gpu-b"]
    assert b.nova is not None and b.ironic is not None
    assert (b.gpu_count, b.gpus_busy, b.workload_count) == (3, 2, 1)
    assert hosts["bm-c"].nova is None and hosts["bm-c"].ironic is not None


def test_a_new_observation_replaces_the_targets_slice() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.apply(health("nova", clock), nova_obs(clock, ["h1", "h2"]))
    store.apply(health("nova", clock), nova_obs(clock, ["h2"]))
    assert [w.host for w in store.snapshot().workloads] == ["h2"]


def test_failed_source_goes_stale_others_stay_fresh() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.apply(health("nova", clock), nova_obs(clock, ["h1"]))
    store.apply(health("ironic", clock), ironic_obs(clock, ["h2"]))
    failed = msgspec.structs.replace(health("nova", clock), up=False, last_error="HTTP 500")
    store.set_health(failed)
    snap = store.snapshot()
    hosts = {h.name: h for h in snap.hosts}
    assert hosts["h1"].stale and hosts["h1"].nova is not None and hosts["h1"].nova.stale
    assert not hosts["h2"].stale
    assert all(w.stale for w in snap.workloads)
    # The last known values are kept, marked, never dropped or passed off as fresh.
    assert hosts["h1"].nova.state == "up"


async def test_a_quiet_source_goes_stale_after_its_intervals() -> None:
    clock = FakeClock()
    store = Store(clock, stale_after_intervals=3.0)
    store.apply(health("nova", clock, interval=5.0), nova_obs(clock, ["h1"]))
    await clock.advance(14.0)
    assert store.expire() is False
    assert not store.snapshot().hosts[0].stale
    await clock.advance(2.0)  # 16 s > 3 x 5 s
    assert store.expire() is True
    assert store.snapshot().hosts[0].stale
    assert store.expire() is False  # no change since: no new generation


async def test_wait_newer_hands_out_the_latest_and_skips_generations() -> None:
    clock = FakeClock()
    store = Store(clock)
    start = store.generation
    waiter = asyncio.ensure_future(store.wait_newer(start))
    await asyncio.sleep(0)
    assert not waiter.done()
    for i in range(5):
        store.apply(health("nova", clock), nova_obs(clock, [f"h{i}"]))
    snap = await waiter
    assert snap.generation == store.generation  # the latest, the four in between skipped
    assert [h.name for h in snap.hosts] == ["h4"]


def test_removing_a_target_drops_its_entities_and_health() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.apply(health("nova", clock), nova_obs(clock, ["h1"]))
    store.remove_target("nova")
    snap = store.snapshot()
    assert snap.hosts == () and snap.sources == ()
