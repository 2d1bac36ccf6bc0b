"""Kubernetes: nodes as host facets, pods as workloads, runtime classes and disruption budgets.

Every collection is listed once and then watched (`kube_watch`); the views below turn each event
into the model's value as it arrives, so a poll hands over what the views hold and costs what
changed since the last one. Objects are decoded into msgspec Structs naming only the fields used.
Nodes are filed under their name, the key they share with Nova, Ironic and StarlingX. Each
entity's `observed_at` is when its current version arrived; the source's freshness is its
health (a watch that cannot reconnect fails the poll, so the data goes stale).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from collectors.base import Capability
from collectors.kube_client import KubeOptions, KubeRef, KubeSession
from collectors.kube_watch import Informer, KubeObject, Resource, SessionCollector, ensure_all, informer
from sovereign_tui.model import DisruptionBudget, FacetOf, KubeFacet, Observation, RuntimeClass, Workload
from sovereign_tui.poller import PollContext

if TYPE_CHECKING:
    from collectors.base import Collector
    from sovereign_tui.config_sources import KataSource, KubernetesSource, KubevirtSource

GPU = "nvidia.com/gpu"


def quantity_int(value: str | int | None) -> int:
    """An integer resource quantity ("4"); anything else counts as 0."""
    if isinstance(value, int):
        return value
    try:
        return int(value or 0)
    except ValueError:
        return 0


def is_kata_class(name: str | None) -> bool:
    """Kata's runtime classes are named kata-<shim> (kata-qemu, kata-clh, ...)."""
    return bool(name) and str(name).startswith("kata")


# --- nodes ---------------------------------------------------------------------------------------


class _Taint(msgspec.Struct):
    key: str = ""
    value: str | None = None
    effect: str = ""


class _NodeSpec(msgspec.Struct):
    unschedulable: bool = False
    taints: list[_Taint] = msgspec.field(default_factory=list)


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""
    reason: str | None = None


class _Address(msgspec.Struct):
    type: str = ""
    address: str = ""


class _NodeInfo(msgspec.Struct, rename="camel"):
    kubelet_version: str | None = None


class _NodeStatus(msgspec.Struct, rename="camel"):
    allocatable: dict[str, str] = msgspec.field(default_factory=dict)
    conditions: list[_Condition] = msgspec.field(default_factory=list)
    addresses: list[_Address] = msgspec.field(default_factory=list)
    node_info: _NodeInfo = msgspec.field(default_factory=_NodeInfo)


class Node(KubeObject):
    spec: _NodeSpec = msgspec.field(default_factory=_NodeSpec)
    status: _NodeStatus = msgspec.field(default_factory=_NodeStatus)


def internal_ip(node: Node) -> str | None:
    return next((a.address for a in node.status.addresses if a.type == "InternalIP"), None)


def node_facet(node: Node, source: str, now: float) -> FacetOf:
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    taints = tuple(
        f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in node.spec.taints
    )
    return FacetOf(
        node.metadata.name,
        KubeFacet(
            source=source,
            observed_at=now,
            node=node.metadata.name,
            ready=ready,
            unschedulable=node.spec.unschedulable,
            kubelet_version=node.status.node_info.kubelet_version,
            gpu_allocatable=quantity_int(node.status.allocatable.get(GPU)),
            taints=taints,
            labels=node.metadata.labels,
            internal_ip=internal_ip(node),
        ),
    )


# --- pods ----------------------------------------------------------------------------------------


class _Resources(msgspec.Struct):
    limits: dict[str, str] = msgspec.field(default_factory=dict)
    requests: dict[str, str] = msgspec.field(default_factory=dict)


class _Container(msgspec.Struct):
    resources: _Resources = msgspec.field(default_factory=_Resources)


class _PodSpec(msgspec.Struct, rename="camel"):
    node_name: str | None = None
    runtime_class_name: str | None = None
    containers: list[_Container] = msgspec.field(default_factory=list)


class _Reason(msgspec.Struct):
    reason: str | None = None


class _ContainerState(msgspec.Struct):
    waiting: _Reason | None = None
    terminated: _Reason | None = None


class _ContainerStatus(msgspec.Struct, rename="camel"):
    ready: bool = False
    restart_count: int = 0
    state: _ContainerState | None = None


class _PodStatus(msgspec.Struct, rename="camel"):
    phase: str = ""
    reason: str | None = None
    conditions: list[_Condition] = msgspec.field(default_factory=list)
    container_statuses: list[_ContainerStatus] = msgspec.field(default_factory=list)


class Pod(KubeObject):
    spec: _PodSpec = msgspec.field(default_factory=_PodSpec)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)


