"""Who holds the GPUs of a bare-metal host: a store enricher.

A host Ironic has deployed an instance on belongs to that instance whole, so every GPU on it that
no collector attributed is held by it. The holder is ``baremetal:<instance name>``: the name of the
``baremetal`` workload Ironic reports for the instance (the one whose id is the node's
instance_uuid, else the one on that host), or the instance UUID where no such workload is known.
A GPU that already has a holder keeps it.
"""

from __future__ import annotations

import msgspec

from sovereign_tui.model import Gpu, Host, Snapshot, Workload

PREFIX = "baremetal:"


def _instance_names(snapshot: Snapshot) -> dict[str, str]:
    """Host name -> instance name, for every host with a deployed Ironic instance."""
    by_id: dict[str, Workload] = {}
    by_host: dict[str, Workload] = {}
    for w in snapshot.workloads:
        if w.kind != "baremetal":
            continue
        by_id.setdefault(w.id, w)
        if w.host:
            by_host.setdefault(w.host, w)
    names: dict[str, str] = {}
    for host in snapshot.hosts:
        instance = host.ironic.instance_uuid if host.ironic is not None else None
        if not instance:
            continue
        workload = by_id.get(instance) or by_host.get(host.name)
        names[host.name] = workload.name if workload is not None else instance
    return names


def _busy(gpu: Gpu) -> bool:
    """The store's definition of a busy GPU (processes, utilisation or a holder)."""
    return bool(gpu.processes) or (gpu.util_gpu_pct or 0) > 0 or gpu.holder is not None


def attribute(snapshot: Snapshot) -> Snapshot:
    """`snapshot` with the unheld GPUs of deployed bare-metal hosts held by their instance (and
    those hosts' busy-GPU counts updated); the same object when nothing changes."""
    names = _instance_names(snapshot)
    if not names:
        return snapshot
    changed: set[str] = set()
    gpus: list[Gpu] = []
    for gpu in snapshot.gpus:
        name = names.get(gpu.host)
        if name is not None and gpu.holder is None:
            gpu = msgspec.structs.replace(gpu, holder=PREFIX + name)
            changed.add(gpu.host)
        gpus.append(gpu)
    if not changed:
        return snapshot
    busy: dict[str, int] = dict.fromkeys(changed, 0)
    for gpu in gpus:
        if gpu.host in busy and _busy(gpu):
            busy[gpu.host] += 1
    hosts: list[Host] = [
        msgspec.structs.replace(h, gpus_busy=busy[h.name]) if h.name in busy else h for h in snapshot.hosts
    ]
    return msgspec.structs.replace(snapshot, gpus=tuple(gpus), hosts=tuple(hosts))
