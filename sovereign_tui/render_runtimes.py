"""Container runtimes: the runtime classes and the pods that use them, the Kata sandboxes on each
node, and what each sandbox costs.

Three sources meet here: the pods (`Workload`, kinds pod and kata-pod, with their runtime class),
the cluster's `RuntimeClass` objects (handler, fixed pod overhead) and kata-monitor's view of each
node (`KataFacet`: the sandboxes it runs and their CPU and memory overhead). Any of them may be
missing; what is not reported shows as N/A, never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sovereign_tui.model import Host, KataFacet, KataSandbox, RuntimeClass, Workload
from sovereign_tui.render import NA, NONE, fmt_bytes, one_line
from sovereign_tui.render_workloads import plural, workload_running
from sovereign_tui.table import Column, RowState, TableSpec

DEFAULT_RUNTIME = "(default)"
"""The class of pods that name none: the node's default runtime (runc, usually)."""


def is_kata(runtime_class: str) -> bool:
    """Kata's classes are named kata-<shim> (kata-qemu, kata-clh, kata-qemu-nvidia-gpu...)."""
    return runtime_class.startswith("kata")


def fmt_cpu_pct(value: float | None) -> str:
    """CPU in percent of one CPU: "12.5%"."""
    return NA if value is None else f"{value:.1f}%"


def _pods(workloads: Iterable[Workload]) -> list[Workload]:
    return [w for w in workloads if w.kind in ("pod", "kata-pod")]


# --- runtime classes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeClassRow:
    name: str
    kata: bool
    defined: bool
    """A RuntimeClass object of that name exists (pods naming a missing one cannot start)."""
    handler: str | None
    overhead: str
    """The fixed overhead every pod of the class is charged, CPU then memory: "250m 160Mi"."""
    pods: int
    running: int
    nodes: int
    gpus: int
    stale: bool


def _overhead(rc: RuntimeClass | None) -> str:
    if rc is None:
        return NA
    parts = [rc.overhead_cpu or "", rc.overhead_memory or ""]
    return " ".join(p for p in parts if p) or NONE


def runtime_rows(
    workloads: Sequence[Workload], classes: Sequence[RuntimeClass] = ()
) -> tuple[RuntimeClassRow, ...]:
    """Every class the cluster defines or a pod names, with its pods; Kata classes first."""
    by_class: dict[str, list[Workload]] = {rc.name: [] for rc in classes}
    for w in _pods(workloads):
        by_class.setdefault(w.runtime_class or DEFAULT_RUNTIME, []).append(w)
    defined = {rc.name: rc for rc in classes}
    rows = []
    for name, pods in by_class.items():
        rc = defined.get(name)
        rows.append(
            RuntimeClassRow(
                name=name,
                kata=(rc.kata if rc else is_kata(name)) or any(w.kind == "kata-pod" for w in pods),
                defined=rc is not None or name == DEFAULT_RUNTIME,
                handler=rc.handler if rc else None,
                overhead=_overhead(rc) if name != DEFAULT_RUNTIME else NONE,
                pods=len(pods),
                running=sum(1 for w in pods if workload_running(w)),
                nodes=len({w.host for w in pods if w.host}),
                gpus=sum(w.gpus for w in pods),
                stale=(rc is not None and rc.stale) or any(w.stale for w in pods),
            )
        )
    rows.sort(key=lambda r: (not r.kata, r.name))
    return tuple(rows)


def _class_state(r: RuntimeClassRow) -> RowState:
    if r.stale:
        return RowState.STALE
    return RowState.NORMAL if r.defined else RowState.ALERT


def _class_detail(r: RuntimeClassRow) -> str:
    kind = "a Kata (VM-isolated) runtime" if r.kata else "a container runtime"
    where = f"handler {r.handler}" if r.handler else ("not defined in the cluster" if not r.defined else "")
    parts = [
        f"{r.name}: {plural(r.pods, 'pod')} ({r.running} running) on {plural(r.nodes, 'node')}",
        plural(r.gpus, "GPU"),
        kind,
        f"pod overhead {r.overhead}",
    ]
    if where:
        parts.append(where)
    if not r.defined:
        parts.append("ITS PODS CANNOT START: no RuntimeClass of that name")
    return " · ".join(parts)


