"""Kubernetes steps through the kubernetes client: cordon and uncordon (``PATCH`` of the node),
pod eviction (the eviction subresource, which honours disruption budgets), pod creation.

An eviction answered 429 is refused *for now* by a PodDisruptionBudget: it is retried every
`eviction_retry_s` (as ``kubectl drain`` does) until the step's timeout, with the budget's own
message as progress. A 429 from KubeVirt's eviction webhook means the opposite: the launcher pod
of a LiveMigrate VM is being migrated away, so the step follows the pod until it is gone. A 500
(several budgets select the pod) cannot succeed by waiting and fails the step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, off_loop, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.plan import StepKind

KUBEVIRT_WEBHOOK = "virt-launcher-eviction-interceptor"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Refusal:
    """An API error the caller handles itself (returned, not raised)."""

    status: int
    message: str
    causes: list[dict[str, Any]] = field(default_factory=list)


def _decode(exc: Any) -> tuple[str, list[dict[str, Any]]]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return one_line(exc.reason or exc.body or "no message"), []
    if not isinstance(body, dict):
        return one_line(exc.reason or "no message"), []
    causes = (body.get("details") or {}).get("causes") or []
    return one_line(body.get("message") or exc.reason or "no message"), list(causes)


async def kcall(fn: Any, *args: Any, expect: tuple[int, ...] = (), **kwargs: Any) -> Any:
    """A client call off the loop. Statuses in `expect` come back as a `Refusal`; other API
    errors and unreachable servers raise `StepFailed` with one line."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return await off_loop(fn, *args, **kwargs)
    except ApiException as exc:
        message, causes = _decode(exc)
        if exc.status in expect:
            return Refusal(int(exc.status), message, causes)
        raise StepFailed(f"kubernetes: HTTP {exc.status}: {message}") from None
    except HTTPError as exc:
        raise StepFailed(f"kubernetes: API unreachable ({one_line(exc)})") from None


def split(target: str) -> tuple[str, str]:
    ns, _, name = target.partition("/")
    return ns, name


class KubernetesActions:
    kinds = frozenset(
        {StepKind.KUBE_CORDON, StepKind.KUBE_UNCORDON, StepKind.KUBE_EVICT, StepKind.KUBE_CREATE_POD}
    )

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    async def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(await self.connections.kube("kubernetes"))

    async def run(self, ctx: StepContext) -> str:
        kind = ctx.step.kind
        if kind in (StepKind.KUBE_CORDON, StepKind.KUBE_UNCORDON):
            return await self._cordon(ctx, on=kind == StepKind.KUBE_CORDON)
        if kind == StepKind.KUBE_EVICT:
            return await self.evict(ctx)
        if kind == StepKind.KUBE_CREATE_POD:
            return await self._create_pod(ctx)
        raise StepFailed(f"kubernetes: no action for {kind}")

    async def cancel(self, ctx: StepContext) -> str | None:
        return None  # an accepted eviction cannot be taken back; a refused one just stops

    async def _cordon(self, ctx: StepContext, *, on: bool) -> str:
        core = await self.core()
        name = ctx.step.target
        node = await kcall(core.read_node, name)
        if bool(node.spec.unschedulable) == on:
            return f"node {name} already {'cordoned' if on else 'schedulable'}"
        await kcall(core.patch_node, name, {"spec": {"unschedulable": on}})
        return f"node {name} {'cordoned' if on else 'uncordoned'}"

    async def _gone(self, core: Any, ns: str, name: str, uid: str | None, node: str | None) -> bool:
        pod = await kcall(core.read_namespaced_pod, name, ns, expect=(404,))
        if isinstance(pod, Refusal):
            return True
        if uid and pod.metadata.uid != uid:
            return True  # its controller made a new one under the same name
        if node and pod.spec.node_name != node:
            return True
        return pod.status.phase in TERMINAL

    async def evict(self, ctx: StepContext) -> str:
        """Evict the pod and wait until it is gone; also the first half of a KubeVirt evacuation."""
        from kubernetes import client

        core = await self.core()
        ns, name = split(ctx.params.get("pod") or ctx.step.target)
        uid, node = ctx.params.get("uid"), ctx.params.get("node")
        refused_since: float | None = None
        while True:
            if await self._gone(core, ns, name, uid, node):
                if ctx.data.get("evicted") or ctx.data.get("evacuating"):
                    return f"pod {ns}/{name} evicted"
                return f"pod {ns}/{name} already gone from {node or 'its node'}"
            if ctx.data.get("evicted") or ctx.data.get("evacuating"):
                await ctx.pause(f"waiting for {ns}/{name} to terminate")
                continue
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
            answer = await kcall(core.create_namespaced_pod_eviction, name, ns, body, expect=(429, 500))
            if not isinstance(answer, Refusal):
                ctx.note(evicted=True)
                continue
            if answer.status == 500:
                raise StepFailed(f"eviction of {ns}/{name} refused: {answer.message}")
            if KUBEVIRT_WEBHOOK in answer.message and "not live-migratable" not in answer.message:
                ctx.note(evacuating=True)
                ctx.progress(f"KubeVirt is migrating the VM of {ns}/{name} away")
                continue
            if KUBEVIRT_WEBHOOK in answer.message:
                raise StepFailed(f"eviction of {ns}/{name} refused: {answer.message}")
            cause = next((c.get("message") for c in answer.causes if c.get("message")), "")
            now = ctx.clock.monotonic()
            refused_since = now if refused_since is None else refused_since
            waited = now - refused_since
            await ctx.pause(
                f"blocked by its disruption budget for {waited:.0f}s: {cause or answer.message}; retrying",
                seconds=ctx.eviction_retry_s,
            )

    async def _create_pod(self, ctx: StepContext) -> str:
        core = await self.core()
        p = ctx.params
        ns, name = p["namespace"], p["name"]
        existing = await kcall(core.read_namespaced_pod, name, ns, expect=(404,))
        if isinstance(existing, Refusal):
            await kcall(core.create_namespaced_pod, ns, pod_manifest(p))
        while True:
            pod = await kcall(core.read_namespaced_pod, name, ns)
            phase = pod.status.phase
            if phase == "Running":
                return (
                    f"pod {ns}/{name} running on {pod.spec.node_name} (runtime {pod.spec.runtime_class_name})"
                )
            if phase == "Failed":
                raise StepFailed(
                    f"pod {ns}/{name} failed: {one_line(pod.status.message or pod.status.reason)}"
                )
            await ctx.pause(f"pod {phase.lower() if phase else 'pending'}")


def pod_manifest(p: dict[str, str]) -> dict[str, Any]:
    gpus = int(p.get("gpus") or 0)
    resources: dict[str, Any] = {"requests": {"cpu": p.get("cpu", "1"), "memory": p.get("memory", "2Gi")}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    spec: dict[str, Any] = {
        "containers": [{"name": p["name"][:63], "image": p["image"], "resources": resources}],
        "restartPolicy": "Always",
    }
    if p.get("runtime_class"):
        spec["runtimeClassName"] = p["runtime_class"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p["name"], "namespace": p["namespace"], "labels": {"app": p["name"]}},
        "spec": spec,
    }
