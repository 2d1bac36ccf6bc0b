"""GPU analytics, headless: recent history per GPU, idle-allocation flags and health alerts.

- `GpuHistory` keeps, per GPU, a fixed-size ring of (time, utilization, memory used, power,
  temperature) covering `history_s` at the poll interval, fed from successive snapshots.
  Memory is fixed per GPU (about 24 bytes a sample, ~1.7 KB per GPU at the defaults) however long
  the app runs; GPUs gone from the snapshots for longer than the history are forgotten.
- A GPU is *idle-allocated* when a workload holds it (``Gpu.holder``) and every sample of the
  last `idle_window_s` shows utilization under `idle_util_pct`, over a window the history covers
  fully while the same workload held it: a GPU just handed to a new pod is not flagged for the
  minutes before it arrived.
- `gpu_alerts` turns thresholds into `GpuAlert` records (pure): temperature at or above the
  limit, uncorrected ECC errors, an XID seen, rows remapped after uncorrectable errors.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from typing import Literal

import msgspec

from sovereign_tui.model import Alarm, Gpu, Snapshot

Metric = Literal["util", "memory", "power", "temperature"]
METRICS: tuple[Metric, ...] = ("util", "memory", "power", "temperature")
Severity = Literal["critical", "warning", "info"]
AlertKind = Literal["temperature", "ecc", "xid", "row-remap", "idle"]
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_NAN = math.nan


class AnalyticsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    interval_s: float = 15.0
    """The GPU sources' poll interval: samples closer than 0.9 of it are not recorded, and the
    rings are sized from it."""
    history_s: float = 900.0
    """How far back each GPU's history reaches (sparklines, idle detection)."""
    idle_util_pct: float = 5.0
    """A held GPU under this utilization (%) is idle."""
    idle_window_s: float = 600.0
    """How long a held GPU must stay idle, over a fully covered history, to be flagged."""
    temperature_c: float = 85.0
    """Temperature (C) at or above which a GPU raises a warning."""

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.history_s < self.interval_s:
            raise ValueError("analytics: interval_s must be positive and history_s at least one interval")
        if not 0 < self.idle_window_s <= self.history_s:
            raise ValueError("analytics: idle_window_s must be positive and within history_s")

    @property
    def capacity(self) -> int:
        """Samples per ring: enough for `history_s` at the closest spacing recorded."""
        return math.ceil(self.history_s / (0.9 * self.interval_s)) + 1


class _Ring:
    """The recent samples of one GPU: parallel fixed arrays written round-robin."""

    __slots__ = ("held_since", "holder", "newest", "size", "times", "values")

    def __init__(self, capacity: int) -> None:
        self.times = array("d", bytes(8 * capacity))
        self.values = array("f", bytes(4 * 4 * capacity))  # 4 metrics per sample, interleaved
        self.newest = -1
        self.size = 0
        self.holder: str | None = None
        self.held_since = 0.0

    @property
    def capacity(self) -> int:
        return len(self.times)

    def last_time(self) -> float:
        return self.times[self.newest] if self.size else -math.inf

    def append(self, when: float, values: Iterable[float]) -> int:
        """Add one sample (4 metrics, NaN where unknown) over the oldest; returns its slot."""
        i = (self.newest + 1) % self.capacity
        self.newest = i
        self.size = min(self.size + 1, self.capacity)
        self.times[i] = when
        for k, value in enumerate(values):  # in place: no array made per sample
            self.values[4 * i + k] = value
        return i

    def push(self, gpu: Gpu) -> None:
        metrics = (gpu.util_gpu_pct, gpu.memory_used_mib, gpu.power_w, gpu.temperature_c)
        self.append(gpu.observed_at, (_NAN if v is None else v for v in metrics))
        if gpu.holder != self.holder:
            self.holder = gpu.holder
            self.held_since = gpu.observed_at

    def newest_first(self) -> Iterator[int]:
        cap = self.capacity
        for back in range(self.size):
            yield (self.newest - back) % cap

    def oldest_time(self) -> float:
        return self.times[(self.newest - self.size + 1) % self.capacity]