RUNTIME_TABLE: TableSpec[RuntimeClassRow] = TableSpec(
    name="Runtime classes",
    columns=(
        Column("name", "Runtime class", lambda r, _: r.name, 32, 13),
        Column("kata", "Kata", lambda r, _: "yes" if r.kata else "no", 4),
        Column("handler", "Handler", lambda r, _: r.handler or (NA if r.defined else "MISSING"), 24, 7),
        Column("overhead", "Pod overhead", lambda r, _: r.overhead, 24, 8),
        Column("pods", "Pods", lambda r, _: str(r.pods), 5, align="right", sort_key=lambda r: r.pods),
        Column("running", "Running", lambda r, _: str(r.running), 7, align="right",
               sort_key=lambda r: r.running, optional=True),
        Column("nodes", "Nodes", lambda r, _: str(r.nodes), 5, align="right", sort_key=lambda r: r.nodes),
        Column("gpus", "GPUs", lambda r, _: str(r.gpus), 4, align="right", sort_key=lambda r: r.gpus),
    ),
    row_key=lambda r: r.name,
    row_state=_class_state,
    detail=lambda r, _: _class_detail(r),
)  # fmt: skip


# --- Kata sandboxes per node --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSandboxRow:
    """A node's Kata pods (the API's view) and sandboxes (kata-monitor's view)."""

    node: str
    kata_pods: int
    running: int
    classes: str
    """The Kata pods per runtime class: "kata-qemu 2 · kata-clh 1"."""
    gpus: int
    sandboxes: int | None
    """Sandboxes kata-monitor reports; None where no kata-monitor is read."""
    shims: int | None
    overhead_cpu_pct: float | None
    overhead_memory_bytes: int | None
    stale: bool

    @property
    def mismatch(self) -> bool:
        """kata-monitor runs a different number of sandboxes than the API places Kata pods."""
        return self.sandboxes is not None and self.sandboxes != self.kata_pods


def node_rows(workloads: Sequence[Workload], hosts: Sequence[Host]) -> tuple[NodeSandboxRow, ...]:
    """Every node with Kata pods or a kata-monitor, by name."""
    pods: dict[str, list[Workload]] = {}
    for w in workloads:
        if w.kind == "kata-pod" and w.host:
            pods.setdefault(w.host, []).append(w)
    facets: dict[str, KataFacet] = {h.name: h.kata for h in hosts if h.kata is not None}
    rows = []
    for node in sorted(pods.keys() | facets.keys()):
        mine = pods.get(node, [])
        facet = facets.get(node)
        counts: dict[str, int] = {}
        for w in mine:
            counts[w.runtime_class or NA] = counts.get(w.runtime_class or NA, 0) + 1
        rows.append(
            NodeSandboxRow(
                node=node,
                kata_pods=len(mine),
                running=sum(1 for w in mine if workload_running(w)),
                classes=" · ".join(f"{rc} {n}" for rc, n in sorted(counts.items())) or NONE,
                gpus=sum(w.gpus for w in mine),
                sandboxes=None if facet is None else len(facet.sandboxes),
                shims=None if facet is None else facet.running_shims,
                overhead_cpu_pct=None if facet is None else facet.overhead_cpu_pct,
                overhead_memory_bytes=None if facet is None else facet.overhead_memory_bytes,
                stale=(facet is not None and facet.stale) or any(w.stale for w in mine),
            )
        )
    return tuple(rows)


def _node_state(r: NodeSandboxRow) -> RowState:
    if r.stale:
        return RowState.STALE
    return RowState.ALERT if r.mismatch else RowState.NORMAL


def _node_detail(r: NodeSandboxRow) -> str:
    shims = NA if r.shims is None else str(r.shims)
    monitor = (
        "no kata-monitor read on this node"
        if r.sandboxes is None
        else f"kata-monitor: {plural(r.sandboxes, 'sandbox')}, {shims} shims, "
        f"overhead {fmt_cpu_pct(r.overhead_cpu_pct)} CPU, {fmt_bytes(r.overhead_memory_bytes)}"
    )
    text = f"{r.node}: {plural(r.kata_pods, 'Kata pod')} ({r.running} running; {r.classes}) · {monitor}"
    if r.mismatch:
        text += f" · MISMATCH: {r.kata_pods} pods placed, {r.sandboxes} sandboxes running"
    return text


