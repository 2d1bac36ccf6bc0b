"""Who holds each GPU: a store enricher that joins what the sources say.

A GPU keeps the first holder found, in this order:

1. its own source's: dcgm-exporter's pod labels, ``pod:<namespace>/<pod>``;
2. Placement: the consumer of its PCI device's allocation (matched on host and PCI address):
   ``nova-vm:<server name>`` (the server's id when Nova does not report it), or
   ``nova-migration:<uuid>`` for what a migration holds on the source of a move; a board shared
   as vGPUs by several servers lists them all. The compute node is the host whose Nova
   hypervisor id is the provider tree's root, else the host named like it (or its short name).
   Allocations from a Placement gone quiet still count, as the last known;
3. a pod's ``nvidia.com/gpu`` request, only where it can be no one else's: on the pod's node, the
   GPUs nobody holds are exactly as many as the one running pod asks for, and no other pod there
   (not finished, not already named by a holder) requests GPUs. Anything less certain is left
   unattributed: a guess would send an operator after the wrong workload;
4. bare metal: a host Ironic deployed an instance on belongs to it whole,
   ``baremetal:<instance name>`` (the instance UUID when no workload is known for it).

Workloads found holding GPUs list them in ``gpu_uuids``; the busy counts of hosts follow.
"""

from __future__ import annotations

import re
from collections import defaultdict

import msgspec

from sovereign_tui.model import Gpu, GpuAllocation, Snapshot, Workload

PREFIX = "baremetal:"
NOVA = "nova-vm:"
MIGRATION = "nova-migration:"
POD = "pod:"
POD_KINDS = ("pod", "kata-pod")
_PCI = re.compile(r"(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])")
_FINISHED = ("Succeeded", "Failed")


def pci_address(text: str | None) -> str | None:
    """A PCI address in one spelling, ``0000:18:00.0``, whichever the source used (NVML and
    nvidia-smi's ``00000000:18:00.0``, Nova's ``0000:18:00.0``, either case); None if not one."""
    if not text:
        return None
    m = _PCI.fullmatch(text.strip().lower())
    if m is None:
        return None
    domain, bus, device, function = m.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def pod_holder(w: Workload) -> str:
    """How a pod is named as a holder, by dcgm-exporter and here alike."""
    return f"{POD}{w.owner}/{w.name}" if w.owner else f"{POD}{w.name}"


def _phase(w: Workload) -> str:
    return w.state.split(" ", 1)[0]


