"""The GPU collectors at fleet size (`just bench-gpu`): nvidia-smi over SSH on 500 hosts of 8 GPUs,
and 2,000 dcgm-exporter endpoints.

    python -m bench.gpu_bench [--ssh-hosts 500] [--dcgm-endpoints 2000] [--cycles 3] [--out PATH]

Each lab runs in a process of its own (`bench.gpu_lab_runner`), so the CPU time measured here
(``time.process_time``) is the collectors' alone. The real `NvidiaSmiCollector` and `DcgmCollector`
are driven by a real `Poller` into a real `Store` with `run_once()`: one first cycle (for SSH: every
connection opened), then `--cycles` measured cycles each.

- ``ssh_cycle_s``: median measured cycle over every SSH host; floor < 2 s;
- ``ssh_new_connections_steady``: connections opened during the measured cycles; must be 0
  (every poll reuses its host's connection);
- ``dcgm_cycle_s``: median measured cycle over every exporter; floor < 2 s.

Writes `bench-results/gpu.json`; exits non-zero naming each floor missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import GPUS_PER_HOST, install_uvloop, raise_nofile_limit
from collectors.dcgm import DcgmCollector
from collectors.nvidia_smi import NvidiaSmiCollector
from sovereign_tui.config_sources import DcgmSource, NvidiaSmiSource, SshHost
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store

RESULTS = Path("bench-results") / "gpu.json"
FLOOR_SSH_CYCLE_S = 2.0
FLOOR_DCGM_CYCLE_S = 2.0
ROOT = Path(__file__).resolve().parent.parent


class LabProcess:
    """A `bench.gpu_lab_runner` child: started, read its endpoints file, stopped by closing stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, doc: dict[str, Any], build_s: float) -> None:
        self.proc = proc
        self.doc = doc
        self.build_s = build_s

    @classmethod
    async def start(cls, kind: str, n: int, workdir: Path) -> LabProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.gpu_lab_runner",
            "--kind",
            kind,
            "--n",
            str(n),
            "--dir",
            str(workdir / kind),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            await proc.wait()
            raise SystemExit(
                f"bench-gpu: the {kind} lab process exited ({proc.returncode}) before it was ready"
            )
        ready = json.loads(line)
        doc: dict[str, Any] = json.loads(await asyncio.to_thread(Path(ready["ready"]).read_text))
        return cls(proc, doc, float(ready["build_s"]))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the runner exits when its stdin closes
            try:
                await asyncio.wait_for(self.proc.wait(), 20.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Cycles:
    """Wall and CPU seconds of one first cycle and the measured ones."""

    def __init__(self) -> None:
        self.first_s = 0.0
        self.measured_s: list[float] = []
        self.measured_cpu_s = 0.0


async def _cycles(
    name: str, poller: Poller, cycles: int, after_first: Callable[[], None] | None = None
) -> Cycles:
    out = Cycles()
    wall0 = time.perf_counter()
    await poller.run_once()
    out.first_s = time.perf_counter() - wall0
    _check(name, poller)
    if after_first is not None:
        after_first()
    for _ in range(cycles):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await poller.run_once()
        out.measured_s.append(time.perf_counter() - wall0)
        out.measured_cpu_s += time.process_time() - cpu0
        _check(name, poller)
    return out


def _check(name: str, poller: Poller) -> None:
    """Every target answered: a failed poll is a broken bench, not a slow one."""
    down = [poller.health(t) for t in poller.targets if not poller.health(t).up]
    if down:
        raise SystemExit(
            f"bench-gpu: {len(down)} of {len(poller.targets)} {name} polls failed, "
            f"e.g. {down[0].target}: {down[0].last_error}"
        )


async def _with_poller(store: Store, concurrency: int, body: Callable[[Poller], Awaitable[Cycles]]) -> Cycles:
    poller = Poller(store, concurrency=concurrency)
    try:
        return await body(poller)
    finally:
        await poller.close()


async def bench_ssh(args: argparse.Namespace, store: Store, workdir: Path) -> dict[str, Any]:
    lab = await LabProcess.start("ssh", args.ssh_hosts, workdir)
    try:
        doc = lab.doc
        hosts = tuple(
            SshHost(name=h["name"], address=h["address"], port=h["port"], user=doc["user"])
            for h in doc["hosts"]
        )
        settings = NvidiaSmiSource(
            hosts=hosts,
            known_hosts=doc["known_hosts"],
            client_keys=(doc["client_key"],),
            concurrency=args.ssh_concurrency,
            interval_s=10.0,
        )
        collector = NvidiaSmiCollector(settings)
        opened_after_first = 0

        def after_first() -> None:
            nonlocal opened_after_first
            opened_after_first = collector.connections_opened

        async def body(poller: Poller) -> Cycles:
            poller.set_targets(collector.targets())
            return await _cycles("nvidia-smi", poller, args.cycles, after_first)

        try:
            # The poller's own limit stays above the collector's so the collector's bounds it.
            c = await _with_poller(store, max(256, 2 * args.ssh_concurrency), body)
            new_connections = collector.connections_opened - opened_after_first
        finally:
            await collector.aclose()
    finally:
        await lab.stop()
    gpus = sum(1 for g in store.snapshot().gpus if g.source.startswith("nvidia-smi:"))
    polls = len(hosts) * args.cycles
    return {
        "ssh_hosts": len(hosts),
        "gpus": gpus,
        "ssh_concurrency": args.ssh_concurrency,
        "ssh_lab_build_s": lab.build_s,
        "ssh_first_cycle_s": round(c.first_s, 3),
        "ssh_cycle_s": round(statistics.median(c.measured_s), 3),
        "ssh_cycles_s": [round(s, 3) for s in c.measured_s],
        "ssh_connections_first_cycle": opened_after_first,
        "ssh_new_connections_steady": new_connections,
        "cpu_us_per_ssh_poll": round(c.measured_cpu_s / polls * 1e6, 1) if polls else 0.0,
    }


async def bench_dcgm(args: argparse.Namespace, store: Store, workdir: Path) -> dict[str, Any]:
    lab = await LabProcess.start("dcgm", args.dcgm_endpoints, workdir)
    try:
        urls = tuple(e["url"] for e in lab.doc["endpoints"])
        collector = DcgmCollector(DcgmSource(enabled=True, endpoints=urls, interval_s=10.0))

        async def body(poller: Poller) -> Cycles:
            poller.set_targets(collector.targets())
            return await _cycles("dcgm", poller, args.cycles)

        try:
            c = await _with_poller(store, args.dcgm_concurrency, body)
        finally:
            await collector.aclose()
    finally:
        await lab.stop()
    gpus = sum(1 for g in store.snapshot().gpus if g.source.startswith("dcgm:"))
    polls = len(urls) * args.cycles
    return {
        "dcgm_endpoints": len(urls),
        "dcgm_gpus": gpus,
        "dcgm_concurrency": args.dcgm_concurrency,
        "dcgm_lab_build_s": lab.build_s,
        "dcgm_first_cycle_s": round(c.first_s, 3),
        "dcgm_cycle_s": round(statistics.median(c.measured_s), 3),
        "dcgm_cycles_s": [round(s, 3) for s in c.measured_s],
        "cpu_us_per_dcgm_poll": round(c.measured_cpu_s / polls * 1e6, 1) if polls else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    store = Store()
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        workdir = Path(tmp)
        result = await bench_ssh(args, store, workdir)
        result.update(await bench_dcgm(args, store, workdir))
    result["cycles"] = args.cycles
    result["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def missed_floors(result: dict[str, Any]) -> list[str]:
    missed = []
    if result["ssh_cycle_s"] >= FLOOR_SSH_CYCLE_S:
        missed.append(f"ssh_cycle_s {result['ssh_cycle_s']} >= {FLOOR_SSH_CYCLE_S}")
    if result["ssh_new_connections_steady"] != 0:
        missed.append(f"ssh_new_connections_steady {result['ssh_new_connections_steady']} != 0")
    if result["dcgm_cycle_s"] >= FLOOR_DCGM_CYCLE_S:
        missed.append(f"dcgm_cycle_s {result['dcgm_cycle_s']} >= {FLOOR_DCGM_CYCLE_S}")
    return missed


def table(result: dict[str, Any]) -> str:
    rows = [
        ("nvidia-smi over SSH", ""),
        ("  hosts x GPUs", f"{result['ssh_hosts']} x {GPUS_PER_HOST} = {result['gpus']} GPUs read"),
        (
            "  first cycle",
            f"{result['ssh_first_cycle_s']:.3f} s ({result['ssh_connections_first_cycle']} conns)",
        ),
        ("  cycle (median)", f"{result['ssh_cycle_s']:.3f} s  (floor < {FLOOR_SSH_CYCLE_S:g} s)"),
        ("  new connections", f"{result['ssh_new_connections_steady']}  (must be 0)"),
        ("  CPU per poll", f"{result['cpu_us_per_ssh_poll']:.0f} us"),
        ("dcgm-exporter", ""),
        ("  endpoints", f"{result['dcgm_endpoints']} ({result['dcgm_gpus']} GPUs read)"),
        ("  first cycle", f"{result['dcgm_first_cycle_s']:.3f} s"),
        ("  cycle (median)", f"{result['dcgm_cycle_s']:.3f} s  (floor < {FLOOR_DCGM_CYCLE_S:g} s)"),
        ("  CPU per poll", f"{result['cpu_us_per_dcgm_poll']:.0f} us"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--ssh-hosts", type=int, default=500)
    p.add_argument("--dcgm-endpoints", type=int, default=2000)
    p.add_argument("--cycles", type=int, default=3, help="measured cycles after the first")
    p.add_argument("--ssh-concurrency", type=int, default=128)
    p.add_argument("--dcgm-concurrency", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.cycles < 1:
        p.error("--cycles must be at least 1")
    raise_nofile_limit()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    missed = missed_floors(result)
    for line in missed:
        print(f"bench-gpu: floor missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    install_uvloop()  # here only: a caller of main() keeps its own event loop policy
    sys.exit(main())
