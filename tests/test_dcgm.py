"""The dcgm-exporter collector against the lab's exporters: real HTTP on loopback through the real
poller and store, expected values computed by the lab's own generator for the same clock time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest

from collectors.dcgm import FAMILIES, DcgmCollector, gpus_from_samples
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import ConfigError
from sovereign_tui.config_sources import DcgmEndpoint, DcgmSource, normalise
from sovereign_tui.config_sources import validate_dcgm as validate
from sovereign_tui.lab.dcgm_exporter import DcgmLab, GpuSample, LabGpu, layout, render, sample, start_dcgm_lab
from sovereign_tui.model import Gpu
from sovereign_tui.poller import Poller
from sovereign_tui.promtext import parse
from sovereign_tui.store import Store

HOSTS = [("gpu-a", 4), ("gpu-b", 5), ("gpu-c", 3), ("gpu-d", 2)]


def key_of(row: LabGpu) -> str:
    return row.uuid if row.mig_instance is None else f"{row.uuid}/gi{row.mig_instance}"


def expected_fields(row: LabGpu, s: GpuSample) -> dict[str, object]:
    """What a collector must read for one lab row: the exporter's meaning of each family."""
    return {
        "host": row.host,
        "index": row.index,
        "uuid": row.uuid,
        "name": row.model.name,
        "bus_id": row.bus_id,
        "util_gpu_pct": float(s.util) if s.util is not None else s.gr_active * 100.0,
        "memory_used_mib": float(s.fb_used),
        "memory_total_mib": float(s.fb_used + s.fb_free),
        "temperature_c": float(s.temp),
        "power_w": s.power,
        "xid_last": s.xid or None,
        "remapped_rows_uncorrectable": s.remapped_uncorrectable,
        "holder": row.holder,
        "mig_profile": row.mig_profile,
        "mig_instance": row.mig_instance,
        "mig_mode": "Enabled" if row.mig_instance is not None else None,
    }


def assert_matches(gpu: Gpu, row: LabGpu, s: GpuSample) -> None:
    got = {name: getattr(gpu, name) for name in expected_fields(row, s)}
    assert got == pytest.approx(expected_fields(row, s)), key_of(row)
    assert row.memory_mib == gpu.memory_total_mib


@dataclass
class Env:
    clock: FakeClock
    lab: DcgmLab
    store: Store
    poller: Poller

    def target(self, host: str) -> str:
        return f"dcgm:{self.lab.endpoint(host)}"

    def gpus(self, host: str) -> dict[str, Gpu]:
        return {g.key: g for g in self.store.snapshot().gpus if g.source == self.target(host)}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    lab = await start_dcgm_lab(HOSTS, clock, seed=7)
    store = Store(clock)
    poller = Poller(store, clock=clock)
    poller.set_targets(DcgmCollector(DcgmSource(enabled=True, endpoints=tuple(lab.urls))).targets())
    try:
        yield Env(clock, lab, store, poller)
    finally:
        await poller.close()
        await lab.stop()


def test_the_lab_layout_shows_every_shape() -> None:
    rows = [r for host in layout(HOSTS, seed=7) for r in host]
    assert any(',Hostname="' in r.labels for r in rows)
    assert any(',hostname="' in r.labels for r in rows)
    assert any(r.mig_instance is not None for r in rows)
    assert any(r.pod for r in rows)
    assert any(not r.pod for r in rows)
    assert layout(HOSTS, seed=7) == layout(HOSTS, seed=7)


async def test_every_gpu_of_every_exporter_arrives_with_the_served_values(env: Env) -> None:
    await env.poller.run_once()
    snap = env.store.snapshot()
    assert all(h.up for h in snap.sources), [h.last_error for h in snap.sources]
    t = env.clock.time()
    for name, _ in HOSTS:
        expected = env.lab.expected(name, t)
        got = env.gpus(name)
        assert set(got) == {key_of(row) for row, _ in expected}
        for row, s in expected:
            gpu = got[key_of(row)]
            assert_matches(gpu, row, s)
            assert gpu.observed_at == t
            assert not gpu.stale
        assert env.lab.requests(name) == 1  # one GET per exporter per poll


async def test_both_host_label_spellings_mig_rows_and_pod_holders(env: Env) -> None:
    await env.poller.run_once()
    gpus = env.store.snapshot().gpus
    for name, _ in HOSTS:
        rows = env.lab.rows(name)
        spelled = "Hostname" if ',Hostname="' in rows[0].labels else "hostname"
        assert {g.host for g in gpus if g.source == env.target(name)} == {name}, spelled
    mig = [g for g in gpus if g.mig_instance is not None]
    lab_mig = [r for name, _ in HOSTS for r in env.lab.rows(name) if r.mig_instance is not None]
    assert sorted(g.key for g in mig) == sorted(key_of(r) for r in lab_mig)
    # A MIG GPU shows as one row per GPU instance, all under the parent's UUID and index.
    by_parent = {(g.uuid, g.index) for g in mig}
    assert len(by_parent) < len(mig)
    held = {g.key: g.holder for g in gpus if g.holder}
    assert held == {
        key_of(r): f"pod:{r.namespace}/{r.pod}" for name, _ in HOSTS for r in env.lab.rows(name) if r.pod
    }


