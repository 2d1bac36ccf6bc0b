"""The lab Kubernetes API through the real kubernetes client over real HTTP: auth, lists and
paging, selectors, watches (churn, bookmarks, expiry, dropped streams, timeouts), cordon and
eviction against disruption budgets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_objects import make_nodes, nodes_from_hosts
from sovereign_tui.lab.kube_select import LabelSelector
from sovereign_tui.lab.scenario import Scenario
from tests.lab_kube.conftest import Lab, call, first_line, start_lab, stop_lab

# --- configuration and auth ---------------------------------------------------------------------


async def test_kubeconfig_loads_and_the_token_is_required(lab: Lab) -> None:
    cfg = client.Configuration()
    await call(config.load_kube_config, config_file=str(lab.kubeconfig), client_configuration=cfg)
    assert cfg.host == lab.server.url
    with client.ApiClient(cfg) as api:
        nodes = await call(client.CoreV1Api(api).list_node)
    assert sorted(n.metadata.name for n in nodes.items) == sorted(lab.cluster.node_names)

    bad = client.Configuration(host=lab.server.url, api_key={"authorization": "Bearer wrong"})
    with client.ApiClient(bad) as api, pytest.raises(ApiException) as err:
        await call(client.CoreV1Api(api).list_node)
    assert err.value.status == 401
    assert json.loads(err.value.body)["reason"] == "Unauthorized"

    with client.ApiClient(client.Configuration(host=lab.server.url)) as api:
        version = await call(client.VersionApi(api).get_code)
    assert version.git_version.startswith("v1.")


async def test_injected_faults_and_a_rotated_token(lab: Lab) -> None:
    lab.server.faults.set("kubernetes", error_rate=1.0, error_status=503, path="/api/v1/nodes")
    with pytest.raises(ApiException) as err:
        await call(lab.core.list_node)
    assert err.value.status == 503
    assert json.loads(err.value.body)["kind"] == "Status"
    assert (await call(lab.core.list_namespace)).items  # other paths unaffected
    lab.server.faults.clear("kubernetes")
    assert (await call(lab.core.list_node)).items

    new = lab.server.rotate_token()
    with pytest.raises(ApiException) as err:
        await call(lab.core.list_node)
    assert err.value.status == 401
    lab.server.write_kubeconfig(lab.kubeconfig)
    with config.new_client_from_config(config_file=str(lab.kubeconfig)) as api:
        assert new in str(api.configuration.api_key)
        assert (await call(client.CoreV1Api(api).list_node)).items


# --- lists ----------------------------------------------------------------------------------------


def _names(items: list[Any]) -> list[str]:
    return [f"{i.metadata.namespace}/{i.metadata.name}" for i in items]


async def test_paging_through_all_pages_gives_the_full_list_once(lab: Lab) -> None:
    full = await call(lab.core.list_pod_for_all_namespaces)
    pages, token = [], None
    while True:
        page = await call(lab.core.list_pod_for_all_namespaces, limit=7, _continue=token)
        pages.append(page)
        token = page.metadata._continue
        if not token:
            break
    names = [n for p in pages for n in _names(p.items)]
    assert names == _names(full.items)
    assert len(set(names)) == lab.cluster.store.count("pods")
    assert all(len(p.items) == 7 for p in pages[:-1])
    remaining = [p.metadata.remaining_item_count for p in pages[:-1]]
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] == len(pages[-1].items)
    assert {p.metadata.resource_version for p in pages} == {full.metadata.resource_version}


async def test_later_pages_are_consistent_with_the_first_despite_churn(lab: Lab) -> None:
    before = _names((await call(lab.core.list_pod_for_all_namespaces)).items)
    first = await call(lab.core.list_pod_for_all_namespaces, limit=20)
    events = lab.cluster.churn(40)
    assert any(e.type == "DELETED" for e in events)
    names, token = _names(first.items), first.metadata._continue
    while token:
        page = await call(lab.core.list_pod_for_all_namespaces, limit=20, _continue=token)
        names += _names(page.items)
        token = page.metadata._continue
    assert names == before
    now = _names((await call(lab.core.list_pod_for_all_namespaces)).items)
    assert now != before


async def test_an_expired_continue_is_410_and_a_garbled_one_400(lab: Lab) -> None:
    first = await call(lab.core.list_pod_for_all_namespaces, limit=5)
    lab.cluster.store.compact()
    with pytest.raises(ApiException) as err:
        await call(lab.core.list_pod_for_all_namespaces, limit=5, _continue=first.metadata._continue)
    assert err.value.status == 410
    status = json.loads(err.value.body)
    assert status["reason"] == "Expired"
    # the 410 carries a token that goes on from the live state, as the API server's does
    rest = await call(
        lab.core.list_pod_for_all_namespaces, limit=1000, _continue=status["metadata"]["continue"]
    )
    assert _names(first.items) + _names(rest.items) == _names(
        (await call(lab.core.list_pod_for_all_namespaces)).items
    )

    with pytest.raises(ApiException) as err:
        await call(lab.core.list_pod_for_all_namespaces, limit=5, _continue="not-a-token")
    assert err.value.status == 400


async def test_field_and_label_selectors(lab: Lab) -> None:
    node = lab.cluster.node_names[2]
    on_node = await call(lab.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
    expected = sorted(
        e.key for e in lab.cluster.store.entries("pods") if e.obj["spec"].get("nodeName") == node
    )
    assert sorted(_names(on_node.items)) == expected
    assert expected
    paged = await call(lab.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}", limit=3)
    assert _names(paged.items) == expected[:3]
    assert paged.metadata._continue

    selector = "app in (api, frontend),!lab.sovereign/churn"
    web = await call(lab.core.list_namespaced_pod, "web", label_selector=selector)
    sel = LabelSelector.parse(selector)
    assert sorted(_names(web.items)) == sorted(
        e.key for e in lab.cluster.store.entries("pods", "web") if sel.matches(e.labels)
    )
    assert {p.metadata.labels["app"] for p in web.items} == {"api", "frontend"}

    running_kata = await call(
        lab.core.list_pod_for_all_namespaces, field_selector="status.phase=Running,spec.nodeName!=nowhere"
    )
    assert all(p.status.phase == "Running" for p in running_kata.items)
    with pytest.raises(ApiException) as err:
        await call(lab.core.list_pod_for_all_namespaces, field_selector="spec.color=blue")
    assert err.value.status == 400
    assert "field label not supported" in json.loads(err.value.body)["message"]


async def test_nodes_runtime_classes_and_budgets(lab: Lab) -> None:
    nodes = (await call(lab.core.list_node)).items
    for n in nodes:
        spec = lab.cluster.specs[n.metadata.name]
        assert int(n.status.capacity.get("nvidia.com/gpu", "0")) == spec.gpus
        assert {c.type: c.status for c in n.status.conditions}["Ready"] == "True"
        assert (n.metadata.labels.get("katacontainers.io/kata-runtime") == "true") == spec.kata
        pods = await call(
            lab.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={n.metadata.name}"
        )
        used = sum(
            int((c.resources.limits or {}).get("nvidia.com/gpu", "0"))
            for p in pods.items
            if p.status.phase not in ("Succeeded", "Failed")
            for c in p.spec.containers
        )
        assert used <= spec.gpus

    classes = {
        rc.metadata.name: rc for rc in (await call(client.NodeV1Api(lab.api).list_runtime_class)).items
    }
    for name in ("kata-qemu", "kata-clh", "kata-fc", "kata-qemu-nvidia-gpu"):
        rc = classes[name]
        assert rc.handler == name
        assert rc.scheduling.node_selector == {"katacontainers.io/kata-runtime": "true"}
        assert set(rc.overhead.pod_fixed) == {"cpu", "memory"}
    kata_pods = [
        p for p in (await call(lab.core.list_pod_for_all_namespaces)).items if p.spec.runtime_class_name
    ]
    assert kata_pods
    for p in kata_pods:
        assert p.spec.overhead == classes[p.spec.runtime_class_name].overhead.pod_fixed
        assert lab.cluster.specs[p.spec.node_name].kata

    pods = (await call(lab.core.list_pod_for_all_namespaces)).items
    budgets = (await call(client.PolicyV1Api(lab.api).list_pod_disruption_budget_for_all_namespaces)).items
    assert budgets
    for b in budgets:
        sel = b.spec.selector.match_labels
        mine = [
            p
            for p in pods
            if p.metadata.namespace == b.metadata.namespace and sel.items() <= p.metadata.labels.items()
        ]
        healthy = sum(
            1
            for p in mine
            if p.status.phase == "Running"
            and {c.type: c.status for c in p.status.conditions}["Ready"] == "True"
        )
        assert b.status.current_healthy == healthy
        assert b.status.expected_pods == sum(1 for p in mine if p.status.phase not in ("Succeeded", "Failed"))
        assert b.status.disruptions_allowed == max(0, healthy - b.status.desired_healthy)


def test_the_cluster_is_a_function_of_its_seed() -> None:
    def pods(seed: int) -> bytes:
        return KubeCluster(make_nodes(6), seed=seed, clock=FakeClock()).store.list_page("pods").body

    assert pods(3) == pods(3)
    assert pods(3) != pods(4)


def test_nodes_follow_the_lab_scenario() -> None:
    scenario = Scenario.generate(8, seed=1)
    cluster = KubeCluster(nodes_from_hosts(scenario.hosts), seed=1, clock=FakeClock())
    for host in scenario.hosts:
        node = cluster.store.require("nodes", "", host.name).obj
        assert node["status"]["capacity"]["nvidia.com/gpu"] == str(len(host.gpus))
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == host.model.name.replace(" ", "-")
    assert sorted(cluster.node_names) == sorted(h.name for h in scenario.hosts)


# --- watch ------------------------------------------------------------------------------------------


def _collect(stream: Any, until: str) -> list[dict[str, Any]]:
    seen = []
    for event in stream:
        seen.append(event)
        if event["type"] == until:
            break
    return seen


async def test_watch_sees_every_change_of_churn_then_a_bookmark(lab: Lab) -> None:
    rv = (await call(lab.core.list_pod_for_all_namespaces, limit=1)).metadata.resource_version
    w = watch.Watch()
    stream = w.stream(
        lab.core.list_pod_for_all_namespaces,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=600,
    )
    seen_task = asyncio.ensure_future(call(_collect, stream, "BOOKMARK"))
    await lab.cluster.store.wait_for_watchers(1)
    events = lab.cluster.churn(60)
    lab.cluster.bookmark()
    seen = await seen_task
    w.stop()

    expected = [
        (e.type, e.entry.key, e.entry.obj["metadata"]["resourceVersion"])
        for e in events
        if e.rtype.plural == "pods"
    ]
    got = [
        (
            e["type"],
            f"{e['object'].metadata.namespace}/{e['object'].metadata.name}",
            e["object"].metadata.resource_version,
        )
        for e in seen[:-1]
    ]
    assert got == expected
    assert {t for t, _, _ in got} == {"ADDED", "MODIFIED", "DELETED"}
    assert seen[-1]["raw_object"]["metadata"]["resourceVersion"] == str(lab.cluster.store.rv)


async def test_a_selector_watch_sees_objects_enter_and_leave(lab: Lab) -> None:
    w = watch.Watch()
    stream = w.stream(lab.core.list_namespaced_pod, "web", label_selector="app=frontend", timeout_seconds=600)
    initial = len([e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend"])
    victim = next(e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend")

    def collect() -> list[dict[str, Any]]:
        out = []
        for ev in stream:
            out.append(ev)
            if ev["type"] == "ADDED" and len(out) > initial:
                break
        return out

    task = asyncio.ensure_future(call(collect))
    await lab.cluster.store.wait_for_watchers(1)
    lab.cluster.store.update(
        "pods", "web", victim.name, lambda o: o["metadata"]["labels"].__setitem__("app", "canary")
    )
    lab.cluster.store.update(
        "pods", "web", victim.name, lambda o: o["metadata"]["labels"].__setitem__("app", "frontend")
    )
    seen = await task
    w.stop()
    assert [e["type"] for e in seen[:initial]] == ["ADDED"] * initial  # no version: the current state first
    assert [(e["type"], e["object"].metadata.name) for e in seen[initial:]] == [
        ("DELETED", victim.name),
        ("ADDED", victim.name),
    ]


async def _churn_past_history(tmp_path: Path) -> tuple[Lab, str]:
    lab = await start_lab(tmp_path, history=50)
    rv = (await call(lab.core.list_pod_for_all_namespaces, limit=1)).metadata.resource_version
    lab.cluster.churn(80)
    return lab, rv


async def test_an_expired_resource_version_is_410_as_an_error_event(tmp_path: Path) -> None:
    lab, rv = await _churn_past_history(tmp_path)
    try:
        w = watch.Watch()
        with pytest.raises(ApiException) as err:
            await call(
                list, w.stream(lab.core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=60)
            )
        assert err.value.status == 410
        status, line = await first_line(lab, "/api/v1/pods", watch="1", resourceVersion=rv)
        assert status == 200
        assert line["type"] == "ERROR"
        assert line["object"]["code"] == 410
        assert line["object"]["reason"] == "Expired"
    finally:
        await stop_lab(lab)


async def test_an_expired_resource_version_is_410_over_http_when_chosen(tmp_path: Path) -> None:
    lab, rv = await _churn_past_history(tmp_path)
    lab.server.watch_faults.expired_as = "http"
    try:
        w = watch.Watch()
        with pytest.raises(ApiException) as err:
            await call(
                list, w.stream(lab.core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=60)
            )
        assert err.value.status == 410
        status, body = await first_line(lab, "/api/v1/pods", watch="1", resourceVersion=rv)
        assert status == 410
        assert body["reason"] == "Expired"
        # a fresh list gives a version to watch from again
        fresh = (await call(lab.core.list_pod_for_all_namespaces, limit=1)).metadata.resource_version
        task = asyncio.ensure_future(
            call(
                _collect,
                watch.Watch().stream(
                    lab.core.list_pod_for_all_namespaces, resource_version=fresh, timeout_seconds=60
                ),
                "MODIFIED",
            )
        )
        await lab.cluster.store.wait_for_watchers(1)
        lab.cluster.churn(20)
        assert (await task)[-1]["type"] == "MODIFIED"
    finally:
        await stop_lab(lab)


async def test_a_dropped_stream_ends_without_a_clean_end(lab: Lab) -> None:
    lab.server.watch_faults.drop_next(after_events=3)
    got: list[str] = []

    def consume() -> None:
        for ev in watch.Watch().stream(lab.core.list_node, timeout_seconds=600):
            got.append(ev["object"].metadata.name)

    with pytest.raises(urllib3.exceptions.ProtocolError):
        await call(consume)
    assert len(got) == 3
    assert lab.server.watch_faults.dropped == 1

    # only the next stream was cut
    def first(n: int) -> list[str]:
        w = watch.Watch()
        out = []
        for ev in w.stream(lab.core.list_node, timeout_seconds=600):
            out.append(ev["type"])
            if len(out) == n:
                w.stop()
                break
        return out

    assert await call(first, 5) == ["ADDED"] * 5


async def test_timeout_seconds_ends_the_stream_cleanly(lab: Lab) -> None:
    rv = str(lab.cluster.store.rv)
    task = asyncio.ensure_future(
        call(list, watch.Watch().stream(lab.core.list_node, resource_version=rv, timeout_seconds=30))
    )
    await lab.cluster.store.wait_for_watchers(1)
    await lab.clock.advance(29)
    assert not task.done()
    lab.cluster.cordon(lab.cluster.node_names[0])
    await lab.clock.advance(1)
    events = await task
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("MODIFIED", lab.cluster.node_names[0])
    ]
    assert lab.cluster.store.watchers == 0


async def test_bookmarks_come_periodically(lab: Lab) -> None:
    rv = str(lab.cluster.store.rv)
    stream = watch.Watch().stream(
        lab.core.list_node, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=600
    )
    task = asyncio.ensure_future(call(_collect, stream, "BOOKMARK"))
    await lab.cluster.store.wait_for_watchers(1)
    await lab.clock.advance(60)
    assert [e["type"] for e in await task] == ["BOOKMARK"]


# --- writes -----------------------------------------------------------------------------------------


async def test_cordon_and_uncordon(lab: Lab) -> None:
    name = lab.cluster.node_names[1]
    node = await call(lab.core.patch_node, name, {"spec": {"unschedulable": True}})
    assert node.spec.unschedulable is True
    assert [t.key for t in node.spec.taints] == ["node.kubernetes.io/unschedulable"]
    # nothing new lands there: evicted pods go elsewhere
    movable = [e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend"]
    for e in movable[:2]:
        await call(
            lab.core.create_namespaced_pod_eviction,
            e.name,
            "web",
            client.V1Eviction(metadata=client.V1ObjectMeta(name=e.name)),
        )
    new = [
        e
        for e in lab.cluster.store.entries("pods", "web")
        if e.labels.get("app") == "frontend" and e not in movable
    ]
    assert len(new) == 2
    assert all(e.obj["spec"]["nodeName"] != name for e in new)

    node = await call(
        lab.core.patch_node,
        name,
        {"spec": {"unschedulable": None}},
        _content_type="application/merge-patch+json",
    )
    assert node.spec.unschedulable is None
    assert not node.spec.taints
    node = await call(
        lab.core.patch_node, name, [{"op": "add", "path": "/spec/unschedulable", "value": True}]
    )
    assert node.spec.unschedulable is True


async def test_eviction_allowed_by_a_budget_is_201_and_the_pod_is_replaced(lab: Lab) -> None:
    pdb = client.PolicyV1Api(lab.api)
    budget = await call(pdb.read_namespaced_pod_disruption_budget, "frontend", "web")
    assert budget.status.disruptions_allowed > 0
    victim = next(e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend")
    before = {e.name for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend"}
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=victim.name, namespace="web"))
    data, code, _ = await call(
        lab.core.create_namespaced_pod_eviction_with_http_info, victim.name, "web", body
    )
    assert code == 201
    assert data.kind == "Status"  # what the API server answers, whatever the client calls it
    after = {e.name for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend"}
    assert victim.name not in after
    assert len(after) == len(before)
    with pytest.raises(ApiException) as err:
        await call(lab.core.read_namespaced_pod, victim.name, "web")
    assert err.value.status == 404


async def test_eviction_against_a_budget_is_429_and_several_budgets_500(lab: Lab) -> None:
    api_pod = next(e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "api")
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=api_pod.name, namespace="web"))
    with pytest.raises(ApiException) as err:
        await call(lab.core.create_namespaced_pod_eviction, api_pod.name, "web", body)
    assert err.value.status == 429
    status = json.loads(err.value.body)
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert (await call(lab.core.read_namespaced_pod, api_pod.name, "web")).metadata.deletion_timestamp is None

    cache = next(
        e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "session-cache"
    )
    with pytest.raises(ApiException) as err:
        await call(
            lab.core.create_namespaced_pod_eviction,
            cache.name,
            "web",
            client.V1Eviction(metadata=client.V1ObjectMeta(name=cache.name)),
        )
    assert err.value.status == 500
    assert "more than one PodDisruptionBudget" in json.loads(err.value.body)["message"]


async def test_a_daemonset_pod_comes_back_on_its_node(lab: Lab) -> None:
    ds = next(
        e for e in lab.cluster.store.entries("pods", "kube-system") if e.labels.get("k8s-app") == "kube-proxy"
    )
    node = ds.obj["spec"]["nodeName"]
    await call(
        lab.core.create_namespaced_pod_eviction,
        ds.name,
        "kube-system",
        client.V1Eviction(metadata=client.V1ObjectMeta(name=ds.name)),
    )
    proxies = [e for e in lab.cluster.pods_on(node) if e.labels.get("k8s-app") == "kube-proxy"]
    assert len(proxies) == 1
    assert proxies[0].name != ds.name


async def test_graceful_termination_under_the_clock(tmp_path: Path) -> None:
    lab = await start_lab(tmp_path, pod_termination_s=30, pod_startup_s=5)
    try:
        pdb = client.PolicyV1Api(lab.api)
        allowed = (
            await call(pdb.read_namespaced_pod_disruption_budget, "frontend", "web")
        ).status.disruptions_allowed
        victim = next(
            e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend"
        )
        await call(
            lab.core.create_namespaced_pod_eviction,
            victim.name,
            "web",
            client.V1Eviction(metadata=client.V1ObjectMeta(name=victim.name)),
        )
        pod = await call(lab.core.read_namespaced_pod, victim.name, "web")
        assert pod.metadata.deletion_timestamp is not None
        budget = await call(pdb.read_namespaced_pod_disruption_budget, "frontend", "web")
        assert budget.status.disruptions_allowed == allowed - 1  # the replacement is not ready yet
        await lab.clock.advance(5)
        budget = await call(pdb.read_namespaced_pod_disruption_budget, "frontend", "web")
        assert budget.status.disruptions_allowed == allowed  # the replacement runs
        await lab.clock.advance(25)
        with pytest.raises(ApiException) as err:
            await call(lab.core.read_namespaced_pod, victim.name, "web")
        assert err.value.status == 404
    finally:
        await stop_lab(lab)


async def test_a_kata_pod_can_be_created(lab: Lab) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "eval-", "labels": {"app": "eval"}},
        "spec": {
            "runtimeClassName": "kata-qemu-nvidia-gpu",
            "containers": [
                {
                    "name": "eval",
                    "image": "registry.lab.internal/eval:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }
    pod = await call(lab.core.create_namespaced_pod, "sandbox", body)
    assert pod.metadata.name.startswith("eval-")
    assert pod.status.phase == "Running"
    assert pod.spec.overhead == {"cpu": "1", "memory": "98304Mi"}
    assert lab.cluster.specs[pod.spec.node_name].kata
    assert lab.cluster.specs[pod.spec.node_name].gpus
    with pytest.raises(ApiException) as err:
        await call(
            lab.core.create_namespaced_pod,
            "sandbox",
            {**body, "spec": {**body["spec"], "runtimeClassName": "gvisor"}},
        )
    assert err.value.status == 403
