"""KubeVirt steps through the kubernetes client's CustomObjectsApi: live migrations
(VirtualMachineInstanceMigration objects, followed through their phases), evacuation of a
LiveMigrate VM by evicting its launcher pod (KubeVirt answers that eviction 429 on purpose and
migrates the VM: progress, not a refusal), and VirtualMachine creation.

A migration this adapter creates carries the operation and step in an annotation, so after a
crash it is found again (and followed, not made twice) even if its generated name was not yet
recorded. Cancelling deletes the migration, which aborts it; the VM stays where it was.
"""

from __future__ import annotations

from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.actions.kubernetes import KubernetesActions, Refusal, kcall, split
from sovereign_tui.ops.plan import StepKind

GROUP, VERSION = "kubevirt.io", "v1"
VMIS, VMIMS, VMS = "virtualmachineinstances", "virtualmachineinstancemigrations", "virtualmachines"
OWNER = "sovereign-tui/operation"
FINAL = ("Succeeded", "Failed")


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
        custom = await self.custom()
        p = ctx.params
        ns, name = p["namespace"], p["name"]
        got = await kcall(custom.get_namespaced_custom_object, GROUP, VERSION, ns, VMS, name, expect=(404,))
        if isinstance(got, Refusal):
            await kcall(custom.create_namespaced_custom_object, GROUP, VERSION, ns, VMS, vm_manifest(p))
        while True:
            vmi = await self._vmi(custom, ns, name)
            phase = (vmi or {}).get("status", {}).get("phase")
            if phase == "Running":
                return f"VM {ns}/{name} running on {_node(vmi or {})}"
            if phase == "Failed":
                raise StepFailed(f"VM {ns}/{name} failed to start")
            await ctx.pause(f"VMI {phase or 'not created yet'}")


def _phase(mig: dict[str, Any]) -> str | None:
    return (mig.get("status") or {}).get("phase")


def _node(vmi: dict[str, Any]) -> str | None:
    return (vmi.get("status") or {}).get("nodeName")


def vm_manifest(p: dict[str, str]) -> dict[str, Any]:
    gpus = int(p.get("gpus") or 0)
    devices: dict[str, Any] = {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}
    if gpus:
        devices["gpus"] = [
            {"name": f"gpu{i}", "deviceName": p.get("gpu_device", "nvidia.com/GH100_H100_SXM5_80GB")}
            for i in range(gpus)
        ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": p["name"], "namespace": p["namespace"]},
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
