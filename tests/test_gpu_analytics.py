"""GPU history rings, the idle-allocation flag and threshold alerts, driven by a fake clock through
the real store (values are functions of the sample number, computed here)."""

from __future__ import annotations

import math

import msgspec
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.gpu_analytics import AnalyticsSettings, GpuAlert, GpuHistory, analyse, gpu_alerts
from sovereign_tui.model import Gpu, Observation, Snapshot, SourceHealth
from sovereign_tui.store import Store

SETTINGS = AnalyticsSettings()
STEP = SETTINGS.interval_s


class Feed:
    """A store fed one observation per poll of one target, and a history watching it."""

    def __init__(self, settings: AnalyticsSettings = SETTINGS) -> None:
        self.clock = FakeClock()
        self.store = Store(self.clock)
        self.history = GpuHistory(settings)
        self.step = settings.interval_s

    def gpu(self, uuid: str = "GPU-1", **fields: object) -> Gpu:
        return Gpu(source="t", observed_at=self.clock.time(), host="h1", index=0, uuid=uuid, **fields)  # type: ignore[arg-type]

    def poll(self, *gpus: Gpu, up: bool = True) -> int:
        t = self.clock.time()
        health = SourceHealth(target="t", source="dcgm", endpoint="h1:9400", interval_s=self.step, up=up)
        if up:
            self.store.apply(msgspec.structs.replace(health, last_success=t), Observation(gpus=gpus))
        else:
            self.store.set_health(health)
        return self.history.observe(self.store.snapshot())

    async def tick(self, seconds: float | None = None) -> None:
        await self.clock.advance(self.step if seconds is None else seconds)


def util_at(k: int) -> float:
    return float((k * 37) % 100)


async def test_the_ring_keeps_the_last_history_window_in_fixed_memory() -> None:
    feed = Feed()
    polls = 3 * SETTINGS.capacity
    for k in range(polls):
        assert feed.poll(feed.gpu(util_gpu_pct=util_at(k), memory_used_mib=100.0 * k, power_w=k + 0.5)) == 1
        await feed.tick()
    util = feed.history.series("GPU-1", "util")
    assert len(util) == SETTINGS.capacity  # never more, however long it runs
    assert [v for _, v in util] == [util_at(k) for k in range(polls - SETTINGS.capacity, polls)]
    assert [v for _, v in feed.history.series("GPU-1", "memory")][-1] == 100.0 * (polls - 1)
    assert [v for _, v in feed.history.series("GPU-1", "temperature")] == [None] * SETTINGS.capacity
    assert feed.history.coverage_s("GPU-1") >= SETTINGS.history_s
    times = [t for t, _ in util]
    assert times == sorted(times)


async def test_a_snapshot_rebuilt_without_a_new_poll_adds_nothing() -> None:
    feed = Feed()
    gpu = feed.gpu(util_gpu_pct=50.0)
    assert feed.poll(gpu) == 1
    assert feed.history.observe(feed.store.snapshot()) == 0
    # Another source reporting rebuilds the snapshot; the GPU's observation is the same one.
    feed.store.apply(
        SourceHealth(target="other", source="x", endpoint="e", interval_s=5.0, up=True), Observation()
    )
    assert feed.history.observe(feed.store.snapshot()) == 0
    assert len(feed.history.series("GPU-1", "util")) == 1


async def test_stale_gpus_are_skipped() -> None:
    feed = Feed()
    feed.poll(feed.gpu(util_gpu_pct=10.0))
    await feed.tick()
    assert feed.poll(up=False) == 0
    assert all(g.stale for g in feed.store.snapshot().gpus)
    assert len(feed.history.series("GPU-1", "util")) == 1


async def idle_run(
    feed: Feed, polls: int, holder: str | None = "pod:ml/train-0", util: float = 2.0
) -> list[bool]:
    flags = []
    for _ in range(polls):
        feed.poll(feed.gpu(util_gpu_pct=util, holder=holder))
        flags.append(feed.history.idle_allocated(feed.store.snapshot().gpus[0]))
        await feed.tick()
    return flags


def polls_to_cover(settings: AnalyticsSettings, seconds: float) -> int:
    """Samples one interval apart needed to span `seconds` (to within half an interval)."""
    return math.ceil((seconds - settings.interval_s / 2) / settings.interval_s) + 1


