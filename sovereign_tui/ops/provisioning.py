"""Provision plans: a Nova server from a GPU flavor, an Ironic deploy, a Kata pod, a KubeVirt VM.

Choices are offered only among what can work: `fitting_flavors` keeps the GPU flavors some
enabled hypervisor has room for (free GPUs of the flavor's model when a GPU source reports them,
else free memory as Nova reports it, else the flavor is kept and Nova's scheduler decides);
Kata pods take a runtime class among those present; a bare-metal deploy needs an available node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collectors.nova import gpus_of
from sovereign_tui.model import Host, Snapshot
from sovereign_tui.ops.actions.base import LayerUnavailable, StepFailed
from sovereign_tui.ops.inventory import FlavorInfo
from sovereign_tui.ops.plan import Blocker, Plan, StepKind
from sovereign_tui.ops.plan_context import PlanContext, PlanError, find_host

PROVISION_KINDS = ("vm", "baremetal", "kata-pod", "kubevirt-vm")


@dataclass(frozen=True)
class ProvisionRequest:
    kind: str
    """vm | baremetal | kata-pod | kubevirt-vm"""
    name: str
    flavor: str | None = None
    image: str | None = None
    network: str = "auto"
    host: str | None = None
    node: str | None = None
    namespace: str = "default"
    runtime_class: str | None = None
    gpus: int = 0
    cores: int = 2
    memory: str = "4Gi"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlavorFit:
    flavor: FlavorInfo
    gpus: int
    gpu_kind: str | None
    hosts: tuple[str, ...]
    """Hypervisors with room now; empty with `known=False` when capacity is not reported."""
    known: bool = True


def _gpu_key(f: FlavorInfo) -> str | None:
    """What a GPU flavor needs of a host: its PCI alias (the GPU model), or "vgpu"."""
    count, kind = gpus_of(f.extra_specs)
    if not count:
        return None
    if kind == "vgpu":
        return "vgpu"
    return f.extra_specs.get("pci_passthrough:alias", "").split(":")[0].strip().lower() or None


def _evidence(snapshot: Snapshot, flavors: list[FlavorInfo]) -> dict[str, set[str]]:
    """Hosts known to carry each GPU key: GPU rows whose name has the alias, and hypervisors that
    run a server of a flavor with it."""
    by_name = {f.name: f for f in flavors}
    keys = {k for f in flavors if (k := _gpu_key(f))}
    found: dict[str, set[str]] = {}
    for w in snapshot.workloads:
        f = by_name.get(w.flavor or "")
        key = _gpu_key(f) if f is not None else None
        if key and w.kind == "nova-vm" and w.host:
            found.setdefault(key, set()).add(w.host)
    for g in snapshot.gpus:
        name = (g.name or "").lower()
        for key in keys:
            if key != "vgpu" and key in name:
                found.setdefault(key, set()).add(g.host)
    return found


def _free_gpus(snapshot: Snapshot, host: Host, alias: str | None) -> int | None:
    boards = [g for g in snapshot.gpus if g.host == host.name and g.mig_instance is None]
    if not boards:
        return None
    if alias:
        boards = [g for g in boards if alias in (g.name or "").lower()]
    return sum(1 for g in boards if g.holder is None and not g.processes)


def fitting_flavors(snapshot: Snapshot, flavors: list[FlavorInfo]) -> list[FlavorFit]:
    """GPU flavors that fit on at least one enabled, up hypervisor: one known to carry the flavor's
    GPU model (or vGPUs), with free GPUs when a GPU source reports them and free memory when Nova
    does. With no evidence of any GPU anywhere, every GPU flavor is offered, marked unknown."""
    hypervisors = [
        h
        for h in snapshot.hosts
        if h.nova is not None and h.nova.state == "up" and h.nova.status == "enabled"
    ]
    evidence = _evidence(snapshot, flavors)
    out = []
    for f in flavors:
        key = _gpu_key(f)
        if key is None:
            continue
        count, kind = gpus_of(f.extra_specs)
        fits: list[str] = []
        for h in hypervisors:
            nova = h.nova
            assert nova is not None
            if evidence and h.name not in evidence.get(key, set()):
                continue
            free = _free_gpus(snapshot, h, key) if kind == "passthrough" else None
            if free is not None and free < count:
                continue
            mem, used = nova.memory_mb, nova.memory_mb_used
            if mem is not None and used is not None and mem - used < f.ram_mb:
                continue
            fits.append(h.name)
        if fits or not evidence:
            out.append(FlavorFit(f, count, kind, tuple(fits), bool(evidence)))
    return out


def kata_classes(classes: dict[str, str]) -> list[str]:
    """The Kata runtime classes among the cluster's (name -> handler): kata-deploy names them kata-*."""
    return sorted(n for n, handler in classes.items() if n.startswith("kata") or handler.startswith("kata"))


async def plan_provision(ctx: PlanContext, req: ProvisionRequest) -> Plan:
    if req.kind == "vm":
        return await _vm(ctx, req)
    if req.kind == "baremetal":
        return _baremetal(ctx, req)
    if req.kind == "kata-pod":
        return await _kata(ctx, req)
    if req.kind == "kubevirt-vm":
        return _kubevirt(ctx, req)
    raise PlanError(f"unknown provision kind {req.kind!r}; choose one of {', '.join(PROVISION_KINDS)}")


def _plan(
    ctx: PlanContext,
    req: ProvisionRequest,
    step_kind: StepKind,
    target: str,
    description: str,
    params: dict[str, str],
    lease: str,
    *,
    host: str | None = None,
    blocker: Blocker | None = None,
) -> Plan:
    step = ctx.step(
        step_kind,
        target,
        req.name,
        description,
        host=host,
        touches=(f"{step_kind.layer}:new:{req.name}",),
        params=params,
        blocker=blocker,
    )
    return ctx.plan("provision", req.name, [step], leases=[lease], params={"kind": req.kind})


