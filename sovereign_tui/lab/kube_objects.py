"""Builders for the lab's Kubernetes objects, shaped as a real API server returns them.

Pure functions of their inputs (a seeded `random.Random`, an epoch time): the same seed gives the
same cluster. Field names and values follow what kubelet, the controllers and kata-deploy write:
nodes with `nvidia.com/gpu` capacity, Kata runtime classes named `kata-<shim>` with
`overhead.podFixed` and a `katacontainers.io/kata-runtime` node selector, namespaces, disruption
budgets with the status the disruption controller computes. Pods are in `kube_pods`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

KATA_LABEL = "katacontainers.io/kata-runtime"
GPU = "nvidia.com/gpu"
K8S_VERSION = "v1.31.4"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The alphabet Kubernetes uses for generated name suffixes and pod-template hashes."""


@dataclass(frozen=True)
class KubeNodeSpec:
    """One node of the lab cluster: the host name shared with the other layers, and its GPUs."""

    name: str
    gpus: int = 0
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    kata: bool = True
    """Labelled `katacontainers.io/kata-runtime=true` (kata-deploy ran there)."""
    kubevirt: bool = True
    zone: str = "zone-a"
    cpu: int = 128
    memory_gib: int = 1024


def make_nodes(
    count: int, gpus: int = 8, prefix: str = "worker", cpu_only_every: int = 5
) -> list[KubeNodeSpec]:
    """`count` nodes named `<prefix>-0001`...; every `cpu_only_every`-th has no GPUs."""
    out = []
    for i in range(count):
        g = 0 if cpu_only_every and i % cpu_only_every == cpu_only_every - 1 else gpus
        out.append(KubeNodeSpec(f"{prefix}-{i + 1:04d}", gpus=g, zone=f"zone-{'abc'[i % 3]}"))
    return out


def rfc3339(epoch: float) -> str:
    """Kubernetes' timestamp format (seconds, UTC, ``Z``)."""
    return _rfc3339(int(epoch))


@functools.lru_cache(maxsize=1 << 16)
def _rfc3339(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


@functools.lru_cache(maxsize=256)
def image_id(image: str) -> str:
    return f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def new_uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(n))


def sandbox_id(pod_uid: str) -> str:
    """The CRI sandbox id (64 hex digits) the lab gives a pod: stable for its uid."""
    return hashlib.sha256(pod_uid.encode()).hexdigest()


def quantity_bytes(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 1000, "M": 10**6, "G": 10**9}
    for unit, mult in units.items():
        if q.endswith(unit):
            return int(float(q[: -len(unit)]) * mult)
    return int(q)


def quantity_cores(q: str) -> float:
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


# --- namespaces and runtime classes ------------------------------------------------------------

NAMESPACES = (
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "gpu-operator",
    "kubevirt",
    "ml-inference",
    "ml-training",
    "sandbox",
    "web",
    "vms",
)


def namespace(name: str, rng: random.Random, created: float) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": new_uid(rng),
            "creationTimestamp": rfc3339(created),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


KATA_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("kata-clh", "130Mi", "250m"),
    ("kata-cloud-hypervisor", "130Mi", "250m"),
    ("kata-dragonball", "130Mi", "250m"),
    ("kata-fc", "130Mi", "250m"),
    ("kata-qemu", "160Mi", "250m"),
    ("kata-qemu-coco-dev", "160Mi", "250m"),
    ("kata-qemu-nvidia-gpu", "98304Mi", "1"),
    ("kata-qemu-nvidia-gpu-snp", "98304Mi", "1"),
    ("kata-qemu-nvidia-gpu-tdx", "98304Mi", "1"),
    ("kata-qemu-runtime-rs", "160Mi", "250m"),
    ("kata-qemu-snp", "2048Mi", "1.0"),
    ("kata-qemu-tdx", "2048Mi", "1.0"),
    ("kata-stratovirt", "130Mi", "250m"),
)
"""kata-deploy's runtime classes: (name = handler, podFixed memory, podFixed cpu)."""


def runtime_classes(rng: random.Random, created: float) -> list[Obj]:
    out = []
    for name, mem, cpu in KATA_CLASSES:
        out.append(
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": name, "uid": new_uid(rng), "creationTimestamp": rfc3339(created)},
                "handler": name,
                "overhead": {"podFixed": {"cpu": cpu, "memory": mem}},
                "scheduling": {"nodeSelector": {KATA_LABEL: "true"}},
            }
        )
    # the GPU operator's class for runc with the NVIDIA container runtime: no overhead, no selector
    out.append(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {
                "name": "nvidia",
                "uid": new_uid(rng),
                "creationTimestamp": rfc3339(created),
                "labels": {"app.kubernetes.io/component": "gpu-operator"},
            },
            "handler": "nvidia",
        }
    )
    return out


