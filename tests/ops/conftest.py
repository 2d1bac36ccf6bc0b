"""The lab the operations act on: Keystone, Nova and Ironic (`Lab`) and a Kubernetes cluster with
KubeVirt whose nodes are the lab's hypervisors (one host, several layers), on one timeline and one
clock; a snapshot taken by the real collectors; counters of the actions the lab received.

In-process tests run on a `FakeClock` and `drive` the operation: the clock moves only after an
operation event (every adapter reports progress right before it waits), so the lab's migrations,
deploys and the executor's deadlines all advance together and deterministically.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sovereign_tui.clock import Clock, FakeClock
from sovereign_tui.config import Settings, parse_settings
from sovereign_tui.lab.ironic_sim import IronicTimings
from sovereign_tui.lab.kube_api import KubeApiServer
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_objects import KubeNodeSpec
from sovereign_tui.lab.nova_sim import Timings
from sovereign_tui.lab.server import CLOUD, Lab
from sovereign_tui.lab.starlingx import StarlingxServices, start_starlingx
from sovereign_tui.lab.starlingx_sim import StxTimings
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.engine import Actor, Operations, RunHandle
from sovereign_tui.ops.executor import OperationResult
from sovereign_tui.runtime import Runtime, openstack_collectors

POLL_S = 1.0
ADMIN = Actor("alice", "admin")
OPERATOR = Actor("bob", "operator")
VIEWER = Actor("carol", "viewer")


@dataclass
class OpsLab:
    clock: Clock
    lab: Lab
    cluster: KubeCluster
    kube: KubeApiServer
    kubeconfig: Path
    clouds_yaml: Path
    state_dir: Path
    counts: Counter[str]
    stx: StarlingxServices

    def settings_toml(self, **ops: Any) -> str:
        fields = {"kubeconfig": str(self.kubeconfig), "poll_interval_s": POLL_S, "eviction_retry_s": POLL_S}
        fields.update(ops)
        lines = [f"{k} = {_toml(v)}" for k, v in fields.items()]
        return (
            f"[sources.host]\nenabled = false\n[sources.nvml]\nenabled = false\n"
            f'[sources.nova]\nenabled = true\ncloud = "{CLOUD}"\nclouds_yaml = "{self.clouds_yaml}"\n'
            f'[sources.ironic]\nenabled = true\ncloud = "{CLOUD}"\nclouds_yaml = "{self.clouds_yaml}"\n'
            "[ops]\n" + "\n".join(lines) + "\n"
        )

    def settings(self, **ops: Any) -> Settings:
        return parse_settings(self.settings_toml(**ops))

    def operations(self, **ops: Any) -> Operations:
        return Operations.from_settings(self.settings(state_dir=str(self.state_dir), **ops), clock=self.clock)

    async def snapshot(self) -> Snapshot:
        settings = self.settings()
        runtime = Runtime(settings, clock=self.clock, collectors=openstack_collectors(settings))
        try:
            snap = await runtime.first_poll(60.0)
        finally:
            await runtime.close()
        assert all(s.up for s in snap.sources), [s.last_error for s in snap.sources]
        return snap

    def compute_hosts(self) -> list[str]:
        return [h.name for h in self.lab.scenario.hosts if h.role == "compute"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _count(counts: Counter[str], obj: Any, attr: str, key: Callable[..., str]) -> None:
    """Count calls of the lab's own method (the lab is the system the actions land on)."""
    original = getattr(obj, attr)

    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[key(*args, **kwargs)] += 1
        return original(*args, **kwargs)

    setattr(obj, attr, counted)


def instrument(lab: Lab, cluster: KubeCluster, counts: Counter[str]) -> None:
    moves = lab.compute.moves
    _count(counts, moves, "live_migrate", lambda s, *a, **k: f"nova.live-migrate:{s.id}")
    _count(counts, moves, "cold_migrate", lambda s, *a, **k: f"nova.cold-migrate:{s.id}")
    _count(counts, moves, "confirm_resize", lambda s, *a, **k: f"nova.confirm:{s.id}")
    _count(counts, moves, "abort", lambda s, *a, **k: f"nova.abort:{s.id}")
    _count(
        counts,
        lab.compute,
        "update_service",
        lambda svc, body: f"nova.service:{svc.host}:{body.get('status')}",
    )
    _count(counts, lab.compute, "create", lambda **k: f"nova.create:{k['name']}")
    bm = lab.baremetal
    _count(counts, bm, "set_maintenance", lambda n, on, *a: f"ironic.maintenance:{n.name}:{on}")
    _count(counts, bm, "provision", lambda n, target, *a: f"ironic.provision:{n.name}:{target}")
    _count(counts, cluster, "patch_node", lambda name, *a: f"kube.patch-node:{name}")
    _count(counts, cluster, "evict", lambda ns, name: f"kube.evict:{ns}/{name}")
    _count(counts, cluster, "create_pod", lambda ns, body: f"kube.create-pod:{ns}/{body['metadata']['name']}")
    migrations = cluster.kubevirt.migrations
    _count(counts, migrations, "create", lambda ns, body: f"kubevirt.migrate:{ns}/{body['spec']['vmiName']}")
    _count(counts, migrations, "delete", lambda ns, name: f"kubevirt.delete:{ns}/{name}")


def instrument_stx(stx: StarlingxServices, counts: Counter[str]) -> None:
    _count(counts, stx.sim, "act", lambda host, action: f"stx.{action}:{host.hostname}")


