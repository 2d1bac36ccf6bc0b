"""KubeVirt in the lab: VirtualMachines, their instances (VMIs) and virt-launcher pods.

A running VM has a VMI and one virt-launcher pod on the VMI's node. VMs with GPUs or with
non-shared (RWO) disks carry `LiveMigratable: False`, as KubeVirt reports. As virt-api's eviction
webhook does, evicting the launcher pod of a `LiveMigrate` VMI answers 429 on purpose and starts an
evacuation migration (see `kubevirt_migrations`); evicting one without that strategy kills the VMI,
and its VM (runStrategy Always) starts it again on another node. VMs created and deleted through
the API, whose VMIs walk KubeVirt's start phases: `kubevirt_vms`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_pods import Container, Controller, Owner, PodTemplate
from sovereign_tui.lab.kube_store import Entry, KubeError, Obj
from sovereign_tui.lab.kubevirt_admit import gpu_devices, guest_cores, guest_memory, run_strategy
from sovereign_tui.lab.kubevirt_migrations import FINAL, PHASES, Migrations, migratable_condition
from sovereign_tui.lab.kubevirt_vms import VmLifecycle

if TYPE_CHECKING:
    from sovereign_tui.lab.kube_cluster import KubeCluster

LAUNCHER = "quay.io/kubevirt/virt-launcher:v1.4.0"
WRITABLE = ("virtualmachines", "virtualmachineinstancemigrations")
"""The KubeVirt resources the lab's API creates and deletes."""
EVICTION_WEBHOOK = 'admission webhook "virt-launcher-eviction-interceptor.kubevirt.io" denied the request: '
_OBSERVED = {
    "kubevirt.io/latest-observed-api-version": "v1",
    "kubevirt.io/storage-observed-api-version": "v1",
}
_KINDS = {
    # name stem: namespace, cores, memory, GPUs, disk kind ("container", "rwx" or "rwo"), eviction strategy
    "fedora-dev": ("vms", 2, "4Gi", 0, "container", "LiveMigrate"),
    "rhel9-db": ("vms", 8, "32Gi", 0, "rwx", "LiveMigrate"),
    "win2022-ad": ("vms", 4, "16Gi", 0, "rwo", "LiveMigrate"),
    "legacy-app": ("vms", 2, "8Gi", 0, "rwo", "None"),
    "gpu-workstation": ("ml-inference", 16, "128Gi", 1, "rwx", "None"),
}
_ORDER = (
    "fedora-dev",
    "rhel9-db",
    "win2022-ad",
    "legacy-app",
    "fedora-dev",
    "gpu-workstation",
    "rhel9-db",
    "fedora-dev",
    "fedora-dev",
    "rhel9-db",
)
"""The mix of VMs, in creation order: every kind appears among the first six."""


