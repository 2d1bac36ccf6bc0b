"""The poller's cost against its lower bound and against a thread-pool poller (DESIGN section 5).

    python -m bench.poller_bench [--n 2000] [--latency-ms 50] [--concurrency 256] [--cycles 5]

Starts N loopback endpoints in a process of their own (`bench.endpoints`), then, on the same
endpoints, measures full polling cycles of:

- the project's `Poller` (real `Store`, one shared aiohttp session, uvloop where installed):
  every target GETs its endpoint, parses it with `sovereign_tui.promtext` and returns an
  `Observation` of GPUs; one cycle is `Poller.run_once()`;
- a baseline of 32 threads with `requests`: each worker owns one `Session` and a fixed share of
  the endpoints, so every connection stays alive across cycles (the baseline's best case), and
  does the same parse and the same GPUs.

One warm-up cycle each (connection set-up), then the median of `--cycles` cycles, in wall time
and in this process's CPU time. Writes the figures as JSON (`--out`) and exits non-zero, naming
the floor, when the poller is further from the lower bound ``ceil(N / concurrency) * latency``
than `--max-ratio` or faster than the thread pool by less than `--min-speedup`.

At concurrency 256 the garbage collector walks the objects of every request in flight, again
and again: about a quarter of the poller's CPU. `--tune-gc` shows what raising its thresholds
and freezing the start-up heap (a daemon's choice, made for the whole process) would change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.common import (
    SAMPLES_PER_ENDPOINT,
    WANTED,
    cpu_wait_s,
    gpus_from,
    install_uvloop,
    raise_nofile_limit,
    start_endpoints,
)
from sovereign_tui import promtext
from sovereign_tui.model import Observation
from sovereign_tui.poller import PollContext, Poller, PollError, Target
from sovereign_tui.store import Store

THREADS = 32
RECORD_KEYS = (
    "n",
    "concurrency",
    "latency_ms",
    "cycle_s",
    "lower_bound_s",
    "ratio_to_bound",
    "threadpool_cycle_s",
    "speedup_vs_threadpool",
    "cpu_us_per_poll",
)


@dataclass
class Side:
    """One poller's measured cycles and what it parsed in the last one."""

    cycle_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    cpu_wait_s: list[float] = field(default_factory=list)
    """Time this process's threads were runnable but queued behind other processes."""
    server_cpu_s: list[float] = field(default_factory=list)
    """CPU time of the endpoint process in each cycle (what the clients had to share the
    machine with)."""
    samples: dict[str, int] = field(default_factory=dict)
    """Samples parsed per endpoint URL in the last cycle."""
    gpus: int = 0
    """GPUs built in the last cycle."""
    failures: list[str] = field(default_factory=list)

    @property
    def median_cycle_s(self) -> float:
        return statistics.median(self.cycle_s)

    def cpu_us_per_poll(self, n: int) -> float:
        return statistics.median(self.cpu_s) / n * 1e6


@dataclass
class BenchResult:
    n: int
    concurrency: int
    latency_ms: float
    threads: int
    loop: str
    tune_gc: bool
    poller: Side
    threadpool: Side

    @property
    def lower_bound_s(self) -> float:
        return math.ceil(self.n / self.concurrency) * self.latency_ms / 1000.0

    @property
    def record(self) -> dict[str, Any]:
        cycle = self.poller.median_cycle_s
        pool = self.threadpool.median_cycle_s
        return {
            "n": self.n,
            "concurrency": self.concurrency,
            "latency_ms": self.latency_ms,
            "cycle_s": round(cycle, 4),
            "lower_bound_s": round(self.lower_bound_s, 4),
            "ratio_to_bound": round(cycle / self.lower_bound_s, 3),
            "threadpool_cycle_s": round(pool, 4),
            "speedup_vs_threadpool": round(pool / cycle, 2),
            "cpu_us_per_poll": round(self.poller.cpu_us_per_poll(self.n), 1),
        }


# --- the project's poller ---------------------------------------------------------------------


def dcgm_poll(url: str, target_id: str, counts: dict[str, int]) -> Callable[[PollContext], Any]:
    """A dcgm-exporter poll as a collector writes it: the URL is built and the parser made once
    per target, so each scrape of the same series costs only the values."""
    from yarl import URL

    where = URL(url)
    parser = promtext.Parser(WANTED)

    async def poll(ctx: PollContext) -> Observation:
        async with ctx.http.get(where) as resp:
            if resp.status != 200:
                raise PollError(f"{url}: HTTP {resp.status} (is the exporter serving /metrics?)")
            body = await resp.read()
        try:
            families = parser.parse(body.decode())
        except ValueError as exc:
            raise PollError(f"{url}: {exc}") from None
        counts[url] = sum(len(s) for s in families.values())
        return Observation(gpus=gpus_from(families, target_id, ctx.clock.time()))

    return poll