async def test_a_held_gpu_idle_for_the_whole_window_is_flagged_once_the_window_is_covered() -> None:
    feed = Feed()
    flags = await idle_run(feed, 50)
    need = polls_to_cover(SETTINGS, SETTINGS.idle_window_s)
    assert flags.index(True) == need - 1
    assert all(flags[need - 1 :])
    alerts = analyse(feed.store.snapshot(), feed.history)
    assert [(a.severity, a.kind, a.gpu) for a in alerts] == [("info", "idle", "GPU-1")]
    assert "held by pod:ml/train-0" in alerts[0].reason


async def test_a_busy_sample_in_the_window_or_no_holder_means_not_idle() -> None:
    feed = Feed()
    assert not any(await idle_run(feed, 50, holder=None))
    feed = Feed()
    await idle_run(feed, 50)
    feed.poll(
        feed.gpu(util_gpu_pct=SETTINGS.idle_util_pct, holder="pod:ml/train-0")
    )  # at the threshold: busy
    assert not feed.history.idle_allocated(feed.store.snapshot().gpus[0])
    await feed.tick()
    flags = await idle_run(feed, 50)
    # Flagged again once the busy sample has left the window.
    assert flags.index(True) == polls_to_cover(SETTINGS, SETTINGS.idle_window_s) - 1


async def test_a_gpu_just_given_to_a_new_workload_is_not_flagged_for_before() -> None:
    feed = Feed()
    await idle_run(feed, 50, holder="pod:ml/old")
    flags = await idle_run(feed, 50, holder="pod:ml/new")
    assert flags.index(True) == polls_to_cover(SETTINGS, SETTINGS.idle_window_s) - 1


async def test_a_window_made_mostly_of_gaps_proves_nothing() -> None:
    feed = Feed()
    await idle_run(feed, 2)
    await feed.tick(SETTINGS.idle_window_s)  # the source was down: no samples
    flags = await idle_run(feed, 3)
    assert feed.history.coverage_s("GPU-1") >= SETTINGS.idle_window_s
    assert not any(flags)


async def test_a_shorter_configured_window_flags_sooner() -> None:
    settings = AnalyticsSettings(idle_window_s=120.0, interval_s=10.0, idle_util_pct=1.0)
    feed = Feed(settings)
    flags = await idle_run(feed, 30, util=0.5)
    assert flags.index(True) == polls_to_cover(settings, 120.0) - 1
    assert not any(await idle_run(Feed(settings), 30, util=1.0))


async def test_gpus_gone_for_longer_than_the_history_are_forgotten() -> None:
    feed = Feed()
    feed.poll(feed.gpu("GPU-old", util_gpu_pct=1.0), feed.gpu("GPU-stays", util_gpu_pct=1.0))
    steps = math.ceil(SETTINGS.history_s / STEP) + 1
    for _ in range(steps):
        await feed.tick()
        feed.poll(feed.gpu("GPU-stays", util_gpu_pct=1.0))
    assert "GPU-old" not in feed.history
    assert "GPU-stays" in feed.history
    assert len(feed.history) == 1


# --- alerts ---------------------------------------------------------------------------------------


def gpu(uuid: str, **fields: object) -> Gpu:
    return Gpu(
        source="dcgm:h:9400",
        observed_at=0.0,
        host=f"host-{uuid[-1]}",
        index=int(uuid[-1]),
        uuid=uuid,
        **fields,
    )  # type: ignore[arg-type]


