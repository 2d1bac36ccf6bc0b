"""The appliance's own health, from psutil: CPU, memory, disks, network, load and uptime."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import psutil

from collectors.base import Capability
from sovereign_tui.config import HostSource
from sovereign_tui.model import DiskUsage, FacetOf, MachineFacet, NicCounters, Observation
from sovereign_tui.poller import PollContext, Target

# Pseudo and container file systems say nothing about the machine's disks.
_SKIP_FSTYPES = frozenset(
    {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "autofs"}
)


def read_machine(
    source: str, observed_at: float, boot_time: Callable[[], float] = psutil.boot_time
) -> MachineFacet:
    """One blocking read of the machine's state (run off the event loop)."""
    load1, load5, load15 = os.getloadavg()
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    disks = []
    seen_devices: set[str] = set()
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _SKIP_FSTYPES or part.device in seen_devices:
            continue  # a pseudo file system, or a bind mount of a device already listed
        if not os.path.isdir(part.mountpoint):
            continue  # a file bind-mounted into a container (/etc/hosts...), or a vanished mount
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue  # unreadable mount: skip, keep the rest
        seen_devices.add(part.device)
        disks.append(
            DiskUsage(
                mountpoint=part.mountpoint,
                device=part.device,
                fstype=part.fstype,
                total_bytes=usage.total,
                used_bytes=usage.used,
                percent=usage.percent,
            )
        )
    stats = psutil.net_if_stats()
    nics = []
    for name, io in sorted(psutil.net_io_counters(pernic=True).items()):
        st = stats.get(name)
        nics.append(
            NicCounters(
                name=name,
                is_up=bool(st and st.isup),
                speed_mbps=st.speed if st else 0,
                bytes_sent=io.bytes_sent,
                bytes_recv=io.bytes_recv,
                errors_in=io.errin,
                errors_out=io.errout,
            )
        )
    booted = boot_time()
    return MachineFacet(
        source=source,
        observed_at=observed_at,
        cpu_count=psutil.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        load_1m=load1,
        load_5m=load5,
        load_15m=load15,
        memory_total_bytes=mem.total,
        memory_used_bytes=mem.total - mem.available,
        memory_percent=mem.percent,
        swap_used_bytes=swap.used,
        boot_time=booted,
        uptime_s=max(0.0, time.time() - booted),
        disks=tuple(disks),
        nics=tuple(nics),
    )


class HostCollector:
    name = "host"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, settings: HostSource) -> None:
        self.settings = settings
        self.host = settings.name or socket.gethostname()
        psutil.cpu_percent(interval=None)  # primes the CPU counter: the first poll then has a real figure

    def targets(self) -> list[Target]:
        if not self.settings.enabled:
            return []
        return [
            Target(
                id=f"host:{self.host}",
                source=self.name,
                endpoint="local",
                interval_s=self.settings.interval_s,
                poll=self.poll,
            )
        ]

    async def poll(self, ctx: PollContext) -> Observation:
        facet = await asyncio.to_thread(read_machine, f"host:{self.host}", ctx.clock.time())
        return Observation(facets=(FacetOf(self.host, facet),))

    async def aclose(self) -> None:
        return None
