"""Wiring of the headless core: settings -> collectors -> poller -> store.

The TUI, the export and (later) the daemon all run one `Runtime`; none of them polls on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from collectors.base import Collector
from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import OpenStackSource, Settings
from sovereign_tui.gpu_attribution import attribute
from sovereign_tui.model import Snapshot
from sovereign_tui.poller import Backoff, Poller, Target
from sovereign_tui.store import Enricher, Store

CollectorFactory = Callable[[Settings], list[Collector]]


def default_collectors(settings: Settings) -> list[Collector]:
    """Every source the settings enable. Imports stay local so that a missing optional driver
    library costs only its own source."""
    from collectors.host import HostCollector
    from collectors.nvml import NvmlCollector

    src = settings.sources
    found: list[Collector] = []
    if src.host.enabled:
        found.append(HostCollector(src.host))
    if src.nvml.enabled:
        found.append(NvmlCollector(src.nvml))
    found.extend(openstack_collectors(settings))
    from collectors.kubernetes import kube_collectors

    found.extend(kube_collectors(src.kubernetes, src.kubevirt, src.kata))
    found.extend(gpu_fleet_collectors(settings))
    return found


def gpu_fleet_collectors(settings: Settings) -> list[Collector]:
    """Remote GPUs: nvidia-smi over SSH, dcgm-exporter scrapes, a Prometheus query API."""
    src = settings.sources
    found: list[Collector] = []
    if src.nvidia_smi.enabled and src.nvidia_smi.hosts:
        from collectors.nvidia_smi import NvidiaSmiCollector

        found.append(NvidiaSmiCollector(src.nvidia_smi))
    if src.dcgm.enabled and src.dcgm.endpoints:
        from collectors.dcgm import DcgmCollector

        found.append(DcgmCollector(src.dcgm))
    if src.prometheus.enabled:
        from collectors.prometheus import PrometheusGpuSource

        found.append(PrometheusGpuSource(src.prometheus))
    return found


def openstack_collectors(settings: Settings) -> list[Collector]:
    """Nova, Ironic, Placement and StarlingX; services of one cloud share one Keystone session
    (one token)."""
    from collectors.ironic import IronicCollector
    from collectors.nova import NovaCollector
    from collectors.openstack import CloudRef, CloudSession
    from collectors.placement import PlacementCollector
    from collectors.starlingx import StarlingxCollector

    sessions: dict[CloudRef, CloudSession] = {}

    def session(ref: CloudRef) -> CloudSession:
        return sessions.setdefault(ref, CloudSession(ref))

    found: list[Collector] = []
    src = settings.sources
    Kind = type[NovaCollector | IronicCollector | PlacementCollector | StarlingxCollector]
    kinds: tuple[tuple[OpenStackSource, Kind], ...] = (
        (src.nova, NovaCollector),
        (src.ironic, IronicCollector),
        (src.placement, PlacementCollector),
        (src.starlingx, StarlingxCollector),
    )
    for cfg, cls in kinds:
        if cfg.enabled:
            ref = CloudRef(cfg.cloud, cfg.clouds_yaml, cfg.region, cfg.interface)
            found.append(cls(ref, interval_s=cfg.interval_s, session=session(ref)))
    return found


class Runtime:
    """The poller, the store and the collectors of one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        collectors: Iterable[Collector] | None = None,
        enrichers: Iterable[Enricher] = (),
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store = Store(
            self.clock,
            stale_after_intervals=settings.poller.stale_after_intervals,
            enrichers=(attribute, *enrichers),
        )
        self.poller = Poller(
            self.store,
            clock=self.clock,
            concurrency=settings.poller.concurrency,
            per_host=settings.poller.per_host,
            backoff=Backoff(cap_s=settings.poller.backoff_cap_s),
            poll_at_start=True,
        )
        self.collectors = list(collectors) if collectors is not None else default_collectors(settings)
        self.poller.set_targets(self._targets())
        for c in self.collectors:
            # Sources whose targets change at run time (kata-monitors discovered per Kata node)
            # ask for a reconfiguration, which restarts only what changed.
            hook = getattr(c, "watch_targets", None)
            if hook is not None:
                hook(lambda: self.poller.set_targets(self._targets()))
        self._expiry: asyncio.Task[None] | None = None

    def _targets(self) -> list[Target]:
        return [t for c in self.collectors for t in c.targets()]

    def snapshot(self) -> Snapshot:
        return self.store.snapshot()

    async def wait_newer(self, generation: int) -> Snapshot:
        return await self.store.wait_newer(generation)

    async def first_poll(self, timeout_s: float) -> Snapshot:
        """Poll every target once (for the export); targets still running at the timeout are
        marked failed with the reason."""
        await self.poller.run_once(timeout_s)
        return self.store.snapshot()

    async def start(self) -> None:
        self.poller.start()
        self._expiry = asyncio.create_task(self._expire_loop(), name="store-expiry")

    async def _expire_loop(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.monotonic() + 1.0)
            self.store.expire()

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        await self.poller.close()
        for c in self.collectors:
            with contextlib.suppress(Exception):
                await c.aclose()
