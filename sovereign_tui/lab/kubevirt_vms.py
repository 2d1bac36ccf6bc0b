"""VirtualMachines created and deleted through the lab's API, as virt-api and virt-controller do.

`POST` is admitted as `kubevirt_admit` says (422 Invalid with the causes), then answered 409
AlreadyExists if the name is taken. A VM that should run (`running: true`, or runStrategy Always,
RerunOnFailure or Once) gets a VMI that walks KubeVirt's start phases on the lab's timeline (`phase_s`):

- Pending: the VMI exists, no virt-launcher pod yet.
- Scheduling: the launcher pod exists. On a node with room (`KubeCluster.pick_node`: GPUs counted
  per node) it waits there for its containers; with no node, the pod stays unscheduled with the
  scheduler's message, the VMI carries `PodScheduled: False, Unschedulable` and the VM reads
  `ErrorUnschedulable`; placement is tried again every `retry_s`.
- Scheduled: the pod runs on its node (`status.nodeName`); the guest boots.
- Running: Ready, with its interfaces and LiveMigratable verdict.

GPUs are `spec.template.spec.domain.devices.gpus`: a `deviceName` the nodes advertise
(`nvidia.com/gpu`) is counted against each node's free GPUs; any other name is requested under its
own resource, which no lab node has ("Insufficient ..."), as a real scheduler would answer.
`DELETE` marks the VM (printableStatus Terminating) and its VMI, terminates the launcher pod and
removes both once it has gone (after `KubeCluster.pod_termination_s`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_pods import Controller, PodTemplate, pod, pod_status
from sovereign_tui.lab.kube_store import Entry, KubeError, Obj
from sovereign_tui.lab.kubevirt_admit import admit, gpu_devices, run_strategy
from sovereign_tui.lab.timeline import Event as TimelineEvent

if TYPE_CHECKING:
    from sovereign_tui.lab.kubevirt import KubeVirt

START_PHASES: tuple[tuple[str, float], ...] = (("Pending", 0.5), ("Scheduling", 2.0), ("Scheduled", 1.0))
"""Each start phase of a new VMI and how long (simulated seconds) it lasts before the next."""
STARTS = ("Always", "RerunOnFailure", "Once")
"""Run strategies under which a new VM starts at once."""
_NOT_RUNNING = {"reason": "GuestNotRunning", "message": "Guest VM is not reported as running"}


# --- the lifecycle ----------------------------------------------------------------------------------


@dataclass
class _Start:
    """A VMI on its way to Running."""

    uid: str
    pod: str
    pending: TimelineEvent | None = None


class VmLifecycle:
    def __init__(self, kubevirt: KubeVirt) -> None:
        self.kubevirt = kubevirt
        self.cluster = kubevirt.cluster
        self.store = kubevirt.store
        self.phase_s = dict(START_PHASES)
        """Seconds each start phase lasts; tests and the demo may change them."""
        self.retry_s = 5.0
        """How often an unschedulable launcher pod is tried again."""
        self._starts: dict[tuple[str, str], _Start] = {}

    # --- create and delete ---------------------------------------------------------------------

    def create(self, ns: str, body: Obj) -> Entry:
        c = self.cluster
        md = body.get("metadata") or {}
        name = md.get("name") or (f"{md['generateName']}{ko.suffix(c.rng)}" if md.get("generateName") else "")
        obj = admit(ns, body, str(name))
        if self.store.get("virtualmachines", ns, obj["metadata"]["name"]) is not None:
            raise KubeError(
                409,
                "AlreadyExists",
                f'virtualmachines.kubevirt.io "{name}" already exists',
                {"name": name, "group": "kubevirt.io", "kind": "virtualmachines"},
            )
        obj["metadata"] |= {
            "uid": ko.new_uid(c.rng),
            "generation": 1,
            "creationTimestamp": ko.rfc3339(c.now()),
        }
        created = self.store.put("virtualmachines", obj)
        self._controlled(ns, obj["metadata"]["name"])
        return created

    def _controlled(self, ns: str, name: str) -> None:
        """virt-controller's first pass over a new VM: its finalizer, then start it or not."""

        def adopt(o: Obj) -> None:
            o["metadata"]["finalizers"] = ["kubevirt.io/virtualMachineControllerFinalize"]
            o["metadata"]["annotations"] = {
                **(o["metadata"].get("annotations") or {}),
                "kubevirt.io/latest-observed-api-version": "v1",
                "kubevirt.io/storage-observed-api-version": "v1",
            }

        vm = self.store.update("virtualmachines", ns, name, adopt)
        if run_strategy(vm.obj["spec"]) in STARTS:
            self._pending(ns, name)
        else:
            self.kubevirt.vm_status(ns, name, "Stopped", None)

    def delete(self, ns: str, name: str) -> Entry:
        """Mark the VM and its VMI deleted, terminate the launcher pods, remove both once gone."""
        c = self.cluster
        entry = self.store.require("virtualmachines", ns, name)
        self._forget(ns, name)
        vm_uid = entry.obj["metadata"]["uid"]
        stamp = ko.rfc3339(c.now())

        def mark(o: Obj) -> None:
            o["metadata"].setdefault("deletionTimestamp", stamp)
            o["metadata"]["deletionGracePeriodSeconds"] = 0
            o.setdefault("status", {})["printableStatus"] = "Terminating"

        for m in self.kubevirt.migrations.of_vmi(ns, name):
            self.kubevirt.migrations.finish(m, "Failed", "the VMI is being deleted")
        marked = self.store.update("virtualmachines", ns, name, mark)
        vmi = self.store.get("virtualmachineinstances", ns, name)
        if vmi is not None:
            self.store.set_path("virtualmachineinstances", ns, name, ("metadata", "deletionTimestamp"), stamp)
            self.cluster.controllers.pop((ns, "VirtualMachineInstance", name), None)
            uid = vmi.obj["metadata"]["uid"]
            for p in list(self.store.entries("pods", ns)):
                if p.labels.get("kubevirt.io/created-by") == uid:
                    c.terminate(p)
        c.after(c.pod_termination_s, lambda: self._remove(ns, name, vm_uid))
        c.settle()
        return marked

    def _remove(self, ns: str, name: str, vm_uid: str) -> None:
        vm = self.store.get("virtualmachines", ns, name)
        if vm is None or vm.obj["metadata"]["uid"] != vm_uid:
            return
        vmi = self.store.get("virtualmachineinstances", ns, name)
        if vmi is not None:
            self.store.delete("virtualmachineinstances", ns, name)
        self.store.delete("virtualmachines", ns, name)

    def _forget(self, ns: str, name: str) -> None:
        start = self._starts.pop((ns, name), None)
        if start is not None and start.pending is not None:
            start.pending.cancel()

    # --- the start phases ------------------------------------------------------------------------

    def _next(self, ns: str, name: str, delay_s: float, step: str) -> None:
        start = self._starts[(ns, name)]
        uid = start.uid

        def run() -> None:
            vmi = self.store.get("virtualmachineinstances", ns, name)
            if (
                vmi is None
                or vmi.obj["metadata"]["uid"] != uid
                or vmi.obj["metadata"].get("deletionTimestamp")
            ):
                if self._starts.get((ns, name)) is start:
                    del self._starts[(ns, name)]  # that VMI is gone (or was replaced)
                return
            start.pending = None
            getattr(self, step)(ns, name, vmi)

        start.pending = self.cluster.after(delay_s, run)

    def _pending(self, ns: str, name: str) -> None:
        c = self.cluster
        vm = self.store.require("virtualmachines", ns, name).obj
        uid = ko.new_uid(c.rng)
        at = c.now()
        vmi = self.kubevirt.vmi_object(vm, uid, at)
        vmi["status"] = {
            "phase": "Pending",
            "phaseTransitionTimestamps": [{"phase": "Pending", "phaseTransitionTimestamp": ko.rfc3339(at)}],
            "conditions": [self._not_ready(at)],
            "guestOSInfo": {},
            "qosClass": "Burstable",
        }
        self.store.put("virtualmachineinstances", vmi)
        self._starts[(ns, name)] = _Start(uid, "")
        self.kubevirt.vm_status(ns, name, "Starting", vmi)
        self._next(ns, name, self.phase_s["Pending"], "_schedule")

    def _not_ready(self, at: float) -> Obj:
        return {
            "type": "Ready",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": ko.rfc3339(at),
            **_NOT_RUNNING,
        }

    def _template(self, ns: str, name: str, vmi: Entry) -> PodTemplate:
        return self.kubevirt.launcher_template(ns, name, vmi.obj["metadata"]["uid"], vmi.obj["spec"])

    def _foreign(self, vmi: Entry) -> list[str]:
        """GPU device names no lab node advertises."""
        return sorted({d for d in gpu_devices(vmi.obj["spec"]["domain"]) if d != ko.GPU})

    def _schedule(self, ns: str, name: str, vmi: Entry) -> None:
        """Pending -> Scheduling: the launcher pod, on a node with room if there is one."""
        c = self.cluster
        tmpl = self._template(ns, name, vmi)
        pod_name = Controller("VirtualMachineInstance", f"virt-launcher-{name}", tmpl).pod_name(c.rng)
        self._starts[(ns, name)].pod = pod_name
        node, why = self._place(tmpl, self._foreign(vmi))
        if node is not None:
            self._bind(ns, name, tmpl, node)
        else:
            self._unscheduled(tmpl, pod_name, why)
        self._set_phase(ns, name, "Scheduling", why)
        self._next(ns, name, self.phase_s["Scheduling"] if node else self.retry_s, "_scheduled")

    def _bind(self, ns: str, name: str, tmpl: PodTemplate, node: str) -> Entry:
        """The launcher pod on `node` (created, its containers not started yet)."""
        ctl = self.kubevirt.controller(ns, name, tmpl)
        return self.cluster.spawn(
            ctl, node=node, startup=False, phase="Pending", name=self._starts[(ns, name)].pod
        )

    def _unscheduled(self, tmpl: PodTemplate, pod_name: str, why: str) -> None:
        c = self.cluster
        obj = pod(tmpl, pod_name, ko.new_uid(c.rng), None, created=c.now(), phase="Pending", rng=c.rng)
        obj["status"]["conditions"][0]["message"] = why
        self.store.put("pods", obj)

    def _scheduled(self, ns: str, name: str, vmi: Entry) -> None:
        """Scheduling -> Scheduled once the pod has a node (else try to place it again)."""
        c = self.cluster
        start = self._starts[(ns, name)]
        launcher = self.store.get("pods", ns, start.pod)
        node = launcher.obj["spec"].get("nodeName") if launcher is not None else None
        if launcher is None or not node:
            tmpl = self._template(ns, name, vmi)
            node, why = self._place(tmpl, self._foreign(vmi))
            if node is None:
                if launcher is None:
                    self._unscheduled(tmpl, start.pod, why)
                elif launcher.obj["status"]["conditions"][0].get("message") != why:
                    self.store.update("pods", ns, start.pod, lambda o: _message(o, why))
                self._set_phase(ns, name, "Scheduling", why)
                self._next(ns, name, self.retry_s, "_scheduled")
                return
            if launcher is not None:
                self.store.delete("pods", ns, start.pod)
            self._bind(ns, name, tmpl, node)
            self._set_phase(ns, name, "Scheduling", "")
            self._next(ns, name, self.phase_s["Scheduling"], "_scheduled")
            return
        ctl = c.controllers.get((ns, "VirtualMachineInstance", name))
        st = launcher.obj["status"]
        if ctl is not None and st.get("phase") == "Pending":
            status = pod_status(
                ctl.template,
                node,
                st.get("hostIP", ""),
                st.get("podIP", ""),
                c.now(),
                c.now(),
                "Running",
                True,
                0,
                c.rng,
            )
            self.store.set_path("pods", ns, start.pod, ("status",), status)
        uid = launcher.obj["metadata"]["uid"]

        def placed(o: Obj) -> None:
            o["metadata"]["labels"]["kubevirt.io/nodeName"] = node
            o["status"] |= {"nodeName": node, "activePods": {uid: node}}

        self.store.update("virtualmachineinstances", ns, name, placed)
        self._set_phase(ns, name, "Scheduled", "")
        self._next(ns, name, self.phase_s["Scheduled"], "_running")

    def _running(self, ns: str, name: str, vmi: Entry) -> None:
        """Scheduled -> Running: the guest is up."""
        start = self._starts.pop((ns, name))
        launcher = self.store.get("pods", ns, start.pod)
        if launcher is None:
            return
        at = self.cluster.now()
        stamps = list(vmi.obj["status"].get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": "Running", "phaseTransitionTimestamp": ko.rfc3339(at)})
        obj = vmi.copy()
        obj["status"] = self.kubevirt.running_status(obj, launcher, at, stamps)
        self.store.put("virtualmachineinstances", obj)
        self.kubevirt.vm_status(ns, name, "Running", obj)

    def _set_phase(self, ns: str, name: str, phase: str, unschedulable: str) -> None:
        """The VMI's phase (a transition stamped once) and its PodScheduled condition; the VM's
        printable status follows (ErrorUnschedulable while no node has room)."""
        stamp = ko.rfc3339(self.cluster.now())

        def change(o: Obj) -> None:
            st = o["status"]
            if st.get("phase") != phase:
                st["phase"] = phase
                st.setdefault("phaseTransitionTimestamps", []).append(
                    {"phase": phase, "phaseTransitionTimestamp": stamp}
                )
            conds = [c for c in st.get("conditions", []) if c["type"] != "PodScheduled"]
            if unschedulable:
                old = next((c for c in st.get("conditions", []) if c["type"] == "PodScheduled"), None)
                conds.append(
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": old["lastTransitionTime"] if old else stamp,
                        "reason": "Unschedulable",
                        "message": unschedulable,
                    }
                )
            st["conditions"] = conds

        vmi = self.store.update("virtualmachineinstances", ns, name, change)
        self.kubevirt.vm_status(ns, name, "ErrorUnschedulable" if unschedulable else "Starting", vmi.obj)

    # --- placement -------------------------------------------------------------------------------

    def _place(self, tmpl: PodTemplate, foreign: list[str]) -> tuple[str | None, str]:
        """A node for the launcher pod, or none and the scheduler's message saying why."""
        if not foreign:
            node = self.cluster.pick_node(tmpl)
            if node is not None:
                return node, ""
        return None, self._why(tmpl, foreign)

    def _why(self, tmpl: PodTemplate, foreign: list[str]) -> str:
        """What kube-scheduler says of a pod no node takes: each node's first reason, counted."""
        c = self.cluster
        reasons: Counter[str] = Counter()
        for name in c.node_names:
            node = self.store.require("nodes", "", name).obj
            labels = node["metadata"].get("labels") or {}
            ready = any(
                x["type"] == "Ready" and x["status"] == "True" for x in node["status"].get("conditions", [])
            )
            if node["spec"].get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
            elif not ready:
                reasons["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"] += 1
            elif any(labels.get(k) != v for k, v in tmpl.node_selector.items()):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
            elif foreign:
                reasons[f"Insufficient {foreign[0]}"] += 1
            else:
                reasons[f"Insufficient {ko.GPU}"] += 1
        n = len(c.node_names)
        said = ", ".join(sorted(f"{k} {r}" for r, k in reasons.items()))
        return (
            f"0/{n} nodes are available: {said}. preemption: 0/{n} nodes are available: "
            f"{n} Preemption is not helpful for scheduling."
        )


def _message(pod_obj: Obj, why: str) -> None:
    pod_obj["status"]["conditions"][0]["message"] = why


__all__ = ["START_PHASES", "VmLifecycle"]