async def test_values_follow_the_lab_clock(env: Env) -> None:
    await env.poller.run_once()
    first = {g.key: g for g in env.store.snapshot().gpus}
    await env.clock.advance(47.0)
    await env.poller.run_once()
    t = env.clock.time()
    second = {g.key: g for g in env.store.snapshot().gpus}
    for name, _ in HOSTS:
        for row, s in env.lab.expected(name, t):
            assert_matches(second[key_of(row)], row, s)
    assert any(first[k].util_gpu_pct != second[k].util_gpu_pct for k in first)


async def test_an_http_500_marks_only_that_hosts_gpus_stale(env: Env) -> None:
    await env.poller.run_once()
    before = env.gpus("gpu-b")
    await env.lab.set_fault("gpu-b", "http500")
    await env.clock.advance(15.0)
    await env.poller.run_once()
    health = env.poller.health(env.target("gpu-b"))
    assert health.up is False
    assert (
        health.last_error
        == f"dcgm-exporter {env.lab.endpoint('gpu-b')}: HTTP 500 Internal Server Error from /metrics"
    )
    stale = env.gpus("gpu-b")
    assert stale
    assert all(g.stale for g in stale.values())
    assert {
        k: msgspec.structs.replace(g, stale=False) for k, g in stale.items()
    } == before  # last known values
    t = env.clock.time()
    for name in ("gpu-a", "gpu-c", "gpu-d"):
        fresh = env.gpus(name)
        assert fresh
        assert not any(g.stale for g in fresh.values())
        for row, s in env.lab.expected(name, t):
            assert_matches(fresh[key_of(row)], row, s)
    # Healed, the host is fresh again.
    await env.lab.set_fault("gpu-b", None)
    await env.poller.run_once()
    assert not any(g.stale for g in env.gpus("gpu-b").values())


async def test_a_malformed_body_is_one_line_naming_the_endpoint_and_the_line(env: Env) -> None:
    await env.lab.set_fault("gpu-c", "malformed")
    await env.poller.run_once()
    error = env.poller.health(env.target("gpu-c")).last_error
    assert error is not None
    assert "\n" not in error
    assert error.startswith(f"dcgm-exporter {env.lab.endpoint('gpu-c')}: malformed metrics text (line ")
    assert "label set not closed" in error
    assert env.gpus("gpu-c") == {}
    assert env.gpus("gpu-a")


async def test_a_refused_connection_names_the_endpoint(env: Env) -> None:
    await env.poller.run_once()
    await env.lab.set_fault("gpu-d", "down")
    await env.poller.run_once()
    error = env.poller.health(env.target("gpu-d")).last_error
    endpoint = env.lab.endpoint("gpu-d")
    assert (
        error
        == f"dcgm-exporter {endpoint}: cannot connect (connection refused); is it running and reachable?"
    )
    assert all(g.stale for g in env.gpus("gpu-d").values())
    await env.lab.set_fault("gpu-d", None)
    await env.poller.run_once()
    assert env.poller.health(env.target("gpu-d")).up is True


async def test_a_hanging_exporter_times_out_on_the_injected_clock(env: Env) -> None:
    await env.lab.set_fault("gpu-a", "hang")
    target = env.poller.targets[env.target("gpu-a")]
    attempt = asyncio.create_task(env.poller.poll_target(target))
    await env.lab.wait_hung("gpu-a")
    assert not attempt.done()
    await env.clock.advance(target.timeout)
    assert await attempt is False
    error = env.poller.health(target.id).last_error
    assert error == f"timed out after {target.timeout:g}s (endpoint {env.lab.endpoint('gpu-a')})"


async def test_a_configured_host_name_wins_over_the_label() -> None:
    clock = FakeClock()
    lab = await start_dcgm_lab([("dcgm-exporter-x7k2p", 2)], clock, seed=3)
    store = Store(clock)
    poller = Poller(store, clock=clock)
    try:
        source = DcgmSource(
            enabled=True, endpoints=(DcgmEndpoint(url=lab.url("dcgm-exporter-x7k2p"), host="node-17"),)
        )
        poller.set_targets(DcgmCollector(source).targets())
        await poller.run_once()
        gpus = store.snapshot().gpus
        assert sorted(g.key for g in gpus) == sorted(key_of(r) for r in lab.rows("dcgm-exporter-x7k2p"))
        assert {g.host for g in gpus} == {"node-17"}
    finally:
        await poller.close()
        await lab.stop()


