"""Planners: drain, undrain and migrate plans, computed from a `Snapshot` plus cheap live lookups
(`Inventory`: a node's pods and the disruption budgets over them now, its KubeVirt VMIs, the
StarlingX host). Nothing here changes anything.

A drain goes, in order: disable the Nova compute service; move its servers (live, or cold for
passed-through GPUs and vGPUs, or "cannot move" with the reason); cordon the Kubernetes node and
evict its pods (DaemonSet pods stay; a pod whose budget has no room now is listed with the
budget's name); migrate its KubeVirt VMs; set Ironic maintenance; lock the StarlingX host last,
with a warning, because its NoExecute taint evicts without regard to budgets. An undrain reverses
it, StarlingX first (the host must be up before anything is let back on it).
"""

from __future__ import annotations

from sovereign_tui.model import Host, Snapshot, Workload
from sovereign_tui.ops.actions.base import LayerUnavailable, StepFailed
from sovereign_tui.ops.inventory import BudgetInfo, PodInfo, VmiInfo
from sovereign_tui.ops.plan import Blocker, Plan, Step, StepKind
from sovereign_tui.ops.plan_context import PlanContext, PlanError, find_host

MOVABLE_STATES = frozenset({"ACTIVE", "PAUSED", "SHUTOFF"})
LOCK_WARNING = (
    "locking taints the Kubernetes node services=disabled:NoExecute, which evicts whatever is left "
    "without honouring disruption budgets"
)


def _servers_on(snapshot: Snapshot, host: str) -> list[Workload]:
    return sorted(
        (w for w in snapshot.workloads if w.kind == "nova-vm" and w.host == host), key=lambda w: w.name
    )


# --- drain -----------------------------------------------------------------------------------


async def plan_drain(ctx: PlanContext, host: str, *, force: bool = False) -> Plan:
    h = find_host(ctx.snapshot, host)
    steps: list[Step] = []
    warnings: list[str] = []
    known = False
    if h is not None and h.nova is not None and ctx.layer_on("nova"):
        known = True
        steps += _nova_drain(ctx, h, warnings)
    kube = await _kube_drain(ctx, host, warnings)
    known = known or kube is not None
    steps += kube or []
    if h is not None and h.ironic is not None and ctx.layer_on("ironic"):
        known = True
        ir = h.ironic
        warn = None
        if ir.instance_uuid and ir.provision_state == "active":
            warn = (
                f"bare-metal instance {ir.instance_uuid} keeps running; maintenance stops Ironic acting on it"
            )
        steps.append(
            ctx.step(
                StepKind.IRONIC_MAINTENANCE_ON,
                ir.node_uuid,
                ir.name or host,
                f"set maintenance on node {ir.name or host}",
                host=host,
                touches=(f"ironic:node:{ir.node_uuid}",),
                params={"reason": f"drained by sovereign-tui ({host})"},
                warning=warn,
            )
        )
    stx = await _stx_host(ctx, h, host, warnings)
    if stx is not None:
        known = True
        steps.append(
            ctx.step(
                StepKind.STX_LOCK,
                stx[0],
                host,
                f"{'force-' if force else ''}lock StarlingX host {host}",
                host=host,
                touches=(f"starlingx:ihost:{stx[0]}", f"kubernetes:node:{host}"),
                warning=LOCK_WARNING,
                params={"force": "true" if force else "false"},
            )
        )
    if not known:
        raise PlanError(
            f"host {host!r} is not known to any configured layer (check the name; `sovereign-tui export`)"
        )
    return ctx.plan(
        "drain", host, steps, leases=[host], warnings=warnings, params={"force": str(force).lower()}
    )


def _nova_drain(ctx: PlanContext, h: Host, warnings: list[str]) -> list[Step]:
    nova = h.nova
    assert nova is not None
    service = nova.service_id or nova.hypervisor_id
    steps = [
        ctx.step(
            StepKind.NOVA_DISABLE,
            service,
            h.name,
            f"disable nova-compute on {h.name}",
            host=h.name,
            touches=(f"nova:service:{service}",),
            params={"host": h.name, "reason": f"drained by sovereign-tui ({h.name})"},
        )
    ]
    if nova.state != "up":
        warnings.append(
            f"nova-compute on {h.name} is {nova.state}: migrations off it will be refused (evacuate instead)"
        )
    moves = [_move_server(ctx, w, dest=None, cold=False) for w in _servers_on(ctx.snapshot, h.name)]
    # live migrations first, together (they run concurrently), then cold ones, then what stays
    order = {StepKind.NOVA_LIVE_MIGRATE: 0, StepKind.NOVA_COLD_MIGRATE: 1}
    return steps + sorted(moves, key=lambda s: order.get(s.kind, 2))