async def measure_poller(
    urls: Sequence[str],
    concurrency: int,
    cycles: int,
    server_cpu: Callable[[], float] = lambda: 0.0,
    tune_gc: bool = False,
) -> Side:
    side = Side()
    store = Store()
    # Each endpoint is its own host:port, so the per-host limit never throttles here.
    poller = Poller(store, concurrency=concurrency)
    targets = []
    for url in urls:
        tid = f"dcgm:{urlsplit(url).netloc}"
        targets.append(Target(tid, "dcgm", urlsplit(url).netloc, 60.0, dcgm_poll(url, tid, side.samples)))
    poller.set_targets(targets)
    try:
        await poller.run_once()  # warm-up: connections are set up once and kept alive
        settle_gc(tune_gc)
        for _ in range(cycles):
            side.samples.clear()
            wall, cpu, server, wait = time.perf_counter(), time.process_time(), server_cpu(), cpu_wait_s()
            await poller.run_once()
            side.cpu_s.append(time.process_time() - cpu)
            side.cycle_s.append(time.perf_counter() - wall)
            side.server_cpu_s.append(server_cpu() - server)
            side.cpu_wait_s.append(cpu_wait_s() - wait)
        snapshot = store.snapshot()
        side.gpus = len(snapshot.gpus)
        side.failures = [f"{h.target}: {h.last_error}" for h in snapshot.sources if not h.up]
    finally:
        await poller.close()
    return side


# --- the thread-pool baseline -----------------------------------------------------------------


def measure_threadpool(
    urls: Sequence[str],
    threads: int,
    cycles: int,
    server_cpu: Callable[[], float] = lambda: 0.0,
    tune_gc: bool = False,
) -> Side:
    import requests
    from requests.adapters import HTTPAdapter

    side = Side()
    shares = [list(urls[i::threads]) for i in range(threads)]
    sessions = []
    for share in shares:
        session = requests.Session()
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=max(1, len(share)), pool_maxsize=1)
        session.mount("http://", adapter)
        sessions.append(session)
    gpus: list[int] = []
    failures: list[str] = []

    parsers = {url: promtext.Parser(WANTED) for url in urls}

    def work(session: requests.Session, share: list[str]) -> None:
        for url in share:
            try:
                resp = session.get(url, timeout=30)
                resp.raise_for_status()
                families = parsers[url].parse(resp.content.decode())
                side.samples[url] = sum(len(s) for s in families.values())
                gpus.append(len(gpus_from(families, url, time.time())))
            except Exception as exc:  # counted and reported, never fatal to the cycle
                failures.append(f"{url}: {exc}")

    def cycle(pool: ThreadPoolExecutor) -> None:
        side.samples.clear()
        gpus.clear()
        failures.clear()
        list(pool.map(work, sessions, shares))

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            cycle(pool)  # warm-up
            settle_gc(tune_gc)
            for _ in range(cycles):
                wall, cpu, server, wait = time.perf_counter(), time.process_time(), server_cpu(), cpu_wait_s()
                cycle(pool)
                side.cpu_s.append(time.process_time() - cpu)
                side.cycle_s.append(time.perf_counter() - wall)
                side.server_cpu_s.append(server_cpu() - server)
                side.cpu_wait_s.append(cpu_wait_s() - wait)
    finally:
        for session in sessions:
            session.close()
    side.gpus = sum(gpus)
    side.failures = list(failures)
    return side


# --- running and reporting --------------------------------------------------------------------


def settle_gc(tune: bool) -> None:
    """With `tune`, what a long-running daemon may do after start-up: move everything alive into
    the permanent generation, so that collections walk only what the cycles allocate."""
    if tune:
        gc.collect()
        gc.freeze()


def run(
    n: int,
    latency_ms: float,
    concurrency: int = 256,
    cycles: int = 5,
    threads: int = THREADS,
    tune_gc: bool = False,
) -> BenchResult:
    """Both pollers on the same `n` endpoints; the endpoint process is stopped on return.

    `tune_gc` (both sides alike): fewer young-generation collections (thresholds 20000/20/100)
    and a frozen start-up heap; by default the collector runs as Python sets it up.
    """
    raise_nofile_limit()
    loop = "uvloop" if install_uvloop() else "asyncio"
    thresholds = gc.get_threshold()
    if tune_gc:
        gc.set_threshold(20_000, 20, 100)
    try:
        with start_endpoints(n, latency_ms) as endpoints:
            urls = endpoints.urls
            server = psutil.Process(endpoints.process.pid)

            def server_cpu() -> float:
                times = server.cpu_times()
                return float(times.user + times.system)

            poller = asyncio.run(measure_poller(urls, concurrency, cycles, server_cpu, tune_gc))
            threadpool = measure_threadpool(urls, threads, cycles, server_cpu, tune_gc)
    finally:
        asyncio.set_event_loop_policy(None)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return BenchResult(n, concurrency, latency_ms, threads, loop, tune_gc, poller, threadpool)


