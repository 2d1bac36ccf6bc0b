"""The workloads of the generated cluster, and the churn a busy cluster sees.

`populate` fills a `KubeCluster`: namespaces, Kata runtime classes, nodes, DaemonSet pods on every
node they select, then Deployments, StatefulSets, Jobs and bare pods from `APPS` until each node
holds about `pods_per_node` pods (GPU pods within the node's GPUs, Kata pods on Kata nodes), their
disruption budgets, and KubeVirt VMs. `churn` changes pods at random (labels, readiness, Job
completion, pods replaced by their controller) for benchmarks and watch tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_pods import (
    Container,
    Controller,
    Owner,
    PodTemplate,
    is_ready,
    set_ready,
    set_terminal,
)

if TYPE_CHECKING:
    from sovereign_tui.lab.kube_cluster import KubeCluster


@dataclass(frozen=True)
class App:
    """A workload of the generated cluster; `kind` is its controller (or "Pod" for none)."""

    namespace: str
    name: str
    kind: str
    image: str
    cpu: str = "500m"
    memory: str = "1Gi"
    gpus: int = 0
    runtime_class: str | None = None
    weight: float = 1.0
    budget: tuple[str, int | str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


APPS: tuple[App, ...] = (
    App(
        "ml-inference",
        "llm-serve-70b",
        "Deployment",
        "nvcr.io/nim/meta/llama-3.1-70b-instruct:1.3.0",
        "16",
        "128Gi",
        gpus=4,
        budget=("minAvailable", "50%"),
    ),
    App(
        "ml-inference",
        "embeddings",
        "Deployment",
        "nvcr.io/nim/nvidia/nv-embedqa-e5-v5:1.1.0",
        "4",
        "16Gi",
        gpus=1,
        budget=("maxUnavailable", 1),
    ),
    App(
        "sandbox",
        "untrusted-model-eval",
        "Deployment",
        "registry.lab.internal/eval/harness:2.4",
        "8",
        "64Gi",
        gpus=1,
        runtime_class="kata-qemu-nvidia-gpu",
    ),
    App(
        "sandbox",
        "notebook",
        "StatefulSet",
        "quay.io/jupyter/pytorch-notebook:2024-12-02",
        "2",
        "8Gi",
        runtime_class="kata-qemu",
    ),
    App(
        "sandbox",
        "code-runner",
        "Deployment",
        "registry.lab.internal/sandbox/runner:0.9.3",
        "1",
        "2Gi",
        runtime_class="kata-clh",
        weight=1.5,
        budget=("minAvailable", 1),
    ),
    App(
        "sandbox",
        "fn-worker",
        "Deployment",
        "registry.lab.internal/sandbox/fn:0.4.1",
        "250m",
        "512Mi",
        runtime_class="kata-fc",
        weight=0.5,
    ),
    App("ml-training", "finetune", "Job", "nvcr.io/nvidia/nemo:24.12", "32", "512Gi", gpus=8, weight=0.3),
    App("ml-training", "data-prep", "Job", "registry.lab.internal/etl/tokenize:3.1", "8", "32Gi", weight=0.6),
    App(
        "web",
        "frontend",
        "Deployment",
        "docker.io/library/nginx:1.27.3",
        "250m",
        "256Mi",
        weight=3,
        budget=("maxUnavailable", "25%"),
    ),
    App(
        "web",
        "api",
        "Deployment",
        "registry.lab.internal/web/api:5.2.0",
        "1",
        "1Gi",
        weight=2,
        budget=("minAvailable", "100%"),
    ),
    App(
        "web",
        "session-cache",
        "StatefulSet",
        "docker.io/library/redis:7.4.1",
        "500m",
        "2Gi",
        weight=0.5,
        budget=("maxUnavailable", 1),
        labels={"tier": "critical"},
    ),
    App("default", "debug-shell", "Pod", "docker.io/library/busybox:1.37", "100m", "64Mi", weight=0.1),
)
EXTRA_BUDGETS: tuple[tuple[str, str, Mapping[str, str], tuple[str, int | str]], ...] = (
    ("web", "web-critical", {"tier": "critical"}, ("minAvailable", 1)),
)
"""A second budget over session-cache pods: their eviction answers 500, as a real API does."""


@dataclass(frozen=True)
class DaemonSet:
    namespace: str
    name: str
    image: str
    labels: Mapping[str, str]
    needs: str = ""
    """Node property it runs on: "" (all), "gpus", "kata" or "kubevirt"."""
    host_network: bool = False


DAEMONSETS = (
    DaemonSet(
        "kube-system",
        "kube-proxy",
        f"registry.k8s.io/kube-proxy:{ko.K8S_VERSION}",
        {"k8s-app": "kube-proxy"},
        host_network=True,
    ),
    DaemonSet(
        "kube-system",
        "kata-deploy",
        "quay.io/kata-containers/kata-deploy:3.13.0",
        {"name": "kata-deploy"},
        needs="kata",
    ),
    DaemonSet(
        "kubevirt",
        "virt-handler",
        "quay.io/kubevirt/virt-handler:v1.4.0",
        {"kubevirt.io": "virt-handler"},
        needs="kubevirt",
    ),
    DaemonSet(
        "gpu-operator",
        "nvidia-device-plugin-daemonset",
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
        {"app": "nvidia-device-plugin-daemonset"},
        needs="gpus",
    ),
    DaemonSet(
        "gpu-operator",
        "nvidia-dcgm-exporter",
        "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04",
        {"app": "nvidia-dcgm-exporter"},
        needs="gpus",
    ),
)


def populate(c: KubeCluster, pods_per_node: int, vms: int) -> None:
    rng, now = c.rng, c.clock.time()
    born = now - 120 * 86400
    for ns in ko.NAMESPACES:
        c.store.put("namespaces", ko.namespace(ns, rng, born))
    for rc in ko.runtime_classes(rng, born + 3600):
        c.store.put("runtimeclasses", rc)
    for i, name in enumerate(c.node_names):
        c.store.put("nodes", ko.node(c.specs[name], i, rng, born + i, now))
    for ds in DAEMONSETS:
        owner = Owner("DaemonSet", ds.name, ko.new_uid(rng))
        labels = {**ds.labels, "controller-revision-hash": ko.suffix(rng, 10), "pod-template-generation": "1"}
        tmpl = PodTemplate(
            ds.namespace,
            labels,
            (Container(ds.name, ds.image, "100m", "200Mi"),),
            owner,
            host_network=ds.host_network,
            daemon=True,
            priority_class="system-node-critical",
        )
        for name in c.node_names:
            if ds.needs and not getattr(c.specs[name], ds.needs):
                continue
            ctl = Controller("DaemonSet", ds.name, tmpl, node=name)
            c.controllers[(ds.namespace, "DaemonSet", f"{ds.name}@{name}")] = ctl
            c.spawn(ctl, node=name, created=born + rng.uniform(0, 86400), startup=False)
    _apps(c, pods_per_node, born)
    for ns, name, match, rule in EXTRA_BUDGETS:
        c.budgets.add(ko.pdb(ns, name, match, rule, rng, born))
    c.kubevirt.populate(vms, born)
    c.settle()


def _apps(c: KubeCluster, pods_per_node: int, born: float) -> None:
    rng = c.rng
    ctls: dict[str, Controller] = {}
    for app in APPS:
        labels = {"app": app.name, "app.kubernetes.io/name": app.name, **app.labels}
        uid = ko.new_uid(rng)
        owner: Owner | None = None
        name = app.name
        if app.kind == "Deployment":
            name = f"{app.name}-{ko.suffix(rng, 10)}"
            owner = Owner("ReplicaSet", name, uid)
            labels["pod-template-hash"] = name.rsplit("-", 1)[1]
        elif app.kind == "StatefulSet":
            owner = Owner("StatefulSet", app.name, uid)
            labels["controller-revision-hash"] = f"{app.name}-{ko.suffix(rng, 10)}"
        container = Container(app.name.split("-")[0], app.image, app.cpu, app.memory, app.gpus)
        tmpl = PodTemplate(app.namespace, labels, (container,), owner, runtime_class=app.runtime_class)
        ctls[app.name] = Controller(owner.kind if owner else "Pod", name, tmpl)
        if owner is not None:
            c.controllers[(app.namespace, owner.kind, owner.name)] = ctls[app.name]
        if app.budget:
            c.budgets.add(ko.pdb(app.namespace, app.name, {"app": app.name}, app.budget, rng, born))
    weights = [a.weight for a in APPS]
    fallback = next(a for a in APPS if a.name == "frontend")  # fits on any node
    for name in c.node_names:
        spec = c.specs[name]
        for _ in range(max(0, pods_per_node - len(c.pods_on(name)))):
            for _try in range(4):
                app = rng.choices(APPS, weights)[0]
                if (not app.runtime_class or spec.kata) and app.gpus <= c.free_gpus(name):
                    break
            else:
                app = fallback
            ctl = ctls[app.name] if app.kind != "Job" else _job(c, app, ctls[app.name].template)
            r = rng.random()
            phase, ready = ("Succeeded", False) if app.kind == "Job" and r < 0.3 else ("Running", r > 0.02)
            created = born + rng.uniform(86400, 110 * 86400)
            c.spawn(ctl, node=name, created=created, startup=False, phase=phase, ready=ready)


def _job(c: KubeCluster, app: App, tmpl: PodTemplate) -> Controller:
    job, uid = f"{app.name}-{ko.suffix(c.rng)}", ko.new_uid(c.rng)
    labels = {
        **tmpl.labels,
        "batch.kubernetes.io/job-name": job,
        "job-name": job,
        "batch.kubernetes.io/controller-uid": uid,
        "controller-uid": uid,
    }
    ctl = Controller("Job", job, replace(tmpl, labels=labels, owner=Owner("Job", job, uid, "batch/v1")))
    c.controllers[(app.namespace, "Job", job)] = ctl
    return ctl


def churn(c: KubeCluster, changes: int) -> None:
    """Make `changes` changes to pods owned by workload controllers (never DaemonSet or
    virt-launcher pods): label edits, readiness flips, Jobs completing, pods replaced."""
    rng, done = c.rng, 0
    keys = c.store.table_keys("pods")
    while done < changes and keys:
        entry = c.store.get_key("pods", rng.choice(keys))
        ctl = c.controller_of(entry) if entry is not None else None
        if entry is None or ctl is None or ctl.kind in ("DaemonSet", "VirtualMachineInstance"):
            continue
        if entry.obj["metadata"].get("deletionTimestamp"):
            continue
        ns, name, r = entry.namespace, entry.name, rng.random()
        c.churn_counter += 1
        if r < 0.4 or entry.obj["status"].get("phase") != "Running":
            c.store.set_path(
                "pods", ns, name, ("metadata", "labels", "lab.sovereign/churn"), str(c.churn_counter)
            )
        elif r < 0.7:
            c.store.update("pods", ns, name, partial(set_ready, ready=not is_ready(entry.obj), at=c.now()))
        elif r < 0.8 and ctl.kind == "Job":
            c.store.update("pods", ns, name, partial(set_terminal, phase="Succeeded", at=c.now()))
        else:
            c.remove(ns, name)
        done += 1