def test_thresholds_raise_alerts_most_severe_first() -> None:
    limit = SETTINGS.temperature_c
    gpus = [
        gpu(
            "GPU-1", temperature_c=limit - 1, ecc_uncorrected=0, xid_last=None, remapped_rows_uncorrectable=0
        ),
        gpu("GPU-2", temperature_c=limit),
        gpu("GPU-3", ecc_uncorrected=3),
        gpu("GPU-4", xid_last=79),
        gpu("GPU-5", xid_last=31, mig_profile="1g.10gb", mig_instance=9),
        gpu("GPU-6", remapped_rows_uncorrectable=2, stale=True),
    ]
    alerts = gpu_alerts(gpus)
    assert [(a.severity, a.kind, a.gpu) for a in alerts] == [
        ("critical", "ecc", "GPU-3"),
        ("critical", "xid", "GPU-4"),
        ("critical", "row-remap", "GPU-6"),
        ("warning", "temperature", "GPU-2"),
        ("warning", "xid", "GPU-5/gi9"),
    ]
    reasons = {a.gpu: a.reason for a in alerts}
    assert reasons["GPU-2"] == f"GPU 2: temperature {limit:g} C (limit {limit:g} C)"
    assert reasons["GPU-3"].startswith("GPU 3: 3 uncorrected ECC errors")
    assert reasons["GPU-4"] == "GPU 4: XID 79: GPU has fallen off the bus"
    assert reasons["GPU-5/gi9"].startswith("GPU 5 MIG 1g.10gb #9: XID 31")
    assert reasons["GPU-6"].startswith("GPU 6: 2 memory rows remapped after uncorrectable errors")
    assert [a.stale for a in alerts if a.gpu == "GPU-6"] == [True]
    assert {a.host for a in alerts} == {g.host for g in gpus if g.uuid != "GPU-1"}


def test_the_temperature_limit_is_configurable() -> None:
    hot = [gpu("GPU-1", temperature_c=80.0)]
    assert gpu_alerts(hot) == []
    assert [a.kind for a in gpu_alerts(hot, AnalyticsSettings(temperature_c=80.0))] == ["temperature"]


def test_an_alert_becomes_a_model_alarm() -> None:
    (alert,) = gpu_alerts([gpu("GPU-4", xid_last=48)])
    alarm = alert.to_alarm("gpu-analytics", 5.0, "2027-01-15T08:00:00Z")
    assert (alarm.severity, alarm.host, alarm.reason) == (alert.severity, alert.host, alert.reason)
    assert alarm.id == "gpu-xid:GPU-4"
    assert isinstance(alert, GpuAlert)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="idle_window_s must be positive and within history_s"):
        AnalyticsSettings(idle_window_s=1000.0)
    with pytest.raises(msgspec.ValidationError, match="history_s at least one interval"):
        msgspec.convert({"interval_s": 60.0, "history_s": 30.0, "idle_window_s": 20.0}, AnalyticsSettings)


def test_analyse_on_an_empty_snapshot_is_empty() -> None:
    assert analyse(Snapshot(generation=1, taken_at=0.0), GpuHistory()) == []


# --- handing the history over -----------------------------------------------------------------


async def test_a_restored_history_continues_with_the_samples_taken_here_since() -> None:
    daemon = Feed()
    console = GpuHistory(SETTINGS)
    for k in range(12):
        daemon.poll(daemon.gpu(util_gpu_pct=util_at(k), holder="pod:ml/train", power_w=float(k)))
        if k >= 9:  # the console attached at poll 9 and saw 9 to 11 itself
            console.observe(daemon.store.snapshot())
        if k < 10:  # the daemon's dump is from poll 9, before the console's last two polls
            dump = daemon.history.dump()
        await daemon.tick()
    assert console.restore(dump) == 1
    assert console.series("GPU-1", "util") == daemon.history.series("GPU-1", "util")
    assert console.series("GPU-1", "power") == daemon.history.series("GPU-1", "power")
    assert [v for _, v in console.series("GPU-1", "temperature")] == [None] * 12


async def test_restore_keeps_a_longer_local_history_and_skips_malformed_entries() -> None:
    feed = Feed()
    for k in range(5):
        feed.poll(feed.gpu(util_gpu_pct=util_at(k)))
        await feed.tick()
    longer = feed.history.series("GPU-1", "util")
    short = Feed()
    short.clock = feed.clock
    short.poll(short.gpu(util_gpu_pct=99.0))
    assert feed.history.restore(short.history.dump()) == 0  # starts later than what is kept here
    assert feed.history.series("GPU-1", "util") == longer
    (good,) = feed.history.dump()
    broken = msgspec.structs.replace(good, key="GPU-2", values=good.values[:-4])
    fresh = GpuHistory(SETTINGS)
    assert fresh.restore([broken]) == 0
    assert "GPU-2" not in fresh
