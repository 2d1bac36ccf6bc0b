"""The store: the single truth, published as immutable snapshots.

Each poll target owns a slice (its last `Observation`); a successful poll replaces the slice,
a failed one keeps it but marks it stale. `snapshot()` joins the slices into one `Snapshot`,
built lazily and cached, so a burst of results costs one build when a consumer next looks.
The generation counts changes: consumers take the latest and skip those they were too slow for.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.model import (
    Alarm,
    DisruptionBudget,
    FacetOf,
    Gpu,
    GpuAllocation,
    Host,
    IronicFacet,
    KataFacet,
    KubeFacet,
    MachineFacet,
    NovaFacet,
    Observation,
    Operation,
    RuntimeClass,
    Site,
    Snapshot,
    SourceHealth,
    StarlingxFacet,
    Workload,
)

Enricher = Callable[[Snapshot], Snapshot]
"""A pure function that adds joined facts (GPU attribution, alerts) to a built snapshot."""


@dataclass
class _Slice:
    observation: Observation
    observed_at: float


_FACET_FIELD: dict[type, str] = {
    MachineFacet: "machine",
    NovaFacet: "nova",
    IronicFacet: "ironic",
    KubeFacet: "kubernetes",
    StarlingxFacet: "starlingx",
    KataFacet: "kata",
}


class Store:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        stale_after_intervals: float = 3.0,
        enrichers: Iterable[Enricher] = (),
    ) -> None:
        self._clock = clock or SystemClock()
        self._stale_factor = stale_after_intervals
        self._enrichers = tuple(enrichers)
        self._slices: dict[str, _Slice] = {}
        self._health: dict[str, SourceHealth] = {}
        self._operations: tuple[Operation, ...] = ()
        self._version = 0
        self._built: Snapshot | None = None
        self._stale_set: frozenset[str] = frozenset()
        self._changed: asyncio.Event | None = None

    # --- writers (the poller, the operation executor) ---------------------------------------

    @property
    def generation(self) -> int:
        return self._version

    def set_health(self, health: SourceHealth) -> None:
        self._health[health.target] = health
        self._bump()

    def apply(self, health: SourceHealth, observation: Observation) -> None:
        """A successful poll: replace the target's slice."""
        self._slices[health.target] = _Slice(observation, self._clock.time())
        self.set_health(health)

    def remove_target(self, target: str) -> None:
        self._slices.pop(target, None)
        self._health.pop(target, None)
        self._bump()

    def set_operations(self, operations: tuple[Operation, ...]) -> None:
        self._operations = operations
        self._bump()

    def expire(self) -> bool:
        """Republish if a target went quiet since the last build; True if it did."""
        if self._stale_targets() != self._stale_set:
            self._bump()
            return True
        return False

    def _bump(self) -> None:
        self._version += 1
        if self._changed is not None:
            self._changed.set()

    # --- readers ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        built = self._built
        if built is None or built.generation != self._version:
            built = self._build()
            self._built = built
        return built

    async def wait_newer(self, generation: int) -> Snapshot:
        """The latest snapshot once its generation is past `generation`."""
        while self._version <= generation:
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            await self._changed.wait()
        return self.snapshot()

    # --- building -----------------------------------------------------------------------------

    def _stale_targets(self) -> frozenset[str]:
        now = self._clock.time()
        stale = set()
        for target, health in self._health.items():
            if target not in self._slices:
                continue
            if health.up is False:
                stale.add(target)
                continue
            last = health.last_success
            if last is not None and now - last > self._stale_factor * health.interval_s:
                stale.add(target)
        return frozenset(stale)

    def _build(self) -> Snapshot:
        stale = self._stale_targets()
        self._stale_set = stale
        gpus: list[Gpu] = []
        facets: list[FacetOf] = []
        workloads: list[Workload] = []
        sites: list[Site] = []
        alarms: list[Alarm] = []
        runtime_classes: list[RuntimeClass] = []
        budgets: list[DisruptionBudget] = []
        allocations: list[GpuAllocation] = []
        for target, piece in self._slices.items():
            obs = piece.observation
            if target in stale:
                obs = _mark_stale(obs)
            gpus.extend(obs.gpus)
            facets.extend(obs.facets)
            workloads.extend(obs.workloads)
            sites.extend(obs.sites)
            alarms.extend(obs.alarms)
            runtime_classes.extend(obs.runtime_classes)
            budgets.extend(obs.budgets)
            allocations.extend(obs.gpu_allocations)
        hosts = _join_hosts(facets, gpus, workloads)
        snap = Snapshot(
            generation=self._version,
            taken_at=self._clock.time(),
            hosts=hosts,
            gpus=tuple(sorted(gpus, key=lambda g: (g.host, g.index))),
            workloads=tuple(workloads),
            sites=tuple(sites),
            alarms=tuple(alarms),
            sources=tuple(sorted(map(self._with_detail, self._health.values()), key=lambda h: h.target)),
            operations=self._operations,
            runtime_classes=tuple(runtime_classes),
            budgets=tuple(budgets),
            gpu_allocations=tuple(allocations),
        )
        for enrich in self._enrichers:
            snap = enrich(snap)
        return snap

    def _with_detail(self, health: SourceHealth) -> SourceHealth:
        """The health with what the source said of its own state at its last successful poll."""
        piece = self._slices.get(health.target)
        if piece is None or not piece.observation.health_detail:
            return health
        return msgspec.structs.replace(health, detail=piece.observation.health_detail)


_S = TypeVar("_S", bound=msgspec.Struct)


def _stale(items: tuple[_S, ...]) -> tuple[_S, ...]:
    return tuple(msgspec.structs.replace(i, stale=True) for i in items)


def _mark_stale(obs: Observation) -> Observation:
    return Observation(
        gpus=_stale(obs.gpus),
        facets=tuple(FacetOf(f.host, msgspec.structs.replace(f.facet, stale=True)) for f in obs.facets),
        workloads=_stale(obs.workloads),
        sites=_stale(obs.sites),
        alarms=_stale(obs.alarms),
        runtime_classes=_stale(obs.runtime_classes),
        budgets=_stale(obs.budgets),
        gpu_allocations=_stale(obs.gpu_allocations),
        health_detail=obs.health_detail,
    )


def _join_hosts(facets: list[FacetOf], gpus: list[Gpu], workloads: Iterable[Workload]) -> tuple[Host, ...]:
    by_host: dict[str, dict[str, Any]] = defaultdict(dict)
    for f in facets:
        by_host[f.host][_FACET_FIELD[type(f.facet)]] = f.facet
    gpu_count: dict[str, int] = defaultdict(int)
    gpu_busy: dict[str, int] = defaultdict(int)
    for g in gpus:
        by_host.setdefault(g.host, {})
        gpu_count[g.host] += 1
        if g.processes or (g.util_gpu_pct or 0) > 0 or g.holder:
            gpu_busy[g.host] += 1
    work_count: dict[str, int] = defaultdict(int)
    for w in workloads:
        if w.host:
            work_count[w.host] += 1
    hosts = []
    for name in sorted(by_host):
        parts = by_host[name]
        present = [p for p in parts.values() if p is not None]
        site = getattr(parts.get("starlingx"), "site", None)
        hosts.append(
            Host(
                name=name,
                site=site,
                stale=bool(present) and all(getattr(p, "stale", False) for p in present),
                gpu_count=gpu_count[name],
                gpus_busy=gpu_busy[name],
                workload_count=work_count[name],
                **parts,
            )
        )
    return tuple(hosts)
