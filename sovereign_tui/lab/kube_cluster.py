"""The lab Kubernetes cluster: its objects and the control plane that changes them.

`KubeCluster` holds a deterministic cluster (see `kube_workloads`) in a `KubeStore` and acts as
the control plane would: scheduling within each node's GPUs, cordon, eviction against disruption
budgets, graceful termination, controllers recreating what they own on another node, KubeVirt
(see `kubevirt`). Delays (pod termination and start-up, migration phases) are events on the
lab's `Timeline`, so a `FakeClock` drives them in tests. Every change is a store mutation, hence
a watch event. Call its methods on the event loop that serves the API.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab import kube_workloads
from sovereign_tui.lab.kube_budgets import Budgets
from sovereign_tui.lab.kube_objects import KubeNodeSpec
from sovereign_tui.lab.kube_patch import apply_patch
from sovereign_tui.lab.kube_pods import (
    Controller,
    PodTemplate,
    is_ready,
    pod,
    pod_gpus,
    pod_status,
    template_of,
)
from sovereign_tui.lab.kube_store import Entry, Event, KubeError, KubeStore, Obj, status_object
from sovereign_tui.lab.kube_types import register_all
from sovereign_tui.lab.kubevirt import KubeVirt
from sovereign_tui.lab.timeline import Event as TimelineEvent
from sovereign_tui.lab.timeline import Timeline

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
TERMINAL = ("Succeeded", "Failed")
MULTIPLE_BUDGETS = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
)


class KubeCluster:
    """The simulated cluster (objects in `store`); call its methods on the lab's event loop."""

    def __init__(
        self,
        nodes: Sequence[KubeNodeSpec],
        *,
        seed: int = 0,
        clock: Clock | None = None,
        timeline: Timeline | None = None,
        pods_per_node: int = 12,
        vms: int | None = None,
        history: int = 10_000,
        pod_termination_s: float = 0.0,
        pod_startup_s: float = 0.0,
    ) -> None:
        names = [n.name for n in nodes]
        if not names or len(set(names)) != len(names):
            raise ValueError("kubernetes lab: node names must be given and unique")
        self.clock = clock or SystemClock()
        self.timeline = timeline or Timeline(self.clock)
        self.rng = random.Random(seed)
        self.seed = seed
        self.specs = {n.name: n for n in nodes}
        self.node_names = names
        self.pod_termination_s = pod_termination_s
        self.pod_startup_s = pod_startup_s
        self.store = KubeStore(history=history)
        register_all(self.store)
        self.controllers: dict[tuple[str, str, str], Controller] = {}
        self._index = {n: i for i, n in enumerate(names)}
        self._ips: dict[str, int] = {}
        self._gpu_used: dict[str, int] = dict.fromkeys(names, 0)
        self.budgets = Budgets(self.store, self.now)
        self.churn_counter = 0
        self.store.listeners.append(self._on_event)
        self.kubevirt = KubeVirt(self)
        kube_workloads.populate(self, pods_per_node, len(names) // 3 + 1 if vms is None else vms)

    # --- time ----------------------------------------------------------------------------------

    def now(self) -> float:
        """Wall time of what is happening (the due time of a timeline event being run)."""
        return self.timeline.wall()

    def after(self, delay_s: float, fn: Callable[[], object]) -> TimelineEvent | None:
        """Run `fn` after `delay_s` (now when 0), then settle derived state."""

        def run() -> None:
            fn()
            self.settle()

        if delay_s <= 0:
            run()
            return None
        return self.timeline.after(delay_s, run)

    # --- pods ----------------------------------------------------------------------------------

    def _next_ip(self, node: str) -> str:
        n = self._ips.get(node, 1) + 1
        self._ips[node] = n if n < 254 else 1
        base = ko.pod_cidr(self._index[node]).rsplit(".", 1)[0]
        return f"{base}.{n}"

    def spawn(
        self,
        ctl: Controller,
        *,
        node: str | None = None,
        avoid: str | None = None,
        created: float | None = None,
        startup: bool = True,
        phase: str = "Running",
        ready: bool = True,
        name: str | None = None,
    ) -> Entry:
        """Create one pod from `ctl`, scheduled on `node` or wherever it fits (Pending if nowhere)."""
        t = ctl.template
        if node is None:
            node = self.pick_node(t, avoid)
        at = self.now() if created is None else created
        pod_name = name or ctl.pod_name(self.rng)
        host_ip = ko.node_ip(self._index[node]) if node else ""
        pod_ip = host_ip if t.host_network else (self._next_ip(node) if node else "")
        delay = self.pod_startup_s if startup else 0.0
        if node is None or delay > 0:
            phase = "Pending"
        obj = pod(
            t,
            pod_name,
            ko.new_uid(self.rng),
            node,
            host_ip=host_ip,
            pod_ip=pod_ip,
            created=at,
            started=at + (delay if delay > 0 else 2.0),
            phase=phase,
            ready=ready,
            rng=self.rng,
        )
        if node is None:
            obj["status"]["conditions"][0]["message"] = self._unschedulable_message(t)
        entry = self.store.put("pods", obj)
        if node is not None and delay > 0:
            ns = t.namespace
            self.after(delay, lambda: self._start(ns, pod_name, node))
        return entry

    def _start(self, namespace: str, name: str, node: str) -> None:
        entry = self.store.get("pods", namespace, name)
        if (
            entry is None
            or entry.obj["spec"].get("nodeName") != node
            or entry.obj["status"]["phase"] != "Pending"
        ):
            return
        t = template_of(entry.obj)
        obj = entry.copy()
        obj["status"] = pod_status(
            t,
            node,
            obj["status"].get("hostIP", ""),
            obj["status"].get("podIP", ""),
            self.now(),
            self.now(),
            "Running",
            True,
            0,
            self.rng,
        )
        self.store.put("pods", obj)

    def pick_node(self, t: PodTemplate, avoid: str | None = None) -> str | None:
        """A node this pod fits on now: schedulable, Ready, matching selectors, enough free GPUs."""
        selector = dict(t.node_selector)
        if t.runtime_class and ko.kata_overhead(t.runtime_class):
            selector[ko.KATA_LABEL] = "true"
        need = t.gpus
        names = self.node_names
        for _ in range(min(24, len(names))):  # a few random draws find room in a cluster with any
            name = self.rng.choice(names)
            if (name != avoid or len(names) == 1) and self._fits(name, selector, need):
                return name
        start = self.rng.randrange(len(names))  # then every node once, from a random place
        for name in names[start:] + names[:start]:
            if (name != avoid or len(names) == 1) and self._fits(name, selector, need):
                return name
        return None

    def _fits(self, name: str, selector: Mapping[str, str], gpus: int) -> bool:
        node = self.store.get("nodes", "", name)
        if node is None or node.obj["spec"].get("unschedulable") or not _ready(node.obj):
            return False
        labels = node.labels
        if any(labels.get(k) != v for k, v in selector.items()):
            return False
        return gpus <= self.free_gpus(name)

    def _unschedulable_message(self, t: PodTemplate) -> str:
        n = len(self.node_names)
        why = f"{n} Insufficient {ko.GPU}" if t.gpus else f"{n} node(s) were unschedulable"
        return f"0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available."

    def controller_of(self, entry: Entry) -> Controller | None:
        refs = entry.obj["metadata"].get("ownerReferences") or []
        if not refs:
            return None
        ref = refs[0]
        if ref["kind"] == "DaemonSet":
            node = entry.obj["spec"].get("nodeName", "")
            return self.controllers.get((entry.namespace, "DaemonSet", f"{ref['name']}@{node}"))
        return self.controllers.get((entry.namespace, ref["kind"], ref["name"]))

    def pods_on(self, node: str) -> list[Entry]:
        return self.store.by_index("pods", node)

    # --- termination and controllers ----------------------------------------------------------

    def terminate(self, entry: Entry) -> Entry:
        """Delete a pod gracefully: marked terminating for `pod_termination_s`, then removed; its
        ReplicaSet or Job starts a replacement at once, a StatefulSet or DaemonSet once it is gone."""
        obj = entry.obj
        if obj["metadata"].get("deletionTimestamp"):
            return entry
        ns, name = entry.namespace, entry.name
        if self.pod_termination_s <= 0:
            gone = self.remove(ns, name)
            return gone or entry
        at = self.now()

        def mark(o: Obj) -> None:
            o["metadata"]["deletionTimestamp"] = ko.rfc3339(at + self.pod_termination_s)
            o["metadata"]["deletionGracePeriodSeconds"] = int(self.pod_termination_s) or 1

        marked = self.store.update("pods", ns, name, mark)
        self._replace_early(marked)
        uid = obj["metadata"]["uid"]
        self.after(self.pod_termination_s, lambda: self.remove(ns, name, uid))
        return marked

    def _replace_early(self, entry: Entry) -> None:
        ctl = self.controller_of(entry)
        if (
            ctl is not None
            and ctl.kind in ("ReplicaSet", "Job")
            and entry.obj["status"]["phase"] not in TERMINAL
        ):
            self.spawn(ctl, avoid=entry.obj["spec"].get("nodeName"))

    def remove(self, namespace: str, name: str, uid: str | None = None) -> Entry | None:
        entry = self.store.get("pods", namespace, name)
        if entry is None or (uid is not None and entry.obj["metadata"]["uid"] != uid):
            return None
        was_marked = bool(entry.obj["metadata"].get("deletionTimestamp"))
        gone = self.store.delete("pods", namespace, name)
        ctl = self.controller_of(entry)
        if ctl is not None and entry.obj["status"]["phase"] not in TERMINAL:
            if ctl.kind == "DaemonSet":
                self.spawn(ctl, node=ctl.node)
            elif ctl.kind == "StatefulSet":
                self.spawn(ctl, name=name, avoid=entry.obj["spec"].get("nodeName"))
            elif not was_marked:
                self._replace_early(entry)
        self.kubevirt.pod_removed(entry)
        return gone

    # --- derived state: GPUs in use, disruption budgets ----------------------------------------

    def _on_event(self, event: Event, old: Entry | None) -> None:
        if event.rtype.plural != "pods":
            return
        new = None if event.type == "DELETED" else event.entry
        for entry, sign in ((old, -1), (new, 1)):
            if entry is not None:
                node = entry.obj["spec"].get("nodeName")
                if node in self._gpu_used and entry.obj["status"].get("phase") not in TERMINAL:
                    self._gpu_used[node] += sign * pod_gpus(entry.obj)
        self.budgets.pod_changed(old, new)

    def free_gpus(self, node: str) -> int:
        return self.specs[node].gpus - self._gpu_used[node]

    def settle(self) -> None:
        """Bring derived state up to date (the disruption controller's budget statuses)."""
        self.budgets.settle()

    # --- the API's write operations -------------------------------------------------------------

    def patch_node(self, name: str, patch: Any, content_type: str) -> Entry:
        """PATCH a node (spec and metadata; status is a subresource): cordon, labels, taints."""
        entry = self.store.require("nodes", "", name)
        new = apply_patch(entry.copy(), patch, content_type)
        keep = entry.obj["metadata"]
        for k in ("name", "uid", "creationTimestamp", "resourceVersion"):
            new["metadata"][k] = keep[k]
        new["status"] = entry.obj["status"]
        new["apiVersion"], new["kind"] = "v1", "Node"
        _sync_unschedulable_taint(new, self.now())
        if new == entry.obj:
            return entry
        out = self.store.put("nodes", new)
        if not new["spec"].get("unschedulable"):
            self._schedule_pending()
        self.settle()
        return out

    def cordon(self, name: str, unschedulable: bool = True) -> Entry:
        return self.patch_node(
            name, {"spec": {"unschedulable": unschedulable or None}}, "application/merge-patch+json"
        )

    def set_node_ready(self, name: str, ready: bool) -> Entry:
        """Fault knob: the node's kubelet stops (or resumes) posting status."""

        def change(o: Obj) -> None:
            now = self.now()
            o["status"]["conditions"] = ko.node_conditions(ready, now, now)
            taints = [t for t in o["spec"].get("taints", []) if t["key"] != "node.kubernetes.io/unreachable"]
            if not ready:
                taints += [
                    {"key": "node.kubernetes.io/unreachable", "effect": e, "timeAdded": ko.rfc3339(now)}
                    for e in ("NoSchedule", "NoExecute")
                ]
            if taints:
                o["spec"]["taints"] = taints
            else:
                o["spec"].pop("taints", None)

        out = self.store.update("nodes", "", name, change)
        if ready:
            self._schedule_pending()
        self.settle()
        return out

    def _schedule_pending(self) -> None:
        pending = [e for e in self.store.by_index("pods", "") if e.obj["status"].get("phase") == "Pending"]
        for e in pending:
            ctl = self.controller_of(e)
            if ctl is None:
                continue
            node = self.pick_node(ctl.template)
            if node is not None:
                self.store.delete("pods", e.namespace, e.name)
                self.spawn(ctl, node=node, name=e.name)

    def evict(self, namespace: str, name: str) -> Obj:
        """The eviction subresource: 201 when allowed; 429 when a budget forbids it now;
        500 when several budgets select the pod; KubeVirt's webhook may answer 429 first."""
        entry = self.store.require("pods", namespace, name)
        self.kubevirt.admit_eviction(entry)
        obj = entry.obj
        # finished, pending and already terminating pods go without asking any budget
        if obj["status"].get("phase") not in (*TERMINAL, "Pending") and not obj["metadata"].get(
            "deletionTimestamp"
        ):
            self._admit_by_budget(entry)
        self.terminate(entry)
        self.settle()
        return status_object(201, "", "")

    def _admit_by_budget(self, entry: Entry) -> None:
        budgets = self.budgets.for_pod(entry)
        if len(budgets) > 1:
            raise KubeError(500, "InternalError", MULTIPLE_BUDGETS)
        if not budgets:
            return
        self.settle()
        name = budgets[0].name
        status = self.store.require("poddisruptionbudgets", entry.namespace, name).obj["status"]
        need, have = status["desiredHealthy"], status["currentHealthy"]
        # unhealthyPodEvictionPolicy IfHealthyBudget: a pod that is not ready may go if the budget holds
        if status["disruptionsAllowed"] > 0 or (not is_ready(entry.obj) and have >= need):
            return
        cause = f"The disruption budget {name} needs {need} healthy pods and has {have} currently"
        raise KubeError(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
            {"causes": [{"reason": "DisruptionBudget", "message": cause}]},
        )

    def create_pod(self, namespace: str, body: Obj) -> Entry:
        """POST a pod: admitted (runtime class overhead and node selector), scheduled, started."""
        md = body.get("metadata") or {}
        name = md.get("name") or (
            f"{md['generateName']}{ko.suffix(self.rng)}" if md.get("generateName") else None
        )
        if not name:
            raise KubeError(
                422,
                "Invalid",
                'Pod "" is invalid: metadata.name: Required value: name or generateName is required',
            )
        if self.store.get("pods", namespace, name) is not None:
            raise KubeError(
                409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"}
            )
        spec = body.get("spec") or {}
        if not spec.get("containers"):
            raise KubeError(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value')
        rc = spec.get("runtimeClassName")
        if rc and self.store.get("runtimeclasses", "", rc) is None:
            raise KubeError(
                403, "Forbidden", f'pods "{name}" is forbidden: pod rejected: RuntimeClass "{rc}" not found'
            )
        tmpl = replace(template_of({"metadata": {**md, "namespace": namespace}, "spec": spec}), owner=None)
        node = spec.get("nodeName")
        if node is not None and node not in self.specs:
            node = None
        out = self.spawn(Controller("Pod", name, tmpl), node=node, name=name)
        self.settle()
        return out

    def delete_pod(self, namespace: str, name: str) -> Entry:
        out = self.terminate(self.store.require("pods", namespace, name))
        self.settle()
        return out

    # --- churn ---------------------------------------------------------------------------------

    def churn(self, changes: int) -> list[Event]:
        """Make `changes` pod changes (label edits, readiness and phase flips, pods replaced), as a
        busy cluster does; returns every event they caused, budgets included, in order."""
        caused: list[Event] = []

        def record(event: Event, _old: Entry | None) -> None:
            caused.append(event)

        self.store.listeners.append(record)
        try:
            kube_workloads.churn(self, changes)
            self.settle()
        finally:
            self.store.listeners.remove(record)
        return caused

    def bookmark(self) -> None:
        """Send a BOOKMARK on every watch that allows them."""
        self.store.bookmark()


def _ready(node: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def _sync_unschedulable_taint(node: Obj, now: float) -> None:
    """What the node lifecycle controller does: taint cordoned nodes, untaint uncordoned ones."""
    spec = node.setdefault("spec", {})
    if not spec.get("unschedulable"):
        spec.pop("unschedulable", None)
    taints = [t for t in spec.get("taints", []) if t.get("key") != UNSCHEDULABLE_TAINT]
    if spec.get("unschedulable"):
        old = next((t for t in spec.get("taints", []) if t.get("key") == UNSCHEDULABLE_TAINT), None)
        taints.append(
            old or {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": ko.rfc3339(now)}
        )
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)
