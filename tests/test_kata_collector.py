"""The kata collector against the lab: each node's kata-monitor scraped over HTTP (one target per
node) equals the lab's sandboxes on that node, beside the Kata pods the lab's API places there; a
monitor answering 500 makes only its node's Kata data stale; endpoints are discovered from the
nodes kata-deploy labelled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collectors.kata import KataCollector
from collectors.kubernetes import KubernetesCollector
from sovereign_tui.config_sources import KataSource
from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kata_monitor import KataMonitorLab, overhead_cpu_percent, overhead_memory_bytes
from sovereign_tui.model import KataFacet, Snapshot
from tests.kube_rig import Rig, caught_up, make_rig

CLUSTER = "kata:current-context"


@dataclass
class KataRig:
    rig: Rig
    monitors: KataMonitorLab
    collector: KataCollector


@pytest.fixture
async def kata(tmp_path: Path) -> AsyncIterator[KataRig]:
    r = await make_rig(tmp_path)
    monitors = KataMonitorLab(r.lab.cluster)
    await monitors.start()
    endpoints = {n: f"{monitors.url(n)}/metrics" for n in monitors.nodes}
    collector = KataCollector(r.session, KataSource(enabled=True, endpoints=endpoints))
    r.add(collector)
    try:
        yield KataRig(r, monitors, collector)
    finally:
        await monitors.stop()
        await r.close()


def facets(snap: Snapshot) -> dict[str, KataFacet]:
    return {h.name: h.kata for h in snap.hosts if h.kata is not None}


def lab_kata_pods(k: KataRig, node: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in k.rig.lab.cluster.pods_on(node):
        rc = e.obj["spec"].get("runtimeClassName") or ""
        if rc.startswith("kata") and e.obj["status"]["phase"] not in ("Succeeded", "Failed"):
            out[rc] = out.get(rc, 0) + 1
    return out


async def poll_synced(k: KataRig) -> Snapshot:
    await k.rig.poll()  # the cluster target starts the watches
    await caught_up(k.collector.pods, k.rig.lab, "pods")
    return await k.rig.poll()


async def test_each_nodes_sandboxes_equal_the_labs(kata: KataRig) -> None:
    snap = await poll_synced(kata)
    got = facets(snap)
    assert set(got) == set(kata.monitors.nodes)
    now = kata.rig.lab.clock.time()
    total = 0
    for node in kata.monitors.nodes:
        assert kata.rig.health(f"kata-monitor:{node}") == (True, None)
        f = got[node]
        want = kata.monitors.sandboxes(node)
        total += len(want)
        assert f.running_shims == len(want) == len(f.sandboxes)
        assert [(s.sandbox_id, s.pod_uid, s.pod, s.namespace) for s in f.sandboxes] == [
            (s.id, s.uid, s.name, s.namespace) for s in want
        ]
        assert [s.overhead_memory_bytes for s in f.sandboxes] == [overhead_memory_bytes(s) for s in want]
        assert [s.overhead_cpu_pct for s in f.sandboxes] == [overhead_cpu_percent(s, now) for s in want]
        assert f.overhead_memory_bytes == sum(overhead_memory_bytes(s) for s in want)
        assert f.pods_by_runtime_class == lab_kata_pods(kata, node)
        assert f.endpoint == f"{kata.monitors.url(node)}/metrics"
    assert total > 0
    detail = next(s for s in snap.sources if s.target == CLUSTER).detail
    lab_classes = sorted(
        e.name for e in kata.rig.lab.cluster.store.entries("runtimeclasses") if e.name.startswith("kata")
    )
    assert detail["kata runtime classes"] == ", ".join(lab_classes)


async def test_a_sandbox_names_its_kata_pod_workload(kata: KataRig) -> None:
    kata.rig.add(KubernetesCollector(kata.rig.session, interval_s=10.0))  # same session, same watches
    snap = await poll_synced(kata)
    kata_pods = {w.id: w for w in snap.workloads if w.kind == "kata-pod"}
    for node, f in facets(snap).items():
        for s in f.sandboxes:
            w = kata_pods[s.pod_uid or ""]
            assert (w.name, w.owner, w.host) == (s.pod, s.namespace, node)


async def test_a_monitor_answering_500_makes_only_its_node_stale(kata: KataRig) -> None:
    await poll_synced(kata)
    broken, *others = kata.monitors.nodes
    await kata.monitors.set_fault(broken, "http500")
    snap = await kata.rig.poll()
    up, error = kata.rig.health(f"kata-monitor:{broken}")
    assert up is False and error is not None and "HTTP 500" in error and "\n" not in error
    got = facets(snap)
    assert got[broken].stale
    assert others and not any(got[n].stale for n in others)
    assert kata.rig.health(CLUSTER) == (True, None)
    await kata.monitors.set_fault(broken, None)
    assert not facets(await kata.rig.poll())[broken].stale


async def test_sandboxes_follow_the_cluster(kata: KataRig) -> None:
    await poll_synced(kata)
    lab = kata.rig.lab
    node = max(kata.monitors.nodes, key=lambda n: len(kata.monitors.sandboxes(n)))
    before = kata.monitors.sandboxes(node)
    assert before
    gone = lab.cluster.store.require("pods", before[0].namespace, before[0].name)
    lab.cluster.remove(gone.namespace, gone.name)  # its controller starts a replacement somewhere
    f = facets(await poll_synced(kata))[node]
    assert before[0].id not in {s.sandbox_id for s in f.sandboxes}
    assert f.running_shims == len(kata.monitors.sandboxes(node))
    assert f.pods_by_runtime_class == lab_kata_pods(kata, node)


async def test_endpoints_are_discovered_from_the_kata_nodes(tmp_path: Path) -> None:
    r = await make_rig(tmp_path, nodes=6)
    try:
        collector = KataCollector(r.session, KataSource(enabled=True, monitor_port=8090))
        calls: list[int] = []

        def retarget() -> None:
            calls.append(1)
            r.retarget()

        collector.watch_targets(retarget)
        r.add(collector)
        assert [t.id for t in collector.targets()] == [CLUSTER]
        await r.poll()
        assert r.health(CLUSTER) == (True, None)
        want = {
            e.name: f"http://{a['address']}:8090/metrics"
            for e in r.lab.cluster.store.entries("nodes")
            if e.labels.get(ko.KATA_LABEL) == "true"
            for a in e.obj["status"]["addresses"]
            if a["type"] == "InternalIP"
        }
        assert want and collector.endpoints == want
        assert calls == [1]
        assert set(r.poller.targets) == {CLUSTER} | {f"kata-monitor:{n}" for n in want}
        endpoints = {t.id: t.endpoint for t in collector.targets()}
        for node, url in want.items():
            assert endpoints[f"kata-monitor:{node}"] == url.removeprefix("http://").removesuffix("/metrics")
        await r.poller.poll_target(r.poller.targets[CLUSTER])
        assert calls == [1]  # unchanged: no reconfiguration
    finally:
        await r.close()


def test_settings_are_checked() -> None:
    from sovereign_tui.config_sources import ConfigError, KubernetesSource, KubevirtSource, validate_kube

    ok = (KubernetesSource(), KubevirtSource())
    validate_kube(*ok, KataSource(endpoints={"gpu-01": "http://10.0.0.11:8090/metrics"}))
    for bad, word in (
        (KataSource(endpoints={"gpu-01": "10.0.0.11:8090"}), "gpu-01"),
        (KataSource(node_label="katacontainers.io/kata-runtime"), "node_label"),
        (KataSource(interval_s=5.0, timeout_s=5.0), "sources.kata.timeout_s"),
    ):
        with pytest.raises(ConfigError) as err:
            validate_kube(*ok, bad)
        assert word in str(err.value) and "\n" not in str(err.value)
