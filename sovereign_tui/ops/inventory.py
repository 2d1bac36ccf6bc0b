"""Cheap live lookups the planners need beyond the snapshot: a node's pods and the disruption
budgets over them (their room *now*), a node's KubeVirt VMIs and whether they can live-migrate,
the runtime classes present, the StarlingX host record, Nova's flavors with their extra specs.

Each lookup is one or two list calls through the same SDK clients the actions use. A layer that
is not configured raises `LayerUnavailable`, which a planner turns into a note in the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sovereign_tui.ops.actions import Adapters
from sovereign_tui.ops.actions.kubernetes import Refusal, kcall
from sovereign_tui.ops.actions.kubevirt import GROUP, VERSION, VMIS
from sovereign_tui.ops.actions.nova import call


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    node: str | None
    phase: str | None
    owner_kind: str | None
    labels: dict[str, str]
    deleting: bool = False
    runtime_class: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def launcher_of(self) -> str | None:
        """The VMI this pod runs, when it is a KubeVirt virt-launcher pod."""
        if self.labels.get("kubevirt.io") == "virt-launcher":
            return self.labels.get("vm.kubevirt.io/name")
        return None


@dataclass(frozen=True)
class BudgetInfo:
    namespace: str
    name: str
    match_labels: dict[str, str]
    match_expressions: list[dict[str, Any]] = field(default_factory=list)
    has_selector: bool = True
    """policy/v1: no selector selects nothing, an empty one every pod of the namespace."""
    disruptions_allowed: int = 0
    desired_healthy: int = 0
    current_healthy: int = 0

    def selects(self, pod: PodInfo) -> bool:
        if pod.namespace != self.namespace:
            return False
        if not self.has_selector:
            return False
        if any(pod.labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for expr in self.match_expressions:
            key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
            has = key in pod.labels
            if op == "In" and (not has or pod.labels[key] not in values):
                return False
            if op == "NotIn" and has and pod.labels[key] in values:
                return False
            if op == "Exists" and not has:
                return False
            if op == "DoesNotExist" and has:
                return False
        return True


@dataclass(frozen=True)
class VmiInfo:
    namespace: str
    name: str
    node: str | None
    phase: str | None
    migratable: bool
    why_not: str | None
    eviction_strategy: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class FlavorInfo:
    id: str
    name: str
    vcpus: int
    ram_mb: int
    extra_specs: dict[str, str]


class Inventory:
    def __init__(self, adapters: Adapters) -> None:
        self.adapters = adapters

    async def _list(self, fn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """A list call read as plain JSON (the client's models cost much more on large lists)."""
        resp = await kcall(fn, *args, _preload_content=False, **kwargs)
        return list(json.loads(resp.data).get("items", []))

    async def kube_node(self, host: str) -> dict[str, Any] | None:
        core = await self.adapters.kubernetes.core()
        got = await kcall(core.read_node, host, expect=(404,), _preload_content=False)
        return None if isinstance(got, Refusal) else dict(json.loads(got.data))

    async def pods_on(self, host: str) -> list[PodInfo]:
        core = await self.adapters.kubernetes.core()
        items = await self._list(core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={host}")
        return [_pod(p) for p in items]

    async def pod(self, namespace: str, name: str) -> PodInfo | None:
        core = await self.adapters.kubernetes.core()
        got = await kcall(core.read_namespaced_pod, name, namespace, expect=(404,), _preload_content=False)
        return None if isinstance(got, Refusal) else _pod(json.loads(got.data))

    async def budgets(self) -> list[BudgetInfo]:
        from kubernetes import client

        policy = client.PolicyV1Api(await self.adapters.connections.kube("kubernetes"))
        return [_budget(b) for b in await self._list(policy.list_pod_disruption_budget_for_all_namespaces)]

    async def vmis_on(self, host: str) -> list[VmiInfo]:
        custom = await self.adapters.kubevirt.custom()
        items = await self._list(
            custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            VMIS,
            label_selector=f"kubevirt.io/nodeName={host}",
        )
        return [v for v in (_vmi(i) for i in items) if v.node == host]

    async def vmi(self, namespace: str, name: str) -> VmiInfo | None:
        custom = await self.adapters.kubevirt.custom()
        got = await kcall(
            custom.get_namespaced_custom_object, GROUP, VERSION, namespace, VMIS, name, expect=(404,)
        )
        return None if isinstance(got, Refusal) else _vmi(dict(got))

    async def runtime_classes(self) -> dict[str, str]:
        """Runtime class name -> handler."""
        from kubernetes import client

        node_api = client.NodeV1Api(await self.adapters.connections.kube("kubernetes"))
        items = await self._list(node_api.list_runtime_class)
        return {i["metadata"]["name"]: i.get("handler", "") for i in items}

    async def stx_host(self, host: str) -> dict[str, Any] | None:
        hosts = await self.adapters.starlingx.hosts()
        return next((h for h in hosts if h.get("hostname") == host), None)

    async def flavors(self) -> list[FlavorInfo]:
        compute = await self.adapters.connections.proxy("compute", "nova")

        def read() -> list[FlavorInfo]:
            out = []
            for f in compute.flavors(details=True, get_extra_specs=True):
                specs = dict(f.extra_specs or {})
                out.append(FlavorInfo(str(f.id), str(f.name), int(f.vcpus or 0), int(f.ram or 0), specs))
            return out

        return list(await call(read))

    async def compute_service(self, host: str) -> tuple[str, str] | None:
        """(service id, status) of the host's nova-compute service, or None."""
        compute = await self.adapters.connections.proxy("compute", "nova")
        found = await call(lambda: list(compute.services(host=host, binary="nova-compute")))
        return (str(found[0].id), str(found[0].status)) if found else None


def _pod(p: dict[str, Any]) -> PodInfo:
    md, spec, status = p.get("metadata", {}), p.get("spec", {}), p.get("status", {})
    owners = md.get("ownerReferences") or []
    owner = next(
        (o.get("kind") for o in owners if o.get("controller")), owners[0].get("kind") if owners else None
    )
    return PodInfo(
        namespace=md.get("namespace", ""),
        name=md.get("name", ""),
        uid=md.get("uid", ""),
        node=spec.get("nodeName"),
        phase=status.get("phase"),
        owner_kind=owner,
        labels=dict(md.get("labels") or {}),
        deleting=bool(md.get("deletionTimestamp")),
        runtime_class=spec.get("runtimeClassName"),
    )


def _budget(b: dict[str, Any]) -> BudgetInfo:
    md, spec, status = b.get("metadata", {}), b.get("spec", {}), b.get("status", {})
    selector = spec.get("selector")
    has = selector is not None
    selector = selector or {}
    return BudgetInfo(
        namespace=md.get("namespace", ""),
        name=md.get("name", ""),
        match_labels=dict(selector.get("matchLabels") or {}),
        match_expressions=list(selector.get("matchExpressions") or []),
        has_selector=has,
        disruptions_allowed=int(status.get("disruptionsAllowed", 0)),
        desired_healthy=int(status.get("desiredHealthy", 0)),
        current_healthy=int(status.get("currentHealthy", 0)),
    )


def _vmi(v: dict[str, Any]) -> VmiInfo:
    md, spec, status = v.get("metadata", {}), v.get("spec", {}), v.get("status", {})
    conds: list[dict[str, Any]] = status.get("conditions") or []
    cond: dict[str, Any] = next((c for c in conds if c.get("type") == "LiveMigratable"), {})
    return VmiInfo(
        namespace=md.get("namespace", ""),
        name=md.get("name", ""),
        node=status.get("nodeName"),
        phase=status.get("phase"),
        migratable=cond.get("status") == "True",
        why_not=cond.get("message") or cond.get("reason"),
        eviction_strategy=spec.get("evictionStrategy") or "None",
    )


__all__ = ["BudgetInfo", "FlavorInfo", "Inventory", "PodInfo", "VmiInfo"]