class GpuHistory:
    """Bounded recent history of every GPU, keyed by `Gpu.key`."""

    def __init__(self, settings: AnalyticsSettings | None = None) -> None:
        self.settings = settings or AnalyticsSettings()
        self._capacity = self.settings.capacity
        self._min_gap = 0.9 * self.settings.interval_s
        self._rings: dict[str, _Ring] = {}

    def __len__(self) -> int:
        return len(self._rings)

    def __contains__(self, key: object) -> bool:
        return key in self._rings

    def observe(self, snapshot: Snapshot) -> int:
        """Record each fresh GPU's newest observation; returns how many samples were added.

        Stale GPUs are skipped (their values are old), as are observations already recorded or
        closer than 0.9 interval to the previous one (a snapshot is rebuilt whenever any source
        reports, so one poll's values appear in many snapshots).
        """
        added = 0
        for gpu in snapshot.gpus:
            if gpu.stale:
                continue
            ring = self._rings.get(gpu.key)
            if ring is None:
                ring = self._rings[gpu.key] = _Ring(self._capacity)
            elif gpu.observed_at - ring.last_time() < self._min_gap:
                continue
            ring.push(gpu)
            added += 1
        horizon = snapshot.taken_at - self.settings.history_s
        for key in [k for k, r in self._rings.items() if r.last_time() < horizon]:
            del self._rings[key]
        return added

    def series(self, key: str, metric: Metric) -> list[tuple[float, float | None]]:
        """(time, value) of one metric of one GPU, oldest first; None where it was unknown."""
        ring = self._rings.get(key)
        if ring is None:
            return []
        k = METRICS.index(metric)
        out: list[tuple[float, float | None]] = []
        for i in ring.newest_first():
            value = ring.values[4 * i + k]
            out.append((ring.times[i], None if math.isnan(value) else value))
        out.reverse()
        return out

    def coverage_s(self, key: str) -> float:
        """Seconds between the oldest and the newest sample kept for a GPU."""
        ring = self._rings.get(key)
        return 0.0 if ring is None or not ring.size else ring.last_time() - ring.oldest_time()

    def idle_allocated(self, gpu: Gpu) -> bool:
        """Held by a workload, and under the idle threshold for the whole idle window."""
        if not gpu.holder or gpu.stale:
            return False
        ring = self._rings.get(gpu.key)
        if ring is None or not ring.size or ring.holder != gpu.holder:
            return False
        s = self.settings
        newest = ring.last_time()
        slack = 0.5 * s.interval_s  # samples sit on the poll grid, give or take the poll's duration
        if (
            newest - ring.oldest_time() < s.idle_window_s - slack
            or newest - ring.held_since < s.idle_window_s - slack
        ):
            return False
        start = newest - s.idle_window_s
        count = 0
        for i in ring.newest_first():
            if ring.times[i] < start:
                break
            util = ring.values[4 * i]
            if math.isnan(util) or util >= s.idle_util_pct:
                return False
            count += 1
        # A window mostly made of gaps (the source was down) proves nothing.
        return count >= max(2, 0.5 * s.idle_window_s / s.interval_s)

    def idle_gpus(self, snapshot: Snapshot) -> list[Gpu]:
        return [g for g in snapshot.gpus if self.idle_allocated(g)]

    # --- handing the history over (daemon -> attached console) --------------------------------

    def dump(self) -> tuple[RingDump, ...]:
        """Every GPU's samples, oldest first, for a console that attaches to a running daemon:
        without them its sparklines start empty and no GPU can be flagged idle for ten minutes."""
        dumps = []
        for key, ring in self._rings.items():
            order = list(ring.newest_first())
            order.reverse()
            times = array("d", (ring.times[i] for i in order))
            values = array("f", (ring.values[4 * i + k] for i in order for k in range(4)))
            dumps.append(
                RingDump(
                    key=key,
                    holder=ring.holder,
                    held_since=ring.held_since,
                    times=times.tobytes(),
                    values=values.tobytes(),
                )
            )
        return tuple(dumps)

    def restore(self, dumps: Iterable[RingDump]) -> int:
        """Take over the GPUs' samples from `dump` (of a process on this machine: native byte
        order); a GPU already followed here keeps its own samples when they reach further back.
        Returns how many GPUs were taken over; malformed entries are skipped."""
        taken = 0
        for dump in dumps:
            times, values = array("d"), array("f")
            if len(dump.times) % 8 or len(dump.values) != 2 * len(dump.times):
                continue
            times.frombytes(dump.times)
            values.frombytes(dump.values)
            mine = self._rings.get(dump.key)
            if not times or (mine is not None and mine.size and mine.oldest_time() <= times[0]):
                continue
            ring = _Ring(self._capacity)
            for n in range(max(0, len(times) - self._capacity), len(times)):
                ring.append(times[n], values[4 * n : 4 * n + 4])
            ring.holder, ring.held_since = dump.holder, dump.held_since
            if mine is not None and mine.size:  # samples taken here since go on top
                newest = ring.last_time()
                for i in reversed(list(mine.newest_first())):
                    if mine.times[i] > newest:
                        ring.append(mine.times[i], mine.values[4 * i : 4 * i + 4])
                if mine.holder != dump.holder:
                    ring.holder, ring.held_since = mine.holder, mine.held_since
            self._rings[dump.key] = ring
            taken += 1
        return taken