def pod_gpus(pod: Pod) -> int:
    """GPUs the pod holds: its containers' ``nvidia.com/gpu`` limits (requests must equal them)."""
    total = 0
    for c in pod.spec.containers:
        r = c.resources
        total += quantity_int(r.limits.get(GPU) or r.requests.get(GPU))
    return total


def pod_state(pod: Pod) -> str:
    """The phase, with the reason when there is one, as ``kubectl get pods`` would explain it."""
    st = pod.status
    phase = st.phase or "Unknown"
    if pod.metadata.deletion_timestamp:
        return f"{phase} (Terminating)"
    reason = st.reason
    if not reason:
        for cs in st.container_statuses:
            s = cs.state
            if s is not None and s.waiting is not None and s.waiting.reason:
                reason = s.waiting.reason
                break
            if s is not None and s.terminated is not None and s.terminated.reason and phase != "Succeeded":
                reason = s.terminated.reason
                break
    if not reason and phase == "Pending":
        reason = next((c.reason for c in st.conditions if c.status == "False" and c.reason), None)
    return f"{phase} ({reason})" if reason else phase


def pod_workload(pod: Pod, source: str, now: float) -> Workload:
    md, spec = pod.metadata, pod.spec
    rc = spec.runtime_class_name
    kata = is_kata_class(rc)
    gpus = pod_gpus(pod)
    detail: dict[str, str] = {}
    owner = next((r for r in md.owner_references if r.controller), None) or (
        md.owner_references[0] if md.owner_references else None
    )
    if owner is not None:
        detail["owner_kind"] = owner.kind
        detail["owner_name"] = owner.name
    if rc:
        detail["runtime_class"] = rc
    statuses = pod.status.container_statuses
    if statuses:
        detail["ready"] = f"{sum(1 for c in statuses if c.ready)}/{len(statuses)}"
        restarts = sum(c.restart_count for c in statuses)
        if restarts:
            detail["restarts"] = str(restarts)
    return Workload(
        source=source,
        observed_at=now,
        kind="kata-pod" if kata else "pod",
        id=md.uid,
        name=md.name,
        state=pod_state(pod),
        host=spec.node_name or None,
        owner=md.namespace or None,
        gpus=gpus,
        runtime_class=rc,
        gpu_kind="passthrough" if kata and gpus else None,
        detail=detail,
    )


# --- runtime classes and disruption budgets ------------------------------------------------------


class _Overhead(msgspec.Struct, rename="camel"):
    pod_fixed: dict[str, str] = msgspec.field(default_factory=dict)


class _Scheduling(msgspec.Struct, rename="camel"):
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)


class RuntimeClassObj(KubeObject):
    handler: str = ""
    overhead: _Overhead | None = None
    scheduling: _Scheduling | None = None


def runtime_class(rc: RuntimeClassObj, source: str, now: float) -> RuntimeClass:
    fixed = rc.overhead.pod_fixed if rc.overhead is not None else {}
    return RuntimeClass(
        source=source,
        observed_at=now,
        name=rc.metadata.name,
        handler=rc.handler,
        kata=is_kata_class(rc.metadata.name) or is_kata_class(rc.handler),
        overhead_cpu=fixed.get("cpu"),
        overhead_memory=fixed.get("memory"),
        node_selector=rc.scheduling.node_selector if rc.scheduling is not None else {},
    )


class _Selector(msgspec.Struct, rename="camel"):
    match_labels: dict[str, str] = msgspec.field(default_factory=dict)


class _PdbSpec(msgspec.Struct, rename="camel"):
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    selector: _Selector | None = None


class _PdbStatus(msgspec.Struct, rename="camel"):
    current_healthy: int | None = None
    desired_healthy: int | None = None
    disruptions_allowed: int | None = None
    expected_pods: int | None = None


class PdbObj(KubeObject):
    spec: _PdbSpec = msgspec.field(default_factory=_PdbSpec)
    status: _PdbStatus = msgspec.field(default_factory=_PdbStatus)


def budget(p: PdbObj, source: str, now: float) -> DisruptionBudget:
    spec, st = p.spec, p.status
    return DisruptionBudget(
        source=source,
        observed_at=now,
        namespace=p.metadata.namespace,
        name=p.metadata.name,
        min_available=None if spec.min_available is None else str(spec.min_available),
        max_unavailable=None if spec.max_unavailable is None else str(spec.max_unavailable),
        selector=spec.selector.match_labels if spec.selector is not None else {},
        current_healthy=st.current_healthy,
        desired_healthy=st.desired_healthy,
        disruptions_allowed=st.disruptions_allowed,
        expected_pods=st.expected_pods,
    )


