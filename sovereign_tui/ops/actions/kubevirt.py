"""KubeVirt steps through the kubernetes client's CustomObjectsApi: live migrations
(VirtualMachineInstanceMigration objects, followed through their phases), evacuation of a
LiveMigrate VM by evicting its launcher pod (KubeVirt answers that eviction 429 on purpose and
migrates the VM: progress, not a refusal), and VirtualMachine creation, followed through its VMI's
start phases (Pending, Scheduling, Scheduled, Running) with the scheduler's reason while no node
has room; a VM not yet running when the step times out or is cancelled is deleted.

A migration or VM this adapter creates carries the operation and step in an annotation, so after
a crash it is found again (and followed, not made twice) even if its name was not yet recorded; a
VM of that name the operation did not make is not taken over. Cancelling a migration deletes it,
which aborts it; the VM stays where it was.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.actions.kubernetes import KubernetesActions, Refusal, kcall, split
from sovereign_tui.ops.plan import StepKind

GROUP, VERSION = "kubevirt.io", "v1"
VMIS, VMIMS, VMS = "virtualmachineinstances", "virtualmachineinstancemigrations", "virtualmachines"
OWNER = "sovereign-tui/operation"
FINAL = ("Succeeded", "Failed")
START_FRACTION = {"Pending": 0.1, "Scheduling": 0.3, "Scheduled": 0.7}
"""How far a new VM is when its VMI is in each start phase (Running: done)."""


class KubeVirtActions:
    kinds = frozenset({StepKind.KUBEVIRT_MIGRATE, StepKind.KUBEVIRT_EVACUATE, StepKind.KUBEVIRT_CREATE_VM})

    def __init__(self, connections: Connections, kubernetes: KubernetesActions) -> None:
        self.connections = connections
        self.kubernetes = kubernetes

    async def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(await self.connections.kube("kubevirt"))

    async def run(self, ctx: StepContext) -> str:
        kind = ctx.step.kind
        if kind == StepKind.KUBEVIRT_MIGRATE:
            return await self._migrate(ctx)
        if kind == StepKind.KUBEVIRT_EVACUATE:
            return await self._evacuate(ctx)
        if kind == StepKind.KUBEVIRT_CREATE_VM:
            return await self._create_vm(ctx)
        raise StepFailed(f"kubevirt: no action for {kind}")

    async def cancel(self, ctx: StepContext) -> str | None:
        if ctx.step.kind == StepKind.KUBEVIRT_CREATE_VM:
            return await self._undo_create(ctx)
        if ctx.step.kind not in (StepKind.KUBEVIRT_MIGRATE, StepKind.KUBEVIRT_EVACUATE):
            return None
        custom = await self.custom()
        ns, vmi = split(ctx.step.target)
        found = await self._active(custom, ns, vmi)
        for m in found:
            await kcall(
                custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                VMIMS,
                m["metadata"]["name"],
                expect=(404,),
            )
        if not found:
            return "no KubeVirt migration in flight to delete"
        return f"deleted migration {', '.join(m['metadata']['name'] for m in found)} (aborted)"

    async def _vmi(self, custom: Any, ns: str, name: str) -> dict[str, Any] | None:
        got = await kcall(custom.get_namespaced_custom_object, GROUP, VERSION, ns, VMIS, name, expect=(404,))
        return None if isinstance(got, Refusal) else dict(got)

    async def _migrations(self, custom: Any, ns: str, vmi: str) -> list[dict[str, Any]]:
        got = await kcall(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            VMIMS,
            label_selector=f"kubevirt.io/vmi-name={vmi}",
        )
        return list(got.get("items", []))

    async def _active(self, custom: Any, ns: str, vmi: str) -> list[dict[str, Any]]:
        return [m for m in await self._migrations(custom, ns, vmi) if _phase(m) not in FINAL]

    def _mine(self, ctx: StepContext, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        name = ctx.data.get("migration")
        tag = f"{ctx.op_id}/{ctx.step.index}"
        for m in items:
            md = m.get("metadata", {})
            if md.get("name") == name or (md.get("annotations") or {}).get(OWNER) == tag:
                return m
        return None

    async def _migrate(self, ctx: StepContext) -> str:
        custom = await self.custom()
        ns, name = split(ctx.step.target)
        source = ctx.params["source"]
        vmi = await self._vmi(custom, ns, name)
        if vmi is None:
            raise StepFailed(f"VMI {ns}/{name} is gone")
        mig = self._mine(ctx, await self._migrations(custom, ns, name))
        if mig is None:
            if _node(vmi) != source:
                return f"VMI {ns}/{name} already on {_node(vmi)}"
            active = await self._active(custom, ns, name)
            mig = active[0] if active else await self._create_migration(ctx, custom, ns, name)
            ctx.note(migration=mig["metadata"]["name"])
        return await self._follow(ctx, custom, ns, name, mig)

    async def _create_migration(self, ctx: StepContext, custom: Any, ns: str, vmi: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "generateName": f"{vmi[:40]}-migration-",
                "annotations": {OWNER: f"{ctx.op_id}/{ctx.step.index}"},
            },
            "spec": {"vmiName": vmi},
        }
        dest = ctx.params.get("dest")
        if dest:
            body["spec"]["addedNodeSelector"] = {"kubernetes.io/hostname": dest}
        got = await kcall(
            custom.create_namespaced_custom_object, GROUP, VERSION, ns, VMIMS, body, expect=(422,)
        )
        if isinstance(got, Refusal):
            raise StepFailed(f"KubeVirt refused to migrate {ns}/{vmi}: {got.message}")
        return dict(got)

    async def _follow(self, ctx: StepContext, custom: Any, ns: str, vmi: str, mig: dict[str, Any]) -> str:
        mname = mig["metadata"]["name"]
        while True:
            phase = _phase(mig)
            if phase == "Succeeded":
                now = await self._vmi(custom, ns, vmi)
                where = _node(now) if now else "?"
                dest = ctx.params.get("dest")
                if dest and where != dest:
                    return f"VMI {ns}/{vmi} live-migrated to {where} (asked for {dest}; KubeVirt chose)"
                return f"VMI {ns}/{vmi} live-migrated to {where}"
            if phase == "Failed":
                state = (mig.get("status") or {}).get("migrationState") or {}
                reason = state.get("failureReason") or "no reason given"
                raise StepFailed(f"KubeVirt migration {mname} failed: {one_line(reason)}")
            await ctx.pause(f"kubevirt migration {phase or 'Pending'}")
            got = await kcall(
                custom.get_namespaced_custom_object, GROUP, VERSION, ns, VMIMS, mname, expect=(404,)
            )
            if isinstance(got, Refusal):
                now = await self._vmi(custom, ns, vmi)
                if now is not None and _node(now) != ctx.params.get("source"):
                    return f"VMI {ns}/{vmi} live-migrated to {_node(now)}"
                raise StepFailed(f"KubeVirt migration {mname} was deleted before it finished")
            mig = dict(got)

    async def _evacuate(self, ctx: StepContext) -> str:
        """Evict the launcher pod (429 = KubeVirt started a migration), then follow that migration."""
        custom = await self.custom()
        ns, name = split(ctx.step.target)
        source = ctx.params["node"]
        vmi = await self._vmi(custom, ns, name)
        if vmi is None or _node(vmi) != source:
            return f"VMI {ns}/{name} already off {source}"
        if not ctx.data.get("evacuating"):
            await self._evict_launcher(ctx)
        for _ in range(3):  # the evacuation migration appears with the 429
            active = await self._active(custom, ns, name)
            if active:
                ctx.note(migration=active[0]["metadata"]["name"])
                return await self._follow(ctx, custom, ns, name, active[0])
            vmi = await self._vmi(custom, ns, name)
            if vmi is None or _node(vmi) != source:
                return f"VMI {ns}/{name} moved off {source}"
            await ctx.pause("waiting for KubeVirt's evacuation migration to appear")
        raise StepFailed(f"KubeVirt started no migration for {ns}/{name} after the eviction")

    async def _evict_launcher(self, ctx: StepContext) -> None:
        from kubernetes import client

        core = await self.kubernetes.core()
        pod_ns, pod = split(ctx.params["pod"])
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=pod_ns))
        answer = await kcall(core.create_namespaced_pod_eviction, pod, pod_ns, body, expect=(429, 500))
        if isinstance(answer, Refusal) and "not live-migratable" in answer.message:
            raise StepFailed(f"eviction of {pod_ns}/{pod} refused: {answer.message}")
        if isinstance(answer, Refusal) and "virt-launcher-eviction-interceptor" not in answer.message:
            raise StepFailed(f"eviction of {pod_ns}/{pod} refused: {answer.message}")
        ctx.note(evacuating=True)
        ctx.progress("eviction answered 429 by KubeVirt: evacuation migration started")

    async def _create_vm(self, ctx: StepContext) -> str:
        """Create the VM (once: it carries this step's tag) and follow its VMI to Running."""
        custom = await self.custom()
        p = ctx.params
        ns, name = p["namespace"], p["name"]
        vm = await self._get(custom, ns, VMS, name)
        if vm is None and ctx.data.get("vm_uid"):
            raise StepFailed(f"VM {ns}/{name} was deleted before it ran")
        if vm is None:
            vm = await self._post_vm(ctx, custom, ns, name)
        if _annotation(vm, OWNER) != _tag(ctx):
            raise StepFailed(
                f"VM {ns}/{name} already exists and this operation did not make it; choose another name"
            )
        if ctx.data.get("vm_uid") != vm["metadata"]["uid"]:
            ctx.note(vm_uid=vm["metadata"]["uid"])
        said = ""
        while True:
            vmi = await self._vmi(custom, ns, name)
            phase = _phase(vmi) if vmi is not None else None
            if vmi is not None and phase == "Running":
                return f"VM {ns}/{name} running on {_node(vmi)}"
            if phase in FINAL:
                raise StepFailed(f"VM {ns}/{name}: its VMI {str(phase).lower()}: {_start_state(vmi)}")
            if vmi is None and await self._get(custom, ns, VMS, name) is None:
                raise StepFailed(f"VM {ns}/{name} was deleted before it ran")
            state = _start_state(vmi)
            if state != said:  # each new phase once in the journal, as it happens
                ctx.note(vmi_state=state)
                said = state
            await ctx.pause(f"VMI {state}", START_FRACTION.get(phase or "", 0.05))

    async def _post_vm(self, ctx: StepContext, custom: Any, ns: str, name: str) -> dict[str, Any]:
        p = ctx.params
        device = None
        if int(p.get("gpus") or 0):
            device = ctx.data.get("gpu_device") or p.get("gpu_device") or await self._gpu_resource()
            ctx.note(gpu_device=device)
        body = vm_manifest(p, gpu_device=device, owner=_tag(ctx))
        got = await kcall(
            custom.create_namespaced_custom_object, GROUP, VERSION, ns, VMS, body, expect=(403, 404, 409, 422)
        )
        if isinstance(got, Refusal) and got.status == 409:
            again = await self._get(custom, ns, VMS, name)
            if again is not None:
                return again
        if isinstance(got, Refusal):
            raise StepFailed(f"KubeVirt refused VM {ns}/{name}: {got.message}")
        ctx.progress(f"VM {ns}/{name} created")
        return dict(got)

    async def _gpu_resource(self) -> str:
        """The GPU resource the nodes advertise for passthrough (`nvidia.com/...`), the most
        plentiful one; a VM asking for another would never be scheduled."""
        core = await self.kubernetes.core()
        nodes = await kcall(core.list_node)
        totals: Counter[str] = Counter()
        for n in nodes.items:
            for key, value in ((n.status and n.status.allocatable) or {}).items():
                if key.startswith("nvidia.com/") and str(value).isdigit():
                    totals[key] += int(value)
        if not totals:
            raise StepFailed(
                "no Kubernetes node advertises an nvidia.com/ GPU resource: the VM's GPUs cannot be placed"
            )
        return max(totals, key=lambda k: (totals[k], k))

    async def _undo_create(self, ctx: StepContext) -> str | None:
        """A VM this step made that is not running yet is deleted (it would start later, unasked)."""
        custom = await self.custom()
        ns, name = ctx.params["namespace"], ctx.params["name"]
        vm = await self._get(custom, ns, VMS, name)
        if vm is None or _annotation(vm, OWNER) != _tag(ctx):
            return None
        vmi = await self._vmi(custom, ns, name)
        if vmi is not None and _phase(vmi) == "Running":
            return f"VM {ns}/{name} runs on {_node(vmi)}: left in place"
        await kcall(custom.delete_namespaced_custom_object, GROUP, VERSION, ns, VMS, name, expect=(404,))
        return f"VMI was still {_start_state(vmi)}; deleted VM {ns}/{name}"

    async def _get(self, custom: Any, ns: str, plural: str, name: str) -> dict[str, Any] | None:
        got = await kcall(
            custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name, expect=(404,)
        )
        return None if isinstance(got, Refusal) else dict(got)


def _tag(ctx: StepContext) -> str:
    return f"{ctx.op_id}/{ctx.step.index}"


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def _start_state(vmi: dict[str, Any] | None) -> str:
    """Where a starting VMI is, in one line: its phase, node, and why it waits if it says."""
    if vmi is None:
        return "not created yet"
    status = vmi.get("status") or {}
    text = status.get("phase") or "Pending"
    if status.get("nodeName"):
        text += f" on {status['nodeName']}"
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            why = str(c.get("message") or c.get("reason") or "")
            text += f" ({c.get('reason') or 'unschedulable'}: {why.split(' preemption:')[0]})"
    return one_line(text)


def _phase(mig: dict[str, Any]) -> str | None:
    return (mig.get("status") or {}).get("phase")


def _node(vmi: dict[str, Any]) -> str | None:
    return (vmi.get("status") or {}).get("nodeName")


def vm_manifest(
    p: dict[str, str], *, gpu_device: str | None = None, owner: str | None = None
) -> dict[str, Any]:
    """The VirtualMachine a create step posts: runStrategy Always, a containerDisk root disk, the
    GPUs as `gpu_device` (the nodes' passthrough resource), tagged with the step that made it."""
    gpus = int(p.get("gpus") or 0)
    devices: dict[str, Any] = {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}
    if gpus:
        device = gpu_device or p.get("gpu_device") or "nvidia.com/gpu"
        devices["gpus"] = [{"name": f"gpu{i}", "deviceName": device} for i in range(gpus)]
    metadata: dict[str, Any] = {"name": p["name"], "namespace": p["namespace"]}
    if owner:
        metadata["annotations"] = {OWNER: owner}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": p["name"]}},
                "spec": {
                    "evictionStrategy": "LiveMigrate",
                    "domain": {
                        "cpu": {"cores": int(p.get("cores") or 2)},
                        "memory": {"guest": p.get("memory") or "4Gi"},
                        "devices": devices,
                    },
                    "volumes": [{"name": "rootdisk", "containerDisk": {"image": p["image"]}}],
                },
            },
        },
    }