class RingDump(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One GPU's samples as `GpuHistory.dump` hands them over (base64 in JSON)."""

    key: str
    holder: str | None
    held_since: float
    times: bytes
    """float64 sample times, oldest first."""
    values: bytes
    """float32 (util, memory, power, temperature) per sample, NaN where unknown."""


# --- alerts -----------------------------------------------------------------------------------


class GpuAlert(msgspec.Struct, frozen=True, kw_only=True):
    severity: Severity
    kind: AlertKind
    gpu: str
    """`Gpu.key` of the GPU (or MIG instance)."""
    host: str
    reason: str
    stale: bool = False
    """The GPU's values are the last known ones: its source stopped answering."""

    def to_alarm(self, source: str, observed_at: float, timestamp: str) -> Alarm:
        """As a model `Alarm`, for the Overview's alarm list and the export."""
        return Alarm(
            source=source,
            observed_at=observed_at,
            stale=self.stale,
            id=f"gpu-{self.kind}:{self.gpu}",
            alarm_id=f"gpu.{self.kind}",
            severity=self.severity,
            entity=f"host={self.host}.gpu={self.gpu}",
            reason=self.reason,
            timestamp=timestamp,
            host=self.host,
        )


XID_MEANINGS: dict[int, tuple[Severity, str]] = {
    13: ("warning", "graphics engine exception"),
    31: ("warning", "GPU memory page fault"),
    43: ("warning", "GPU stopped processing"),
    45: ("warning", "preemptive cleanup after a previous error"),
    48: ("critical", "double-bit ECC error"),
    61: ("warning", "internal micro-controller breakpoint"),
    62: ("critical", "internal micro-controller halt"),
    63: ("warning", "row remapping recorded (reset the GPU to apply it)"),
    64: ("critical", "row remapping failed"),
    74: ("critical", "NVLink error"),
    79: ("critical", "GPU has fallen off the bus"),
    92: ("warning", "high single-bit ECC error rate"),
    94: ("warning", "contained ECC error"),
    95: ("critical", "uncontained ECC error"),
    119: ("critical", "GSP RPC timeout"),
    120: ("critical", "GSP error"),
}


def _where(gpu: Gpu) -> str:
    mig = f" MIG {gpu.mig_profile} #{gpu.mig_instance}" if gpu.mig_instance is not None else ""
    return f"GPU {gpu.index}{mig}"


def gpu_alerts(gpus: Iterable[Gpu], settings: AnalyticsSettings | None = None) -> list[GpuAlert]:
    """Threshold alerts for `gpus`, most severe first, then by host and GPU."""
    s = settings or AnalyticsSettings()
    out: list[GpuAlert] = []

    def alert(gpu: Gpu, severity: Severity, kind: AlertKind, reason: str) -> None:
        out.append(
            GpuAlert(
                severity=severity,
                kind=kind,
                gpu=gpu.key,
                host=gpu.host,
                reason=f"{_where(gpu)}: {reason}",
                stale=gpu.stale,
            )
        )

    for gpu in gpus:
        if gpu.temperature_c is not None and gpu.temperature_c >= s.temperature_c:
            alert(
                gpu,
                "warning",
                "temperature",
                f"temperature {gpu.temperature_c:g} C (limit {s.temperature_c:g} C)",
            )
        if gpu.ecc_uncorrected:
            alert(
                gpu, "critical", "ecc", f"{gpu.ecc_uncorrected} uncorrected ECC errors since the last reset"
            )
        if gpu.xid_last:
            severity, meaning = XID_MEANINGS.get(gpu.xid_last, ("warning", "see NVIDIA's XID catalogue"))
            alert(gpu, severity, "xid", f"XID {gpu.xid_last}: {meaning}")
        if gpu.remapped_rows_uncorrectable:
            alert(
                gpu,
                "critical",
                "row-remap",
                f"{gpu.remapped_rows_uncorrectable} memory rows remapped after uncorrectable errors "
                "(reset the GPU; replace it if remapping fails)",
            )
    out.sort(key=lambda a: (_SEVERITY_ORDER[a.severity], a.host, a.gpu, a.kind))
    return out


def analyse(snapshot: Snapshot, history: GpuHistory) -> list[GpuAlert]:
    """Threshold alerts plus an ``info`` alert per idle-allocated GPU, for the Overview."""
    alerts = gpu_alerts(snapshot.gpus, history.settings)
    window = history.settings.idle_window_s / 60
    for gpu in history.idle_gpus(snapshot):
        alerts.append(
            GpuAlert(
                severity="info",
                kind="idle",
                gpu=gpu.key,
                host=gpu.host,
                reason=f"{_where(gpu)}: held by {gpu.holder} but under "
                f"{history.settings.idle_util_pct:g}% for {window:g} min",
            )
        )
    return alerts