async def start_ops_lab(
    tmp_path: Path,
    clock: Clock,
    *,
    hosts: int = 8,
    seed: int = 3,
    nova_timings: Timings | None = None,
    ironic_timings: IronicTimings | None = None,
    pods_per_node: int = 6,
    vms: int = 8,
    stx_timings: StxTimings | None = None,
) -> OpsLab:
    lab = Lab(hosts=hosts, seed=seed, clock=clock, nova_timings=nova_timings, ironic_timings=ironic_timings)
    await lab.start()
    stx = await start_starlingx(lab, timings=stx_timings or StxTimings(lock_s=6.0, unlock_s=12.0))
    files = lab.write_config(tmp_path / "lab")
    specs = [
        KubeNodeSpec(h.name, gpus=len(h.gpus) if not h.vgpu else 0, zone=f"zone-{h.site}")
        for h in lab.scenario.hosts
        if h.role == "compute"
    ]
    cluster = KubeCluster(
        specs, seed=seed, clock=clock, timeline=lab.timeline, pods_per_node=pods_per_node, vms=vms
    )
    kube = KubeApiServer(cluster, faults=lab.faults)
    await kube.start()
    kubeconfig = kube.write_kubeconfig(tmp_path / "kube" / "kubeconfig")
    counts: Counter[str] = Counter()
    instrument(lab, cluster, counts)
    instrument_stx(stx, counts)
    return OpsLab(clock, lab, cluster, kube, kubeconfig, files.clouds_yaml, tmp_path / "state", counts, stx)


async def stop_ops_lab(ol: OpsLab) -> None:
    await ol.kube.stop()
    await ol.stx.stop()
    await ol.lab.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ops_lab(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpsLab]:
    ol = await start_ops_lab(tmp_path, clock)
    yield ol
    await stop_ops_lab(ol)


@pytest.fixture
async def ops(ops_lab: OpsLab) -> AsyncIterator[Operations]:
    operations = ops_lab.operations()
    yield operations
    await operations.close()


async def drive(clock: FakeClock, run: RunHandle, step_s: float = POLL_S) -> OperationResult:
    """Run the operation to its end, moving the clock after each progress report (the adapter
    is about to wait on the clock then): no sleeps, and time passes only while something waits."""
    async for event in run.events():
        if event.kind == "step-progress":
            await clock.advance(step_s)
    return await run.wait()


# --- what the lab holds, read from its own state (expected results derive from it) ----------------


def gpu_flavor(server: Any) -> bool:
    specs = server.flavor.extra_specs
    return bool(specs.get("pci_passthrough:alias") or specs.get("resources:VGPU"))


def servers_on(ol: OpsLab, host: str) -> list[Any]:
    return [s for s in ol.lab.scenario.servers.values() if s.host == host]


def live_movable(server: Any) -> bool:
    return server.vm_state == "active" and not gpu_flavor(server)


def vmis_on(ol: OpsLab, host: str) -> list[dict[str, Any]]:
    return [
        e.obj
        for e in ol.cluster.store.entries("virtualmachineinstances")
        if e.obj["status"].get("nodeName") == host
    ]


def migratable(vmi: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in vmi["status"].get("conditions", [])}
    return conds.get("LiveMigratable") == "True"


def pods_on(ol: OpsLab, host: str, *, daemons: bool = False) -> list[Any]:
    """Running pods on the node; DaemonSet pods only when asked."""
    out = []
    for e in ol.cluster.store.entries("pods"):
        o = e.obj
        if o["spec"].get("nodeName") != host or o["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        owners = {r.get("kind") for r in o["metadata"].get("ownerReferences") or []}
        if ("DaemonSet" in owners) == daemons:
            out.append(e)
    return out


def pick_host(ol: OpsLab, score: Callable[[str], int]) -> str:
    """The hypervisor that scores highest (ties: first by name): tests say what they need, not where."""
    hosts = ol.compute_hosts()
    best = max(hosts, key=lambda h: (score(h), [-ord(c) for c in h]))
    assert score(best) > 0, "the lab has no host with what this test needs"
    return best


def busiest_host(ol: OpsLab) -> str:
    """A host with live-migratable servers, a GPU server and a LiveMigrate VM: every drain path."""

    def score(h: str) -> int:
        srv = servers_on(ol, h)
        live = sum(live_movable(s) for s in srv)
        gpu = any(gpu_flavor(s) and s.vm_state == "active" for s in srv)
        evac = any(
            migratable(v) and v["spec"].get("evictionStrategy") == "LiveMigrate" for v in vmis_on(ol, h)
        )
        return live * 4 + 2 * gpu + 8 * evac if live >= 3 and evac else 0

    return pick_host(ol, score)


# --- a lab on the system clock, fast, for the command line in another process --------------------

FAST_NOVA = Timings(
    schedule_s=0.05,
    build_s=0.3,
    live_queued_s=0.1,
    live_preparing_s=0.1,
    live_bandwidth_bps=2**36,  # 128 GiB of guest memory in 2 s
    live_post_s=0.1,
    cold_prep_s=0.1,
    cold_copy_s=0.5,
    cold_post_s=0.1,
)


async def start_fast_lab(tmp_path: Path, clock: Clock) -> OpsLab:
    ol = await start_ops_lab(
        tmp_path, clock, nova_timings=FAST_NOVA, stx_timings=StxTimings(lock_s=0.5, unlock_s=1.0)
    )
    phases = ol.cluster.kubevirt.migrations.phase_s
    for phase in phases:
        phases[phase] = 0.1
    return ol


def write_settings(ol: OpsLab, path: Path, **ops: Any) -> Path:
    fields: dict[str, Any] = {
        "poll_interval_s": 0.05,
        "eviction_retry_s": 0.1,
        "state_dir": str(ol.state_dir),
    }
    fields.update(ops)
    path.write_text(ol.settings_toml(**fields), encoding="utf-8")
    return path


def cli_env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "xdgc")}