def _move_server(ctx: PlanContext, w: Workload, *, dest: str | None, cold: bool) -> Step:
    source = w.host or ""
    params = {"source": source, **({"dest": dest} if dest else {})}
    touches = (f"nova:server:{w.id}", f"nova:host:{source}") + ((f"nova:host:{dest}",) if dest else ())
    where = f"to {dest}" if dest else "(the scheduler chooses)"

    def stays(blocker: Blocker) -> Step:
        return ctx.step(
            StepKind.NOVA_CANNOT_MOVE,
            w.id,
            w.name,
            f"server {w.name} stays on {source}",
            host=source,
            touches=touches,
            params=params,
            blocker=blocker,
        )

    if w.state not in MOVABLE_STATES:
        return stays(
            Blocker(
                reason=f"server is {w.state}; only ACTIVE, PAUSED or SHUTOFF servers move",
                kind="state",
                detail=w.state,
            )
        )
    gpu = {"passthrough": "PCI passthrough", "vgpu": "vGPU"}.get(w.gpu_kind or "")
    if gpu and ctx.settings.gpu_vm_policy == "refuse":
        return stays(
            Blocker(
                reason=f"{gpu} GPUs cannot live-migrate and ops.gpu_vm_policy is 'refuse'",
                kind="cannot-move",
                detail=w.gpu_kind,
            )
        )
    if (gpu or cold) and w.state == "PAUSED":
        return ctx.step(
            StepKind.NOVA_CANNOT_MOVE,
            w.id,
            w.name,
            f"server {w.name} stays on {source}",
            host=source,
            touches=touches,
            params=params,
            blocker=Blocker(
                reason=f"{gpu + ' GPUs need' if gpu else 'it needs'} a cold migration, which Nova "
                "refuses while the server is PAUSED: unpause or stop it first",
                kind="cannot-move",
                detail=w.gpu_kind or w.state,
            ),
        )
    if gpu or cold or w.state == "SHUTOFF":
        why = f"{gpu} GPUs cannot live-migrate: the guest restarts" if gpu else "the guest restarts"
        if w.state == "SHUTOFF":
            why = "the server is shut off"
        return ctx.step(
            StepKind.NOVA_COLD_MIGRATE,
            w.id,
            w.name,
            f"cold-migrate server {w.name} {where}, confirm",
            host=source,
            touches=touches,
            params=params,
            warning=why,
        )
    return ctx.step(
        StepKind.NOVA_LIVE_MIGRATE,
        w.id,
        w.name,
        f"live-migrate server {w.name} {where}",
        host=source,
        touches=touches,
        params=params,
        group=f"live:{source}",
    )


async def _kube_drain(ctx: PlanContext, host: str, warnings: list[str]) -> list[Step] | None:
    if not ctx.layer_on("kubernetes"):
        return None
    try:
        node = await ctx.inventory.kube_node(host)
        if node is None:
            return None
        pods = await ctx.inventory.pods_on(host)
        budgets = await ctx.inventory.budgets()
    except (LayerUnavailable, StepFailed) as exc:
        warnings.append(f"{exc}: Kubernetes pods on {host} are not part of this plan")
        return None
    vmis: list[VmiInfo] = []
    if ctx.layer_on("kubevirt"):
        try:
            vmis = await ctx.inventory.vmis_on(host)
        except (LayerUnavailable, StepFailed) as exc:
            warnings.append(f"{exc}: KubeVirt VMs on {host} are not part of this plan")
    steps = [
        ctx.step(
            StepKind.KUBE_CORDON,
            host,
            host,
            f"cordon node {host}",
            host=host,
            touches=(f"kubernetes:node:{host}",),
        )
    ]
    launchers = {p.launcher_of: p for p in pods if p.launcher_of and p.phase not in ("Succeeded", "Failed")}
    handled: set[str] = set()
    vm_steps = []
    for v in sorted(vmis, key=lambda v: v.key):
        pod = launchers.get(v.name)
        vm_steps.append(_vmi_step(ctx, v, host, pod))
        if pod is not None:
            handled.add(pod.key)
    evictions, daemons = [], 0
    for p in sorted(pods, key=lambda p: p.key):
        if p.key in handled or p.phase in ("Succeeded", "Failed") or p.owner_kind == "Node":
            continue
        if p.owner_kind == "DaemonSet":
            daemons += 1
            continue
        evictions.append(_evict_step(ctx, p, host, budgets))
    if daemons:
        warnings.append(f"{daemons} DaemonSet pods stay on {host} (drains skip them)")
    return steps + evictions + vm_steps


