"""The NVML collector through the real pynvml, against a fake libnvidia-ml.so.1 built from C.

A process loads one libnvidia-ml only, so each scenario runs the real runtime (settings ->
collectors -> poller -> store) in its own process (tests/fakenvml/runner.py) with its own fake-GPU
config; the expected values are derived from that config.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fakenvml.build import RUNNER, SONAME, build_fake_nvml, find_compiler

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
HOST = "gpu-node-7"
DRIVER = "590.48.01"
H100_MEMORY = 85520809984  # bytes, as NVML reports an H100 80GB HBM3
NOT_SUPPORTED, NO_PERMISSION, DRIVER_NOT_LOADED, FUNCTION_NOT_FOUND, GPU_IS_LOST = 3, 4, 9, 13, 15
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling for pid_max on 64-bit


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = find_compiler()
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build the fake libnvidia-ml.so.1")
    return build_fake_nvml(compiler, tmp_path_factory.mktemp("fakenvml"))


@dataclass
class FakeGpu:
    """One GPU of the fake, in NVML's own units (bytes, milliwatts)."""

    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    mem_total: int = H100_MEMORY
    mem_used: int = 0
    mem_reserved: int = 0
    util_gpu: int = 0
    util_mem: int = 0
    temp: int = 30
    power_mw: int = 70000
    limit_mw: int = 700000
    ecc_volatile: int = 0
    ecc_aggregate: int = 0
    mig: int = 0
    procs: list[tuple[int, int | None]] = field(default_factory=list)
    xids: list[int] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return f"GPU-{self.index:08x}-5e1f-4c3a-9b2d-0000{self.index:08x}"

    @property
    def bus(self) -> str:
        return f"00000000:{0x18 + 0x10 * self.index:02X}:00.0"

    def line(self) -> str:
        fields = {
            "name": self.name,
            "uuid": self.uuid,
            "bus": self.bus,
            "mem_total": self.mem_total,
            "mem_used": self.mem_used,
            "mem_reserved": self.mem_reserved,
            "util_gpu": self.util_gpu,
            "util_mem": self.util_mem,
            "temp": self.temp,
            "power_mw": self.power_mw,
            "limit_mw": self.limit_mw,
            "ecc_volatile": self.ecc_volatile,
            "ecc_aggregate": self.ecc_aggregate,
            "mig": self.mig,
        }
        parts = [f"{k}={v}" for k, v in fields.items()]
        parts += [f"proc={pid}:{'na' if used is None else used}" for pid, used in self.procs]
        parts += [f"xid={x}" for x in self.xids]
        if self.fail:
            parts.append("fail=" + ",".join(f"{q}:{code}" for q, code in self.fail.items()))
        return "gpu " + ";".join(parts)

    def expected(self) -> dict[str, Any]:
        """What the collector must report for this GPU when every query answers."""
        return {
            "host": HOST,
            "source": f"nvml:{HOST}",
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "bus_id": self.bus,
            "memory_total_mib": self.mem_total / MIB,
            "memory_used_mib": self.mem_used / MIB,  # v2: the driver's reservation is not "used"
            "util_gpu_pct": float(self.util_gpu),
            "util_memory_pct": float(self.util_mem),
            "temperature_c": float(self.temp),
            "power_w": self.power_mw / 1000,
            "power_limit_w": self.limit_mw / 1000,
            "ecc_uncorrected": self.ecc_volatile,
            "mig_mode": "Enabled" if self.mig else "Disabled",
            "xid_last": self.xids[-1] if self.xids else None,
            "driver_version": DRIVER,
            "processes": [
                {"pid": pid, "name": _name_of(pid), "used_memory_mib": None if used is None else used / MIB}
                for pid, used in self.procs
            ],
            "stale": False,
            "holder": None,
        }


def _name_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return None


def _gone_pid() -> int:
    pid = PID_MAX_LIMIT + 1
    assert not psutil.pid_exists(pid)
    return pid


