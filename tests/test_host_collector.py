"""The host collector (psutil) through a real Poller and Store under a fake clock: the machine
facet of this very machine, checked for plausibility and self-consistency against psutil."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from collectors.host import HostCollector
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import HostSource
from sovereign_tui.model import MachineFacet, Snapshot
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store

HOST = "appliance-1"
PSEUDO = ("tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "autofs")


class Rig:
    """A host collector wired to a real poller and store on a fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = Store(self.clock)
        self.poller = Poller(self.store, clock=self.clock)
        self.collector = HostCollector(HostSource(name=HOST, interval_s=5.0))
        self.poller.set_targets(self.collector.targets())

    async def poll(self) -> Snapshot:
        await self.poller.run_once()
        return self.store.snapshot()

    async def close(self) -> None:
        await self.poller.close()
        await self.collector.aclose()


def machine(snap: Snapshot) -> MachineFacet:
    (host,) = [h for h in snap.hosts if h.name == HOST]
    assert host.machine is not None
    return host.machine


async def test_the_machine_facet_is_present_plausible_and_self_consistent() -> None:
    rig = Rig()
    try:
        before = time.time()
        snap = await rig.poll()
        after = time.time()
    finally:
        await rig.close()

    m = machine(snap)
    (health,) = snap.sources
    assert health.target == f"host:{HOST}"
    assert health.up is True
    assert m.source == health.target
    assert m.observed_at == rig.clock.time()
    assert not m.stale

    assert m.cpu_count == (psutil.cpu_count() or 1)
    assert 0.0 <= m.cpu_percent <= 100.0
    assert min(m.load_1m, m.load_5m, m.load_15m) >= 0.0

    assert m.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < m.memory_used_bytes <= m.memory_total_bytes
    assert m.memory_percent == pytest.approx(100 * m.memory_used_bytes / m.memory_total_bytes, abs=0.06)
    assert 0 <= m.swap_used_bytes <= psutil.swap_memory().total

    # Booted in the past; boot time plus uptime is the wall-clock time of the poll.
    assert m.boot_time == pytest.approx(psutil.boot_time(), abs=1.0)
    assert m.boot_time < before
    assert before - 1e-3 <= m.boot_time + m.uptime_s <= after + 1e-3

    mountpoints = [d.mountpoint for d in m.disks]
    assert len(set(mountpoints)) == len(mountpoints)
    listed = {p.mountpoint: p for p in psutil.disk_partitions(all=False)}
    for disk in m.disks:
        assert disk.fstype not in PSEUDO
        assert disk.mountpoint in listed
        assert (disk.device, disk.fstype) == (listed[disk.mountpoint].device, listed[disk.mountpoint].fstype)
        assert disk.total_bytes == psutil.disk_usage(disk.mountpoint).total
        assert 0 <= disk.used_bytes <= disk.total_bytes
        assert 0.0 <= disk.percent <= 100.0

    names = [n.name for n in m.nics]
    assert names == sorted(names)
    assert set(names) <= set(psutil.net_io_counters(pernic=True))
    for nic in m.nics:
        assert min(nic.bytes_sent, nic.bytes_recv, nic.errors_in, nic.errors_out, nic.speed_mbps) >= 0


async def test_each_poll_replaces_the_facet_with_a_fresh_observation() -> None:
    rig = Rig()
    try:
        first = await rig.poll()
        await rig.clock.advance(5.0)
        second = await rig.poll()
    finally:
        await rig.close()
    assert second.generation > first.generation
    assert machine(second).observed_at == machine(first).observed_at + 5.0
    assert [h.name for h in second.hosts] == [HOST]  # replaced, not duplicated
    assert second.sources[0].polls == 2
    assert second.sources[0].up is True


async def test_a_disabled_host_source_has_no_target() -> None:
    assert HostCollector(HostSource(enabled=False)).targets() == []


async def test_disks_skip_pseudo_file_systems_bind_mounts_and_vanished_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS reports, besides a real disk, what is not one: the collector keeps only the disk."""
    templates = psutil.disk_partitions(all=True)
    if not templates:
        pytest.skip("psutil lists no mounts on this machine")
    for name in ("data", "shm", "root", "snap", "etc-hosts-dir"):
        (tmp_path / name).mkdir()
    bind_file = tmp_path / "hosts"
    bind_file.write_text("127.0.0.1 localhost\n")

    def part(device: str, mountpoint: Path, fstype: str) -> Any:
        return templates[0]._replace(device=device, mountpoint=str(mountpoint), fstype=fstype)

    disk = part("/dev/sdz1", tmp_path / "data", "ext4")
    mounts = [
        disk,
        part("tmpfs", tmp_path / "shm", "tmpfs"),
        part("overlay", tmp_path / "root", "overlay"),
        part("/dev/loop3", tmp_path / "snap", "squashfs"),
        part("/dev/sdz1", tmp_path / "etc-hosts-dir", "ext4"),  # the same device bound again
        part("/dev/sdy1", bind_file, "ext4"),  # a file bind-mounted into a container
        part("/dev/sdx1", tmp_path / "gone", "xfs"),  # unmounted since the listing
    ]
    real: Callable[..., Any] = psutil.disk_partitions
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: mounts if not all else real(all=True))

    rig = Rig()
    try:
        snap = await rig.poll()
    finally:
        await rig.close()

    (only,) = machine(snap).disks
    assert (only.device, only.mountpoint, only.fstype) == (disk.device, disk.mountpoint, disk.fstype)
    assert only.total_bytes == psutil.disk_usage(disk.mountpoint).total
    assert snap.sources[0].up is True