def budget_blocker(pod: PodInfo, budgets: list[BudgetInfo]) -> Blocker | None:
    """What a disruption budget says about evicting `pod` now (None when nothing stands in the way)."""
    matching = [b for b in budgets if b.selects(pod)]
    if len(matching) > 1:
        names = ", ".join(b.name for b in matching)
        return Blocker(
            reason=f"several disruption budgets ({names}) select it: the eviction API refuses (500)",
            kind="several-budgets",
            detail=names,
        )
    if matching and matching[0].disruptions_allowed <= 0:
        b = matching[0]
        return Blocker(
            reason=f"disruption budget {b.name} allows no disruption now (needs {b.desired_healthy} healthy, "
            f"has {b.current_healthy}); retried until the step's timeout",
            kind="budget",
            hard=False,
            detail=b.name,
        )
    return None


def _evict_step(
    ctx: PlanContext, p: PodInfo, host: str, budgets: list[BudgetInfo], *, note: str | None = None
) -> Step:
    blocker = budget_blocker(p, budgets)
    warning = note
    if warning is None and p.owner_kind is None:
        warning = "a bare pod (no controller): nothing recreates it elsewhere"
    return ctx.step(
        StepKind.KUBE_EVICT,
        p.key,
        p.key,
        f"evict pod {p.key}",
        host=host,
        touches=(f"kubernetes:pod:{p.key}",),
        params={"node": host, "uid": p.uid},
        blocker=blocker,
        warning=warning,
        group=f"evict:{host}",
    )


def _vmi_step(ctx: PlanContext, v: VmiInfo, host: str, launcher: PodInfo | None) -> Step:
    touches = (f"kubevirt:vmi:{v.key}",)
    if v.migratable and v.eviction_strategy == "LiveMigrate" and launcher is not None:
        return ctx.step(
            StepKind.KUBEVIRT_EVACUATE,
            v.key,
            v.key,
            f"evacuate VM {v.key}: evict its launcher pod, KubeVirt live-migrates it",
            host=host,
            touches=(*touches, f"kubernetes:pod:{launcher.key}"),
            params={"node": host, "pod": launcher.key},
            group=f"kubevirt:{host}",
        )
    if v.migratable:
        return ctx.step(
            StepKind.KUBEVIRT_MIGRATE,
            v.key,
            v.key,
            f"live-migrate VM {v.key}",
            host=host,
            touches=touches,
            params={"source": host},
            group=f"kubevirt:{host}",
        )
    why = v.why_not or "not live-migratable"
    if v.eviction_strategy in ("LiveMigrate", "External") or launcher is None:
        return ctx.step(
            StepKind.KUBEVIRT_MIGRATE,
            v.key,
            v.key,
            f"VM {v.key} stays on {host}",
            host=host,
            touches=touches,
            params={"source": host},
            blocker=Blocker(reason=f"not live-migratable: {why}", kind="not-migratable", detail=why),
        )
    return ctx.step(
        StepKind.KUBE_EVICT,
        launcher.key,
        launcher.key,
        f"evict launcher pod of VM {v.key}: the VM stops and starts on another node",
        host=host,
        touches=(*touches, f"kubernetes:pod:{launcher.key}"),
        params={"node": host, "uid": launcher.uid},
        group=f"evict:{host}",
        warning=f"not live-migratable ({why}): the VM restarts elsewhere",
    )


async def _stx_host(
    ctx: PlanContext, h: Host | None, host: str, warnings: list[str]
) -> tuple[str, str] | None:
    """(uuid, administrative) of the StarlingX host, from the snapshot or a live lookup."""
    if not ctx.layer_on("starlingx"):
        return None
    if h is not None and h.starlingx is not None:
        return h.starlingx.uuid, h.starlingx.administrative
    try:
        rec = await ctx.inventory.stx_host(host)
    except (LayerUnavailable, StepFailed) as exc:
        ctx.notes.append(f"{exc}: the StarlingX host (if any) is not part of this plan")
        return None
    return (str(rec["uuid"]), str(rec.get("administrative"))) if rec else None


# --- undrain ---------------------------------------------------------------------------------


