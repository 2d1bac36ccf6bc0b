"""The one scenario behind the whole lab: sites, racks, GPU hosts, flavors, projects and workloads.

Everything is a deterministic function of ``seed`` and ``hosts``: the same arguments give the same
names, UUIDs, placements and states, whatever the machine. About three hosts in four are Nova
hypervisors (GPUs passed through, or L40S carved into vGPUs), the rest Ironic bare-metal nodes;
three controllers run the control-plane services. The objects are mutable: the services' state
machines (`nova_sim`, `ironic_sim`) change them, and every change goes through `touch` so the
cached JSON of an object is dropped when (and only when) the object changed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# --- hardware --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    """The name NVML and nvidia-smi report."""
    alias: str
    """Nova PCI alias (``pci_passthrough:alias``) and short name in flavors."""
    memory_mib: int
    per_host: int
    product_id: str
    host_vcpus: int
    host_memory_mb: int
    host_local_gb: int
    vgpus_per_gpu: int = 0
    """vGPU (mdev) instances per board on hosts that run vGPU; 0 when the model is not used so."""


GPU_MODELS: dict[str, GpuModel] = {
    m.alias: m
    for m in (
        GpuModel("NVIDIA H100 80GB HBM3", "h100", 81559, 8, "2330", 224, 2_097_152, 7680),
        GpuModel("NVIDIA H200", "h200", 143771, 8, "2335", 224, 2_097_152, 7680),
        GpuModel("NVIDIA A100-SXM4-80GB", "a100", 81920, 8, "20b2", 256, 2_097_152, 7680),
        GpuModel("NVIDIA L40S", "l40s", 46068, 4, "26b9", 128, 1_048_576, 3840, vgpus_per_gpu=4),
    )
}
VGPU_TYPE = "nvidia-1155"
"""mdev type of the L40S-12Q vGPU profile."""
CPU_ALLOCATION_RATIO = 4.0
HOSTS_PER_RACK = 8
ADMIN_PASSWORD = "sovereign-lab-admin"
DEMO_PASSWORD = "sovereign-lab-demo"


@dataclass(slots=True, eq=False)
class Gpu:
    index: int
    uuid: str
    bus_id: str
    holder: str | None = None
    """Id of the Nova server, or instance UUID of the Ironic node, holding the board."""
    vgpu_holders: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Service:
    """A Nova service record (os-services)."""

    id: str
    int_id: int
    binary: str
    host: str
    zone: str
    disabled: bool = False
    disabled_reason: str | None = None
    forced_down: bool = False
    alive: bool = True
    """Whether the service still reports (its heartbeat); a dead one reads ``state: down``."""
    last_seen: float = 0.0
    """Wall time of its last heartbeat when it stopped reporting."""

    @property
    def up(self) -> bool:
        return self.alive and not self.forced_down


@dataclass(slots=True, eq=False)
class Host:
    name: str
    site: str
    rack: str
    role: str
    """``compute`` (Nova hypervisor) or ``baremetal`` (Ironic node)."""
    model: GpuModel
    gpus: list[Gpu]
    vcpus: int
    memory_mb: int
    local_gb: int
    ip: str
    bmc_ip: str
    booted_at: float
    vgpu: bool = False
    """A compute host that exposes vGPUs (mdevs) instead of passing whole boards through."""
    hypervisor_id: str = ""
    hyp_int_id: int = 0
    service: Service | None = None
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    server_ids: set[str] = field(default_factory=set)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.site}.lab.internal"

    @property
    def vgpu_capacity(self) -> int:
        return len(self.gpus) * self.model.vgpus_per_gpu if self.vgpu else 0

    def free_gpus(self) -> list[Gpu]:
        return [g for g in self.gpus if g.holder is None and not g.vgpu_holders] if not self.vgpu else []

    def free_vgpus(self) -> int:
        return self.vgpu_capacity - sum(len(g.vgpu_holders) for g in self.gpus)


# --- identity ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Project:
    id: str
    name: str
    description: str
    domain_id: str = "default"


@dataclass(slots=True)
class User:
    id: str
    name: str
    password: str
    default_project_id: str | None
    roles: dict[str, list[str]]
    """Role names per project id."""
    domain_id: str = "default"


@dataclass(slots=True)
class AppCredential:
    id: str
    name: str
    secret: str
    user_id: str
    project_id: str
    roles: list[str]


ROLE_IDS = {
    "admin": "a6e5ff7ad4c34ad6a1a1c0e5e1c2e0f1",
    "member": "9fe2ff9ee4384b1894a90878d3e92bab",
    "reader": "2b6d1b3f7c1a4b6e9a8c5d4e3f2a1b0c",
}

# --- compute -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Flavor:
    id: str
    int_id: int
    name: str
    vcpus: int
    ram: int
    disk: int
    extra_specs: dict[str, str]
    ephemeral: int = 0
    swap: int = 0
    is_public: bool = True
    description: str | None = None

    @property
    def gpu_alias(self) -> str | None:
        spec = self.extra_specs.get("pci_passthrough:alias")
        return spec.split(":")[0] if spec else None

    @property
    def gpu_count(self) -> int:
        spec = self.extra_specs.get("pci_passthrough:alias")
        return sum(int(part.split(":")[1]) for part in spec.split(",")) if spec else 0

    @property
    def vgpus(self) -> int:
        return int(self.extra_specs.get("resources:VGPU", "0"))


@dataclass(slots=True)
class Image:
    id: str
    name: str
    properties: dict[str, str]


@dataclass(slots=True)
class InstanceAction:
    action: str
    request_id: str
    user_id: str
    project_id: str
    start_time: float
    updated_at: float
    message: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Server:
    id: str
    name: str
    project_id: str
    user_id: str
    flavor: Flavor
    image: Image
    host: str | None
    vm_state: str
    power_state: int
    created: float
    updated: float
    number: int
    """Sequence number: instance-%08x and reservation ids derive from it."""
    ip: str
    mac: str
    network: str
    az: str
    task_state: str | None = None
    launched_at: float | None = None
    key_name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    locked: bool = False
    locked_reason: str | None = None
    tags: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    scheduler_hints: dict[str, Any] = field(default_factory=dict)
    pinned_az: str | None = None
    """The availability zone asked for at creation, if any."""
    gpus: list[int] = field(default_factory=list)
    """Indexes of the boards it holds on its host (passthrough)."""
    vgpu_on: list[int] = field(default_factory=list)
    """Indexes of the boards its vGPUs are carved from."""
    fault: dict[str, Any] | None = None
    fail_next_move: bool = False
    """Test and training knob: the next migration of this server fails."""
    actions: list[InstanceAction] = field(default_factory=list)
    cache: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Migration:
    id: int
    uuid: str
    server_id: str
    migration_type: str
    """migration (cold), live-migration, evacuation or resize."""
    status: str
    source_compute: str
    source_node: str
    dest_compute: str | None
    dest_node: str | None
    dest_host: str | None
    flavor_int_id: int
    user_id: str
    project_id: str
    created: float
    updated: float
    memory_total: int = 0
    running_since: float | None = None
    """Monotonic time the copy phase started; progress is a function of time from there."""
    running_s: float = 0.0
    finished_copy: bool = False


# --- bare metal --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Node:
    uuid: str
    int_id: int
    name: str | None
    host: Host | None
    """The physical host, None for nodes enrolled at run time (no GPUs known)."""
    driver: str
    driver_info: dict[str, Any]
    properties: dict[str, Any]
    resource_class: str
    traits: list[str]
    extra: dict[str, Any]
    conductor: str
    created_at: float
    updated_at: float | None
    provision_state: str
    power_state: str | None
    conductor_group: str = ""
    target_provision_state: str | None = None
    target_power_state: str | None = None
    provision_updated_at: float | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    fault: str | None = None
    last_error: str | None = None
    reservation: str | None = None
    instance_uuid: str | None = None
    instance_info: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    lessee: str | None = None
    description: str | None = None
    inspection_started_at: float | None = None
    inspection_finished_at: float | None = None
    fail_next: bool = False
    """Test and training knob: the next provisioning action of this node fails."""
    cache: dict[int, bytes] = field(default_factory=dict)


# --- the scenario ------------------------------------------------------------------------------


@dataclass(slots=True)
class Site:
    name: str
    region: str
    kind: str
    """``central`` or ``edge``."""


@dataclass
class Scenario:
    seed: int
    sites: list[Site]
    racks: list[str]
    hosts: list[Host]
    controllers: list[str]
    services: list[Service]
    projects: list[Project]
    users: list[User]
    app_credentials: list[AppCredential]
    flavors: list[Flavor]
    images: list[Image]
    servers: dict[str, Server]
    nodes: list[Node]
    migrations: list[Migration] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    """Randomness for what happens at run time (new ids, failure draws), seeded from `seed`."""
    server_counter: int = 0
    generation: int = 0
    """Bumped by every change to the set of servers or their order (creation, deletion)."""
    hosts_by_name: dict[str, Host] = field(init=False)
    flavors_by_id: dict[str, Flavor] = field(init=False)
    images_by_id: dict[str, Image] = field(init=False)
    projects_by_id: dict[str, Project] = field(init=False)
    nodes_by_uuid: dict[str, Node] = field(init=False)
    nodes_by_name: dict[str, Node] = field(init=False)
    services_by_id: dict[str, Service] = field(init=False)

    def __post_init__(self) -> None:
        self.hosts_by_name = {h.name: h for h in self.hosts}
        self.flavors_by_id = {f.id: f for f in self.flavors}
        self.images_by_id = {i.id: i for i in self.images}
        self.projects_by_id = {p.id: p for p in self.projects}
        self.nodes_by_uuid = {n.uuid: n for n in self.nodes}
        self.nodes_by_name = {n.name: n for n in self.nodes if n.name}
        self.services_by_id = {s.id: s for s in self.services}

    @property
    def compute_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "compute"]

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def gpu_hosts(self) -> Iterator[tuple[str, str, int]]:
        """(host name, GPU model name, board count) of every GPU host, for GPU-level simulators."""
        for h in self.hosts:
            yield h.name, h.model.name, len(h.gpus)

    @staticmethod
    def generate(
        hosts: int = 24, seed: int = 0, *, servers: int | None = None, now: float = 1.8e9
    ) -> Scenario:
        """Build the scenario. `servers` defaults to about four per hypervisor; `now` is the wall
        time the generated history (creation times, heartbeats) ends at."""
        if hosts < 1:
            raise ValueError(f"the lab needs at least 1 host, got {hosts}")
        from sovereign_tui.lab.scenario_gen import Generator

        return Generator(hosts, seed, servers, now).build()


# --- generation --------------------------------------------------------------------------------


def server_ip(number: int) -> str:
    return f"172.{16 + (number >> 16) % 16}.{(number >> 8) & 255}.{number & 255}"


def server_mac(number: int) -> str:
    return f"fa:16:3e:{(number >> 16) & 255:02x}:{(number >> 8) & 255:02x}:{number & 255:02x}"


def fits(host: Host, flavor: Flavor) -> bool:
    """Whether `flavor` fits on `host` now (vCPU with overcommit, RAM, disk, accelerators)."""
    if host.vcpus_used + flavor.vcpus > host.vcpus * CPU_ALLOCATION_RATIO:
        return False
    if host.memory_mb_used + flavor.ram > host.memory_mb or host.local_gb_used + flavor.disk > host.local_gb:
        return False
    if flavor.vgpus:
        return host.vgpu and host.free_vgpus() >= flavor.vgpus
    if flavor.gpu_count:
        return (
            not host.vgpu
            and host.model.alias == flavor.gpu_alias
            and len(host.free_gpus()) >= flavor.gpu_count
        )
    return True


def claim(host: Host, server: Server, flavor: Flavor) -> tuple[list[int], list[int]]:
    """Take `flavor`'s resources on `host` for `server`; returns the passthrough and vGPU boards."""
    host.vcpus_used += flavor.vcpus
    host.memory_mb_used += flavor.ram
    host.local_gb_used += flavor.disk
    host.server_ids.add(server.id)
    boards = [g.index for g in host.free_gpus()[: flavor.gpu_count]]
    for i in boards:
        host.gpus[i].holder = server.id
    vboards: list[int] = []
    for _ in range(flavor.vgpus):
        g = min(host.gpus, key=lambda g: len(g.vgpu_holders))
        g.vgpu_holders.append(server.id)
        vboards.append(g.index)
    return boards, vboards


def release(host: Host, server: Server, flavor: Flavor) -> None:
    """Give back what `claim` took on `host` for `server`."""
    if server.id not in host.server_ids:
        return
    host.server_ids.discard(server.id)
    host.vcpus_used -= flavor.vcpus
    host.memory_mb_used -= flavor.ram
    host.local_gb_used -= flavor.disk
    for g in host.gpus:
        if g.holder == server.id:
            g.holder = None
        while server.id in g.vgpu_holders:
            g.vgpu_holders.remove(server.id)
