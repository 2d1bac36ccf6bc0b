"""KubeVirt live migrations in the lab: VirtualMachineInstanceMigration objects and their phases.

A migration walks KubeVirt's phases (Pending, Scheduling, Scheduled, PreparingTarget,
TargetReady, Running, Succeeded) on the lab's timeline: a target virt-launcher pod appears on
another node, the VMI's `status.migrationState` fills in (the flat fields and the newer
`sourceState`/`targetState`), and at the end `status.nodeName` moves and the source pod
completes. As virt-api's admission webhook does, a migration of a VMI whose `LiveMigratable`
condition is False, or of one already migrating, is refused (422). Deleting a migration in
flight aborts it; `fail_next` makes migrations fail, as a failed memory copy would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_pods import PodTemplate, pod_status, set_terminal
from sovereign_tui.lab.kube_store import KubeError, Obj
from sovereign_tui.lab.timeline import Event as TimelineEvent

if TYPE_CHECKING:
    from sovereign_tui.lab.kubevirt import KubeVirt

PHASES: tuple[tuple[str, float], ...] = (
    ("Pending", 0.5),
    ("Scheduling", 1.0),
    ("Scheduled", 0.5),
    ("PreparingTarget", 1.0),
    ("TargetReady", 0.5),
    ("Running", 3.0),
)
"""Each phase of a migration and how long (simulated seconds) it lasts before the next."""
FINAL = ("Succeeded", "Failed")
MIGRATION_WEBHOOK = 'admission webhook "migration-create-validator.kubevirt.io" denied the request: '
_OBSERVED = {
    "kubevirt.io/latest-observed-api-version": "v1",
    "kubevirt.io/storage-observed-api-version": "v1",
}


@dataclass
class Migration:
    namespace: str
    name: str
    uid: str
    vmi: str
    source: str
    source_pod: str
    target: str | None = None
    target_pod: str | None = None
    step: int = 0
    pending: TimelineEvent | None = None
    fail: bool = False
    state: Obj = field(default_factory=dict)


class Migrations:
    def __init__(self, kubevirt: KubeVirt) -> None:
        self.kubevirt = kubevirt
        self.cluster = kubevirt.cluster
        self.store = kubevirt.store
        self.phase_s = dict(PHASES)
        """Seconds each migration phase lasts; tests and the demo may change them."""
        self.unschedulable_timeout_s = 30.0
        """How long a migration waits in Scheduling for a node before it fails."""
        self.fail_next = 0
        """Fault knob: this many of the next migrations fail at the end of their Running phase."""
        self.active: dict[tuple[str, str], Migration] = {}

    def of_vmi(self, ns: str, vmi: str) -> list[Migration]:
        return [m for m in self.active.values() if m.namespace == ns and m.vmi == vmi]

    def create(self, ns: str, body: Obj) -> Obj:
        c = self.cluster
        md = body.get("metadata") or {}
        vmi_name = (body.get("spec") or {}).get("vmiName")
        if not vmi_name:
            raise KubeError(422, "Invalid", MIGRATION_WEBHOOK + "spec.vmiName in body is required")
        vmi = self.store.get("virtualmachineinstances", ns, vmi_name)
        if vmi is None:
            raise KubeError(
                422, "Invalid", MIGRATION_WEBHOOK + f"the VMI {vmi_name} does not exist under the cache"
            )
        if vmi.obj["status"].get("phase") in FINAL:
            raise KubeError(422, "Invalid", MIGRATION_WEBHOOK + "Cannot migrated VMI in finalized state.")
        if vmi.obj["status"].get("phase") != "Running":  # still starting (see `kubevirt_vms`)
            raise KubeError(
                422, "Invalid", MIGRATION_WEBHOOK + f"Cannot migrate VMI {vmi_name}: it is not running yet."
            )
        migratable, reason, message = migratable_condition(vmi.obj)
        if not migratable:
            raise KubeError(
                422,
                "Invalid",
                MIGRATION_WEBHOOK + f"Cannot migrate VMI, Reason: {reason}, Message: {message}",
            )
        for m in self.active.values():
            if m.namespace == ns and m.vmi == vmi_name:
                raise KubeError(
                    422,
                    "Invalid",
                    MIGRATION_WEBHOOK + f"in-flight migration detected. Active migration "
                    f"job ({m.uid}) is currently already in progress for VMI {vmi_name}.",
                )
        name = md.get("name") or f"{md.get('generateName') or 'kubevirt-migrate-vm-'}{ko.suffix(c.rng)}"
        if self.store.get("virtualmachineinstancemigrations", ns, name) is not None:
            raise KubeError(
                409,
                "AlreadyExists",
                f'virtualmachineinstancemigrations.kubevirt.io "{name}" already exists',
                {"name": name, "group": "kubevirt.io", "kind": "virtualmachineinstancemigrations"},
            )
        uid, stamp = ko.new_uid(c.rng), ko.rfc3339(c.now())
        obj: Obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": uid,
                "generation": 1,
                "creationTimestamp": stamp,
                "labels": {**(md.get("labels") or {}), "kubevirt.io/vmi-name": vmi_name},
                "annotations": {**(md.get("annotations") or {}), **_OBSERVED},
                "finalizers": ["kubevirt.io/migrationJobFinalize"],
            },
            "spec": {"vmiName": vmi_name},
            "status": {
                "phase": "Pending",
                "phaseTransitionTimestamps": [{"phase": "Pending", "phaseTransitionTimestamp": stamp}],
            },
        }
        if md.get("generateName"):
            obj["metadata"]["generateName"] = md["generateName"]
        entry = self.store.put("virtualmachineinstancemigrations", obj)
        source = vmi.obj["status"]["nodeName"]
        source_pod = next(
            (
                p.name
                for p in c.pods_on(source)
                if p.obj["metadata"]["uid"] in vmi.obj["status"]["activePods"]
            ),
            "",
        )
        m = Migration(ns, name, uid, vmi_name, source, source_pod)
        if self.fail_next > 0:
            self.fail_next -= 1
            m.fail = True
        self.active[(ns, name)] = m
        m.pending = c.after(self.phase_s["Pending"], lambda: self._advance(m))
        return entry.obj

    def _advance(self, m: Migration) -> None:
        c = self.cluster
        m.step += 1
        phase = PHASES[m.step][0] if m.step < len(PHASES) else "Succeeded"
        vmi = self.store.get("virtualmachineinstances", m.namespace, m.vmi)
        if vmi is None:
            self.finish(m, "Failed", "the VMI is gone")
            return
        now = ko.rfc3339(c.now())
        if phase == "Scheduling":
            tmpl = c.controllers[(m.namespace, "VirtualMachineInstance", m.vmi)].template
            tmpl_target = PodTemplate(
                tmpl.namespace,
                {**tmpl.labels, "kubevirt.io/migrationJobUID": m.uid},
                tmpl.containers,
                tmpl.owner,
                annotations=tmpl.annotations,
                node_selector=tmpl.node_selector,
            )
            target = c.pick_node(tmpl_target, avoid=m.source)
            m.state = {
                "migrationUid": m.uid,
                "sourceNode": m.source,
                "sourcePod": m.source_pod,
                "mode": "PreCopy",
            }
            if target is None or target == m.source:
                self._set_phase(m, phase)
                m.pending = c.after(
                    self.unschedulable_timeout_s,
                    lambda: self.finish(m, "Failed", "target pod is unschedulable"),
                )
                return
            ctl = c.controllers[(m.namespace, "VirtualMachineInstance", m.vmi)]
            saved, ctl.template = ctl.template, tmpl_target
            pod = c.spawn(ctl, node=target, startup=False, phase="Pending")
            ctl.template = saved
            m.target, m.target_pod = target, pod.name
            m.state["targetPod"] = pod.name
            vm_ns, vm_name = m.namespace, m.vmi
            self.kubevirt.vm_status(vm_ns, vm_name, "Migrating", vmi.obj)
        elif phase == "Scheduled":
            self._pod_running(m)
            m.state |= {"targetNode": m.target, "targetNodeAddress": self._pod_ip(m)}
        elif phase == "PreparingTarget":
            m.state["targetNodeDomainDetected"] = False
        elif phase == "TargetReady":
            m.state |= {"targetNodeDomainDetected": True, "targetNodeDomainReadyTimestamp": now}
        elif phase == "Running":
            m.state["startTimestamp"] = now
        if phase == "Succeeded" and m.fail:
            self.finish(
                m,
                "Failed",
                "Live migration failed: operation failed: migration out of job: unexpectedly failed",
            )
            return
        if phase == "Succeeded":
            self.finish(m, "Succeeded", None)
            return
        self._set_phase(m, phase)
        m.pending = c.after(self.phase_s[phase], lambda: self._advance(m))

    def _pod_ip(self, m: Migration) -> str:
        pod = self.store.get("pods", m.namespace, m.target_pod or "")
        return pod.obj["status"].get("podIP", "") if pod else ""

    def _pod_running(self, m: Migration) -> None:
        c = self.cluster
        pod = self.store.get("pods", m.namespace, m.target_pod or "")
        ctl = c.controllers.get((m.namespace, "VirtualMachineInstance", m.vmi))
        if pod is None or ctl is None:
            return
        st = pod.obj["status"]
        status = pod_status(
            ctl.template,
            m.target,
            st.get("hostIP", ""),
            st.get("podIP", ""),
            c.now(),
            c.now(),
            "Running",
            True,
            0,
            c.rng,
        )
        self.store.set_path("pods", m.namespace, pod.name, ("status",), status)

    def _set_phase(self, m: Migration, phase: str) -> None:
        stamp = ko.rfc3339(self.cluster.now())
        state = _published(m.state)

        def change(o: Obj) -> None:
            st = o["status"]
            st["phase"] = phase
            st.setdefault("phaseTransitionTimestamps", []).append(
                {"phase": phase, "phaseTransitionTimestamp": stamp}
            )
            if state:
                st["migrationState"] = state

        self.store.update("virtualmachineinstancemigrations", m.namespace, m.name, change)
        if state:
            self.store.set_path(
                "virtualmachineinstances", m.namespace, m.vmi, ("status", "migrationState"), state
            )

    def finish(self, m: Migration, phase: str, failure: str | None, aborted: bool = False) -> None:
        c = self.cluster
        if m.pending is not None:
            m.pending.cancel()
        self.active.pop((m.namespace, m.name), None)
        now = ko.rfc3339(c.now())
        m.state |= {"endTimestamp": now, "completed": phase == "Succeeded", "failed": phase == "Failed"}
        m.state.setdefault("startTimestamp", now)
        if failure:
            m.state["failureReason"] = failure
        if aborted:
            m.state |= {"abortRequested": True, "abortStatus": "Succeeded"}
        vmi = self.store.get("virtualmachineinstances", m.namespace, m.vmi)
        source_pod = self.store.get("pods", m.namespace, m.source_pod)
        if phase == "Succeeded" and vmi is not None and m.target:
            target_pod = self.store.get("pods", m.namespace, m.target_pod or "")
            target, state = m.target, _published(m.state)

            def moved(o: Obj) -> None:
                st = o["status"]
                st["nodeName"] = target
                st["migrationState"] = state
                st.pop("evacuationNodeName", None)
                st["activePods"] = {target_pod.obj["metadata"]["uid"]: target} if target_pod else {}
                o["metadata"]["labels"]["kubevirt.io/nodeName"] = target

            self.store.update("virtualmachineinstances", m.namespace, m.vmi, moved)
            if source_pod is not None:
                self.store.update(
                    "pods", m.namespace, m.source_pod, lambda o: set_terminal(o, "Succeeded", c.now())
                )
                c.terminate(self.store.require("pods", m.namespace, m.source_pod))
        else:
            if m.target_pod and self.store.get("pods", m.namespace, m.target_pod) is not None:
                self.store.delete("pods", m.namespace, m.target_pod)
            if vmi is not None and m.state.get("sourceNode"):
                state = _published(m.state)

                def failed(o: Obj) -> None:
                    o["status"]["migrationState"] = state
                    o["status"].pop("evacuationNodeName", None)

                self.store.update("virtualmachineinstances", m.namespace, m.vmi, failed)
        if vmi is not None:
            fresh = self.store.require("virtualmachineinstances", m.namespace, m.vmi).obj
            self.kubevirt.vm_status(m.namespace, m.vmi, "Running", fresh)
        if self.store.get("virtualmachineinstancemigrations", m.namespace, m.name) is not None:
            m.state.setdefault("sourceNode", m.source)
            self._set_phase(m, phase)

    def delete(self, ns: str, name: str) -> Obj:
        """DELETE: a migration still in flight is aborted (the VMI stays where it was)."""
        entry = self.store.require("virtualmachineinstancemigrations", ns, name)
        m = self.active.get((ns, name))
        if m is not None:
            self.finish(m, "Failed", "Migration aborted", aborted=True)
        stamp = ko.rfc3339(self.cluster.now())
        self.store.set_path(
            "virtualmachineinstancemigrations", ns, name, ("metadata", "deletionTimestamp"), stamp
        )
        marked = self.store.require("virtualmachineinstancemigrations", ns, name).obj
        self.store.delete("virtualmachineinstancemigrations", ns, name)
        del entry
        return marked


def _published(flat: Obj) -> Obj:
    """A VMI's migrationState: the flat fields, and the per-side `sourceState` and `targetState`
    that newer KubeVirt releases add beside them."""
    out = dict(flat)
    if "sourceNode" in flat:
        out["sourceState"] = {
            "migrationUID": flat.get("migrationUid"),
            "node": flat["sourceNode"],
            "pod": flat.get("sourcePod"),
        }
    if "targetPod" in flat:
        target: Obj = {"migrationUID": flat.get("migrationUid"), "pod": flat["targetPod"]}
        for flat_key, key in (
            ("targetNode", "node"),
            ("targetNodeAddress", "nodeAddress"),
            ("targetNodeDomainDetected", "domainDetected"),
            ("targetNodeDomainReadyTimestamp", "domainReadyTimestamp"),
        ):
            if flat_key in flat:
                target[key] = flat[flat_key]
        out["targetState"] = target
    return out


def migratable_condition(vmi: Obj) -> tuple[bool, str, str]:
    for c in vmi["status"].get("conditions", []):
        if c["type"] == "LiveMigratable":
            return c["status"] != "False", c.get("reason", ""), c.get("message", "")
    return True, "", ""
