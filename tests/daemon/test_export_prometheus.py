"""The Prometheus exposition of a snapshot, parsed back with prometheus_client's parser and the
project's own (`promtext`); values are compared with the snapshot they came from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tui_data import fill, warm_history

from sovereign_tui import promtext
from sovereign_tui.audit_sink import MemoryAuditSink
from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.serve import Daemon
from sovereign_tui.daemon.settings import ServePaths, ServeSettings
from sovereign_tui.export_prometheus import CONTENT_TYPE, format_value, to_text
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import (
    Alarm,
    DiskUsage,
    FacetOf,
    IronicFacet,
    KubeFacet,
    MachineFacet,
    NicCounters,
    NovaFacet,
    Observation,
    Operation,
    Site,
    Snapshot,
    SourceHealth,
    StarlingxFacet,
    Workload,
)
from sovereign_tui.store import Store

from .feedkit import short_dir

MIB = 1024 * 1024
NASTY = 'gpu "burn-in" \\ run\nline two'
"""A label value with every character the format must escape."""


def rich_store() -> tuple[Store, FakeClock]:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock)
    now = clock.time()
    seen = {"source": "lab:all", "observed_at": now}
    machine = MachineFacet(
        **seen,
        cpu_count=16,
        cpu_percent=37.5,
        load_1m=1.5,
        load_5m=1.25,
        load_15m=1.0,
        memory_total_bytes=64 * 2**30,
        memory_used_bytes=20 * 2**30,
        memory_percent=31.25,
        swap_used_bytes=0,
        boot_time=now - 3600,
        uptime_s=3600,
        disks=(
            DiskUsage(
                mountpoint="/",
                device="/dev/nvme0n1p2",
                fstype="ext4",
                total_bytes=10**12,
                used_bytes=4 * 10**11,
                percent=40.0,
            ),
        ),
        nics=(
            NicCounters(
                name="eno1",
                is_up=True,
                speed_mbps=25000,
                bytes_sent=123,
                bytes_recv=456,
                errors_in=1,
                errors_out=0,
            ),
        ),
    )
    obs = Observation(
        facets=(
            FacetOf("gpu-a01", machine),
            FacetOf(
                "gpu-a01",
                NovaFacet(
                    **seen,
                    hypervisor_id="7",
                    state="up",
                    status="disabled",
                    disabled_reason="drain",
                    vcpus=64,
                    vcpus_used=48,
                    memory_mb=512000,
                    memory_mb_used=256000,
                    running_vms=3,
                ),
            ),
            FacetOf(
                "gpu-b01",
                IronicFacet(
                    **seen,
                    node_uuid="n-1",
                    provision_state="active",
                    power_state="power on",
                    maintenance=True,
                    resource_class="baremetal.gpu",
                ),
            ),
            FacetOf(
                "gpu-a02",
                KubeFacet(**seen, node="gpu-a02", ready=True, unschedulable=True, gpu_allocatable=4),
            ),
            FacetOf(
                "gpu-a02",
                StarlingxFacet(
                    **seen,
                    uuid="h-2",
                    personality="worker",
                    administrative="locked",
                    operational="disabled",
                    availability="online",
                    site="edge-1",
                ),
            ),
        ),
        workloads=(
            Workload(
                **seen,
                kind="nova-vm",
                id="vm-1",
                name=NASTY,
                state="ACTIVE",
                host="gpu-a01",
                owner="ml",
                gpus=2,
                flavor="g1.h100x2",
                gpu_kind="passthrough",
            ),
            Workload(
                **seen,
                kind="kata-pod",
                id="ns/p",
                name="infer",
                state="Running",
                host="gpu-a02",
                runtime_class="kata-qemu-nvidia-gpu",
                gpus=1,
            ),
            Workload(**seen, kind="kata-pod", id="ns/q", name="infer-2", state="Running"),
        ),
        sites=(
            Site(**seen, name="edge-1", management="managed", availability="online", sync_status="in-sync"),
        ),
        alarms=(
            Alarm(
                **seen,
                id="a1",
                alarm_id="100.101",
                severity="major",
                entity="host=gpu-a02",
                reason="x",
                timestamp="t",
                site="edge-1",
            ),
            Alarm(
                **seen,
                id="a2",
                alarm_id="100.102",
                severity="major",
                entity="host=gpu-a02",
                reason="y",
                timestamp="t",
                site="edge-1",
            ),
        ),
    )
    store.apply(
        SourceHealth(
            target="lab:all",
            source="lab",
            endpoint="http://127.0.0.1:1",
            interval_s=15.0,
            up=True,
            last_success=now,
            polls=4,
            failures=1,
            last_duration_s=0.5,
        ),
        obs,
    )
    store.set_health(SourceHealth(target="nvml:local", source="nvml", endpoint="local", interval_s=2.0))
    store.set_operations(
        (
            Operation(
                id="op1", kind="drain", target="gpu-a01", operator="alice", state="running", started_at=now
            ),
        )
    )
    return store, clock


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), value) for labels, value in promtext.parse(text, [name])[name]]


def test_the_text_parses_back_with_help_and_type_for_every_family() -> None:
    snap = rich_store()[0].snapshot()
    text = to_text(snap)
    assert text.endswith("\n")
    parsed = list(text_string_to_metric_families(text))
    names = [f.name for f in parsed]
    assert len(names) == len(set(names)), "a family was split in two"
    for family in parsed:
        assert family.documentation, family.name
        assert family.type in ("gauge", "counter"), family.name
    lines = text.splitlines()
    helps = [ln.split()[2] for ln in lines if ln.startswith("# HELP ")]
    types = [ln.split()[2] for ln in lines if ln.startswith("# TYPE ")]
    assert helps == types and len(helps) == len(set(helps))
    counters = {f.name for f in parsed if f.type == "counter"}
    assert {"sovereign_source_polls", "sovereign_machine_network_receive_bytes"} <= counters


def test_gpu_series_carry_the_snapshot_values_in_base_units() -> None:
    snap = rich_store()[0].snapshot()
    text = to_text(snap)
    used = {labels["uuid"]: value for labels, value in samples(text, "sovereign_gpu_memory_used_bytes")}
    util = {labels["uuid"]: value for labels, value in samples(text, "sovereign_gpu_utilization_ratio")}
    for gpu in snap.gpus:
        assert used[gpu.uuid] == gpu.memory_used_mib * MIB
        assert util[gpu.uuid] == pytest.approx(gpu.util_gpu_pct / 100)
    info = {labels["uuid"]: labels for labels, _ in samples(text, "sovereign_gpu_info")}
    assert {u: lab["holder"] for u, lab in info.items()} == {g.uuid: g.holder or "" for g in snap.gpus}
    assert samples(text, "sovereign_snapshot_generation") == [({}, snap.generation)]


def test_hosts_workloads_sites_alarms_sources_and_operations() -> None:
    snap = rich_store()[0].snapshot()
    text = to_text(snap)
    host = next(h for h in snap.hosts if h.name == "gpu-a01")
    assert host.machine is not None and host.nova is not None
    assert samples(text, "sovereign_machine_cpus") == [({"host": "gpu-a01"}, host.machine.cpu_count)]
    assert samples(text, "sovereign_nova_compute_enabled") == [({"host": "gpu-a01"}, 0.0)]
    assert samples(text, "sovereign_nova_compute_memory_bytes") == [
        ({"host": "gpu-a01"}, host.nova.memory_mb * MIB)
    ]
    assert samples(text, "sovereign_ironic_node_maintenance") == [({"host": "gpu-b01"}, 1.0)]
    assert samples(text, "sovereign_kubernetes_node_unschedulable") == [
        ({"host": "gpu-a02", "node": "gpu-a02"}, 1.0)
    ]
    by_kind = {(lab["kind"], lab["state"]): v for lab, v in samples(text, "sovereign_workloads")}
    assert by_kind == {("nova-vm", "ACTIVE"): 1, ("kata-pod", "Running"): 2}
    names = {lab["id"]: lab["name"] for lab, _ in samples(text, "sovereign_workload_info")}
    assert names["vm-1"] == NASTY  # escaped on the way out, unescaped on the way back
    prom_names = {s.labels["id"]: s.labels["name"] for s in families(text)["sovereign_workload_info"].samples}
    assert prom_names["vm-1"] == NASTY
    assert samples(text, "sovereign_alarms") == [({"site": "edge-1", "severity": "major"}, 2)]
    ups = {lab["target"]: v for lab, v in samples(text, "sovereign_source_up")}
    assert ups == {h.target: float(h.up) for h in snap.sources if h.up is not None}
    assert "nvml:local" not in ups, "a source never polled has no up series"
    assert samples(text, "sovereign_operations") == [({"kind": "drain", "state": "running"}, 1)]


def test_values_that_are_not_known_are_left_out() -> None:
    snap = rich_store()[0].snapshot()
    text = to_text(snap)
    with_power = {lab["uuid"] for lab, _ in samples(text, "sovereign_gpu_power_watts")}
    assert with_power == {g.uuid for g in snap.gpus if g.power_w is not None}
    with_xid = {lab["uuid"] for lab, _ in samples(text, "sovereign_gpu_xid_last")}
    assert with_xid == {g.uuid for g in snap.gpus if g.xid_last is not None}
    assert to_text(Snapshot(generation=0, taken_at=0.0)).count("# TYPE") == 2


def test_numbers_are_written_as_prometheus_reads_them() -> None:
    assert [format_value(v) for v in (3.0, 0.25, float("nan"), float("inf"), -float("inf"), 1e20)] == [
        "3",
        "0.25",
        "NaN",
        "+Inf",
        "-Inf",
        "1e+20",
    ]


async def test_the_daemon_serves_metrics_over_http() -> None:
    store, clock = rich_store()
    with short_dir() as directory:
        settings = ServeSettings(ssh=False, metrics_port=0)
        paths = ServePaths(
            socket=directory / "feed.sock",
            host_key=directory / "hk",
            authorized_keys=directory / "ak",
        )
        daemon = Daemon(store, settings, paths=paths, clock=clock, audit=MemoryAuditSink(clock))
        await daemon.start()
        try:
            url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                expected = to_text(store.snapshot(), daemon.feed_server.history.idle_allocated)
                assert await resp.text() == expected
                assert "sovereign_gpu_idle_allocated{" in expected
        finally:
            await daemon.stop()
        assert not paths.socket.exists()


async def test_idle_allocated_gpus_are_a_series_where_there_is_a_history() -> None:
    clock = FakeClock()
    store = Store(clock)
    history = GpuHistory()
    await warm_history(store, clock, history)
    snapshot = store.snapshot()
    idle = {g.uuid for g in history.idle_gpus(snapshot)}
    assert idle  # tui_data's fleet has idle held GPUs after 15 minutes
    series = {
        s.labels["uuid"]: s.value
        for family in text_string_to_metric_families(to_text(snapshot, history.idle_allocated))
        for s in family.samples
        if s.name == "sovereign_gpu_idle_allocated"
    }
    assert set(series) == {g.uuid for g in snapshot.gpus}
    assert {u for u, v in series.items() if v == 1.0} == idle
    assert "sovereign_gpu_idle_allocated" not in to_text(snapshot)  # no history, no claim


def test_export_prints_this_machine_in_prometheus_format(tmp_path: Path) -> None:
    """The real command, polling the real host collector (and no GPU driver)."""
    config = tmp_path / "sovereign.toml"
    config.write_text("[sources.nvml]\nenabled = false\n")
    out = subprocess.run(
        [sys.executable, "-m", "sovereign_tui", "--config", str(config), "export", "--format", "prometheus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    parsed = families(out.stdout)
    cpus = parsed["sovereign_machine_cpus"].samples
    assert [s.value for s in cpus] == [os.cpu_count()]
    assert cpus[0].labels["host"] == socket.gethostname()
    assert parsed["sovereign_source_up"].samples[0].value == 1.0
