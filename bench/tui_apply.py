"""What a new snapshot costs the Hosts and Workloads tables, without a terminal.

    python -m bench.tui_apply [--hosts 1000] [--servers 10000] [--repeats 7] [--out FILE]

A real `Store` holds a cluster of `hosts` hosts (each a Nova hypervisor and a Kubernetes node,
eight GPUs each) running `servers` Nova VMs. Each round, Nova is polled again (every server a new
object, some changed, as Nova's answers are) and the store builds a new snapshot; what is timed is
the tables' model taking it: `TableModel.set_rows` on the Hosts table and on the Workloads table
(row states carried over, sort keys and filter texts for new rows, the view rebuilt, the cursor
kept on its row). Building the snapshot and drawing the screen are not in the figure: the store
has its own cost, and the widget draws only the visible lines.

Two views are timed: as the screens open (each table's default order, no filter), and as an
operator works them (sorted by a column, a filter typed). `table_update_ms` is the median of the
first, Hosts and Workloads together.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import FacetOf, KubeFacet, NovaFacet, Observation, SourceHealth, Workload
from sovereign_tui.render_hosts import HOST_TABLE
from sovereign_tui.render_workloads import WORKLOAD_TABLE
from sovereign_tui.store import Store
from sovereign_tui.table import TableModel

NOVA = "nova:bench"
KUBE = "kubernetes:bench"
STATES = ("ACTIVE", "ACTIVE", "ACTIVE", "SHUTOFF", "MIGRATING", "ERROR")


@dataclass(frozen=True, slots=True)
class TableApplyResult:
    hosts: int
    workloads: int
    repeats: int
    hosts_ms: float
    """Median time for the Hosts table to take a new snapshot (default view)."""
    workloads_ms: float
    table_update_ms: float
    """Median of Hosts and Workloads together, default view: the figure to report."""
    table_update_worked_ms: float
    """The same, sorted by a column and with a filter typed in each table."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def host_name(i: int) -> str:
    return f"compute-{i:05d}"


def _health(target: str, source: str, now: float) -> SourceHealth:
    return SourceHealth(
        target=target,
        source=source,
        endpoint="cloud:bench",
        interval_s=15.0,
        up=True,
        last_success=now,
        polls=1,
    )


def nova_observation(hosts: int, servers: int, now: float, round_: int) -> Observation:
    """Every hypervisor and every server, as one Nova poll returns them; `round_` moves some
    servers to another state and another host, as a live cloud does between polls."""
    facets = tuple(
        FacetOf(
            host_name(i),
            NovaFacet(
                source=NOVA,
                observed_at=now,
                hypervisor_id=f"hv-{i}",
                state="down" if (i + round_) % 97 == 0 else "up",
                status="enabled",
                running_vms=servers // max(hosts, 1),
            ),
        )
        for i in range(hosts)
    )
    workloads = tuple(
        Workload(
            source=NOVA,
            observed_at=now,
            kind="nova-vm",
            id=f"server-{s:06d}",
            name=f"vm-{s:06d}",
            state=STATES[(s + round_) % len(STATES)] if s % 50 == round_ % 50 else STATES[s % 3],
            host=host_name((s + (round_ if s % 50 == 0 else 0)) % max(hosts, 1)),
            owner=f"project-{s % 40:02d}",
            gpus=s % 3,
            flavor=f"g1.h100x{s % 3}" if s % 3 else "m1.large",
        )
        for s in range(servers)
    )
    return Observation(facets=facets, workloads=workloads)


def kube_observation(hosts: int, now: float) -> Observation:
    return Observation(
        facets=tuple(
            FacetOf(host_name(i), KubeFacet(source=KUBE, observed_at=now, node=host_name(i), ready=True))
            for i in range(hosts)
        )
    )


def _median_ms(samples: Sequence[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def measure(hosts: int = 1000, servers: int = 10_000, repeats: int = 7) -> TableApplyResult:
    """Apply `repeats` new snapshots (after one to warm up) to fresh Hosts and Workloads table
    models in both views; medians in milliseconds."""
    if hosts < 1 or servers < 0 or repeats < 1:
        raise ValueError("tui_apply: hosts and repeats must be at least 1, servers at least 0")
    clock = FakeClock()
    store = Store(clock)
    store.apply(_health(KUBE, "kubernetes", clock.time()), kube_observation(hosts, clock.time()))
    host_models = [TableModel(HOST_TABLE), TableModel(HOST_TABLE)]
    work_models = [TableModel(WORKLOAD_TABLE), TableModel(WORKLOAD_TABLE)]
    worked_h, worked_w = host_models[1], work_models[1]
    worked_h.sort_by(HOST_TABLE.index_of("work"), reverse=True)
    worked_h.set_filter("compute-00")
    worked_w.sort_by(WORKLOAD_TABLE.index_of("state"))
    worked_w.set_filter("project-1")
    timings: dict[str, list[float]] = {"hosts": [], "workloads": [], "plain": [], "worked": []}
    for round_ in range(repeats + 1):
        store.apply(
            _health(NOVA, "nova", clock.time()), nova_observation(hosts, servers, clock.time(), round_)
        )
        snap = store.snapshot()
        spent = []
        for models in ((host_models[0], work_models[0]), (worked_h, worked_w)):
            t0 = time.perf_counter()
            models[0].set_rows(snap.hosts)
            t1 = time.perf_counter()
            models[1].set_rows(snap.workloads)
            t2 = time.perf_counter()
            spent.append((t1 - t0, t2 - t1))
        if round_ == 0:
            for hm, wm in zip(host_models, work_models, strict=True):  # the cursor on a row from now on
                hm.cursor_to(len(hm.lines) // 2)
                wm.cursor_to(len(wm.lines) // 2)
            continue
        (h, w), (wh, ww) = spent
        timings["hosts"].append(h)
        timings["workloads"].append(w)
        timings["plain"].append(h + w)
        timings["worked"].append(wh + ww)
    return TableApplyResult(
        hosts=len(snap.hosts),
        workloads=len(snap.workloads),
        repeats=repeats,
        hosts_ms=_median_ms(timings["hosts"]),
        workloads_ms=_median_ms(timings["workloads"]),
        table_update_ms=_median_ms(timings["plain"]),
        table_update_worked_ms=_median_ms(timings["worked"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    try:
        result = measure(args.hosts, args.servers, args.repeats)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    text = json.dumps(result.as_dict(), indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
