"""Deterministic cluster data for the TUI tests, built from the tables below and applied to a
real `Store` the way the poller does (one observation per target)."""

from __future__ import annotations

from dataclasses import dataclass

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import Gpu, GpuProcess, Observation, SourceHealth
from sovereign_tui.store import Store


@dataclass(frozen=True)
class HostSpec:
    name: str
    model: str
    memory_mib: float
    power_limit_w: float
    gpus: int
    mig: str | None = None


# Models, memory and power limits as nvidia-smi reports them for the captured cards.
HOSTS: tuple[HostSpec, ...] = (
    HostSpec("gpu-a01", "NVIDIA H100 80GB HBM3", 81559, 700, 4),
    HostSpec("gpu-a02", "NVIDIA H100 80GB HBM3", 81559, 700, 4),
    HostSpec("gpu-b01", "NVIDIA H200", 143771, 700, 4, mig="Enabled"),
    HostSpec("gpu-b02", "NVIDIA H200", 143771, 700, 2, mig="Disabled"),
    HostSpec("ws-10", "NVIDIA GeForce RTX 2080 SUPER", 8192, 250, 1),
)
INTERVAL_S = 10.0
HOLDERS = ("nova-vm/train-llama-01", "kata-pod/ml/infer-7", None)


def target_of(host: str) -> str:
    return f"nvidia_smi:{host}"


def gpus_for(spec: HostSpec, observed_at: float, tick: int = 0) -> tuple[Gpu, ...]:
    """The host's GPUs; values vary with the GPU's number and `tick` so updates change them."""
    found = []
    for i in range(spec.gpus):
        n = sum(map(ord, spec.name)) + i * 7 + tick
        busy = n % 3 != 0
        found.append(
            Gpu(
                source=target_of(spec.name),
                observed_at=observed_at,
                host=spec.name,
                index=i,
                uuid=f"GPU-{spec.name}-{i:02d}",
                name=spec.model,
                memory_total_mib=spec.memory_mib,
                memory_used_mib=round(spec.memory_mib * (n % 10) / 10) if busy else 0.0,
                util_gpu_pct=float(n * 13 % 100) if busy else 0.0,
                temperature_c=float(30 + n % 50),
                power_w=float(60 + n * 17 % int(spec.power_limit_w - 60)),
                power_limit_w=spec.power_limit_w,
                ecc_uncorrected=1 if n % 11 == 0 else 0,
                mig_mode=spec.mig,
                processes=(GpuProcess(pid=1000 + n, name="python3", used_memory_mib=512.0),) if busy else (),
                holder=HOLDERS[n % len(HOLDERS)] if busy else None,
            )
        )
    return tuple(found)


def health(host: str, clock: FakeClock, *, up: bool | None = True, error: str | None = None) -> SourceHealth:
    return SourceHealth(
        target=target_of(host),
        source="nvidia_smi",
        endpoint=f"{host}:22",
        interval_s=INTERVAL_S,
        up=up,
        last_success=clock.time() if up else None,
        last_attempt=clock.time(),
        last_error=error,
        last_duration_s=0.25,
        consecutive_failures=0 if up else 1,
        polls=1,
        failures=0 if up else 1,
    )


def fill(store: Store, clock: FakeClock, hosts: tuple[HostSpec, ...] = HOSTS, tick: int = 0) -> None:
    for spec in hosts:
        store.apply(health(spec.name, clock), Observation(gpus=gpus_for(spec, clock.time(), tick)))


def fail(store: Store, clock: FakeClock, host: str, error: str) -> None:
    """The target's next poll failed: the store keeps its GPUs, marked stale."""
    before = next(h for h in store.snapshot().sources if h.target == target_of(host))
    store.set_health(
        SourceHealth(
            target=before.target,
            source=before.source,
            endpoint=before.endpoint,
            interval_s=before.interval_s,
            up=False,
            last_success=before.last_success,
            last_attempt=clock.time(),
            last_error=error,
            last_duration_s=2.0,
            consecutive_failures=before.consecutive_failures + 1,
            polls=before.polls + 1,
            failures=before.failures + 1,
        )
    )
