"""The embedded lab polled end to end (`just bench-lab`).

    python -m bench.lab_bench [--hosts 1000] [--servers 10000] [--cycles 3]

Starts the lab in a process of its own (as `sovereign-tui demo` does), points a real `Runtime` at
the configuration it writes (Keystone auth through openstacksdk, Nova, Ironic and Placement read
through the shared aiohttp client), and measures each source's first (cold) poll, then warm
polling cycles: the time of each source's poll (the slowest is `cycle_s`), then the console's
cost to apply a new snapshot to the Hosts and Workloads tables (`table_update_ms`, from
`bench.tui_apply` when the console's tables are installed).
Writes `bench-results/lab.json`; exits non-zero, naming the floor, when a floor is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import install_uvloop
from sovereign_tui.config import load_settings
from sovereign_tui.lab.process import LabProcess
from sovereign_tui.model import Snapshot
from sovereign_tui.runtime import Runtime

FLOOR_CYCLE_S = 2.0
FLOOR_TABLE_MS = 50.0


async def poll_cycles(
    settings_path: Path, cycles: int
) -> tuple[dict[str, float], dict[str, list[float]], Snapshot]:
    """Each source's first poll (cold: authentication, negotiation, connections, and every
    Placement device read once), then its `cycles` warm polls."""
    settings, _ = load_settings(settings_path)
    runtime = Runtime(settings)
    durations: dict[str, list[float]] = {}
    try:
        await runtime.poller.run_once()
        first = {
            h.source: h.last_duration_s or 0.0 for h in runtime.store.snapshot().sources if h.source != "host"
        }
        for _ in range(cycles):
            await runtime.poller.run_once()
            for health in runtime.store.snapshot().sources:
                if health.source == "host":
                    continue
                if not health.up:
                    raise SystemExit(f"bench-lab: source {health.target} is down: {health.last_error}")
                durations.setdefault(health.source, []).append(health.last_duration_s or 0.0)
        return first, durations, runtime.store.snapshot()
    finally:
        await runtime.close()


def table_update_ms(hosts: int, servers: int) -> float:
    """The console's cost to apply a new snapshot (after a Nova re-poll) to the Hosts and
    Workloads tables, at the same size (`bench.tui_apply`)."""
    from bench.tui_apply import measure

    return round(measure(hosts=hosts, servers=servers).table_update_ms, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-lab", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=10000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results/lab.json"))
    args = parser.parse_args(argv)
    install_uvloop()
    started = time.perf_counter()
    with LabProcess(
        hosts=args.hosts, seed=1, servers=args.servers, layers="openstack", ready_timeout_s=120
    ) as lab:
        lab_start_s = time.perf_counter() - started
        first, durations, snapshot = asyncio.run(poll_cycles(lab.files.settings, args.cycles))
    per_source = {src: statistics.median(vals) for src, vals in sorted(durations.items())}
    servers = sum(1 for w in snapshot.workloads if w.kind == "nova-vm")
    record: dict[str, Any] = {
        "hosts": len(snapshot.hosts),
        "servers": servers,
        "cycle_s": round(max(per_source.values()), 4),
        "cycle_s_per_source": {k: round(v, 4) for k, v in per_source.items()},
        "first_poll_s_per_source": {k: round(v, 4) for k, v in sorted(first.items())},
        "table_update_ms": table_update_ms(args.hosts, args.servers),
        "lab_start_s": round(lab_start_s, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"lab: {record['hosts']} hosts, {servers} servers (lab up in {record['lab_start_s']} s)")
    for src, val in record["cycle_s_per_source"].items():
        print(f"  {src:<10} poll {val:.3f} s   (first poll {record['first_poll_s_per_source'][src]:.3f} s)")
    print(f"  cycle_s (slowest source) {record['cycle_s']:.3f} s   floor < {FLOOR_CYCLE_S}")
    print(f"  table_update_ms {record['table_update_ms']}   floor < {FLOOR_TABLE_MS}")
    print(f"wrote {args.out}")
    failed = []
    if record["cycle_s"] >= FLOOR_CYCLE_S:
        failed.append(f"cycle_s {record['cycle_s']} >= {FLOOR_CYCLE_S}")
    if record["table_update_ms"] is not None and record["table_update_ms"] >= FLOOR_TABLE_MS:
        failed.append(f"table_update_ms {record['table_update_ms']} >= {FLOOR_TABLE_MS}")
    if failed:
        print("bench-lab: floor missed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
