"""The lab's kata-monitor endpoints agree with the lab's Kubernetes API: per node, one sandbox per
running Kata pod, labelled with that pod's uid, name and namespace; they follow evictions; and
their faults behave."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes import client

from sovereign_tui.lab.kata_monitor import KataMonitorLab
from sovereign_tui.lab.kube_objects import quantity_bytes
from sovereign_tui.promtext import PromTextError, parse
from tests.lab_kube.conftest import Lab, call, start_lab, stop_lab

SANDBOX_LABELS = ("sandbox_id", "cri_uid", "cri_name", "cri_namespace")
PER_SANDBOX = (
    "kata_shim_pod_overhead_cpu",
    "kata_shim_pod_overhead_memory_in_bytes",
    "kata_hypervisor_fds",
    "kata_hypervisor_threads",
    "kata_agent_process_resident_memory_bytes",
    "kata_guest_meminfo",
    "kata_guest_load",
)


@pytest.fixture
async def kata(tmp_path: Path) -> AsyncIterator[tuple[Lab, KataMonitorLab]]:
    lab = await start_lab(tmp_path)
    monitors = KataMonitorLab(lab.cluster)
    await monitors.start()
    yield lab, monitors
    await monitors.stop()
    await stop_lab(lab)


async def _fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def _kata_pods(lab: Lab, node: str) -> list[client.V1Pod]:
    pods = await call(
        lab.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node},status.phase=Running"
    )
    rcs = {rc.metadata.name: rc for rc in (await call(client.NodeV1Api(lab.api).list_runtime_class)).items}
    return [
        p
        for p in pods.items
        if p.spec.runtime_class_name and rcs[p.spec.runtime_class_name].handler.startswith("kata")
    ]


async def test_metrics_match_the_kata_pods_of_each_node(kata: tuple[Lab, KataMonitorLab]) -> None:
    lab, monitors = kata
    assert monitors.nodes == [n for n in lab.cluster.node_names if lab.cluster.specs[n].kata]
    total = 0
    for node in monitors.nodes:
        status, text = await _fetch(monitors.url(node) + "/metrics")
        assert status == 200
        metrics = parse(text, ("kata_monitor_running_shim_count", "kata_monitor_scrape_count", *PER_SANDBOX))
        pods = await _kata_pods(lab, node)
        total += len(pods)
        assert metrics["kata_monitor_running_shim_count"] == [({}, float(len(pods)))]
        assert metrics["kata_monitor_scrape_count"] == [({}, 1.0)]
        expected = {(p.metadata.uid, p.metadata.name, p.metadata.namespace) for p in pods}
        for family in PER_SANDBOX:
            seen = {(s["cri_uid"], s["cri_name"], s["cri_namespace"]) for s, _ in metrics.get(family, [])}
            assert seen == expected, family
        status, listing = await _fetch(monitors.url(node) + "/sandboxes")
        ids = listing.split()
        assert sorted(ids) == sorted(
            {s["sandbox_id"] for s, _ in metrics.get("kata_shim_pod_overhead_cpu", [])}
        )
        assert all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)
        overhead = {p.metadata.uid: quantity_bytes(p.spec.overhead["memory"]) for p in pods}
        for labels, value in metrics.get("kata_shim_pod_overhead_memory_in_bytes", []):
            assert 0 < value <= overhead[labels["cri_uid"]]
            assert list(labels)[-4:] == list(SANDBOX_LABELS)  # appended after the shim's own labels
    assert total > 0


async def test_an_evicted_kata_pod_leaves_its_node(kata: tuple[Lab, KataMonitorLab]) -> None:
    lab, monitors = kata
    candidates = [(n, p) for n in monitors.nodes for p in await _kata_pods(lab, n)]
    node, pod = next((n, p) for n, p in candidates if p.metadata.labels.get("app") == "fn-worker")
    before = [s.uid for s in monitors.sandboxes(node)]
    await call(
        lab.core.create_namespaced_pod_eviction,
        pod.metadata.name,
        pod.metadata.namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name)),
    )
    _, text = await _fetch(monitors.url(node) + "/metrics")
    count = parse(text, ("kata_monitor_running_shim_count",))["kata_monitor_running_shim_count"][0][1]
    assert pod.metadata.uid in before
    assert count == len(before) - 1 + sum(
        1 for p in await _kata_pods(lab, node) if p.metadata.uid not in before
    )
    uids = {s["cri_uid"] for s, _ in parse(text, ("kata_shim_threads",)).get("kata_shim_threads", [])}
    assert pod.metadata.uid not in uids


async def test_faults(kata: tuple[Lab, KataMonitorLab]) -> None:
    lab, monitors = kata
    node = next(n for n in monitors.nodes if monitors.sandboxes(n))
    await monitors.set_fault(node, "http500")
    assert (await _fetch(monitors.url(node) + "/metrics"))[0] == 500
    await monitors.set_fault(node, "malformed")
    status, text = await _fetch(monitors.url(node) + "/metrics")
    assert status == 200
    with pytest.raises(PromTextError):
        parse(text, ("kata_shim_threads",))
    await monitors.set_fault(node, "down")
    with pytest.raises(aiohttp.ClientConnectionError):
        await _fetch(monitors.url(node) + "/metrics")
    await monitors.set_fault(node, None)
    status, text = await _fetch(monitors.url(node) + "/metrics")
    assert status == 200
    assert parse(text, ("kata_shim_threads",))["kata_shim_threads"]
    with pytest.raises(ValueError, match="unknown node"):
        KataMonitorLab(lab.cluster, ["no-such-node"])
