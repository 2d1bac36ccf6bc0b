"""The Kubernetes collectors on a real poller and store, against the lab Kubernetes API over HTTP
(the kubeconfig read by the kubernetes client's own loader), and what the lab's objects say they
should publish, derived from the lab's own JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.base import Collector
from collectors.kube_client import KubeOptions, KubeRef, KubeSession
from collectors.kube_watch import Informer
from sovereign_tui.lab.kube_pods import pod_gpus
from sovereign_tui.model import Snapshot, Workload
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store
from tests.lab_kube.conftest import Lab, start_lab, stop_lab

SAFETY_S = 30.0
"""Only a guard against a hung test: every wait below ends on a condition."""


@dataclass
class Rig:
    lab: Lab
    session: KubeSession
    store: Store
    poller: Poller
    collectors: list[Collector] = field(default_factory=list)

    def add(self, collector: Collector) -> None:
        self.collectors.append(collector)
        self.retarget()

    def retarget(self) -> None:
        self.poller.set_targets([t for c in self.collectors for t in c.targets()])

    async def poll(self) -> Snapshot:
        await self.poller.run_once()
        return self.store.snapshot()

    def health(self, target: str) -> tuple[bool | None, str | None]:
        h = self.poller.health(target)
        return h.up, h.last_error

    async def close(self) -> None:
        for c in self.collectors:
            await c.aclose()
        await self.poller.close()
        await stop_lab(self.lab)


async def make_rig(tmp_path: Path, options: KubeOptions | None = None, **lab_kw: Any) -> Rig:
    lab = await start_lab(tmp_path, **lab_kw)
    session = KubeSession(KubeRef(str(lab.kubeconfig)), options or KubeOptions(page_size=20))
    store = Store(lab.clock)
    return Rig(lab, session, store, Poller(store, clock=lab.clock))


async def until(inf: Informer[Any], predicate: Callable[[], bool]) -> None:
    await asyncio.wait_for(inf.wait_until(predicate), SAFETY_S)


def lab_versions(lab: Lab, plural: str) -> dict[str, str]:
    return {
        e.obj["metadata"]["uid"]: e.obj["metadata"]["resourceVersion"]
        for e in lab.cluster.store.entries(plural)
    }


async def caught_up(inf: Informer[Any], lab: Lab, plural: str) -> None:
    """Wait until the informer holds exactly the lab's objects, each at the lab's version."""

    def same() -> bool:
        return {uid: o.metadata.resource_version for uid, o in inf.items.items()} == lab_versions(lab, plural)

    await until(inf, same)


def expected_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """What a pod should become, from the lab's JSON of it."""
    md, spec = obj["metadata"], obj["spec"]
    rc = spec.get("runtimeClassName")
    return {
        "id": md["uid"],
        "name": md["name"],
        "owner": md["namespace"],
        "host": spec.get("nodeName"),
        "kind": "kata-pod" if rc and rc.startswith("kata") else "pod",
        "runtime_class": rc,
        "gpus": pod_gpus(obj),
        "phase": obj["status"]["phase"],
        "owner_kind": (md.get("ownerReferences") or [{}])[0].get("kind"),
    }


def published_pod(w: Workload) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "owner": w.owner,
        "host": w.host,
        "kind": w.kind,
        "runtime_class": w.runtime_class,
        "gpus": w.gpus,
        "phase": w.state.split(" ")[0],
        "owner_kind": w.detail.get("owner_kind"),
    }


def assert_pods_equal(lab: Lab, workloads: Iterable[Workload]) -> None:
    pods = [w for w in workloads if w.kind in ("pod", "kata-pod")]
    got = {w.id: published_pod(w) for w in pods}
    want = {e.obj["metadata"]["uid"]: expected_pod(e.obj) for e in lab.cluster.store.entries("pods")}
    assert len(got) == len(pods)
    assert got == want