NODE_TABLE: TableSpec[NodeSandboxRow] = TableSpec(
    name="Kata nodes",
    columns=(
        Column("node", "Node", lambda r, _: r.node, 32, 7),
        Column("pods", "Pods", lambda r, _: str(r.kata_pods), 4, align="right",
               sort_key=lambda r: r.kata_pods),
        Column("sandboxes", "Sandboxes", lambda r, _: NA if r.sandboxes is None else str(r.sandboxes), 9,
               align="right", sort_key=lambda r: r.sandboxes),
        Column("cpu", "CPU ovh", lambda r, _: fmt_cpu_pct(r.overhead_cpu_pct), 7, align="right",
               sort_key=lambda r: r.overhead_cpu_pct),
        Column("memory", "Mem ovh", lambda r, _: fmt_bytes(r.overhead_memory_bytes), 10, align="right",
               sort_key=lambda r: r.overhead_memory_bytes),
        Column("gpus", "GPUs", lambda r, _: str(r.gpus), 4, align="right", sort_key=lambda r: r.gpus),
        Column("classes", "Runtime classes", lambda r, _: r.classes, 120, 10),
    ),
    row_key=lambda r: r.node,
    row_state=_node_state,
    detail=lambda r, _: _node_detail(r),
)  # fmt: skip


# --- one row per sandbox: what each pod's VM costs ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxRow:
    node: str
    sandbox: KataSandbox
    pod: str
    """namespace/name, from kata-monitor or from the pod its uid names; N/A when neither knows."""
    runtime_class: str
    state: str
    stale: bool


def sandbox_rows(workloads: Sequence[Workload], hosts: Sequence[Host]) -> tuple[SandboxRow, ...]:
    """Every sandbox kata-monitor reports, joined to its pod by the pod's uid."""
    by_uid = {w.id: w for w in workloads if w.kind in ("pod", "kata-pod")}
    rows = []
    for h in hosts:
        facet = h.kata
        if facet is None:
            continue
        for s in facet.sandboxes:
            w = by_uid.get(s.pod_uid or "")
            if s.pod:
                pod = f"{s.namespace}/{s.pod}" if s.namespace else s.pod
            elif w is not None:
                pod = f"{w.owner}/{w.name}" if w.owner else w.name
            else:
                pod = NA
            rows.append(
                SandboxRow(
                    node=h.name,
                    sandbox=s,
                    pod=one_line(pod),
                    runtime_class=(w.runtime_class or NA) if w else NA,
                    state=one_line(w.state) if w else "no such pod",
                    stale=facet.stale,
                )
            )
    return tuple(rows)


def _sandbox_state(r: SandboxRow) -> RowState:
    if r.stale:
        return RowState.STALE
    return RowState.ALERT if r.state == "no such pod" else RowState.NORMAL


def _sandbox_detail(r: SandboxRow) -> str:
    s = r.sandbox
    text = (
        f"sandbox {s.sandbox_id} on {r.node} · pod {r.pod} (uid {s.pod_uid or NA}) · {r.runtime_class} · "
        f"{r.state} · overhead {fmt_cpu_pct(s.overhead_cpu_pct)} CPU, {fmt_bytes(s.overhead_memory_bytes)}"
    )
    if r.state == "no such pod":
        text += " · the API has no pod for it: a sandbox left behind"
    return text


SANDBOX_TABLE: TableSpec[SandboxRow] = TableSpec(
    name="Sandboxes",
    columns=(
        Column("pod", "Pod", lambda r, _: r.pod, 48, 8),
        Column("node", "Node", lambda r, _: r.node, 32, 7),
        Column("class", "Runtime class", lambda r, _: r.runtime_class, 32, 8, optional=True),
        Column("cpu", "CPU ovh", lambda r, _: fmt_cpu_pct(r.sandbox.overhead_cpu_pct), 7, align="right",
               sort_key=lambda r: r.sandbox.overhead_cpu_pct),
        Column("memory", "Mem ovh", lambda r, _: fmt_bytes(r.sandbox.overhead_memory_bytes), 10,
               align="right", sort_key=lambda r: r.sandbox.overhead_memory_bytes),
        Column("state", "Pod state", lambda r, _: r.state, 20, 6),
        Column("sandbox", "Sandbox", lambda r, _: r.sandbox.sandbox_id, 64, 8, optional=True),
    ),
    row_key=lambda r: f"{r.node}/{r.sandbox.sandbox_id}",
    row_state=_sandbox_state,
    detail=lambda r, _: _sandbox_detail(r),
    default_sort="memory",
    default_reverse=True,
)  # fmt: skip
