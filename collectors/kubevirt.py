"""KubeVirt: VirtualMachines as workloads, placed by their instances, with migrations in flight.

VirtualMachines, VirtualMachineInstances and VirtualMachineInstanceMigrations are watched like the
core collections (`kube_watch`, sharing the cluster's session). A VM's host is its VMI's
``status.nodeName``; its state is KubeVirt's ``printableStatus`` (the VMI's phase for a VMI
without a VM). A migration in flight, the last one's outcome and the ``LiveMigratable`` condition
are in the workload's detail. The workloads are rebuilt only when one of the three changed.
"""

from __future__ import annotations

import msgspec

from collectors.base import Capability
from collectors.kube_client import KubeSession
from collectors.kube_watch import Informer, KubeObject, Resource, SessionCollector, ensure_all, informer
from sovereign_tui.model import Observation, Workload
from sovereign_tui.poller import PollContext

FINAL = ("Succeeded", "Failed")


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None


class _Named(msgspec.Struct):
    name: str = ""


class _Devices(msgspec.Struct, rename="camel"):
    gpus: list[_Named] = msgspec.field(default_factory=list)
    host_devices: list[_Named] = msgspec.field(default_factory=list)


class _Domain(msgspec.Struct):
    devices: _Devices = msgspec.field(default_factory=_Devices)


class _VmiSpec(msgspec.Struct, rename="camel"):
    domain: _Domain = msgspec.field(default_factory=_Domain)
    eviction_strategy: str | None = None


class _Template(msgspec.Struct):
    spec: _VmiSpec = msgspec.field(default_factory=_VmiSpec)


class _VmSpec(msgspec.Struct, rename="camel"):
    run_strategy: str | None = None
    running: bool | None = None
    instancetype: _Named | None = None
    template: _Template = msgspec.field(default_factory=_Template)


class _VmStatus(msgspec.Struct, rename="camel"):
    printable_status: str | None = None
    conditions: list[_Condition] = msgspec.field(default_factory=list)


class VirtualMachine(KubeObject):
    spec: _VmSpec = msgspec.field(default_factory=_VmSpec)
    status: _VmStatus = msgspec.field(default_factory=_VmStatus)


class _MigrationState(msgspec.Struct, rename="camel"):
    source_node: str | None = None
    target_node: str | None = None
    completed: bool = False
    failed: bool = False
    abort_requested: bool = False
    failure_reason: str | None = None
    start_timestamp: str | None = None
    end_timestamp: str | None = None


class _VmiStatus(msgspec.Struct, rename="camel"):
    phase: str | None = None
    node_name: str | None = None
    conditions: list[_Condition] = msgspec.field(default_factory=list)
    migration_state: _MigrationState | None = None
    evacuation_node_name: str | None = None


class VirtualMachineInstance(KubeObject):
    spec: _VmiSpec = msgspec.field(default_factory=_VmiSpec)
    status: _VmiStatus = msgspec.field(default_factory=_VmiStatus)


class _MigrationSpec(msgspec.Struct, rename="camel"):
    vmi_name: str = ""


class _MigrationStatus(msgspec.Struct):
    phase: str | None = None


class Migration(KubeObject):
    spec: _MigrationSpec = msgspec.field(default_factory=_MigrationSpec)
    status: _MigrationStatus = msgspec.field(default_factory=_MigrationStatus)


VMS = Resource("/apis/kubevirt.io/v1/virtualmachines", "virtualmachines", VirtualMachine)
VMIS = Resource(
    "/apis/kubevirt.io/v1/virtualmachineinstances", "virtualmachineinstances", VirtualMachineInstance
)
MIGRATIONS = Resource(
    "/apis/kubevirt.io/v1/virtualmachineinstancemigrations", "virtualmachineinstancemigrations", Migration
)


def live_migratable(conditions: list[_Condition]) -> str | None:
    """``True``, or ``False: <reason>`` from the LiveMigratable condition; None when absent."""
    for c in conditions:
        if c.type == "LiveMigratable":
            if c.status == "False":
                return f"False: {c.reason or c.message or 'no reason given'}"
            return c.status
    return None


def _migration_text(state: _MigrationState) -> str:
    route = f"{state.source_node or '?'} -> {state.target_node or '?'}"
    if state.completed:
        return f"completed {route}"
    if state.failed:
        why = "aborted" if state.abort_requested else (state.failure_reason or "failed")
        return f"failed {route} ({why})"
    return f"in progress {route}"