async def _vm(ctx: PlanContext, req: ProvisionRequest) -> Plan:
    if not req.flavor or not req.image:
        raise PlanError("provision vm needs --flavor and --image")
    try:
        flavors = await ctx.inventory.flavors()
    except (LayerUnavailable, StepFailed) as exc:
        raise PlanError(str(exc)) from None
    fits = fitting_flavors(ctx.snapshot, flavors)
    chosen = next((f for f in fits if req.flavor in (f.flavor.id, f.flavor.name)), None)
    if chosen is None:
        match = next((f for f in flavors if req.flavor in (f.id, f.name)), None)
        offer = ", ".join(f.flavor.name for f in fits) or "none"
        if match is None:
            why = "is not a flavor of this cloud"
        elif _gpu_key(match) is None:
            why = "is not a GPU flavor"
        else:
            why = "fits on no enabled hypervisor now"
        raise PlanError(f"flavor {req.flavor!r} {why}; GPU flavors that fit: {offer}")
    if req.host and chosen.known and req.host not in chosen.hosts:
        raise PlanError(
            f"flavor {chosen.flavor.name} does not fit on {req.host}; it fits on {', '.join(chosen.hosts)}"
        )
    if not chosen.known:
        ctx.notes.append(
            "GPU capacity is not reported (no GPU source): Nova's scheduler decides where it fits"
        )
    params = {"name": req.name, "flavor_id": chosen.flavor.id, "image_id": req.image, "network": req.network}
    if req.host:
        params["host"] = req.host
    where = f"on {req.host}" if req.host else "where the scheduler puts it"
    return _plan(
        ctx,
        req,
        StepKind.NOVA_CREATE,
        req.name,
        f"create server {req.name} ({chosen.flavor.name}: {chosen.gpus} {chosen.gpu_kind} GPU) {where}",
        params,
        f"workload:nova-vm/{req.name}",
        host=req.host,
    )


def _baremetal(ctx: PlanContext, req: ProvisionRequest) -> Plan:
    if not req.node or not req.image:
        raise PlanError("provision baremetal needs --node and --image (the image_source Ironic deploys)")
    h = find_host(ctx.snapshot, req.node)
    ir = h.ironic if h is not None else None
    if ir is None:
        ir = next(
            (x.ironic for x in ctx.snapshot.hosts if x.ironic is not None and x.ironic.node_uuid == req.node),
            None,
        )
    if ir is None:
        raise PlanError(f"no Ironic node {req.node!r} in the snapshot")
    blocker = None
    if ir.maintenance:
        blocker = Blocker(
            reason=f"node is in maintenance ({ir.maintenance_reason or 'no reason'}): Ironic refuses "
            "deploys; unset it first",
            kind="state",
            detail="maintenance",
        )
    elif ir.provision_state != "available":
        blocker = Blocker(
            reason=f"node is {ir.provision_state}; a deploy needs it available",
            kind="state",
            detail=ir.provision_state,
        )
    node = ir.name or ir.node_uuid
    return _plan(
        ctx,
        req,
        StepKind.IRONIC_DEPLOY,
        ir.node_uuid,
        f"deploy {req.image} on node {node} (available -> active)",
        {"image_source": req.image, "hostname": req.name},
        node,
        host=node,
        blocker=blocker,
    )


async def _kata(ctx: PlanContext, req: ProvisionRequest) -> Plan:
    if not req.image:
        raise PlanError("provision kata-pod needs --image")
    try:
        classes = await ctx.inventory.runtime_classes()
    except (LayerUnavailable, StepFailed) as exc:
        raise PlanError(str(exc)) from None
    kata = kata_classes(classes)
    if not kata:
        raise PlanError("no Kata runtime class in the cluster (kata-deploy installs them)")
    rc = req.runtime_class
    if rc is None:
        prefer = ["kata-qemu-nvidia-gpu", "kata-qemu"] if req.gpus else ["kata-qemu", "kata-clh"]
        rc = next((p for p in prefer if p in kata), kata[0])
    elif rc not in kata:
        raise PlanError(f"runtime class {rc!r} is not present; present Kata classes: {', '.join(kata)}")
    params = {
        "namespace": req.namespace,
        "name": req.name,
        "image": req.image,
        "runtime_class": rc,
        "gpus": str(req.gpus),
        **req.extra,
    }
    return _plan(
        ctx,
        req,
        StepKind.KUBE_CREATE_POD,
        f"{req.namespace}/{req.name}",
        f"create pod {req.namespace}/{req.name} under runtime class {rc}",
        params,
        f"workload:kata-pod/{req.namespace}/{req.name}",
    )


def _kubevirt(ctx: PlanContext, req: ProvisionRequest) -> Plan:
    if not req.image:
        raise PlanError("provision kubevirt-vm needs --image (a containerDisk image)")
    params = {
        "namespace": req.namespace,
        "name": req.name,
        "image": req.image,
        "cores": str(req.cores),
        "memory": req.memory,
        "gpus": str(req.gpus),
    }
    return _plan(
        ctx,
        req,
        StepKind.KUBEVIRT_CREATE_VM,
        f"{req.namespace}/{req.name}",
        f"create VM {req.namespace}/{req.name} ({req.cores} cores, {req.memory}"
        + (f", {req.gpus} GPU passthrough" if req.gpus else "")
        + "), start it and wait until it runs",
        params,
        f"workload:kubevirt-vm/{req.namespace}/{req.name}",
    )
