"""Which object an action on a row acts on, and what a form may offer: the engine's name for a
workload, the workload that holds a GPU, where a workload may be sent, which Ironic nodes may be
deployed. Pure functions of the snapshot; no UI toolkit."""

from __future__ import annotations

from sovereign_tui.model import Gpu, Snapshot, Workload


def workload_ref(w: Workload) -> str:
    """How the engine names a workload: a Nova server's id, NAMESPACE/NAME on Kubernetes."""
    if w.kind in ("pod", "kata-pod", "kubevirt-vm"):
        return f"{w.owner}/{w.name}" if w.owner else w.name
    return w.id


def workload_name(w: Workload) -> str:
    """How the operator knows a workload: NAMESPACE/NAME on Kubernetes, else its name."""
    return f"{w.owner}/{w.name}" if w.kind in ("pod", "kata-pod", "kubevirt-vm") and w.owner else w.name


def gpu_holder(snapshot: Snapshot, gpu: Gpu) -> Workload | None:
    """The workload that holds `gpu`: the one listing its uuid, else the one its holder names."""
    for w in snapshot.workloads:
        if gpu.uuid in w.gpu_uuids:
            return w
    if not gpu.holder:
        return None
    for w in snapshot.workloads:
        names = {
            w.name,
            f"{w.kind}/{w.name}",
            f"{w.kind}/{w.owner}/{w.name}",
            f"{w.kind}:{w.name}",  # attribution's spellings: nova-vm:NAME, baremetal:NAME,
            f"{w.kind}:{w.owner}/{w.name}",  # pod:NS/NAME (a Kata pod too, as dcgm names it)
            f"pod:{w.owner}/{w.name}" if w.kind in ("pod", "kata-pod") else w.name,
            workload_ref(w),
        }
        if gpu.holder in names:
            return w
    return None


def migrate_destinations(snapshot: Snapshot, w: Workload) -> list[str]:
    """Hosts a workload may be sent to by name: enabled, up hypervisors for a Nova server, ready,
    schedulable nodes for a KubeVirt VM; none for a pod (the scheduler places evicted pods)."""
    if w.kind == "nova-vm":
        hosts = [
            h.name
            for h in snapshot.hosts
            if h.nova is not None and h.nova.state == "up" and h.nova.status == "enabled"
        ]
    elif w.kind == "kubevirt-vm":
        hosts = [
            h.name
            for h in snapshot.hosts
            if h.kubernetes is not None and h.kubernetes.ready and not h.kubernetes.unschedulable
        ]
    else:
        hosts = []
    return sorted(h for h in hosts if h != w.host)


def available_nodes(snapshot: Snapshot) -> list[str]:
    """Ironic nodes a deploy may go to: available and not in maintenance."""
    return sorted(
        h.ironic.name or h.ironic.node_uuid
        for h in snapshot.hosts
        if h.ironic is not None and h.ironic.provision_state == "available" and not h.ironic.maintenance
    )