def vm_workload(
    source: str,
    now: float,
    vm: VirtualMachine | None,
    vmi: VirtualMachineInstance | None,
    migration: Migration | None,
) -> Workload:
    """One VM (or a VMI without a VM) as a workload."""
    head = vm if vm is not None else vmi
    assert head is not None
    md = head.metadata
    spec = vm.spec.template.spec if vm is not None else (vmi.spec if vmi is not None else _VmiSpec())
    devices = spec.domain.devices
    gpus = len(devices.gpus) + len(devices.host_devices)
    detail: dict[str, str] = {}
    state = "Unknown"
    if vm is not None:
        state = vm.status.printable_status or ("Running" if vmi is not None else "Stopped")
        strategy = vm.spec.run_strategy or (
            None if vm.spec.running is None else ("Always" if vm.spec.running else "Halted")
        )
        if strategy:
            detail["run_strategy"] = strategy
    conditions = vm.status.conditions if vm is not None else []
    if vmi is not None:
        st = vmi.status
        if vm is None:
            state = st.phase or "Unknown"
        if st.phase:
            detail["vmi_phase"] = st.phase
        conditions = st.conditions or conditions
        if st.migration_state is not None:
            detail["last_migration" if migration is None else "migration_state"] = _migration_text(
                st.migration_state
            )
        if st.evacuation_node_name:
            detail["evacuating_from"] = st.evacuation_node_name
    migratable = live_migratable(conditions)
    if migratable is not None:
        detail["live_migratable"] = migratable
    if spec.eviction_strategy:
        detail["eviction_strategy"] = spec.eviction_strategy
    if migration is not None:
        detail["migration"] = f"{migration.metadata.name}: {migration.status.phase or 'Pending'}"
    return Workload(
        source=source,
        observed_at=now,
        kind="kubevirt-vm",
        id=md.uid,
        name=md.name,
        state=state,
        host=(vmi.status.node_name or None) if vmi is not None else None,
        owner=md.namespace or None,
        gpus=gpus,
        flavor=vm.spec.instancetype.name if vm is not None and vm.spec.instancetype is not None else None,
        gpu_kind="passthrough" if gpus else None,
        detail=detail,
    )


class KubevirtCollector(SessionCollector):
    name = "kubevirt"
    capabilities: frozenset[Capability] = frozenset({"read", "migrate"})

    def __init__(
        self, session: KubeSession, *, interval_s: float = 10.0, timeout_s: float | None = None
    ) -> None:
        super().__init__(session, interval_s=interval_s, timeout_s=timeout_s)
        self.vms: Informer[VirtualMachine] = informer(session, VMS)
        self.vmis: Informer[VirtualMachineInstance] = informer(session, VMIS)
        self.migrations: Informer[Migration] = informer(session, MIGRATIONS)
        self._seen: tuple[int, int, int] | None = None
        self._workloads: tuple[Workload, ...] = ()
        self._observed: dict[str, tuple[object, Workload]] = {}

    def _build(self, now: float) -> tuple[Workload, ...]:
        vmis = {(v.metadata.namespace, v.metadata.name): v for v in self.vmis.items.values()}
        active: dict[tuple[str, str], Migration] = {}
        for m in self.migrations.items.values():
            if (m.status.phase or "Pending") not in FINAL:
                active[(m.metadata.namespace, m.spec.vmi_name)] = m
        out: list[Workload] = []
        observed: dict[str, tuple[object, Workload]] = {}
        pairs: list[tuple[VirtualMachine | None, VirtualMachineInstance | None]] = []
        for one in self.vms.items.values():
            pairs.append((one, vmis.pop((one.metadata.namespace, one.metadata.name), None)))
        pairs.extend((None, lone) for lone in vmis.values())
        for vm, vmi in pairs:
            head = vm if vm is not None else vmi
            assert head is not None
            key = (head.metadata.namespace, head.metadata.name)
            mig = active.get(key)
            # an unchanged VM keeps the workload (and the time) it was first observed with
            versions = (vm, vmi, mig)
            known = self._observed.get(head.metadata.uid)
            if known is not None and _same(known[0], versions):
                w = known[1]
            else:
                w = vm_workload(self.target_id, now, vm, vmi, mig)
            observed[head.metadata.uid] = (versions, w)
            out.append(w)
        self._observed = observed
        return tuple(out)

    async def poll(self, ctx: PollContext) -> Observation:
        await ensure_all(ctx, [self.vms, self.vmis, self.migrations])
        seen = (self.vms.version, self.vmis.version, self.migrations.version)
        if seen != self._seen:
            self._workloads = self._build(ctx.clock.time())
            self._seen = seen
        return Observation(
            workloads=self._workloads,
            health_detail={
                f"watch {i.resource.kind}": i.state() for i in (self.vms, self.vmis, self.migrations)
            },
        )


def _same(a: object, b: tuple[object, ...]) -> bool:
    """The same decoded objects (identity: an event always brings a new one)."""
    return isinstance(a, tuple) and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
