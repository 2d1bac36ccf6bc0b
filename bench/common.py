"""What the benchmark's two processes share: the dcgm-exporter-like payload, the file-descriptor
limit, and starting the endpoint process."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sovereign_tui.model import Gpu
from sovereign_tui.promtext import Sample, escape_label_value

GPUS_PER_HOST = 8
MODEL = "NVIDIA H100 80GB HBM3"
FB_TOTAL_MIB = 81559

# (metric, help text, type): what dcgm-exporter's default counters look like.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "gauge"),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "gauge"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "gauge"),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "gauge"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "gauge"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "gauge"),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", "gauge"),
)

WANTED = frozenset(
    {
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED",
    }
)
"""The families the benchmark's poll parses; the others in the payload are skipped."""

SAMPLES_PER_ENDPOINT = GPUS_PER_HOST * len(WANTED)


def host_name(index: int) -> str:
    return f"gpu-node-{index:05d}"


def dcgm_payload(index: int) -> bytes:
    """A dcgm-exporter `/metrics` answer for a host with eight H100s (about 10 KB)."""
    rng = random.Random(index)
    host = host_name(index)
    gpus = []
    for g in range(GPUS_PER_HOST):
        used = rng.randrange(0, FB_TOTAL_MIB)
        labels = {
            "gpu": str(g),
            "UUID": f"GPU-{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-"
            f"{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}",
            "pci_bus_id": f"00000000:{0x18 + 0x10 * g:02X}:00.0",
            "device": f"nvidia{g}",
            "modelName": MODEL,
            "Hostname": host,
        }
        values = {
            "DCGM_FI_DEV_SM_CLOCK": float(rng.choice((345, 1755, 1980))),
            "DCGM_FI_DEV_GPU_TEMP": float(rng.randrange(28, 84)),
            "DCGM_FI_DEV_POWER_USAGE": round(rng.uniform(68.0, 700.0), 3),
            "DCGM_FI_DEV_GPU_UTIL": float(rng.randrange(0, 101)),
            "DCGM_FI_DEV_FB_FREE": float(FB_TOTAL_MIB - used),
            "DCGM_FI_DEV_FB_USED": float(used),
            "DCGM_FI_DEV_XID_ERRORS": 0.0,
        }
        rendered = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
        gpus.append((rendered, values))
    lines = []
    for name, help_text, kind in FAMILIES:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for rendered, values in gpus:
            value = values[name]
            lines.append(f"{name}{{{rendered}}} {int(value) if value.is_integer() else value}")
    return ("\n".join(lines) + "\n").encode()


def gpus_from(families: dict[str, list[Sample]], source: str, observed_at: float) -> tuple[Gpu, ...]:
    """The GPUs a parsed dcgm-exporter answer describes (what a dcgm collector builds)."""
    fields: dict[str, dict[str, float]] = {}
    labels_of = {}
    for name, samples in families.items():
        for labels, value in samples:
            uuid = labels.get("UUID", "")
            fields.setdefault(uuid, {})[name] = value
            labels_of[uuid] = labels
    gpus = []
    for uuid, values in fields.items():
        labels = labels_of[uuid]
        used = values.get("DCGM_FI_DEV_FB_USED")
        free = values.get("DCGM_FI_DEV_FB_FREE")
        gpus.append(
            Gpu(
                source=source,
                observed_at=observed_at,
                host=labels.get("Hostname") or labels.get("hostname", ""),
                index=int(labels.get("gpu", "0")),
                uuid=uuid,
                name=labels.get("modelName"),
                bus_id=labels.get("pci_bus_id"),
                memory_used_mib=used,
                memory_total_mib=used + free if used is not None and free is not None else None,
                util_gpu_pct=values.get("DCGM_FI_DEV_GPU_UTIL"),
                temperature_c=values.get("DCGM_FI_DEV_GPU_TEMP"),
                power_w=values.get("DCGM_FI_DEV_POWER_USAGE"),
            )
        )
    return tuple(gpus)


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_wait_s(pid: int | None = None) -> float:
    """Seconds the threads of a process (this one by default) have spent runnable but waiting
    for a CPU (Linux scheduler statistics; 0.0 where there are none). On a busy machine this is
    what a cycle spent queueing behind other processes."""
    tasks = Path(f"/proc/{pid or 'self'}/task")
    total = 0
    try:
        for task in tasks.iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    except OSError:
        return 0.0
    return total / 1e9


def install_uvloop() -> bool:
    """Use uvloop for new event loops where it is installed."""
    try:
        import uvloop
    except ImportError:
        return False
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@dataclass
class Endpoints:
    """The endpoint process: `n` loopback servers, each its own host:port."""

    process: subprocess.Popen[bytes]
    ports: list[int]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.ports]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the server exits when its stdin closes
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_endpoints(n: int, latency_ms: float) -> Endpoints:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.endpoints", "--n", str(n), "--latency-ms", str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"the endpoint process exited ({proc.returncode}) before it was ready")
    ports = json.loads(line)
    return Endpoints(proc, [int(p) for p in ports])