NODES = Resource("/api/v1/nodes", "nodes", Node)
PODS = Resource("/api/v1/pods", "pods", Pod)
RUNTIME_CLASSES = Resource("/apis/node.k8s.io/v1/runtimeclasses", "runtimeclasses", RuntimeClassObj)
BUDGETS = Resource("/apis/policy/v1/poddisruptionbudgets", "poddisruptionbudgets", PdbObj)


# --- views: what each poll publishes, kept up to date event by event -----------------------------


ObjT = TypeVar("ObjT", bound=KubeObject)
E = TypeVar("E")


class MappedView(Generic[ObjT, E]):
    """uid -> the model's value of each object; the published tuple is rebuilt only when dirty."""

    def __init__(self, convert: Callable[[ObjT, str, float], E], source: str) -> None:
        self._convert = convert
        self.source = source
        self.values: dict[str, E] = {}
        self._published: tuple[E, ...] | None = ()
        self.builds = 0

    def _make(self, obj: ObjT, now: float) -> E:
        return self._convert(obj, self.source, now)

    def reset(self, items: Mapping[str, ObjT], now: float) -> None:
        self.values = {uid: self._make(obj, now) for uid, obj in items.items()}
        self._published = None

    def upsert(self, uid: str, obj: ObjT, old: ObjT | None, now: float) -> None:
        self.values[uid] = self._make(obj, now)
        self._published = None

    def delete(self, uid: str, old: ObjT, now: float) -> None:
        if self.values.pop(uid, None) is not None:
            self._published = None

    def published(self) -> tuple[E, ...]:
        if self._published is None:
            self._published = tuple(self.values.values())
            self.builds += 1
        return self._published


# --- the collector ---------------------------------------------------------------------------------


class KubernetesCollector(SessionCollector):
    name = "kubernetes"
    capabilities: frozenset[Capability] = frozenset({"read", "drain"})

    def __init__(
        self, session: KubeSession, *, interval_s: float = 10.0, timeout_s: float | None = None
    ) -> None:
        super().__init__(session, interval_s=interval_s, timeout_s=timeout_s)
        self.nodes: Informer[Node] = informer(session, NODES)
        self.pods: Informer[Pod] = informer(session, PODS)
        self.runtime_classes: Informer[RuntimeClassObj] = informer(session, RUNTIME_CLASSES)
        self.budgets: Informer[PdbObj] = informer(session, BUDGETS)
        src = self.target_id
        self.node_view: MappedView[Node, FacetOf] = MappedView(node_facet, src)
        self.pod_view: MappedView[Pod, Workload] = MappedView(pod_workload, src)
        self.rc_view: MappedView[RuntimeClassObj, RuntimeClass] = MappedView(runtime_class, src)
        self.budget_view: MappedView[PdbObj, DisruptionBudget] = MappedView(budget, src)
        self._viewed = False

    @property
    def informers(self) -> list[Informer[Any]]:
        return [self.nodes, self.pods, self.runtime_classes, self.budgets]

    async def poll(self, ctx: PollContext) -> Observation:
        if not self._viewed:
            now = ctx.clock.time()
            self.nodes.add_view(self.node_view, now)
            self.pods.add_view(self.pod_view, now)
            self.runtime_classes.add_view(self.rc_view, now)
            self.budgets.add_view(self.budget_view, now)
            self._viewed = True
        await ensure_all(ctx, self.informers)
        return Observation(
            facets=self.node_view.published(),
            workloads=self.pod_view.published(),
            runtime_classes=self.rc_view.published(),
            budgets=self.budget_view.published(),
            health_detail={f"watch {i.resource.kind}": i.state() for i in self.informers},
        )


def kube_collectors(kube: KubernetesSource, kubevirt: KubevirtSource, kata: KataSource) -> list[Collector]:
    """The enabled Kubernetes sources, sharing one session (one watch per collection)."""
    if not (kube.enabled or kubevirt.enabled or kata.enabled):
        return []
    session = KubeSession(
        KubeRef(kube.kubeconfig, kube.context),
        KubeOptions(watch=kube.watch, page_size=kube.page_size, watch_timeout_s=kube.watch_timeout_s),
    )
    found: list[Collector] = []
    if kube.enabled:
        found.append(KubernetesCollector(session, interval_s=kube.interval_s, timeout_s=kube.timeout_s))
    if kubevirt.enabled:
        from collectors.kubevirt import KubevirtCollector

        found.append(KubevirtCollector(session, interval_s=kubevirt.interval_s, timeout_s=kubevirt.timeout_s))
    if kata.enabled:
        from collectors.kata import KataCollector

        found.append(KataCollector(session, kata))
    return found
