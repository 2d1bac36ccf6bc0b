"""The kubernetes collector on a large cluster: the first list, then the cost of watching churn
(`just bench-kube`).

    python -m bench.kube_bench [--nodes 1000] [--pods 30000] [--rate 100] [--seconds 20]

The lab Kubernetes API runs in a process of its own (`bench.kube_lab_runner`), so the CPU time
measured here (``time.process_time``) is the collector's alone: its watches decoding and applying
events, and a poll through the real `Poller` into a real `Store` every `--poll-every` seconds.

- ``initial_list_s``: the first poll: every collection listed page by page, watches connected;
- ``watch_cpu_fraction``: CPU seconds over wall seconds while the lab makes `--rate` pod changes a
  second for `--seconds`; the floor is 0.10 (a tenth of one core).

At the end the collector must hold the lab's pods at the lab's resourceVersion (it kept up).
Writes `bench-results/kubernetes.json`; exits non-zero naming the floor missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collectors.kube_client import KubeOptions, KubeRef, KubeSession
from collectors.kubernetes import KubernetesCollector
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store

FLOOR_WATCH_CPU_FRACTION = 0.10
RESULTS = Path("bench-results") / "kubernetes.json"


class Lab:
    """The runner process and its control lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise SystemExit("bench-kube: the lab process ended (see its output above)")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()


async def run(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.kube_lab_runner",
        "--dir",
        workdir,
        "--nodes",
        str(args.nodes),
        "--pods",
        str(args.pods),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    lab = Lab(proc)
    try:
        ready = await lab.read()
        print(f"lab: {ready['nodes']} nodes, {ready['pods']} pods, built in {ready['build_s']}s", flush=True)
        session = KubeSession(KubeRef(ready["kubeconfig"]), KubeOptions(page_size=args.page_size))
        collector = KubernetesCollector(session, interval_s=60.0)
        store = Store()
        poller = Poller(store)
        poller.set_targets(collector.targets())
        try:
            return await measure(args, lab, collector, poller, ready)
        finally:
            await collector.aclose()
            await poller.close()
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            await proc.stdin.drain()
            await proc.wait()


async def measure(
    args: argparse.Namespace, lab: Lab, collector: KubernetesCollector, poller: Poller, ready: dict[str, Any]
) -> dict[str, Any]:
    target = collector.target_id
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await poller.run_once()
    initial_list_s = time.perf_counter() - wall0
    initial_cpu_s = time.process_time() - cpu0
    health = poller.health(target)
    if not health.up:
        raise SystemExit(f"bench-kube: the first poll failed: {health.last_error}")
    pods = collector.pods
    print(
        f"initial list: {initial_list_s:.2f}s ({initial_cpu_s:.2f}s CPU), {len(pods.items)} pods", flush=True
    )

    await lab.ask(f"churn {args.rate}")
    events0, polls = pods.events, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < args.seconds:
        await asyncio.sleep(args.poll_every)
        await poller.run_once()
        polls += 1
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    events = pods.events - events0
    changes = (await lab.ask("stop"))["changes"]
    health = poller.health(target)
    if not health.up:
        raise SystemExit(f"bench-kube: a poll failed while watching: {health.last_error}")

    state = await lab.ask("state")
    try:
        await asyncio.wait_for(pods.wait_until(lambda: pods.resource_version == state["rv"]), 30.0)
    except TimeoutError:
        raise SystemExit("bench-kube: the collector did not catch up with the lab within 30s") from None
    if len(pods.items) != state["pods"]:
        raise SystemExit(f"bench-kube: the collector holds {len(pods.items)} pods, the lab {state['pods']}")
    fraction = cpu / wall
    print(
        f"watch: {changes} pod changes in {wall:.1f}s -> {events} pod events applied, {polls} polls; "
        f"{cpu:.3f}s CPU = {fraction:.4f} of a core",
        flush=True,
    )
    return {
        "nodes": ready["nodes"],
        "pods": ready["pods"],
        "initial_list_s": round(initial_list_s, 3),
        "initial_list_cpu_s": round(initial_cpu_s, 3),
        "watch_cpu_fraction": round(fraction, 4),
        "watch_seconds": round(wall, 2),
        "churn_rate_per_s": args.rate,
        "pod_changes": changes,
        "pod_events_applied": events,
        "polls": polls,
        "poll_every_s": args.poll_every,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "page_size": args.page_size,
    }


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=30_000)
    p.add_argument("--rate", type=float, default=100.0, help="pod changes a second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--poll-every", type=float, default=2.0)
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--max-cpu-fraction", type=float, default=FLOOR_WATCH_CPU_FRACTION)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    factory = _uvloop_factory()  # for this run only: callers keep their own event loop policy
    with (
        tempfile.TemporaryDirectory(prefix="kube-bench-") as workdir,
        asyncio.Runner(loop_factory=factory) as r,
    ):
        result = r.run(run(args, workdir))
    result["loop"] = "asyncio" if factory is None else "uvloop"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result["watch_cpu_fraction"] >= args.max_cpu_fraction:
        print(
            f"bench-kube: floor missed: watch_cpu_fraction {result['watch_cpu_fraction']} "
            f">= {args.max_cpu_fraction}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
