"""The GPU collectors against a real NVIDIA GPU: ``just gpu-real`` on a machine with a driver.

What it does, in order:

1. polls `NvmlCollector` (the real pynvml over the machine's libnvidia-ml) ``--polls`` times: the
   first poll (which initialises NVML) and the steady polls, wall time and process CPU;
2. runs the `nvidia_smi` collector's own command (`nvidia_smi_parse.COMMAND`) locally and parses
   it with the collector's parser;
3. polls `NvidiaSmiCollector` over SSH on loopback: an asyncssh server whose sessions exec the real
   ``nvidia-smi`` (and the real OpenSSH ``sshd`` as well, when ``/usr/sbin/sshd`` exists), so the
   driver's own bytes go through the real transport; connections opened are counted;
4. with ``--load S`` (default 20), a CUDA process (PyTorch, when importable) keeps the GPU busy
   and holds memory while both collectors poll: utilisation, memory and the process list must
   show it on both paths;
5. compares the paths GPU by GPU (uuid, name, bus id, memory total, power limit, driver, MIG mode)
   and writes every figure to ``bench-results/gpu-real.json``.

Exit status 1 when a collector fails or the paths disagree; 2 when the machine has no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib.util
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh

from collectors.nvidia_smi import NvidiaSmiCollector
from collectors.nvidia_smi_parse import COMMAND, parse_output
from collectors.nvml import NvmlCollector
from sovereign_tui.clock import SystemClock
from sovereign_tui.config import NvmlSource
from sovereign_tui.config_sources import NvidiaSmiSource, SshHost
from sovereign_tui.model import Gpu
from sovereign_tui.poller import PollContext

RESULTS = Path("bench-results/gpu-real.json")
HAVE_SSHD = Path("/usr/sbin/sshd").exists()
COMPARED = ("uuid", "name", "bus_id", "memory_total_mib", "power_limit_w", "driver_version", "mig_mode")

# Keeps the GPU busy for the given seconds with bf16 matrix products and holds about 4 GiB.
LOAD_PROGRAM = """
import sys, time, torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
hold = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(20):
        y = x @ x
    torch.cuda.synchronize()
"""


@dataclass
class Polls:
    """Wall and CPU seconds of each poll of one path, and the GPUs of its last poll."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    gpus: tuple[Gpu, ...] = ()
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        steady_wall, steady_cpu = self.wall[1:] or self.wall, self.cpu[1:] or self.cpu
        return {
            "polls": len(self.wall),
            "first_poll_ms": round(self.wall[0] * 1e3, 2) if self.wall else None,
            "steady_poll_ms_median": round(statistics.median(steady_wall) * 1e3, 2) if steady_wall else None,
            "steady_poll_ms_max": round(max(steady_wall) * 1e3, 2) if steady_wall else None,
            "steady_cpu_ms_median": round(statistics.median(steady_cpu) * 1e3, 2) if steady_cpu else None,
            "errors": self.errors,
            "gpus": [gpu_row(g) for g in self.gpus],
        }


def gpu_row(gpu: Gpu) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "bus_id": gpu.bus_id,
        "memory_total_mib": gpu.memory_total_mib,
        "memory_used_mib": gpu.memory_used_mib,
        "util_gpu_pct": gpu.util_gpu_pct,
        "temperature_c": gpu.temperature_c,
        "power_w": gpu.power_w,
        "power_limit_w": gpu.power_limit_w,
        "ecc_uncorrected": gpu.ecc_uncorrected,
        "mig_mode": gpu.mig_mode,
        "xid_last": gpu.xid_last,
        "driver_version": gpu.driver_version,
        "processes": [
            {"pid": p.pid, "name": p.name, "used_memory_mib": p.used_memory_mib} for p in gpu.processes
        ],
    }


def _bus(value: object) -> object:
    """``00000000:18:00.0`` (nvidia-smi) and ``0000:18:00.0`` name the same device."""
    if isinstance(value, str) and value.count(":") == 2:
        domain, rest = value.split(":", 1)
        return f"{int(domain, 16):04x}:{rest}".lower()
    return value


def compare(a: tuple[Gpu, ...], b: tuple[Gpu, ...], a_name: str, b_name: str) -> list[str]:
    """Disagreements between two paths' GPUs, matched by uuid; empty when they agree."""
    problems: list[str] = []
    by_uuid = {g.uuid: g for g in b}
    if {g.uuid for g in a} != set(by_uuid):
        problems.append(f"{a_name} sees {sorted(g.uuid for g in a)}, {b_name} sees {sorted(by_uuid)}")
    for gpu in a:
        other = by_uuid.get(gpu.uuid)
        if other is None:
            continue
        for name in COMPARED:
            mine, theirs = getattr(gpu, name), getattr(other, name)
            if name == "bus_id":
                mine, theirs = _bus(mine), _bus(theirs)
            if isinstance(mine, float) and isinstance(theirs, float):
                same = abs(mine - theirs) <= max(1.0, 0.01 * abs(theirs))
            else:
                same = mine == theirs
            if not same:
                problems.append(f"GPU {gpu.index} {name}: {a_name} {mine!r}, {b_name} {theirs!r}")
    return problems


