"""Pods as kubelet and the controllers write them: templates, owners, status, readiness.

`PodTemplate` is what a controller stamps pods from; `Controller` is the lab's stand-in for a
ReplicaSet, StatefulSet, Job, DaemonSet or virt-controller, which recreates what it owns.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from sovereign_tui.lab.kube_objects import GPU, KATA_LABEL, Obj, image_id, kata_overhead, rfc3339, suffix


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    cpu: str = "100m"
    memory: str = "128Mi"
    gpus: int = 0
    extra_limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str
    api_version: str = "apps/v1"

    def ref(self) -> Obj:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class PodTemplate:
    """What a controller stamps pods from (the lab's controllers recreate evicted pods with it)."""

    namespace: str
    labels: Mapping[str, str]
    containers: tuple[Container, ...]
    owner: Owner | None = None
    runtime_class: str | None = None
    host_network: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    daemon: bool = False
    priority_class: str | None = None

    @property
    def gpus(self) -> int:
        return sum(c.gpus for c in self.containers)


_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]
_DS_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def _resources(c: Container) -> Obj:
    requests = {"cpu": c.cpu, "memory": c.memory}
    limits: dict[str, str] = {"memory": c.memory}
    if c.gpus:
        requests[GPU] = limits[GPU] = str(c.gpus)
    for k, v in c.extra_limits.items():
        requests[k] = limits[k] = v
    return {"limits": limits, "requests": requests}


def pod(
    t: PodTemplate,
    name: str,
    uid: str,
    node_name: str | None,
    *,
    host_ip: str = "",
    pod_ip: str = "",
    created: float,
    started: float | None = None,
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    rng: random.Random,
) -> Obj:
    """A pod as the API returns it once scheduled (and, when Running, started)."""
    md: Obj = {
        "name": name,
        "namespace": t.namespace,
        "uid": uid,
        "creationTimestamp": rfc3339(created),
        "labels": dict(t.labels),
    }
    if t.annotations:
        md["annotations"] = dict(t.annotations)
    if t.owner:
        md["ownerReferences"] = [t.owner.ref()]
    spec: Obj = {
        "containers": [
            {
                "name": c.name,
                "image": c.image,
                "imagePullPolicy": "IfNotPresent",
                "resources": _resources(c),
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
            for c in t.containers
        ],
        "dnsPolicy": "ClusterFirstWithHostNet" if t.host_network else "ClusterFirst",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 2000001000 if t.priority_class else 0,
        "restartPolicy": "Never" if t.owner and t.owner.kind == "Job" else "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [dict(x) for x in (_DS_TOLERATIONS if t.daemon else _TOLERATIONS)],
    }
    if t.priority_class:
        spec["priorityClassName"] = t.priority_class
    if t.host_network:
        spec["hostNetwork"] = True
    selector = dict(t.node_selector)
    if t.runtime_class:
        spec["runtimeClassName"] = t.runtime_class
        overhead = kata_overhead(t.runtime_class)
        if overhead:
            spec["overhead"] = overhead
            selector[KATA_LABEL] = "true"  # the RuntimeClass admission merges its node selector
    if selector:
        spec["nodeSelector"] = selector
    if t.daemon and node_name:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
                    ]
                }
            }
        }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": spec,
        "status": pod_status(t, node_name, host_ip, pod_ip, created, started, phase, ready, restarts, rng),
    }


def pod_status(
    t: PodTemplate,
    node_name: str | None,
    host_ip: str,
    pod_ip: str,
    created: float,
    started: float | None,
    phase: str,
    ready: bool,
    restarts: int,
    rng: random.Random,
) -> Obj:
    qos = "Burstable"
    if not node_name:
        return {
            "phase": "Pending",
            "qosClass": qos,
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(created),
                    "reason": "Unschedulable",
                    "message": "0/0 nodes are available: no node fits this pod.",
                }
            ],
        }
    st = started if started is not None else created
    t_created, t_started = rfc3339(created), rfc3339(st)
    running = phase == "Running"
    done = phase in ("Succeeded", "Failed")
    c_ready = running and ready

    def cond(kind: str, ok: bool, at: str, reason: str | None = None) -> Obj:
        c: Obj = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": at,
        }
        if reason:
            c["reason"] = reason
        return c

    not_ready_reason = "PodCompleted" if done else (None if c_ready else "ContainersNotReady")
    status: Obj = {
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", phase != "Pending" and not done, t_started),
            cond("Initialized", True, t_created, "PodCompleted" if done else None),
            cond("Ready", c_ready, t_started, not_ready_reason),
            cond("ContainersReady", c_ready, t_started, not_ready_reason),
            cond("PodScheduled", True, t_created),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "qosClass": qos,
        "startTime": t_created,
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    statuses = []
    for c in t.containers:
        cs: Obj = {
            "name": c.name,
            "image": c.image,
            "imageID": image_id(c.image),
            "containerID": f"containerd://{rng.getrandbits(256):064x}",
            "ready": c_ready,
            "restartCount": restarts,
            "started": running,
        }
        if running and ready:
            cs["state"] = {"running": {"startedAt": t_started}}
            cs["lastState"] = {}
        elif running:
            cs["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 5m0s restarting failed container={c.name}",
                }
            }
            cs["lastState"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": t_started,
                    "finishedAt": t_started,
                    "containerID": cs["containerID"],
                }
            }
        elif done:
            code = 0 if phase == "Succeeded" else 1
            cs["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": t_started,
                    "finishedAt": t_started,
                    "containerID": cs["containerID"],
                }
            }
            cs["lastState"] = {}
        else:
            del cs["containerID"], cs["imageID"]
            cs["imageID"] = ""
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            cs["lastState"] = {}
        statuses.append(cs)
    status["containerStatuses"] = statuses
    return status