def failed_floors(record: dict[str, Any], max_ratio: float, min_speedup: float) -> list[str]:
    failed = []
    if record["ratio_to_bound"] > max_ratio:
        failed.append(f"ratio_to_bound {record['ratio_to_bound']} is above the floor {max_ratio}")
    if record["speedup_vs_threadpool"] < min_speedup:
        failed.append(
            f"speedup_vs_threadpool {record['speedup_vs_threadpool']} is below the floor {min_speedup}"
        )
    return failed


def table(result: BenchResult) -> str:
    rec = result.record
    pool_bound = math.ceil(result.n / result.threads) * result.latency_ms / 1000.0
    pool_cpu = round(result.threadpool.cpu_us_per_poll(result.n), 1)
    rows = [
        (f"Poller ({result.loop}, aiohttp)", result.concurrency, rec["cycle_s"], rec["lower_bound_s"],
         rec["cpu_us_per_poll"], result.poller),
        (f"requests, {result.threads} threads", result.threads, rec["threadpool_cycle_s"], pool_bound,
         pool_cpu, result.threadpool),
    ]  # fmt: skip
    expected = result.n * SAMPLES_PER_ENDPOINT
    cycles = len(result.poller.cycle_s)
    lines = [
        f"{result.n} endpoints, {result.latency_ms:g} ms latency, {cycles} measured cycles, "
        f"garbage collector {'tuned' if result.tune_gc else 'as Python sets it up'}",
        f"{'client':<28} {'conc.':>6} {'cycle s':>9} {'bound s':>9} {'CPU us/poll':>12} "
        f"{'CPU wait s':>11} {'server us':>10} {'samples':>14}",
    ]
    for name, conc, cycle, bound, cpu, side in rows:
        samples = f"{sum(side.samples.values())}/{expected}"
        wait = statistics.median(side.cpu_wait_s)
        server = statistics.median(side.server_cpu_s) / result.n * 1e6
        lines.append(
            f"{name:<28} {conc:>6} {cycle:>9.3f} {bound:>9.3f} {cpu:>12.1f} {wait:>11.3f} {server:>10.1f} "
            f"{samples:>14}"
        )
    lines.append(
        f"ratio to bound {rec['ratio_to_bound']}, speedup vs thread pool {rec['speedup_vs_threadpool']}x"
    )
    lines.append(
        "CPU us/poll: this process; CPU wait: per cycle, runnable but queued behind other processes; "
        "server us: the endpoint process, per request"
    )
    wait = statistics.median(result.poller.cpu_wait_s)
    if wait > 0.1 * rec["cycle_s"]:
        lines.append(
            f"note: the machine was busy: the poller waited {wait:.3f}s of each {rec['cycle_s']:.3f}s cycle "
            "for a CPU; the floors are meant for an otherwise idle machine"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="endpoints (default 2000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="endpoint latency (default 50)")
    parser.add_argument("--concurrency", type=int, default=256, help="poller concurrency (default 256)")
    parser.add_argument("--cycles", type=int, default=5, help="measured cycles after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=THREADS, help="baseline threads (default 32)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/poller.json"))
    parser.add_argument(
        "--tune-gc", action="store_true", help="raise GC thresholds and freeze the start-up heap (both sides)"
    )
    parser.add_argument("--max-ratio", type=float, default=1.5, help="floor: cycle / lower bound")
    parser.add_argument("--min-speedup", type=float, default=5.0, help="floor: thread pool cycle / cycle")
    args = parser.parse_args(argv)
    for flag in ("n", "concurrency", "cycles", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.latency_ms <= 0:
        parser.error("--latency-ms must be positive (the lower bound is measured in it)")

    result = run(args.n, args.latency_ms, args.concurrency, args.cycles, args.threads, args.tune_gc)
    record = result.record
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")

    problems = []
    for name, side in (("poller", result.poller), ("thread pool", result.threadpool)):
        if side.failures:
            problems.append(f"{name}: {len(side.failures)} polls failed, first: {side.failures[0]}")
    problems += failed_floors(record, args.max_ratio, args.min_speedup)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
