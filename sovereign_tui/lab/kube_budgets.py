"""The disruption controller of the lab: each PodDisruptionBudget's status, kept up to date.

Counts of expected and healthy pods per budget change by the difference each pod event makes
(the old version of the pod out, the new one in), so a change costs the same in a cluster of ten
pods or of thirty thousand. `settle` writes the budgets whose status changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_pods import is_ready
from sovereign_tui.lab.kube_select import LabelSelector
from sovereign_tui.lab.kube_store import Entry, KubeStore, Obj

TERMINAL = ("Succeeded", "Failed")


@dataclass
class Budget:
    namespace: str
    name: str
    selector: LabelSelector
    expected: int = 0
    """Matching pods neither finished nor terminating."""
    healthy: int = 0
    """Matching pods running and ready."""

    def count(self, pod: Entry, sign: int) -> bool:
        if not self.selector.matches(pod.labels):
            return False
        obj = pod.obj
        self.expected += sign * (
            obj["status"].get("phase") not in TERMINAL and not obj["metadata"].get("deletionTimestamp")
        )
        self.healthy += sign * is_ready(obj)
        return True


class Budgets:
    def __init__(self, store: KubeStore, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now
        self._by_ns: dict[str, list[Budget]] = {}
        self._dirty: set[tuple[str, str]] = set()

    def add(self, obj: Obj) -> None:
        """Store a new budget, its status computed from the pods there now."""
        md = obj["metadata"]
        match = obj["spec"].get("selector", {}).get("matchLabels", {})
        b = Budget(md["namespace"], md["name"], LabelSelector.from_match_labels(match))
        for e in self.store.entries("pods", b.namespace):
            b.count(e, 1)
        self._by_ns.setdefault(b.namespace, []).append(b)
        obj["status"] = ko.pdb_status(obj, b.expected, b.healthy, self.now())
        self.store.put("poddisruptionbudgets", obj)

    def pod_changed(self, old: Entry | None, new: Entry | None) -> None:
        for pod, sign in ((old, -1), (new, 1)):
            if pod is None:
                continue
            for b in self._by_ns.get(pod.namespace, ()):
                if b.count(pod, sign):
                    self._dirty.add((b.namespace, b.name))

    def for_pod(self, pod: Entry) -> list[Budget]:
        """The budgets whose selector matches the pod (the eviction API wants at most one)."""
        return [b for b in self._by_ns.get(pod.namespace, ()) if b.selector.matches(pod.labels)]

    def settle(self) -> None:
        """Write the budgets whose status changed."""
        dirty, self._dirty = self._dirty, set()
        for ns, name in sorted(dirty):
            entry = self.store.get("poddisruptionbudgets", ns, name)
            b = next((b for b in self._by_ns.get(ns, ()) if b.name == name), None)
            if entry is None or b is None:
                continue
            status = ko.pdb_status(entry.obj, b.expected, b.healthy, self.now())
            if status != entry.obj.get("status"):
                self.store.set_path("poddisruptionbudgets", ns, name, ("status",), status)