def set_ready(pod_obj: Obj, ready: bool, at: float) -> None:
    """Flip a running pod's readiness as kubelet does (conditions and container state)."""
    status = pod_obj["status"]
    stamp = rfc3339(at)
    for c in status["conditions"]:
        if c["type"] in ("Ready", "ContainersReady"):
            c["status"] = "True" if ready else "False"
            c["lastTransitionTime"] = stamp
            if ready:
                c.pop("reason", None)
            else:
                c["reason"] = "ContainersNotReady"
    for cs in status.get("containerStatuses", []):
        cs["ready"] = ready
        if ready:
            cs["state"] = {"running": {"startedAt": stamp}}
        else:
            cs["restartCount"] += 1
            cs["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={cs['name']}",
                }
            }


def set_terminal(pod_obj: Obj, phase: str, at: float) -> None:
    """Finish a pod: `Succeeded` or `Failed`, containers terminated."""
    status = pod_obj["status"]
    stamp = rfc3339(at)
    status["phase"] = phase
    for c in status["conditions"]:
        if c["type"] in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
            c["status"] = "False"
            c["lastTransitionTime"] = stamp
            if c["type"] != "PodReadyToStartContainers":
                c["reason"] = "PodCompleted"
    for cs in status.get("containerStatuses", []):
        started = cs.get("state", {}).get("running", {}).get("startedAt", stamp)
        cs["ready"] = False
        cs["started"] = False
        cs["state"] = {
            "terminated": {
                "exitCode": 0 if phase == "Succeeded" else 1,
                "reason": "Completed" if phase == "Succeeded" else "Error",
                "startedAt": started,
                "finishedAt": stamp,
                "containerID": cs.get("containerID", ""),
            }
        }


def is_ready(pod_obj: Obj) -> bool:
    status = pod_obj.get("status", {})
    if status.get("phase") != "Running" or pod_obj["metadata"].get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def pod_gpus(pod_obj: Obj) -> int:
    return sum(
        int(c.get("resources", {}).get("limits", {}).get(GPU, "0")) for c in pod_obj["spec"]["containers"]
    )


@dataclass
class Controller:
    """What owns pods and recreates them: a ReplicaSet, StatefulSet, Job or DaemonSet."""

    kind: str
    name: str
    template: PodTemplate
    node: str | None = None
    """A DaemonSet pod's node (its replacement goes back there)."""
    next_ordinal: int = 0

    def pod_name(self, rng: random.Random) -> str:
        if self.kind == "StatefulSet":
            self.next_ordinal += 1
            return f"{self.name}-{self.next_ordinal - 1}"
        return f"{self.name}-{suffix(rng)}"


def template_of(pod: Obj) -> PodTemplate:
    """The template a pod could have been stamped from (containers, labels, runtime class)."""
    spec = pod["spec"]
    containers = []
    for c in spec["containers"]:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        extra = {k: v for k, v in lim.items() if k not in ("cpu", "memory", GPU)}
        containers.append(
            Container(
                c.get("name", "main"),
                c.get("image", ""),
                req.get("cpu", lim.get("cpu", "100m")),
                req.get("memory", lim.get("memory", "128Mi")),
                int(lim.get(GPU, 0)),
                extra,
            )
        )
    md = pod["metadata"]
    selector = {k: v for k, v in (spec.get("nodeSelector") or {}).items() if k != KATA_LABEL}
    owners = md.get("ownerReferences") or []
    owner = (
        Owner(owners[0]["kind"], owners[0]["name"], owners[0]["uid"], owners[0]["apiVersion"])
        if owners
        else None
    )
    return PodTemplate(
        md.get("namespace", ""),
        dict(md.get("labels") or {}),
        tuple(containers),
        owner,
        runtime_class=spec.get("runtimeClassName"),
        host_network=bool(spec.get("hostNetwork")),
        annotations=dict(md.get("annotations") or {}),
        node_selector=selector,
    )