def kata_overhead(runtime_class: str) -> dict[str, str] | None:
    for name, mem, cpu in KATA_CLASSES:
        if name == runtime_class:
            return {"cpu": cpu, "memory": mem}
    return None


# --- nodes --------------------------------------------------------------------------------------


def node_ip(index: int) -> str:
    return f"192.168.{10 + index // 250}.{index % 250 + 2}"


def pod_cidr(index: int) -> str:
    return f"10.{64 + index // 256}.{index % 256}.0/24"


def node(spec: KubeNodeSpec, index: int, rng: random.Random, created: float, now: float) -> Obj:
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/worker": "",
        "topology.kubernetes.io/zone": spec.zone,
    }
    capacity = {
        "cpu": str(spec.cpu),
        "ephemeral-storage": "3750157048Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{spec.memory_gib * 1024 * 1024}Ki",
        "pods": "110",
    }
    if spec.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(spec.gpus),
            "nvidia.com/gpu.product": spec.gpu_product,
            "nvidia.com/gpu.memory": "81559",
        }
        capacity[GPU] = str(spec.gpus)
    if spec.kata:
        labels[KATA_LABEL] = "true"
    if spec.kubevirt:
        labels["kubevirt.io/schedulable"] = "true"
        capacity |= {
            "devices.kubevirt.io/kvm": "1k",
            "devices.kubevirt.io/tun": "1k",
            "devices.kubevirt.io/vhost-net": "1k",
        }
    allocatable = dict(capacity)
    allocatable["cpu"] = f"{spec.cpu * 1000 - 500}m"
    allocatable["memory"] = f"{spec.memory_gib * 1024 * 1024 - 4 * 1024 * 1024}Ki"
    allocatable["ephemeral-storage"] = "3456144872124"
    boot = now - rng.uniform(86400, 90 * 86400)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "uid": new_uid(rng),
            "creationTimestamp": rfc3339(created),
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)]},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": node_conditions(True, boot, now),
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index)},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.UUID(int=rng.getrandbits(128)).hex,
                "systemUUID": new_uid(rng),
                "bootID": new_uid(rng),
                "kernelVersion": "6.8.0-51-generic",
                "osImage": "Ubuntu 24.04.1 LTS",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": K8S_VERSION,
                "kubeProxyVersion": K8S_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def node_conditions(ready: bool, since: float, now: float) -> list[Obj]:
    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": rfc3339(now),
            "lastTransitionTime": rfc3339(since),
            "reason": reason,
            "message": message,
        }

    if not ready:
        unknown = "Kubelet stopped posting node status."
        return [
            cond("MemoryPressure", "Unknown", "NodeStatusUnknown", unknown),
            cond("DiskPressure", "Unknown", "NodeStatusUnknown", unknown),
            cond("PIDPressure", "Unknown", "NodeStatusUnknown", unknown),
            cond("Ready", "Unknown", "NodeStatusUnknown", unknown),
        ]
    return [
        cond(
            "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]


# --- disruption budgets ------------------------------------------------------------------------


def pdb(
    namespace: str,
    name: str,
    match: Mapping[str, str],
    rule: tuple[str, int | str],
    rng: random.Random,
    created: float,
) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": new_uid(rng),
            "generation": 1,
            "creationTimestamp": rfc3339(created),
        },
        "spec": {rule[0]: rule[1], "selector": {"matchLabels": dict(match)}},
        "status": {},
    }


def _scaled(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def pdb_status(budget: Obj, expected: int, healthy: int, now: float) -> Obj:
    """The disruption controller's status for `budget`, given how many of its pods are expected
    (neither finished nor terminating) and how many are healthy (running and ready)."""
    spec = budget["spec"]
    if "minAvailable" in spec:
        desired = _scaled(spec["minAvailable"], expected)
    else:
        desired = max(0, expected - _scaled(spec.get("maxUnavailable", 0), expected))
    allowed = max(0, healthy - desired)
    old = budget.get("status") or {}
    old_cond = (old.get("conditions") or [{}])[0]
    cond_status = "True" if allowed > 0 else "False"
    since = old_cond.get("lastTransitionTime") if old_cond.get("status") == cond_status else None
    generation = budget["metadata"].get("generation", 1)
    return {
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "expectedPods": expected,
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "DisruptionAllowed",
                "status": cond_status,
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
                "observedGeneration": generation,
                "lastTransitionTime": since or rfc3339(now),
            }
        ],
    }


def nodes_from_hosts(hosts: Iterable[Any]) -> list[KubeNodeSpec]:
    """Node specs from the lab scenario's hosts (anything with `name`, `gpus` and `model.name`)."""
    return [
        KubeNodeSpec(
            h.name,
            gpus=len(h.gpus),
            gpu_product=h.model.name.replace(" ", "-"),
            zone=getattr(h, "site", "zone-a"),
        )
        for h in hosts
    ]
