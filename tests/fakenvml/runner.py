"""Run the real runtime (settings -> collectors -> poller -> store) in its own process, against
whichever libnvidia-ml.so.1 that process loads, and print what it saw as JSON lines.

A process can load only one libnvidia-ml, so each test scenario runs this with its own settings
file and fake-GPU config (``FAKE_NVML_CONFIG``).

    python runner.py SETTINGS.toml STEP...

Steps: ``poll`` (one poll of every target, then one line: the snapshot's GPUs and sources and
the fake's counters), ``fail=<nvml code>`` (every fake NVML call now answers that code),
``recover`` (it answers normally again), ``xid=<gpu index>:<xid>`` (an XID error happens),
``close`` (close the runtime, then one line with the counters).
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from pathlib import Path
from typing import Any

import msgspec
import pynvml

from sovereign_tui.clock import FakeClock
from sovereign_tui.config import Settings, parse_settings
from sovereign_tui.runtime import Runtime

COUNTERS = ("fake_nvml_init_calls", "fake_nvml_shutdown_calls", "fake_nvml_handle_calls")


def fake_library() -> ctypes.CDLL | None:
    """The NVML library pynvml loaded, if it loaded one (the fake, in these tests)."""
    lib = pynvml.nvmlLib
    return lib if isinstance(lib, ctypes.CDLL) else None


def counters() -> dict[str, int] | None:
    lib = fake_library()
    if lib is None:
        return None
    return {name: ctypes.c_int.in_dll(lib, name).value for name in COUNTERS}


def set_fail_code(code: int) -> None:
    lib = fake_library()
    assert lib is not None, "fail= needs the fake loaded: poll first"
    ctypes.c_int.in_dll(lib, "fake_nvml_fail_code").value = code


def inject_xid(spec: str) -> None:
    lib = fake_library()
    assert lib is not None, "xid= needs the fake loaded: poll first"
    index, xid = spec.split(":")
    lib.fake_nvml_inject_xid.argtypes = [ctypes.c_uint, ctypes.c_ulonglong]
    assert lib.fake_nvml_inject_xid(int(index), int(xid)) == 0


def emit(step: str, **fields: Any) -> None:
    sys.stdout.write(msgspec.json.encode({"step": step, **fields, "counters": counters()}).decode() + "\n")
    sys.stdout.flush()


async def main(settings: Settings, steps: list[str]) -> None:
    clock = FakeClock()
    runtime = Runtime(settings, clock=clock)
    closed = False
    try:
        for step in steps:
            if step == "poll":
                await runtime.poller.run_once(timeout_s=60)
                snap = runtime.snapshot()
                emit(step, taken_at=clock.time(), gpus=snap.gpus, sources=snap.sources, hosts=snap.hosts)
                await clock.advance(settings.sources.nvml.interval_s)
            elif step.startswith("fail="):
                set_fail_code(int(step.removeprefix("fail=")))
            elif step == "recover":
                set_fail_code(0)
            elif step.startswith("xid="):
                inject_xid(step.removeprefix("xid="))
            elif step == "close":
                await runtime.close()
                closed = True
                emit(step)
            else:
                raise SystemExit(f"runner: unknown step {step!r}")
    finally:
        if not closed:
            await runtime.close()


if __name__ == "__main__":
    path = Path(sys.argv[1])
    asyncio.run(main(parse_settings(path.read_bytes(), path), sys.argv[2:]))
