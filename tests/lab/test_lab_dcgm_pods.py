"""The lab's dcgm-exporters label each GPU with the pod the lab's Kubernetes gave it, as the real
exporter reads them from the kubelet on each scrape: every pod a GPU names exists on that node
with that many GPUs, and a pod that goes frees its GPUs at the next scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.fleet import FleetLab
from sovereign_tui.lab.kube_pods import pod_gpus


@pytest.fixture
async def fleet() -> AsyncIterator[FleetLab]:
    lab = FleetLab(hosts=24, seed=0, layers=("openstack", "kubernetes", "gpus"), clock=FakeClock())
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


def gpu_holders(lab: FleetLab, node: str) -> Counter[str]:
    """Pod -> how many whole GPUs (not MIG instances) the exporter says it holds."""
    by_gpu = {r.index: r for r in lab.dcgm.rows(node) if r.pod is not None}  # a MIG GPU's rows: one
    return Counter(f"{r.namespace}/{r.pod}" for r in by_gpu.values())


async def test_every_pod_a_gpu_names_runs_on_its_node_with_that_many_gpus(fleet: FleetLab) -> None:
    named = 0
    for node in fleet.dcgm.names:
        pods = {
            f"{e.namespace}/{e.name}": pod_gpus(e.obj)
            for e in fleet.kube.cluster.pods_on(node)
            if pod_gpus(e.obj)
        }
        held = gpu_holders(fleet, node)
        assert held == Counter(pods), node
        named += len(held)
    assert named >= 3


async def test_a_pod_that_goes_frees_its_gpus_at_the_next_scrape(fleet: FleetLab) -> None:
    cluster = fleet.kube.cluster
    node, entry = next((n, e) for n in fleet.dcgm.names for e in cluster.pods_on(n) if pod_gpus(e.obj))
    gone = f"{entry.namespace}/{entry.name}"
    assert gone in gpu_holders(fleet, node)
    cluster.terminate(entry)  # graceful delete; its controller may start a replacement
    cluster.settle()
    assert gone not in gpu_holders(fleet, node)
    assert f'pod="{entry.name}"' not in fleet.dcgm.payload(node)
