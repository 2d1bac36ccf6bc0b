"""Every object, list, error and discovery document the lab serves must fit the kubernetes client's
own models without loss: deserialized with `ApiClient.deserialize` and serialized back with
`sanitize_for_serialization`, it must equal what the lab sent. The only differences allowed are
the client's documented ones: fields that are null or absent are dropped, and timestamps come back
as Python datetimes written with `isoformat()` (so `...Z` reads `...+00:00`, the same instant)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.lab_kube.conftest import Lab, call, first_line, start_lab, stop_lab

_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def normalized(value: Any) -> Any:
    """Drop nulls; read RFC 3339 timestamps as instants."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str) and _STAMP.match(value):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def round_trip(data: Any, model: str) -> Any:
    api = client.ApiClient()
    obj = api.deserialize(json.dumps(data), model, "application/json")
    assert obj is not None
    return api.sanitize_for_serialization(obj)


def assert_lossless(data: Any, model: str) -> None:
    assert normalized(round_trip(data, model)) == normalized(data)


@pytest.fixture
async def busy_lab(tmp_path: Path) -> Any:
    """A lab with every kind of state in it: terminating, pending, crash-looping and finished
    pods, a cordoned node, a node gone NotReady, churned budgets, a migration under way."""
    lab = await start_lab(tmp_path, pod_termination_s=30, pod_startup_s=5)
    cluster = lab.cluster
    cluster.cordon(cluster.node_names[0])
    cluster.set_node_ready(cluster.node_names[1], False)
    cluster.churn(50)
    victim = next(e for e in cluster.store.entries("pods", "web") if e.labels.get("app") == "frontend")
    cluster.delete_pod("web", victim.name)
    vmi = next(
        e
        for e in cluster.store.entries("virtualmachineinstances")
        if e.obj["spec"]["evictionStrategy"] == "LiveMigrate"
        and {c["type"]: c["status"] for c in e.obj["status"]["conditions"]}["LiveMigratable"] == "True"
    )
    huge = {
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [{"name": "x", "image": "x:1", "resources": {"limits": {"nvidia.com/gpu": "64"}}}]
        },
    }
    assert "nodeName" not in cluster.create_pod("ml-training", huge).obj["spec"]  # unschedulable: Pending
    cluster.kubevirt.create_migration(
        vmi.namespace, {"metadata": {"name": "m1"}, "spec": {"vmiName": vmi.name}}
    )
    await lab.clock.advance(2)
    yield lab
    await stop_lab(lab)


async def _get(lab: Lab, path: str, **params: str) -> Any:
    return await first_line(lab, path, **params)


LISTS = (
    ("/api/v1/nodes", "V1NodeList", "V1Node"),
    ("/api/v1/namespaces", "V1NamespaceList", "V1Namespace"),
    ("/api/v1/pods", "V1PodList", "V1Pod"),
    ("/apis/node.k8s.io/v1/runtimeclasses", "V1RuntimeClassList", "V1RuntimeClass"),
    ("/apis/policy/v1/poddisruptionbudgets", "V1PodDisruptionBudgetList", "V1PodDisruptionBudget"),
)


@pytest.mark.parametrize(("path", "list_model", "model"), LISTS)
async def test_every_object_fits_the_client_models_without_loss(
    busy_lab: Lab, path: str, list_model: str, model: str
) -> None:
    status, body = await _get(busy_lab, path)
    assert status == 200
    assert body["items"]
    for item in body["items"]:
        assert_lossless(item, model)
    assert_lossless(body, list_model)
    status, page = await _get(busy_lab, path, limit="2")
    assert page["metadata"]["continue"]
    assert_lossless(page, list_model)


async def test_the_busy_lab_has_the_states_it_claims(busy_lab: Lab) -> None:
    """The fidelity test above only means something if these shapes are in the lists."""
    pods = [e.obj for e in busy_lab.cluster.store.entries("pods")]
    assert any(p["metadata"].get("deletionTimestamp") for p in pods)
    assert any(p["status"]["phase"] == "Pending" for p in pods)
    assert any(p["status"]["phase"] == "Succeeded" for p in pods)
    assert any(
        "terminated" in cs.get("lastState", {})
        for p in pods
        for cs in p["status"].get("containerStatuses", [])
    )
    nodes = [e.obj for e in busy_lab.cluster.store.entries("nodes")]
    assert any(n["spec"].get("taints") for n in nodes)
    assert any(
        {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"] == "Unknown" for n in nodes
    )


async def test_watch_events_fit_the_client_models(busy_lab: Lab) -> None:
    lab = busy_lab
    rv = str(lab.cluster.store.rv - 40)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {lab.server.token}"}) as http:
        params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "60", "allowWatchBookmarks": "true"}
        async with http.get(f"{lab.server.url}/api/v1/pods", params=params) as resp:
            assert resp.status == 200
            lab.cluster.bookmark()
            kinds = set()
            while True:
                event = json.loads(await resp.content.readline())
                kinds.add(event["type"])
                if event["type"] == "BOOKMARK":
                    break
                assert_lossless(event["object"], "V1Pod")
    assert {"MODIFIED", "BOOKMARK"} <= kinds


async def test_errors_are_status_objects(lab: Lab) -> None:
    api_pod = next(e for e in lab.cluster.store.entries("pods", "web") if e.labels.get("app") == "api")
    bodies = []
    for attempt in (
        lambda: lab.core.create_namespaced_pod_eviction(
            api_pod.name, "web", client.V1Eviction(metadata=client.V1ObjectMeta(name=api_pod.name))
        ),
        lambda: lab.core.read_namespaced_pod("nope", "web"),
        lambda: lab.core.list_pod_for_all_namespaces(field_selector="spec.color=red"),
    ):
        with pytest.raises(ApiException) as err:
            await call(attempt)
        bodies.append((err.value.status, json.loads(err.value.body)))
    first = await call(lab.core.list_pod_for_all_namespaces, limit=3)
    lab.cluster.store.compact()
    with pytest.raises(ApiException) as err:
        await call(lab.core.list_pod_for_all_namespaces, limit=3, _continue=first.metadata._continue)
    bodies.append((err.value.status, json.loads(err.value.body)))
    assert [s for s, _ in bodies] == [429, 404, 400, 410]
    for status, body in bodies:
        assert body["code"] == status
        assert_lossless(body, "V1Status")
    assert bodies[1][1]["details"] == {"name": "nope", "kind": "pods"}


async def test_discovery_documents_fit_the_client_models(lab: Lab) -> None:
    for path, model in (
        ("/api", "V1APIVersions"),
        ("/api/v1", "V1APIResourceList"),
        ("/apis", "V1APIGroupList"),
        ("/apis/kubevirt.io", "V1APIGroup"),
        ("/apis/kubevirt.io/v1", "V1APIResourceList"),
        ("/apis/policy/v1", "V1APIResourceList"),
        ("/apis/node.k8s.io/v1", "V1APIResourceList"),
        ("/version", "VersionInfo"),
    ):
        status, body = await _get(lab, path)
        assert status == 200, path
        assert_lossless(body, model)


async def test_the_dynamic_client_discovers_kubevirt(lab: Lab) -> None:
    from kubernetes.dynamic import DynamicClient

    def vmis() -> list[str]:
        dyn = DynamicClient(lab.api)
        resource = dyn.resources.get(api_version="kubevirt.io/v1", kind="VirtualMachineInstance")
        return sorted(i.metadata.name for i in resource.get().items)

    assert await call(vmis) == sorted(e.name for e in lab.cluster.store.entries("virtualmachineinstances"))