class KubeVirt:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self._shared_disks: dict[tuple[str, str], bool] = {}
        self.migrations = Migrations(self)
        self.vms = VmLifecycle(self)
        """VMs created and deleted through the API, and their VMIs' start phases."""

    # --- population ----------------------------------------------------------------------------

    def populate(self, count: int, born: float) -> None:
        rng = self.cluster.rng
        for i in range(count):
            stem = _ORDER[i % len(_ORDER)]
            ns, cores, memory, gpus, disk, strategy = _KINDS[stem]
            name = f"{stem}-{i + 1:03d}"
            running = i % 7 != 6  # a few VMs are stopped
            self._create_vm(
                ns, name, cores, memory, gpus, disk, strategy, running, born + rng.uniform(0, 90 * 86400)
            )

    def _create_vm(
        self,
        ns: str,
        name: str,
        cores: int,
        memory: str,
        gpus: int,
        disk: str,
        strategy: str,
        running: bool,
        at: float,
    ) -> None:
        rng = self.cluster.rng
        labels = {"kubevirt.io/domain": name, "kubevirt.io/vm": name}
        volume: Obj = (
            {"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:41"}}
            if disk == "container"
            else {"name": "rootdisk", "persistentVolumeClaim": {"claimName": f"{name}-rootdisk"}}
        )
        devices: Obj = {
            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
            "interfaces": [{"name": "default", "masquerade": {}}],
        }
        if gpus:
            devices["gpus"] = [{"name": f"gpu{g + 1}", "deviceName": ko.GPU} for g in range(gpus)]
        vmi_spec: Obj = {
            "architecture": "amd64",
            "domain": {
                "cpu": {"cores": cores, "sockets": 1, "threads": 1, "model": "host-model"},
                "memory": {"guest": memory},
                "devices": devices,
                "machine": {"type": "q35"},
                "resources": {"requests": {"memory": memory}},
            },
            "evictionStrategy": strategy,
            "networks": [{"name": "default", "pod": {}}],
            "terminationGracePeriodSeconds": 180,
            "volumes": [volume],
        }
        vm = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": ko.new_uid(rng),
                "generation": 1,
                "creationTimestamp": ko.rfc3339(at),
                "annotations": dict(_OBSERVED),
                "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
                "labels": {"app": name},
            },
            "spec": {
                "runStrategy": "Always" if running else "Halted",
                "template": {"metadata": {"labels": labels}, "spec": vmi_spec},
            },
            "status": {},
        }
        self.store.put("virtualmachines", vm)
        self._shared_disks[(ns, name)] = disk != "rwo"
        if running:
            self._start_vmi(ns, name, at)
        else:
            self.vm_status(ns, name, "Stopped", None)

    def _start_vmi(self, ns: str, vm_name: str, at: float, avoid: str | None = None) -> Entry | None:
        """Create the VMI of a VM and its virt-launcher pod (on a node that fits, if any), running
        at once: the population and a restart after a lost pod (`kubevirt_vms` walks the phases)."""
        c = self.cluster
        vm = self.store.require("virtualmachines", ns, vm_name).obj
        spec = vm["spec"]["template"]["spec"]
        uid = ko.new_uid(c.rng)
        tmpl = self.launcher_template(ns, vm_name, uid, spec)
        node = c.pick_node(tmpl, avoid)
        if node is None:
            self.vm_status(ns, vm_name, "ErrorUnschedulable", None)
            return None
        vmi = self.vmi_object(vm, uid, at)
        ctl = self.controller(ns, vm_name, tmpl)
        pod = c.spawn(ctl, node=node, created=at, startup=False)
        stamps = [
            {"phase": p, "phaseTransitionTimestamp": ko.rfc3339(at)}
            for p in ("Pending", "Scheduling", "Scheduled", "Running")
        ]
        vmi["metadata"]["labels"]["kubevirt.io/nodeName"] = node
        vmi["status"] = self.running_status(vmi, pod, at, stamps)
        entry = self.store.put("virtualmachineinstances", vmi)
        self.vm_status(ns, vm_name, "Running", vmi)
        return entry

    def vmi_object(self, vm: Obj, uid: str, at: float) -> Obj:
        """A VM's instance as virt-controller creates it from the VM's template (status empty)."""
        md, template = vm["metadata"], vm["spec"]["template"]
        spec = template["spec"]
        return {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": md["name"],
                "namespace": md["namespace"],
                "uid": uid,
                "generation": 8,
                "creationTimestamp": ko.rfc3339(at),
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": {**_OBSERVED, "kubevirt.io/vm-generation": str(md.get("generation", 1))},
                "finalizers": [
                    "kubevirt.io/virtualMachineControllerFinalize",
                    "foregroundDeleteVirtualMachine",
                ],
                "ownerReferences": [Owner("VirtualMachine", md["name"], md["uid"], "kubevirt.io/v1").ref()],
            },
            "spec": {
                **spec,
                "domain": {**spec["domain"], "firmware": {"uuid": ko.new_uid(self.cluster.rng)}},
            },
            "status": {},
        }

    def running_status(self, vmi: Obj, pod: Entry, at: float, stamps: list[Obj]) -> Obj:
        """The status of a VMI whose guest runs in `pod` (since `at`)."""
        rng = self.cluster.rng
        spec, md = vmi["spec"], vmi["metadata"]
        domain = spec["domain"]
        node = pod.obj["spec"]["nodeName"]
        shared = self._shared_disks.get((md["namespace"], md["name"]), True)
        migratable, reason, message = _migratability(spec, shared)
        memory = guest_memory(domain)
        volumes = spec.get("volumes") or []
        pod_ip = pod.obj["status"].get("podIP", "")
        return {
            "phase": "Running",
            "nodeName": node,
            "activePods": {pod.obj["metadata"]["uid"]: node},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": ko.rfc3339(at),
                },
                {
                    "type": "LiveMigratable",
                    "status": "True" if migratable else "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": None,
                    **({"reason": reason, "message": message} if reason else {}),
                },
            ],
            "guestOSInfo": {},
            "interfaces": [
                {
                    "name": "default",
                    "ipAddress": pod_ip,
                    "ipAddresses": [pod_ip],
                    "mac": "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5)),
                    "infoSource": "domain, guest-agent",
                    "queueCount": 1,
                }
            ],
            "launcherContainerImageVersion": LAUNCHER,
            "migrationMethod": "LiveMigration"
            if volumes and volumes[0].get("persistentVolumeClaim")
            else "BlockMigration",
            "migrationTransport": "Unix",
            "phaseTransitionTimestamps": stamps,
            "qosClass": "Burstable",
            "runtimeUser": 107,
            "currentCPUTopology": {"cores": guest_cores(domain), "sockets": 1, "threads": 1},
            "memory": {"guestAtBoot": memory, "guestCurrent": memory, "guestRequested": memory},
            "volumeStatus": [
                {"name": v["name"], "target": f"vd{chr(ord('a') + i)}"} for i, v in enumerate(volumes[:26])
            ],
        }

    def launcher_template(self, ns: str, vmi: str, vmi_uid: str, spec: Obj) -> PodTemplate:
        """The virt-launcher pod of a VMI: the guest's cores and memory, its GPUs (devices
        other than the nodes' `nvidia.com/gpu` are requested under their own resource name)."""
        domain = spec["domain"]
        devices = gpu_devices(domain)
        extra = {d: str(devices.count(d)) for d in devices if d != ko.GPU}
        return self._launcher_template(
            ns, vmi, vmi_uid, guest_memory(domain), guest_cores(domain), devices.count(ko.GPU), extra
        )

    def _launcher_template(
        self, ns: str, vmi: str, vmi_uid: str, memory: str, cores: int, gpus: int, extra: dict[str, str]
    ) -> PodTemplate:
        limits = {
            "devices.kubevirt.io/kvm": "1",
            "devices.kubevirt.io/tun": "1",
            "devices.kubevirt.io/vhost-net": "1",
            **extra,
        }
        mem_mib = ko.quantity_bytes(memory) // (1 << 20) + 300  # the guest plus virt-launcher's overhead
        return PodTemplate(
            ns,
            {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": vmi_uid, "vm.kubevirt.io/name": vmi},
            (Container("compute", LAUNCHER, f"{cores * 100}m", f"{mem_mib}Mi", gpus, limits),),
            Owner("VirtualMachineInstance", vmi, vmi_uid, "kubevirt.io/v1"),
            annotations={
                "kubevirt.io/domain": vmi,
                "kubectl.kubernetes.io/default-container": "compute",
                "kubevirt.io/migrationTransportUnix": "true",
            },
            node_selector={"kubevirt.io/schedulable": "true"},
        )

    def controller(self, ns: str, vmi: str, tmpl: PodTemplate) -> Controller:
        ctl = Controller("VirtualMachineInstance", f"virt-launcher-{vmi}", tmpl)
        self.cluster.controllers[(ns, "VirtualMachineInstance", vmi)] = ctl
        return ctl

    def vm_status(self, ns: str, name: str, printable: str, vmi: Obj | None) -> None:
        """What virt-controller writes in a VM's status: the printable status, `created` and
        `ready`, the Ready condition (from the VMI's) and the VMI's other conditions."""
        entry = self.store.get("virtualmachines", ns, name)
        if entry is None:
            return
        at = ko.rfc3339(self.cluster.now())
        old = entry.obj.get("status") or {}
        if entry.obj["metadata"].get("deletionTimestamp"):
            printable = "Terminating"  # first in virt-controller's order of precedence
        ready = vmi is not None and printable in ("Running", "Migrating")
        conds: list[Obj] = [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastProbeTime": None,
                "lastTransitionTime": at,
            }
        ]
        vmi_conds: list[Obj] = (vmi or {}).get("status", {}).get("conditions") or []
        vmi_ready = next((c for c in vmi_conds if c["type"] == "Ready" and c.get("reason")), None)
        if not ready and vmi_ready is not None:
            conds[0] |= {"reason": vmi_ready["reason"], "message": vmi_ready.get("message", "")}
        elif not ready:
            conds[0] |= {"reason": "VMINotExists", "message": "VMI does not exist"}
        conds += [dict(c) for c in vmi_conds if c["type"] != "Ready"]
        template = entry.obj["spec"]["template"]["spec"]
        status: Obj = {
            "printableStatus": printable,
            "ready": ready,
            "created": vmi is not None,
            "conditions": conds,
            "desiredGeneration": 1,
            "observedGeneration": 1,
            "runStrategy": run_strategy(entry.obj["spec"]),
            "volumeSnapshotStatuses": [_snapshot_status(v) for v in template.get("volumes") or []],
        }
        if old.get("printableStatus") == printable and old.get("ready") == ready:
            for c_old, c_new in zip(old.get("conditions", []), conds, strict=False):
                if c_old.get("type") == c_new["type"]:
                    c_new["lastTransitionTime"] = c_old.get("lastTransitionTime")
        if status != old:
            self.store.set_path("virtualmachines", ns, name, ("status",), status)

    # --- eviction and launcher pods ---------------------------------------------------------------

    def vmi_of(self, pod: Entry) -> Entry | None:
        if pod.labels.get("kubevirt.io") != "virt-launcher":
            return None
        return self.store.get(
            "virtualmachineinstances", pod.namespace, pod.labels.get("vm.kubevirt.io/name", "")
        )

    def admit_eviction(self, pod: Entry) -> None:
        """virt-api's eviction webhook: a launcher pod of a LiveMigrate VMI is not evicted; the
        eviction starts an evacuation migration and answers 429 (that 429 is progress)."""
        vmi = self.vmi_of(pod)
        if vmi is None:
            return
        status = vmi.obj["status"]
        if status.get("phase") in FINAL or status.get("nodeName") != pod.obj["spec"].get("nodeName"):
            return
        if pod.obj["status"].get("phase") in FINAL:
            return
        strategy = vmi.obj["spec"].get("evictionStrategy", "None")
        if strategy not in ("LiveMigrate", "LiveMigrateIfPossible", "External"):
            return
        migratable, _, _ = migratable_condition(vmi.obj)
        if not migratable:
            if strategy == "LiveMigrateIfPossible":
                return
            raise KubeError(
                429,
                "TooManyRequests",
                EVICTION_WEBHOOK + f"VMI {vmi.name} is configured with an "
                "eviction strategy but is not live-migratable",
            )
        ns, name = vmi.namespace, vmi.name
        if not status.get("evacuationNodeName"):
            node = pod.obj["spec"]["nodeName"]
            self.store.set_path("virtualmachineinstances", ns, name, ("status", "evacuationNodeName"), node)
            marker = ("metadata", "annotations", "descheduler.alpha.kubernetes.io/eviction-in-progress")
            self.store.set_path("pods", pod.namespace, pod.name, marker, "kubevirt")
            if strategy != "External" and not self.migrations.of_vmi(ns, name):
                self.migrations.create(
                    ns,
                    {
                        "metadata": {
                            "generateName": "kubevirt-evacuation-",
                            "annotations": {"kubevirt.io/evacuationMigration": node},
                        },
                        "spec": {"vmiName": name},
                    },
                )
        raise KubeError(
            429, "TooManyRequests", EVICTION_WEBHOOK + f'Eviction triggered evacuation of VMI "{ns}/{name}"'
        )

    def create(self, plural: str, ns: str, body: Obj) -> bytes:
        """POST of one of `WRITABLE`: the created object's JSON."""
        if plural == "virtualmachines":
            return self.vms.create(ns, body).raw
        return orjson.dumps(self.create_migration(ns, body))

    def delete(self, plural: str, ns: str, name: str) -> bytes:
        """DELETE of one of `WRITABLE`: the object as marked for deletion."""
        if plural == "virtualmachines":
            return self.vms.delete(ns, name).raw
        return orjson.dumps(self.delete_migration(ns, name))

    def create_migration(self, ns: str, body: Obj) -> Obj:
        """POST a VirtualMachineInstanceMigration (see `kubevirt_migrations`)."""
        return self.migrations.create(ns, body)

    def delete_migration(self, ns: str, name: str) -> Obj:
        """DELETE one: a migration still in flight is aborted."""
        return self.migrations.delete(ns, name)

    def pod_removed(self, pod: Entry) -> None:
        """A launcher pod is gone: if it ran the VMI, the VMI fails and its VM starts it again."""
        vmi = self.vmi_of(pod)
        if vmi is None or vmi.obj["status"].get("nodeName") != pod.obj["spec"].get("nodeName"):
            return
        if pod.obj["metadata"]["uid"] not in vmi.obj["status"].get("activePods", {}):
            return
        if vmi.obj["metadata"].get("deletionTimestamp"):
            return  # the VM (or VMI) is being deleted: `kubevirt_vms` removes it
        ns, name = vmi.namespace, vmi.name
        for m in self.migrations.of_vmi(ns, name):
            self.migrations.finish(m, "Failed", "source pod terminated")
        self.store.set_path("virtualmachineinstances", ns, name, ("status", "phase"), "Failed")
        self.store.delete("virtualmachineinstances", ns, name)
        self.cluster.controllers.pop((ns, "VirtualMachineInstance", name), None)
        vm = self.store.get("virtualmachines", ns, name)
        if vm is not None and run_strategy(vm.obj["spec"]) == "Always":
            self._start_vmi(ns, name, self.cluster.now(), avoid=pod.obj["spec"].get("nodeName"))
        elif vm is not None:
            self.vm_status(ns, name, "Stopped", None)


def _snapshot_status(volume: Obj) -> Obj:
    name = volume["name"]
    if "persistentVolumeClaim" in volume or "dataVolume" in volume:
        reason = (
            "No VolumeSnapshotClass: Volume snapshots are not configured for this StorageClass "
            f"[local] [{name}]"
        )
    else:
        reason = f"Snapshot is not supported for this volumeSource type [{name}]"
    return {"name": name, "enabled": False, "reason": reason}


def _migratability(spec: Obj, shared_disks: bool) -> tuple[bool, str | None, str | None]:
    """KubeVirt's LiveMigratable verdict: host devices and non-shared (RWO) disks prevent it."""
    if spec["domain"]["devices"].get("gpus"):
        return False, "HostDeviceNotLiveMigratable", "VMI uses a PCI host devices"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    if claims and not shared_disks:
        return (
            False,
            "DisksNotLiveMigratable",
            (
                f"cannot migrate VMI: PVC {claims[0]} is not shared, live migration requires that all PVCs "
                "must be shared (using ReadWriteMany access mode)"
            ),
        )
    return True, None, None


__all__ = ["PHASES", "WRITABLE", "KubeVirt"]