async def timed_polls(poll: Callable[[], Coroutine[Any, Any, tuple[Gpu, ...]]], count: int) -> Polls:
    result = Polls()
    for _ in range(count):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            result.gpus = await poll()
        except Exception as exc:  # a bench reports every failure and goes on
            result.errors.append(f"{type(exc).__name__}: {exc}")
        result.wall.append(time.perf_counter() - wall)
        result.cpu.append(time.process_time() - cpu)
    return result


async def _exec_for_real(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """An SSH session that runs its command in a real shell, as sshd would."""
    proc = await asyncio.create_subprocess_shell(
        process.command or "true", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(proc.returncode or 0)


@contextlib.asynccontextmanager
async def asyncssh_exec_server(root: Path) -> AsyncIterator[tuple[int, Path, Path]]:
    """(port, client key file, known_hosts file) of an exec-only asyncssh server on loopback."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    key_file = root / "id_ed25519"
    key_file.touch(mode=0o600)
    client.write_private_key(str(key_file))
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(client.export_public_key("openssh").decode()),
        process_factory=_exec_for_real,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key('openssh').decode().strip()}\n")
    try:
        yield port, key_file, known
    finally:
        server.close()
        await server.wait_closed()


async def ssh_polls(name: str, port: int, user: str, key: Path, known: Path, count: int) -> tuple[Polls, int]:
    settings = NvidiaSmiSource(
        hosts=(SshHost(name=name, address="127.0.0.1", port=port, user=user),),
        known_hosts=str(known),
        client_keys=(str(key),),
        connect_timeout_s=10.0,
        command_timeout_s=10.0,
    )
    collector = NvidiaSmiCollector(settings)
    host = settings.hosts[0]
    async with aiohttp.ClientSession() as http:
        ctx = PollContext(clock=SystemClock(), http=http, timeout_s=20.0)

        async def poll() -> tuple[Gpu, ...]:
            return (await collector.poll_host(host, ctx)).gpus

        try:
            return await timed_polls(poll, count), collector.connections_opened
        finally:
            await collector.aclose()


async def nvml_polls(name: str, count: int) -> Polls:
    collector = NvmlCollector(NvmlSource(host=name))
    async with aiohttp.ClientSession() as http:
        ctx = PollContext(clock=SystemClock(), http=http, timeout_s=20.0)

        async def poll() -> tuple[Gpu, ...]:
            return (await collector.poll(ctx)).gpus

        try:
            return await timed_polls(poll, count)
        finally:
            await collector.aclose()


def local_smi(name: str) -> tuple[str, tuple[Gpu, ...]]:
    started = time.perf_counter()
    out = subprocess.run(
        ["bash", "-c", COMMAND], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    gpus = parse_output(out, name, "nvidia-smi:local", time.time())
    print(f"nvidia-smi locally: {len(gpus)} GPU(s) in {(time.perf_counter() - started) * 1e3:.0f} ms")
    return out, gpus


@contextlib.contextmanager
def gpu_load(seconds: float) -> Any:
    """A CUDA process keeping the GPU busy; yields its pid, or None without PyTorch."""
    if importlib.util.find_spec("torch") is None:
        print("no PyTorch here: the load phase is skipped")
        yield None
        return
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD_PROGRAM, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    if ready != "ready":
        proc.kill()
        print(f"the load process did not start ({ready or 'no output'})")
        yield None
        return
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def print_gpus(title: str, gpus: tuple[Gpu, ...]) -> None:
    print(title)
    for g in gpus:
        procs = ", ".join(f"{p.pid} {p.name} {p.used_memory_mib} MiB" for p in g.processes) or "-"
        print(
            f"  {g.index} {g.name} {g.bus_id} util {g.util_gpu_pct}% mem {g.memory_used_mib}/"
            f"{g.memory_total_mib} MiB {g.temperature_c} C {g.power_w}/{g.power_limit_w} W "
            f"ecc {g.ecc_uncorrected} mig {g.mig_mode} xid {g.xid_last} driver {g.driver_version} "
            f"procs: {procs}"
        )


async def run(polls: int, load_s: float) -> dict[str, Any]:
    name = socket.gethostname()
    user = getpass.getuser()
    report: dict[str, Any] = {"host": name}
    problems: list[str] = []

    nvml = await nvml_polls(name, polls)
    report["nvml"] = nvml.figures()
    print_gpus(f"nvml: {len(nvml.gpus)} GPU(s), {report['nvml']}", nvml.gpus)
    raw, smi = local_smi(name)
    report["nvidia_smi_local"] = {"output": raw, "gpus": [gpu_row(g) for g in smi]}
    problems += compare(nvml.gpus, smi, "nvml", "nvidia-smi")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with asyncssh_exec_server(root) as (port, key, known):
            over_ssh, opened = await ssh_polls(name, port, user, key, known, polls)
        report["nvidia_smi_asyncssh"] = over_ssh.figures() | {"connections_opened": opened}
        print_gpus(f"nvidia-smi over asyncssh: {opened} connection(s) for {polls} polls", over_ssh.gpus)
        problems += compare(nvml.gpus, over_ssh.gpus, "nvml", "nvidia-smi/ssh")
        if opened != 1:
            problems.append(f"nvidia-smi over SSH opened {opened} connections for {polls} polls, not 1")
        problems += [f"nvml: {e}" for e in dict.fromkeys(nvml.errors)]
        problems += [f"ssh: {e}" for e in dict.fromkeys(over_ssh.errors)]
        report["nvidia_smi_openssh"] = await openssh_polls(root / "sshd", name, polls, nvml.gpus, problems)

    if load_s > 0:
        report["under_load"] = await loaded(name, polls, load_s, problems)

    report["problems"] = problems
    return report


async def openssh_polls(
    root: Path, name: str, polls: int, reference: tuple[Gpu, ...], problems: list[str]
) -> dict[str, Any] | None:
    """The same polls through the real sshd, when this machine has one."""
    if not HAVE_SSHD:
        print("no /usr/sbin/sshd: the OpenSSH path is skipped")
        return None
    from tests.sshd_fixture import run_sshd  # test fixture, imported only where sshd exists

    async with run_sshd(root) as server:
        smi = shutil.which("nvidia-smi")
        assert smi is not None
        (server.bin_dir / "nvidia-smi").symlink_to(smi)
        (server.bin_dir / "echo").symlink_to(shutil.which("echo") or "/bin/echo")
        known = root / "known_hosts"
        known.write_text(server.known_hosts_line() + "\n")
        result, opened = await ssh_polls(name, server.port, server.user, server.client_key, known, polls)
    print_gpus(f"nvidia-smi over OpenSSH: {opened} connection(s) for {polls} polls", result.gpus)
    problems += compare(reference, result.gpus, "nvml", "nvidia-smi/openssh")
    problems += [f"openssh: {e}" for e in dict.fromkeys(result.errors)]
    return result.figures() | {"connections_opened": opened}


async def loaded(name: str, polls: int, load_s: float, problems: list[str]) -> dict[str, Any] | None:
    with gpu_load(load_s) as pid:
        if pid is None:
            return None
        # NVML's utilisation is a mean over its last sample period: wait (15 s at most) until the
        # load shows in full, then both paths must see its process and its memory
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            sample = await nvml_polls(name, 1)
            if any((g.util_gpu_pct or 0) >= 50 for g in sample.gpus):
                break
            await asyncio.sleep(0.5)  # a bench waiting on the GPU's sampling, not a test
        nvml = await nvml_polls(name, polls)
        _raw, smi = local_smi(name)
        print_gpus(f"nvml under load (pid {pid})", nvml.gpus)
        print_gpus("nvidia-smi under load", smi)
        for path, gpus in (("nvml", nvml.gpus), ("nvidia-smi", smi)):
            pids = {p.pid for g in gpus for p in g.processes}
            if pid not in pids:
                problems.append(
                    f"{path} under load does not list the load's process {pid} (sees {sorted(pids)})"
                )
            if not any((g.util_gpu_pct or 0) > 0 for g in gpus):
                problems.append(f"{path} under load reports 0% utilisation on every GPU")
    return {"load_pid": pid, "nvml": nvml.figures(), "nvidia_smi": [gpu_row(g) for g in smi]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=20, help="polls per path (default 20)")
    parser.add_argument(
        "--load", type=float, default=20.0, help="seconds of CUDA load, 0 for none (default 20)"
    )
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("no nvidia-smi on PATH: this check needs a machine with an NVIDIA driver")
        sys.exit(2)
    report = asyncio.run(run(args.polls, args.load))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {RESULTS}")
    problems = report["problems"]
    for p in problems:
        print(f"PROBLEM: {p}")
    print("paths agree" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