def run_scenario(
    tmp_path: Path,
    gpus: list[FakeGpu] | None,
    steps: list[str],
    *,
    library: Path | str | None,
    host_source: bool = False,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the runner in a fresh process; return one dict per emitted step."""
    config = tmp_path / "fake-gpus.conf"
    if gpus is not None:
        config.write_text("\n".join([f"driver {DRIVER}", *(g.line() for g in gpus)]) + "\n")
    settings = tmp_path / "sovereign.toml"
    lines = [
        "[sources.host]",
        f"enabled = {str(host_source).lower()}",
        'name = "appliance"',
        "[sources.nvml]",
        f'host = "{HOST}"',
    ]
    if library is not None:
        lines.append(f'library = "{library}"')
    settings.write_text("\n".join(lines) + "\n")
    child_env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_CONFIG")}
    child_env["FAKE_NVML_CONFIG"] = str(config)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    child_env.update(env or {})
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(settings), *steps],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def nvml_health(step: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in step["sources"] if s["source"] == "nvml"]
    assert len(found) == 1
    return found[0]


def reported(gpu: dict[str, Any]) -> dict[str, Any]:
    """The fields NVML fills (the model has others, for other sources: dcgm's MIG rows...)."""
    return {k: gpu[k] for k in FakeGpu(0).expected()}


# --- reading ---------------------------------------------------------------------------------------


def test_two_gpus_report_every_field_in_the_models_units(tmp_path: Path, fake_lib: Path) -> None:
    me = os.getpid()
    gpus = [
        FakeGpu(
            0,
            mem_used=60_129_542_144,
            mem_reserved=555_745_280,
            util_gpu=97,
            util_mem=41,
            temp=63,
            power_mw=612_345,
            limit_mw=700_000,
            ecc_volatile=2,
            ecc_aggregate=17,
            procs=[(me, 58_000 * MIB), (_gone_pid(), None)],
        ),
        FakeGpu(1, mem_used=1_048_576, util_gpu=0, temp=31, power_mw=69_001, limit_mw=650_000),
    ]
    (step,) = run_scenario(tmp_path, gpus, ["poll"], library=fake_lib)

    assert [reported(g) for g in step["gpus"]] == [g.expected() for g in gpus]
    assert all(g["observed_at"] == step["taken_at"] for g in step["gpus"])
    assert all(g["mig_instance"] is None for g in step["gpus"])  # whole GPUs, not MIG instances
    procs = step["gpus"][0]["processes"]
    assert procs[0]["name"] == psutil.Process(me).name()  # resolved through psutil
    assert procs[1]["name"] is None
    assert procs[1]["used_memory_mib"] is None
    health = nvml_health(step)
    assert health["target"] == f"nvml:{HOST}"
    assert health["endpoint"] == "local"
    assert health["up"] is True
    assert health["last_error"] is None
    (host,) = step["hosts"]
    assert host["name"] == HOST
    assert host["gpu_count"] == 2
    assert host["gpus_busy"] == 1


def test_pynvml_finds_the_library_on_the_loader_path_without_the_setting(
    tmp_path: Path, fake_lib: Path
) -> None:
    gpus = [FakeGpu(0, temp=44)]
    (step,) = run_scenario(
        tmp_path, gpus, ["poll"], library=None, env={"LD_LIBRARY_PATH": str(fake_lib.parent)}
    )
    assert [reported(g) for g in step["gpus"]] == [gpus[0].expected()]


def test_mig_mode_enabled_and_unsupported(tmp_path: Path, fake_lib: Path) -> None:
    # A MIG-enabled GPU does not report whole-GPU utilisation; a GPU without MIG rejects the query.
    gpus = [
        FakeGpu(0, name="NVIDIA H200", mig=1, fail={"util": NOT_SUPPORTED}),
        FakeGpu(1, name="NVIDIA L40S", fail={"mig": NOT_SUPPORTED}),
        FakeGpu(2, mig=0),
    ]
    (step,) = run_scenario(tmp_path, gpus, ["poll"], library=fake_lib)
    mig, no_mig, off = (reported(g) for g in step["gpus"])
    assert mig == {**gpus[0].expected(), "util_gpu_pct": None, "util_memory_pct": None}
    assert mig["mig_mode"] == "Enabled"
    assert no_mig == {**gpus[1].expected(), "mig_mode": None}
    assert off == gpus[2].expected()
    assert off["mig_mode"] == "Disabled"


# Each query that can fail alone, and the fields it leaves N/A.
FIELD_FAILURES: list[tuple[str, int, dict[str, Any]]] = [
    ("power", NOT_SUPPORTED, {"power_w": None}),
    ("limit", NOT_SUPPORTED, {"power_limit_w": None}),
    ("ecc", NO_PERMISSION, {"ecc_uncorrected": None}),
    ("temp", NOT_SUPPORTED, {"temperature_c": None}),
    ("util", NO_PERMISSION, {"util_gpu_pct": None, "util_memory_pct": None}),
    ("procs", NO_PERMISSION, {"processes": []}),
    ("memory_v2", NOT_SUPPORTED, {"memory_total_mib": None, "memory_used_mib": None}),
    ("name", NOT_SUPPORTED, {"name": None}),
    ("pci", NOT_SUPPORTED, {"bus_id": None}),
]


def test_an_unsupported_or_forbidden_field_is_none_and_the_rest_is_kept(
    tmp_path: Path, fake_lib: Path
) -> None:
    gpus = [
        FakeGpu(
            i,
            mem_used=(i + 1) * 1000 * MIB,
            util_gpu=10 + i,
            power_mw=100_000 + i,
            ecc_volatile=i,
            procs=[(os.getpid(), MIB)],
            fail={query: code},
        )
        for i, (query, code, _) in enumerate(FIELD_FAILURES)
    ]
    (step,) = run_scenario(tmp_path, gpus, ["poll"], library=fake_lib)
    assert nvml_health(step)["up"] is True
    got = [reported(g) for g in step["gpus"]]
    assert got == [{**g.expected(), **none} for g, (_, _, none) in zip(gpus, FIELD_FAILURES, strict=True)]


def test_memory_falls_back_to_v1_on_a_driver_without_v2(tmp_path: Path, fake_lib: Path) -> None:
    gpu = FakeGpu(0, mem_used=2000 * MIB, mem_reserved=512 * MIB, fail={"memory_v2": FUNCTION_NOT_FOUND})
    (step,) = run_scenario(tmp_path, [gpu], ["poll"], library=fake_lib)
    # v1 counts the driver's reservation as used.
    assert reported(step["gpus"][0]) == {
        **gpu.expected(),
        "memory_used_mib": (gpu.mem_used + gpu.mem_reserved) / MIB,
    }


def test_xid_events_are_drained_each_poll_and_the_last_one_kept(tmp_path: Path, fake_lib: Path) -> None:
    gpus = [
        FakeGpu(0, xids=[48, 79]),
        FakeGpu(1, xids=[31], fail={"events": NOT_SUPPORTED}),
        FakeGpu(2),
    ]
    first, second, third = run_scenario(
        tmp_path, gpus, ["poll", "xid=2:94", "xid=0:13", "poll", "poll"], library=fake_lib
    )
    assert [g["xid_last"] for g in first["gpus"]] == [79, None, None]
    assert [g["xid_last"] for g in second["gpus"]] == [13, None, 94]
    assert [g["xid_last"] for g in third["gpus"]] == [13, None, 94]  # no new event: the last stays
    assert all(nvml_health(s)["up"] for s in (first, second, third))


# --- sessions: init once, reuse handles, re-init after the driver went away ------------------------


def test_nvml_is_initialised_once_and_handles_reused(tmp_path: Path, fake_lib: Path) -> None:
    gpus = [FakeGpu(0), FakeGpu(1), FakeGpu(2)]
    *polls, closed = run_scenario(tmp_path, gpus, ["poll", "poll", "poll", "close"], library=fake_lib)
    for step in polls:
        assert len(step["gpus"]) == 3
        assert nvml_health(step)["up"] is True
        assert step["counters"] == {
            "fake_nvml_init_calls": 1,
            "fake_nvml_shutdown_calls": 0,
            "fake_nvml_handle_calls": len(gpus),
        }
    assert nvml_health(polls[-1])["polls"] == 3
    assert closed["counters"]["fake_nvml_shutdown_calls"] == 1  # aclose shut NVML down


def test_driver_going_away_marks_the_source_down_then_reinitialises(tmp_path: Path, fake_lib: Path) -> None:
    gpus = [FakeGpu(0, temp=50), FakeGpu(1, temp=51)]
    steps = [
        "poll",
        "xid=1:79",
        "poll",
        f"fail={DRIVER_NOT_LOADED}",
        "poll",
        "poll",
        "recover",
        "poll",
        "close",
    ]
    _, seen_xid, went_away, still_gone, back, closed = run_scenario(tmp_path, gpus, steps, library=fake_lib)

    assert seen_xid["gpus"][1]["xid_last"] == 79
    for down in (went_away, still_gone):
        health = nvml_health(down)
        assert health["up"] is False
        assert "\n" not in health["last_error"]
        assert [g["stale"] for g in down["gpus"]] == [True, True]  # last known values, marked stale
        assert [g["temperature_c"] for g in down["gpus"]] == [50.0, 51.0]
    assert "went away" in nvml_health(went_away)["last_error"]
    assert "driver is not loaded" in nvml_health(still_gone)["last_error"]
    assert went_away["counters"]["fake_nvml_shutdown_calls"] == 1  # the dead session was closed

    assert nvml_health(back)["up"] is True
    assert back["counters"]["fake_nvml_init_calls"] == 3  # first, failed retry, recovery
    assert reported(back["gpus"][0]) == gpus[0].expected()
    assert back["gpus"][1]["xid_last"] == 79  # the XID before the reload is still shown
    assert closed["counters"]["fake_nvml_shutdown_calls"] == 2


def test_a_lost_gpu_names_itself_in_one_line(tmp_path: Path, fake_lib: Path) -> None:
    gpus = [FakeGpu(0), FakeGpu(1, fail={"temp": GPU_IS_LOST})]
    (step,) = run_scenario(tmp_path, gpus, ["poll"], library=fake_lib)
    error = nvml_health(step)["last_error"]
    assert nvml_health(step)["up"] is False
    assert "\n" not in error
    assert f"GPU 1 ({gpus[1].uuid}, {gpus[1].bus})" in error
    assert "GPU is lost" in error
    assert step["counters"]["fake_nvml_shutdown_calls"] == 1


# --- no library ----------------------------------------------------------------------------------


def _assert_down_alone(step: dict[str, Any]) -> str:
    """NVML is down with one line, no GPUs; the machine source beside it is up."""
    health = nvml_health(step)
    assert health["up"] is False
    assert health["consecutive_failures"] >= 1
    assert step["gpus"] == []
    (machine,) = [s for s in step["sources"] if s["source"] == "host"]
    assert machine["up"] is True
    assert any(h["name"] == "appliance" and h["machine"] is not None for h in step["hosts"])
    error: str = health["last_error"]
    assert "\n" not in error
    assert error.startswith("NVML: ")
    return error


def test_a_missing_library_file_is_one_line_and_other_sources_keep_working(tmp_path: Path) -> None:
    missing = tmp_path / "no-driver" / SONAME
    first, second = run_scenario(tmp_path, [], ["poll", "poll"], library=missing, host_source=True)
    for step in (first, second):
        error = _assert_down_alone(step)
        assert error == (
            f"NVML: {missing} not found (set sources.nvml.library to the driver's {SONAME} "
            "or disable sources.nvml)"
        )
    assert nvml_health(second)["consecutive_failures"] == 2


def test_no_driver_on_the_machine(tmp_path: Path) -> None:
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVIDIA driver library")
    (step,) = run_scenario(tmp_path, [], ["poll"], library=None, host_source=True)
    error = _assert_down_alone(step)
    assert error.startswith(f"NVML: {SONAME} not found (no NVIDIA driver on this machine")
    assert "sources.nvml.library" in error
    assert "disable sources.nvml" in error


def test_a_library_that_is_not_a_shared_object(tmp_path: Path) -> None:
    bogus = tmp_path / SONAME
    bogus.write_text("not an ELF file\n")
    (step,) = run_scenario(tmp_path, [], ["poll"], library=bogus, host_source=True)
    error = _assert_down_alone(step)
    assert error.startswith(f"NVML: cannot load {bogus} (")


def test_a_library_under_another_soname_is_refused(tmp_path: Path, fake_lib: Path) -> None:
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVIDIA driver library, which pynvml would load instead")
    compiler = find_compiler()
    assert compiler is not None
    other = build_fake_nvml(compiler, tmp_path, soname="libnvidia-ml-copy.so")
    (step,) = run_scenario(tmp_path, [FakeGpu(0)], ["poll"], library=other, host_source=True)
    error = _assert_down_alone(step)
    assert str(other) in error
    assert f"did not load as {SONAME}" in error


def test_the_kernel_driver_not_loaded(tmp_path: Path, fake_lib: Path) -> None:
    # The fake answers NVML_ERROR_DRIVER_NOT_LOADED to nvmlInit when it has no GPU config.
    (step,) = run_scenario(tmp_path, None, ["poll"], library=fake_lib, host_source=True)
    error = _assert_down_alone(step)
    assert "kernel driver is not loaded" in error
    assert step["counters"]["fake_nvml_init_calls"] == 1