# --- parsing details, from the lab's own text ---------------------------------------------------


def parse_rows(rows: list[LabGpu], t: float, source: str = "dcgm:x") -> tuple[Gpu, ...]:
    return gpus_from_samples(
        parse(render(rows, t), FAMILIES),
        source=source,
        observed_at=t,
        host_of=lambda labels: labels["UUID"][:8],
    )


def test_xid_and_remapped_rows_are_read() -> None:
    rows = layout([("gpu-x", 3)], seed=1)[0]
    faulty = [
        dataclasses.replace(rows[0], xid=79),
        dataclasses.replace(rows[1], remapped_uncorrectable=2),
        rows[2],
    ]
    gpus = {g.uuid: g for g in parse_rows(faulty, 1_800_000_000.0)}
    assert gpus[rows[0].uuid].xid_last == 79
    assert gpus[rows[1].uuid].remapped_rows_uncorrectable == 2
    assert gpus[rows[2].uuid].xid_last is None  # dcgm prints 0 until an XID is seen
    assert gpus[rows[2].uuid].remapped_rows_uncorrectable == 0


def test_dcgm_blank_values_and_nan_read_as_unknown() -> None:
    row = layout([("gpu-x", 1)], seed=1)[0][0]
    blanks = {"DCGM_FI_DEV_GPU_TEMP{": "2147483647", "DCGM_FI_DEV_POWER_USAGE{": "NaN"}
    lines = []
    for line in render([row], 1_800_000_000.0).splitlines():
        for prefix, blank in blanks.items():
            if line.startswith(prefix):
                line = f"{line.rpartition(' ')[0]} {blank}"
        lines.append(line)
    (gpu,) = gpus_from_samples(
        parse("\n".join(lines), FAMILIES), source="s", observed_at=0.0, host_of=lambda _: "h"
    )
    assert gpu.temperature_c is None
    assert gpu.power_w is None
    assert gpu.memory_used_mib == sample(row, 1_800_000_000.0).fb_used


def test_a_gpu_shared_by_two_pods_lists_both_holders() -> None:
    labels = (
        'gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="L40S",Hostname="n1"'
    )
    text = "".join(
        f'DCGM_FI_DEV_GPU_UTIL{{{labels},container="c",namespace="ns",pod="{pod}"}} {util}\n'
        for pod, util in (("a", 40), ("b", 40))
    )
    (gpu,) = gpus_from_samples(
        parse(text, FAMILIES), source="s", observed_at=0.0, host_of=lambda lb: lb["Hostname"]
    )
    assert gpu.holder == "pod:ns/a, pod:ns/b"
    assert gpu.util_gpu_pct == 40.0


# --- configuration ------------------------------------------------------------------------------


def test_endpoint_forms_are_normalised() -> None:
    assert normalise("10.0.0.5").url == "http://10.0.0.5:9400/metrics"
    assert normalise("10.0.0.5").hostport == "10.0.0.5:9400"
    assert normalise("http://gpu-01:9400").url == "http://gpu-01:9400/metrics"
    assert normalise("https://gpu-01/dcgm/metrics").hostport == "gpu-01:443"
    assert normalise(DcgmEndpoint(url="[fd00::5]:9500", host="gpu-05")).hostport == "[fd00::5]:9500"


def test_settings_decode_from_toml_with_urls_and_tables() -> None:
    text = (
        b'enabled = true\nendpoints = ["10.0.0.5", {url = "http://10.0.0.6:9400/metrics", host = "gpu-06"}]\n'
    )
    source = msgspec.toml.decode(text, type=DcgmSource)
    eps = validate(source)
    assert [e.hostport for e in eps] == ["10.0.0.5:9400", "10.0.0.6:9400"]
    assert [e.host for e in eps] == [None, "gpu-06"]
    targets = DcgmCollector(source).targets()
    assert [(t.id, t.endpoint, t.interval_s, t.timeout) for t in targets] == [
        ("dcgm:10.0.0.5:9400", "10.0.0.5:9400", 15.0, 5.0),
        ("dcgm:10.0.0.6:9400", "10.0.0.6:9400", 15.0, 5.0),
    ]
    assert DcgmCollector(DcgmSource(enabled=False, endpoints=("10.0.0.5",))).targets() == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (DcgmSource(endpoints=("10.0.0.5", "http://10.0.0.5:9400/metrics")), "10.0.0.5:9400 is listed twice"),
        (DcgmSource(interval_s=5.0, timeout_s=5.0), "timeout_s must be positive and shorter than interval_s"),
        (DcgmSource(endpoints=("ftp://10.0.0.5",)), "is not an http(s) URL"),
        (DcgmSource(interval_s=0), "interval_s must be positive"),
    ],
)
def test_bad_settings_are_one_line(source: DcgmSource, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^sovereign\.toml: sources\.dcgm") as err:
        validate(source)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