class _Joiner:
    """One pass over a snapshot: the holders found so far and the workloads found holding."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.gpus = snapshot.gpus
        self.holders: list[str | None] = [g.holder for g in snapshot.gpus]
        self.found: defaultdict[int, list[str]] = defaultdict(list)
        """id() of a workload -> uuids of the GPUs found held by it."""

    def hold(self, i: int, holder: str, *workloads: Workload) -> None:
        self.holders[i] = holder
        for w in workloads:
            self.found[id(w)].append(self.gpus[i].uuid)

    # --- 1. the sources' own holders ------------------------------------------------------------

    def pods_named(self) -> None:
        """Pods named by dcgm hold their GPUs (the holders stay as the source wrote them)."""
        pods = {pod_holder(w): w for w in self.snap.workloads if w.kind in POD_KINDS}
        if not pods:
            return
        for i, holder in enumerate(self.holders):
            for name in holder.split(", ") if holder else ():
                w = pods.get(name)
                if w is not None:
                    self.found[id(w)].append(self.gpus[i].uuid)

    # --- 2. Placement ---------------------------------------------------------------------------

    def placement(self) -> None:
        allocations = self.snap.gpu_allocations
        if not allocations:
            return
        by_hypervisor = {h.nova.hypervisor_id: h.name for h in self.snap.hosts if h.nova is not None}
        names = {h.name for h in self.snap.hosts}
        servers = {w.id: w for w in self.snap.workloads if w.kind == "nova-vm"}
        devices: defaultdict[tuple[str, str], list[GpuAllocation]] = defaultdict(list)
        for a in allocations:
            host = by_hypervisor.get(a.hypervisor_id) or _host_named(a.hypervisor, names)
            devices[(host, a.bus_id)].append(a)
        for i, g in enumerate(self.gpus):
            addr = pci_address(g.bus_id)
            held = devices.get((g.host, addr)) if addr is not None and self.holders[i] is None else None
            if not held:
                continue
            labels: list[str] = []
            holding: dict[int, Workload] = {}
            for a in held:
                w = servers.get(a.consumer)
                if w is not None:
                    holding[id(w)] = w
                    label = NOVA + w.name
                elif a.consumer_type == "MIGRATION":
                    label = MIGRATION + a.consumer
                else:
                    label = NOVA + a.consumer
                if label not in labels:
                    labels.append(label)
            self.hold(i, ", ".join(sorted(labels)), *holding.values())

    # --- 3. pods by their GPU request -----------------------------------------------------------

    def pods_requesting(self) -> None:
        pods: defaultdict[str, list[Workload]] = defaultdict(list)
        for w in self.snap.workloads:
            if w.kind in POD_KINDS and w.host and w.gpus > 0 and _phase(w) not in _FINISHED:
                pods[w.host].append(w)
        if not pods:
            return
        rows: defaultdict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.gpus):
            if g.host in pods:
                rows[g.host].append(i)
        for host, idxs in rows.items():
            if any(self.gpus[i].mig_instance is not None for i in idxs):
                continue  # MIG instances are requested by profile, not as nvidia.com/gpu
            free = [i for i in idxs if self.holders[i] is None]
            named = {part for i in idxs for part in (self.holders[i] or "").split(", ") if part}
            left = [w for w in pods[host] if pod_holder(w) not in named]
            if not free or len(left) != 1:
                continue
            w = left[0]
            if _phase(w) == "Running" and w.gpus == len(free):
                for i in free:
                    self.hold(i, pod_holder(w), w)

    # --- 4. bare metal ----------------------------------------------------------------------------

    def baremetal(self) -> None:
        instances = _instances(self.snap)
        if not instances:
            return
        for i, g in enumerate(self.gpus):
            found = instances.get(g.host)
            if found is not None and self.holders[i] is None:
                name, w = found
                self.hold(i, PREFIX + name, *((w,) if w is not None else ()))

    # --- the result -------------------------------------------------------------------------------

    def result(self) -> Snapshot:
        snap = self.snap
        changed: set[str] = set()
        gpus: list[Gpu] = []
        for g, holder in zip(snap.gpus, self.holders, strict=True):
            if holder != g.holder:
                g = msgspec.structs.replace(g, holder=holder)
                changed.add(g.host)
            gpus.append(g)
        workloads = snap.workloads
        if self.found:
            workloads = tuple(self._with_gpus(w) for w in snap.workloads)
        if not changed and workloads == snap.workloads:
            return snap
        hosts = snap.hosts
        if changed:
            busy: dict[str, int] = dict.fromkeys(changed, 0)
            for g in gpus:
                if g.host in busy and _busy(g):
                    busy[g.host] += 1
            hosts = tuple(
                msgspec.structs.replace(h, gpus_busy=busy[h.name]) if h.name in busy else h
                for h in snap.hosts
            )
        return msgspec.structs.replace(snap, gpus=tuple(gpus), hosts=hosts, workloads=workloads)

    def _with_gpus(self, w: Workload) -> Workload:
        uuids = self.found.get(id(w))
        if not uuids:
            return w
        merged = tuple(dict.fromkeys((*w.gpu_uuids, *uuids)))
        return w if merged == w.gpu_uuids else msgspec.structs.replace(w, gpu_uuids=merged)


def _host_named(name: str, names: set[str]) -> str:
    """The host a compute node's name stands for: itself, else its short name (Nova's hypervisor
    hostname is often the FQDN of the host the other layers know by its short name)."""
    if name in names:
        return name
    short = name.split(".", 1)[0]
    return short if short in names else name


def _instances(snapshot: Snapshot) -> dict[str, tuple[str, Workload | None]]:
    """Host name -> (instance name, its workload), for every host with a deployed Ironic instance."""
    by_id: dict[str, Workload] = {}
    by_host: dict[str, Workload] = {}
    for w in snapshot.workloads:
        if w.kind != "baremetal":
            continue
        by_id.setdefault(w.id, w)
        if w.host:
            by_host.setdefault(w.host, w)
    found: dict[str, tuple[str, Workload | None]] = {}
    for host in snapshot.hosts:
        instance = host.ironic.instance_uuid if host.ironic is not None else None
        if not instance:
            continue
        workload = by_id.get(instance) or by_host.get(host.name)
        found[host.name] = (workload.name, workload) if workload is not None else (instance, None)
    return found


def _busy(gpu: Gpu) -> bool:
    """The store's definition of a busy GPU (processes, utilisation or a holder)."""
    return bool(gpu.processes) or (gpu.util_gpu_pct or 0) > 0 or gpu.holder is not None


def attribute(snapshot: Snapshot) -> Snapshot:
    """`snapshot` with the holders of its GPUs joined from every source (and the hosts' busy
    counts and the workloads' GPU lists to match); the same object when nothing changes."""
    if not snapshot.gpus:
        return snapshot
    join = _Joiner(snapshot)
    join.pods_named()
    join.placement()
    join.pods_requesting()
    join.baremetal()
    return join.result()
