"""The whole embedded lab: the OpenStack side (`Lab`) plus the layers around it.

- Nova's GPU hypervisors answer ``nvidia-smi`` over SSH (`SshTargets`), as a vGPU host does;
- the bare-metal hosts form a Kubernetes cluster (the lab's Kubernetes API, with KubeVirt objects
  and Kata runtime classes), each with a dcgm-exporter and, where Kata pods run, a kata-monitor:
  bare metal deployed by Ironic as Kubernetes workers, the common way to run GPU Kubernetes;
- StarlingX edge services, where that part of the lab is present.

`write_config` writes one ``sovereign.toml`` with a section per layer, only for sources the
settings model knows, so the file always loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import Settings
from sovereign_tui.lab.server import CLOUD, Lab, LabFiles, _toml_str

LAYERS = ("openstack", "kubernetes", "gpus", "starlingx")


@dataclass
class FleetLab:
    hosts: int = 24
    seed: int = 0
    servers: int | None = None
    layers: tuple[str, ...] = LAYERS
    clock: Clock = field(default_factory=SystemClock)
    lab: Lab = field(init=False)
    kube: Any = None
    kata: Any = None
    dcgm: Any = None
    ssh: Any = None
    starlingx: Any = None
    _closers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.layers) - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown lab layers {sorted(unknown)}; choose from {', '.join(LAYERS)}")
        self.lab = Lab(hosts=self.hosts, seed=self.seed, servers=self.servers, clock=self.clock)

    @property
    def scenario(self) -> Any:
        return self.lab.scenario

    @property
    def urls(self) -> dict[str, str]:
        return self.lab.urls

    def _kube_hosts(self) -> list[Any]:
        hosts = [h for h in self.scenario.hosts if h.role == "baremetal"]
        return hosts or list(self.scenario.hosts[:3])

    def _ssh_hosts(self) -> list[Any]:
        kube = {h.name for h in self._kube_hosts()}
        return [h for h in self.scenario.hosts if h.name not in kube]

    async def start(self) -> None:
        await self.lab.start()
        try:
            if "kubernetes" in self.layers:
                await self._start_kubernetes()
            if "gpus" in self.layers:
                await self._start_gpus()
            if "starlingx" in self.layers:
                await self._start_starlingx()
        except BaseException:
            await self.stop()
            raise

    async def _start_kubernetes(self) -> None:
        from sovereign_tui.lab.kata_monitor import KataMonitorLab
        from sovereign_tui.lab.kube_api import KubeApiServer
        from sovereign_tui.lab.kube_cluster import KubeCluster
        from sovereign_tui.lab.kube_objects import nodes_from_hosts

        cluster = KubeCluster(
            nodes_from_hosts(self._kube_hosts()), seed=self.seed, clock=self.clock, timeline=self.lab.timeline
        )
        self.kube = KubeApiServer(cluster, faults=self.lab.faults)
        await self.kube.start()
        self._closers.append(self.kube.stop)
        self.kata = KataMonitorLab(cluster)
        await self.kata.start()
        self._closers.append(self.kata.stop)

    async def _start_gpus(self) -> None:
        from sovereign_tui.lab.dcgm_exporter import start_dcgm_lab
        from sovereign_tui.lab.ssh_targets import SimGpuHost, SshTargets

        if "kubernetes" in self.layers:
            self.dcgm = await start_dcgm_lab(
                [(h.name, len(h.gpus)) for h in self._kube_hosts()],
                self.clock,
                self.seed,
                pods_of=self._gpu_pods,
            )
            self._closers.append(self.dcgm.stop)
        self.ssh = SshTargets(
            [
                SimGpuHost(
                    h.name,
                    model=h.model.name,
                    gpus=len(h.gpus),
                    uuids=tuple(g.uuid for g in h.gpus),
                    bus_ids=tuple(g.bus_id for g in h.gpus),
                )
                for h in self._ssh_hosts()
            ],
            clock=self.clock,
            seed=self.seed,
            held=self._gpu_held,
        )
        await self.ssh.start()
        self._closers.append(self.ssh.close)

    def _gpu_pods(self, node: str) -> list[tuple[str, str, str] | None]:
        """Per GPU of `node`, the pod holding it now, as the kubelet hands GPUs out: the node's
        pods that request ``nvidia.com/gpu`` and have not finished, in order, a GPU each."""
        from sovereign_tui.lab.kube_cluster import TERMINAL
        from sovereign_tui.lab.kube_pods import pod_gpus

        if self.kube is None:
            return []
        slots: list[tuple[str, str, str] | None] = []
        entries = sorted(self.kube.cluster.pods_on(node), key=lambda e: (e.namespace, e.name))
        for entry in entries:
            obj = entry.obj
            if obj["status"].get("phase") in TERMINAL:
                continue
            container = obj["spec"]["containers"][0]["name"]
            slots.extend([(entry.namespace, entry.name, container)] * pod_gpus(obj))
        count = len(self.scenario.hosts_by_name[node].gpus)
        return (slots + [None] * count)[:count]

    def _gpu_held(self, host: str, index: int) -> bool:
        """A Nova server (passthrough or vGPU) or an Ironic instance holds the board now."""
        h = self.scenario.hosts_by_name.get(host)
        if h is None or index >= len(h.gpus):
            return False
        gpu = h.gpus[index]
        return gpu.holder is not None or bool(gpu.vgpu_holders)

    async def _start_starlingx(self) -> None:
        try:
            from sovereign_tui.lab import starlingx
        except ImportError:
            return  # this build's lab has no StarlingX side
        start = getattr(starlingx, "start_starlingx", None)
        if start is None:
            return
        self.starlingx = await start(self.lab)
        self._closers.append(self.starlingx.stop)

    async def stop(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()
        await self.lab.stop()

    async def __aenter__(self) -> FleetLab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def summary(self) -> dict[str, Any]:
        s = self.lab.summary()
        if self.kube is not None:
            s["kubernetes"] = self.kube.url
            s["kube_nodes"] = len(self._kube_hosts())
        if self.ssh is not None:
            s["ssh_gpu_hosts"] = len(self.ssh.names)
        return s

    # --- configuration files ---------------------------------------------------------------------

    def write_config(self, directory: str | os.PathLike[str]) -> LabFiles:
        files = self.lab.write_config(directory)
        out = files.settings.parent.resolve()
        extra: list[str] = []
        known = {f.name for f in msgspec.structs.fields(type(Settings().sources))}
        if self.kube is not None:
            self.kube.write_kubeconfig(files.kubeconfig)
            kubeconfig = _toml_str(str(files.kubeconfig.resolve()))
            if "kubernetes" in known:
                extra += ["[sources.kubernetes]", "enabled = true", f"kubeconfig = {kubeconfig}", ""]
            if "kubevirt" in known:
                extra += ["[sources.kubevirt]", "enabled = true", ""]
            if "kata" in known and self.kata is not None:
                # The lab's monitors share one loopback address: list them instead of discovery.
                monitors = ", ".join(
                    f"{_toml_str(n)} = {_toml_str(self.kata.url(n) + '/metrics')}" for n in self.kata.nodes
                )
                extra += ["[sources.kata]", "enabled = true", f"endpoints = {{ {monitors} }}", ""]
        if self.dcgm is not None and "dcgm" in known:
            endpoints = ", ".join(
                f"{{ url = {_toml_str(self.dcgm.url(n))}, host = {_toml_str(n)} }}" for n in self.dcgm.names
            )
            extra += ["[sources.dcgm]", "enabled = true", f"endpoints = [{endpoints}]", ""]
        if self.ssh is not None and "nvidia_smi" in known:
            key = out / "lab_id_ed25519"
            known_hosts = out / "lab_known_hosts"
            self.ssh.create_client_key(key)
            self.ssh.write_known_hosts(known_hosts)
            hosts = []
            for name in self.ssh.names:
                address, port = self.ssh.endpoint(name)
                hosts.append(
                    f"{{ name = {_toml_str(name)}, address = {_toml_str(address)}, port = {port}, "
                    f"user = {_toml_str(self.ssh.user)} }}"
                )
            extra += [
                "[sources.nvidia_smi]",
                "enabled = true",
                f"known_hosts = {_toml_str(str(known_hosts))}",
                f"client_keys = [{_toml_str(str(key))}]",
                "hosts = [",
                *(f"    {h}," for h in hosts),
                "]",
                "",
            ]
        if self.starlingx is not None and "starlingx" in known:
            extra += [
                "[sources.starlingx]",
                "enabled = true",
                f"cloud = {_toml_str(CLOUD)}",
                f"clouds_yaml = {_toml_str(str(files.clouds_yaml.resolve()))}",
                "",
            ]
        with files.settings.open("a", encoding="utf-8") as f:
            f.write("\n" + "\n".join(extra))
        return files
