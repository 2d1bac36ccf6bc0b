"""Workloads of every kind in one table.

Nova VMs, Ironic instances, pods, Kata pods and KubeVirt VMs share one row shape (`Workload`);
the kind filter narrows the table to one kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from sovereign_tui.model import WORKLOAD_KINDS, Workload, WorkloadKind
from sovereign_tui.render import NA, NONE, one_line
from sovereign_tui.table import Column, RowState, TableSpec

_TROUBLE = ("error", "fail", "crashloop", "unknown", "imagepull", "evicted", "oomkilled")
"""Words in a state that mean the workload is unwell, whatever its layer's spelling."""
_RUNNING = frozenset({"active", "running"})


@lru_cache(maxsize=4096)
def state_trouble(state: str) -> bool:
    """Whether a state reads as unwell (cached: a fleet has thousands of workloads, few states)."""
    folded = state.casefold()
    return any(word in folded for word in _TROUBLE)


def workload_trouble(w: Workload) -> bool:
    return state_trouble(w.state)


def workload_running(w: Workload) -> bool:
    return w.state.casefold() in _RUNNING


def workload_state(w: Workload) -> RowState:
    if w.stale:
        return RowState.STALE
    return RowState.ALERT if workload_trouble(w) else RowState.NORMAL


def class_text(w: Workload) -> str:
    """The flavor (Nova, Ironic's resource class, KubeVirt's instance type) or the pod's runtime
    class; a plain pod runs the node's default runtime."""
    if w.flavor:
        return one_line(w.flavor)
    if w.runtime_class:
        return one_line(w.runtime_class)
    return "default" if w.kind in ("pod", "kata-pod") else NA


def plural(count: int, noun: str) -> str:
    """ "1 pod", "2 pods", "2 sandboxes"."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}{'es' if noun.endswith('x') else 's'}"


def gpus_text(w: Workload) -> str:
    if not w.gpus:
        return NONE
    return str(w.gpus)


def workload_detail(w: Workload) -> str:
    """What, where and with what first; identifiers and provenance last (cut first when short)."""
    who = f"{one_line(w.owner)}/{one_line(w.name)}" if w.owner else one_line(w.name)
    parts = [f"{w.kind} {who}", f"{one_line(w.state)} on {w.host or 'no host'}"]
    gpus = plural(w.gpus, "GPU") + (f" ({w.gpu_kind})" if w.gpu_kind else "")
    parts.append(gpus + (": " + ", ".join(w.gpu_uuids) if w.gpu_uuids else ""))
    if w.flavor:
        parts.append(f"flavor {one_line(w.flavor)}")
    if w.runtime_class:
        parts.append(f"runtime class {one_line(w.runtime_class)}")
    parts.extend(f"{one_line(k)} {one_line(v)}" for k, v in sorted(w.detail.items()))
    parts.append(f"id {w.id} · from {w.source}" + (" · STALE: last known values" if w.stale else ""))
    return " · ".join(parts)


WORKLOAD_TABLE: TableSpec[Workload] = TableSpec(
    name="Workloads",
    columns=(
        Column("kind", "Kind", lambda w, _: w.kind, 11,
               sort_key=lambda w: WORKLOAD_KINDS.index(w.kind)),
        Column("name", "Name", lambda w, _: one_line(w.name), 48, 8),
        Column("owner", "Owner", lambda w, _: one_line(w.owner) if w.owner else NA, 32, 5),
        Column("state", "State", lambda w, _: one_line(w.state), 20, 5),
        Column("host", "Host", lambda w, _: w.host or NONE, 32, 5),
        Column("gpus", "GPUs", lambda w, _: gpus_text(w), 4, align="right", sort_key=lambda w: w.gpus),
        Column("class", "Class", lambda w, _: class_text(w), 32, 5),
    ),
    row_key=lambda w: f"{w.kind}/{w.id}",
    row_state=workload_state,
    detail=lambda w, _: workload_detail(w),
)  # fmt: skip


def kind_counts(workloads: Iterable[Workload]) -> dict[WorkloadKind, int]:
    counts: dict[WorkloadKind, int] = dict.fromkeys(WORKLOAD_KINDS, 0)
    for w in workloads:
        counts[w.kind] += 1
    return counts


def kinds_line(counts: dict[WorkloadKind, int], selected: WorkloadKind | None) -> str:
    """Each kind with its count, the one shown in brackets: "[all 14]  pod 3  kata-pod 3"."""
    total = sum(counts.values())
    items = [("all", total, selected is None)]
    items += [(k, counts.get(k, 0), k == selected) for k in WORKLOAD_KINDS]
    return "  ".join(f"[{name} {n}]" if chosen else f"{name} {n}" for name, n, chosen in items)


def next_kind(kind: WorkloadKind | None) -> WorkloadKind | None:
    """All kinds, then each in turn, then all again."""
    order: list[WorkloadKind | None] = [None, *WORKLOAD_KINDS]
    return order[(order.index(kind) + 1) % len(order)]