async def plan_undrain(ctx: PlanContext, host: str) -> Plan:
    h = find_host(ctx.snapshot, host)
    steps: list[Step] = []
    warnings: list[str] = []
    stx = await _stx_host(ctx, h, host, warnings)
    if stx is not None:
        steps.append(
            ctx.step(
                StepKind.STX_UNLOCK,
                stx[0],
                host,
                f"unlock StarlingX host {host}",
                host=host,
                touches=(f"starlingx:ihost:{stx[0]}",),
                warning="unlocking reboots the host" if stx[1] == "locked" else None,
            )
        )
    if h is not None and h.ironic is not None and ctx.layer_on("ironic"):
        ir = h.ironic
        steps.append(
            ctx.step(
                StepKind.IRONIC_MAINTENANCE_OFF,
                ir.node_uuid,
                ir.name or host,
                f"unset maintenance on node {ir.name or host}",
                host=host,
                touches=(f"ironic:node:{ir.node_uuid}",),
            )
        )
    if ctx.layer_on("kubernetes"):
        try:
            node = await ctx.inventory.kube_node(host)
        except (LayerUnavailable, StepFailed) as exc:
            warnings.append(f"{exc}: the Kubernetes node (if any) is not part of this plan")
            node = None
        if node is not None:
            steps.append(
                ctx.step(
                    StepKind.KUBE_UNCORDON,
                    host,
                    host,
                    f"uncordon node {host}",
                    host=host,
                    touches=(f"kubernetes:node:{host}",),
                )
            )
    if h is not None and h.nova is not None and ctx.layer_on("nova"):
        service = h.nova.service_id or h.nova.hypervisor_id
        steps.append(
            ctx.step(
                StepKind.NOVA_ENABLE,
                service,
                host,
                f"enable nova-compute on {host}",
                host=host,
                touches=(f"nova:service:{service}",),
                params={"host": host},
            )
        )
    if not steps:
        raise PlanError(f"host {host!r} is not known to any configured layer (check the name)")
    return ctx.plan("undrain", host, steps, leases=[host], warnings=warnings)


# --- migrate ---------------------------------------------------------------------------------


async def plan_migrate(ctx: PlanContext, workload: str, *, to: str | None = None, cold: bool = False) -> Plan:
    w = next((w for w in ctx.snapshot.workloads if workload in (w.id, w.name) and w.kind == "nova-vm"), None)
    if w is not None:
        if to is not None and to == w.host:
            raise PlanError(f"server {w.name} is already on {to}; choose another host")
        step = _move_server(ctx, w, dest=to, cold=cold)
        leases = [h for h in (w.host, to) if h]
        return ctx.plan(
            "migrate", w.name, [step], leases=leases, params={"to": to or "", "cold": str(cold).lower()}
        )
    other = next((w for w in ctx.snapshot.workloads if workload in (w.id, w.name)), None)
    if other is not None and other.kind == "baremetal":
        raise PlanError(f"{workload} is a bare-metal instance: it runs on its own machine and cannot migrate")
    ns, slash, name = workload.partition("/")
    if not slash:
        raise PlanError(f"no server {workload!r} in the snapshot; for Kubernetes give NAMESPACE/NAME")
    try:
        vmi = await ctx.inventory.vmi(ns, name) if ctx.layer_on("kubevirt") else None
        pod = None if vmi is not None else await ctx.inventory.pod(ns, name)
        budgets = await ctx.inventory.budgets() if pod is not None else []
    except (LayerUnavailable, StepFailed) as exc:
        raise PlanError(str(exc)) from None
    if vmi is not None:
        host = vmi.node or ""
        if to is not None and to == host:
            raise PlanError(f"VM {workload} is already on {to}; choose another node")
        blocker = (
            None
            if vmi.migratable
            else Blocker(reason=f"not live-migratable: {vmi.why_not}", kind="not-migratable")
        )
        step = ctx.step(
            StepKind.KUBEVIRT_MIGRATE,
            vmi.key,
            vmi.key,
            f"live-migrate VM {vmi.key} {'to ' + to if to else '(the scheduler chooses)'}",
            host=host,
            touches=(f"kubevirt:vmi:{vmi.key}",),
            params={"source": host, **({"dest": to} if to else {})},
            blocker=blocker,
        )
        return ctx.plan("migrate", workload, [step], leases=[host], params={"to": to or ""})
    if pod is not None:
        if to is not None:
            raise PlanError(
                "a pod cannot be sent to a chosen node: eviction lets the scheduler choose; leave out --to"
            )
        if pod.owner_kind is None:
            raise PlanError(f"pod {workload} has no controller: evicting it would delete it, not move it")
        host = pod.node or ""
        step = _evict_step(ctx, pod, host, budgets)
        return ctx.plan("migrate", workload, [step], leases=[host] if host else [])
    raise PlanError(f"no server, KubeVirt VM or pod named {workload!r}")
