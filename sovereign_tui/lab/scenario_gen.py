"""How the scenario is generated: a deterministic function of the seed and the size."""

from __future__ import annotations

import random
import uuid

from sovereign_tui.lab.scenario import (
    ADMIN_PASSWORD,
    DEMO_PASSWORD,
    GPU_MODELS,
    HOSTS_PER_RACK,
    VGPU_TYPE,
    AppCredential,
    Flavor,
    Gpu,
    Host,
    Image,
    Node,
    Project,
    Scenario,
    Server,
    Service,
    Site,
    User,
    claim,
    fits,
    server_ip,
    server_mac,
)

_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_MODEL_WEIGHTS = (("h100", 40), ("h200", 25), ("a100", 20), ("l40s", 15))
_PROJECTS = (
    ("admin", "Cloud administration"),
    ("llm-training", "Foundation model pre-training"),
    ("inference", "Production inference endpoints"),
    ("research", "Research sandbox"),
    ("vision", "Computer vision team"),
    ("speech", "Speech and audio models"),
    ("genomics", "Protein and genome models"),
)
_WORKLOAD_NAMES = {
    "llm-training": ("pretrain", "sft", "rlhf", "eval"),
    "inference": ("vllm", "triton", "embed", "rerank"),
    "research": ("notebook", "sweep", "ablation"),
    "vision": ("detector", "segment", "diffusion"),
    "speech": ("asr", "tts", "diarize"),
    "genomics": ("fold", "dock", "msa"),
    "admin": ("bastion", "monitor"),
}
_MAINTENANCE_REASONS = (
    "GPU 3 XID 79: fallen off the bus, RMA open",
    "Replacing NVSwitch tray",
    "BMC firmware upgrade",
    "PSU 2 failed",
)


_GUARANTEED_STATES = ("active", "available", "manageable", "enroll", "deploy failed", "clean failed")


class Generator:
    def __init__(self, hosts: int, seed: int, servers: int | None, now: float) -> None:
        self.n_hosts = hosts
        self.seed = seed
        self.n_servers = servers
        self.now = now
        self.rng = random.Random(seed)
        self.counter = 0

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def build(self) -> Scenario:
        rng = self.rng
        n_sites = 1 + self.n_hosts // 1000
        sites = [Site(f"dc{i + 1}", "RegionOne", "central" if i == 0 else "edge") for i in range(n_sites)]
        controllers = ["ctl-01", "ctl-02", "ctl-03"]
        projects = [Project(self.hex_id(), name, desc) for name, desc in _PROJECTS]
        admin_p, tenants = projects[0], projects[1:]
        users = [
            User(
                self.hex_id(),
                "admin",
                ADMIN_PASSWORD,
                admin_p.id,
                {p.id: ["admin", "member", "reader"] for p in projects},
            ),
            User(self.hex_id(), "demo", DEMO_PASSWORD, tenants[2].id, {tenants[2].id: ["member", "reader"]}),
        ]
        tenant_users = {p.id: self.hex_id() for p in tenants}
        app_creds = [
            AppCredential(
                self.hex_id(),
                "sovereign-tui",
                self.hex_id(),
                users[0].id,
                admin_p.id,
                ["admin", "member", "reader"],
            )
        ]
        flavors = self._flavors()
        images = [
            Image(self.uuid(), "ubuntu-24.04-cuda-12.8", {"architecture": "x86_64", "os_distro": "ubuntu"}),
            Image(self.uuid(), "rocky-9-cuda-12.8", {"architecture": "x86_64", "os_distro": "rocky"}),
            Image(self.uuid(), "ubuntu-22.04", {"architecture": "x86_64", "os_distro": "ubuntu"}),
        ]
        hosts, racks = self._hosts(sites)
        services = self._services(hosts, controllers)
        servers = self._servers(hosts, flavors, images, tenants, tenant_users)
        nodes = self._nodes(hosts, images, tenants, controllers)
        scenario = Scenario(
            seed=self.seed,
            sites=sites,
            racks=racks,
            hosts=hosts,
            controllers=controllers,
            services=services,
            projects=projects,
            users=users,
            app_credentials=app_creds,
            flavors=flavors,
            images=images,
            servers=servers,
            nodes=nodes,
            rng=random.Random(rng.getrandbits(64)),
            server_counter=self.counter,
        )
        return scenario

    def _flavors(self) -> list[Flavor]:
        out: list[Flavor] = []

        def add(
            name: str, vcpus: int, ram_gib: int, disk: int, specs: dict[str, str], desc: str | None
        ) -> None:
            out.append(
                Flavor(self.uuid(), len(out) + 1, name, vcpus, ram_gib * 1024, disk, specs, description=desc)
            )

        add("m1.small", 2, 4, 40, {}, None)
        add("m1.large", 8, 32, 80, {}, None)
        add("c1.xlarge", 32, 128, 100, {"hw:numa_nodes": "1"}, "CPU-only batch")
        for m in GPU_MODELS.values():
            for n in (1, 2, 4, 8):
                if n > m.per_host:
                    continue
                specs = {
                    "pci_passthrough:alias": f"{m.alias}:{n}",
                    "hw:pci_numa_affinity_policy": "preferred",
                }
                add(f"g1.{m.alias}.{n}", 16 * n, 112 * n, 200 * n, specs, f"{n} x {m.name}")
        add(
            "v1.l40s-12q",
            8,
            64,
            100,
            {"resources:VGPU": "1", f"trait:CUSTOM_VGPU_{VGPU_TYPE.upper().replace('-', '_')}": "required"},
            "1 x NVIDIA L40S-12Q vGPU",
        )
        return out

    def _hosts(self, sites: list[Site]) -> tuple[list[Host], list[str]]:
        rng = self.rng
        n = self.n_hosts
        n_bare = 0 if n < 2 else max(1, n // 4)
        hosts: list[Host] = []
        racks: list[str] = []
        aliases = [a for a, _ in _MODEL_WEIGHTS]
        weights = [w for _, w in _MODEL_WEIGHTS]
        per_site = -(-n // len(sites))
        hyp = 0
        for i in range(n):
            site = sites[min(i // per_site, len(sites) - 1)]
            in_site = i - sites.index(site) * per_site
            rack_no, slot = divmod(in_site, HOSTS_PER_RACK)
            rack = f"{site.name}-r{rack_no + 1:03d}"
            if slot == 0:
                racks.append(rack)
                rack_model = GPU_MODELS[rng.choices(aliases, weights)[0]]
                rack_vgpu = rack_model.vgpus_per_gpu > 0 and rng.random() < 0.5
            model = rack_model
            role = "baremetal" if i % 4 == 3 and n_bare > 0 else "compute"
            if n < 4 and i == n - 1 and n_bare:
                role = "baremetal"
            name = f"{rack}-n{slot + 1:02d}"
            site_no = sites.index(site)
            ip = f"10.{site_no}.{rack_no % 256}.{10 + slot}"
            gpus = [
                Gpu(
                    index=g,
                    uuid="GPU-" + str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    bus_id=f"00000000:{_HGX_BUSES[g % len(_HGX_BUSES)]:02X}:00.0",
                )
                for g in range(model.per_host)
            ]
            host = Host(
                name=name,
                site=site.name,
                rack=rack,
                role=role,
                model=model,
                gpus=gpus,
                vcpus=model.host_vcpus,
                memory_mb=model.host_memory_mb,
                local_gb=model.host_local_gb,
                ip=ip,
                bmc_ip=f"10.{100 + site_no}.{rack_no % 256}.{10 + slot}",
                booted_at=self.now - rng.uniform(2, 200) * 86400,
                vgpu=role == "compute" and rack_vgpu,
            )
            if role == "compute":
                hyp += 1
                host.hypervisor_id = self.uuid()
                host.hyp_int_id = hyp
            hosts.append(host)
        return hosts, racks

    def _services(self, hosts: list[Host], controllers: list[str]) -> list[Service]:
        services: list[Service] = []
        for ctl in controllers:
            for binary in ("nova-scheduler", "nova-conductor"):
                services.append(Service(self.uuid(), len(services) + 1, binary, ctl, "internal"))
        for h in hosts:
            if h.role != "compute":
                continue
            svc = Service(self.uuid(), len(services) + 1, "nova-compute", h.name, f"az-{h.site}")
            r = self.rng.random()
            if r < 0.02:
                svc.disabled, svc.disabled_reason = True, self.rng.choice(_MAINTENANCE_REASONS)
            elif r < 0.03:
                svc.alive, svc.last_seen = False, self.now - self.rng.uniform(300, 7200)
            h.service = svc
            services.append(svc)
        computes = [s for s in services if s.binary == "nova-compute"]
        if len(computes) >= 8:  # whatever the seed, one host is disabled and one stopped reporting
            computes[-2].disabled, computes[-2].disabled_reason = True, _MAINTENANCE_REASONS[1]
            computes[-1].alive, computes[-1].last_seen = False, self.now - 1800
        return services

    def _servers(
        self,
        hosts: list[Host],
        flavors: list[Flavor],
        images: list[Image],
        tenants: list[Project],
        tenant_users: dict[str, str],
    ) -> dict[str, Server]:
        rng = self.rng
        compute = [h for h in hosts if h.role == "compute"]
        target = self.n_servers if self.n_servers is not None else 4 * len(compute)
        if not compute or target <= 0:
            return {}
        by_alias = {(f.gpu_alias, f.gpu_count): f for f in flavors if f.gpu_alias is not None}
        vgpu_flavor = next(f for f in flavors if f.vgpus)
        cpu_flavors = [f for f in flavors if f.gpu_alias is None and not f.vgpus]
        made: list[Server] = []
        n_error = max(1, target // 200) if target > 1 else 0
        target -= n_error
        base, extra = divmod(target, len(compute))
        order = list(compute)
        rng.shuffle(order)
        for k, host in enumerate(order):
            want = base + (1 if k < extra else 0)
            for _ in range(want):
                flavor = self._pick_flavor(host, by_alias, vgpu_flavor, cpu_flavors)
                if flavor is None:
                    break
                made.append(self._place(host, flavor, images, tenants, tenant_users))
        short = target - len(made)
        # Hosts that filled up early leave a shortfall; spread it over the rest with CPU flavors.
        attempts = 0
        while short > 0 and attempts < 20 * target:
            attempts += 1
            host = compute[rng.randrange(len(compute))]
            flavor = rng.choice(cpu_flavors[:2])
            if fits(host, flavor):
                made.append(self._place(host, flavor, images, tenants, tenant_users))
                short -= 1
        # A few requests that never found a host: ERROR with Nova's "No valid host" fault.
        for _ in range(n_error):
            big = by_alias.get(("h200", 8)) or next(iter(by_alias.values()))
            made.append(self._place(None, big, images, tenants, tenant_users))
        made.sort(key=lambda s: (s.created, s.id), reverse=True)
        return {s.id: s for s in made}

    def _pick_flavor(
        self, host: Host, by_alias: dict[tuple[str, int], Flavor], vgpu: Flavor, cpu: list[Flavor]
    ) -> Flavor | None:
        rng = self.rng
        if host.vgpu and host.free_vgpus() > 0 and rng.random() < 0.8:
            return vgpu if fits(host, vgpu) else None
        free = len(host.free_gpus())
        if free and rng.random() < 0.75:
            for n in rng.choices((8, 4, 2, 1), (1, 2, 3, 6))[0], 4, 2, 1:
                f = by_alias.get((host.model.alias, n))
                if f is not None and n <= free and fits(host, f):
                    return f
        for f in rng.sample(cpu, len(cpu)):
            if fits(host, f):
                return f
        return None

    def _place(
        self,
        host: Host | None,
        flavor: Flavor,
        images: list[Image],
        tenants: list[Project],
        tenant_users: dict[str, str],
    ) -> Server:
        rng = self.rng
        project = rng.choice(tenants)
        self.counter += 1
        kind = rng.choice(_WORKLOAD_NAMES[project.name])
        created = self.now - rng.uniform(600, 180 * 86400)
        server = Server(
            id=self.uuid(),
            name=f"{project.name}-{kind}-{self.counter:05d}",
            project_id=project.id,
            user_id=tenant_users[project.id],
            flavor=flavor,
            image=rng.choice(images[:2] if flavor.gpu_alias or flavor.vgpus else images),
            host=None,
            vm_state="active",
            power_state=1,
            created=created,
            updated=created + rng.uniform(30, 600),
            number=self.counter,
            ip=server_ip(self.counter),
            mac=server_mac(self.counter),
            network=f"{project.name}-net",
            az="nova",
            key_name=f"{project.name}-key",
            metadata={"project": project.name, "workload": kind},
            description=f"{kind} workload of {project.name}",
            tags=[kind],
        )
        if rng.random() < 0.5:
            server.volumes = [self.uuid()]
        if rng.random() < 0.1:
            server.scheduler_hints = {"group": self.uuid()}
        if host is None:
            server.vm_state, server.power_state = "error", 0
            server.fault = {
                "code": 500,
                "created": server.updated,
                "message": "No valid host was found. There are not enough hosts available.",
                "details": "Scheduling failed: no compute host has enough free accelerators",
            }
            return server
        server.gpus, server.vgpu_on = claim(host, server, flavor)
        server.host, server.az = host.name, f"az-{host.site}"
        if rng.random() < 0.3:
            server.pinned_az = server.az
        if rng.random() < 0.05:
            server.locked, server.locked_reason = True, "long training run: do not disturb"
        server.launched_at = created + rng.uniform(20, 120)
        r = rng.random()
        if r < 0.05:
            server.vm_state, server.power_state = "stopped", 4
        elif r < 0.06:
            server.vm_state, server.power_state = "paused", 3
        return server

    def _nodes(
        self, hosts: list[Host], images: list[Image], tenants: list[Project], controllers: list[str]
    ) -> list[Node]:
        rng = self.rng
        nodes: list[Node] = []
        states = (
            ("active", 55),
            ("available", 25),
            ("manageable", 6),
            ("enroll", 2),
            ("deploy failed", 3),
            ("clean failed", 3),
            ("error", 1),
            ("inspect failed", 1),
        )
        names, weights = zip(*states, strict=True)
        for h in hosts:
            if h.role != "baremetal":
                continue
            m = h.model
            created = self.now - rng.uniform(30, 400) * 86400
            # the first nodes cover the states an operator meets most, whatever the seed
            k = len(nodes)
            state = _GUARANTEED_STATES[k] if k < len(_GUARANTEED_STATES) else rng.choices(names, weights)[0]
            node = Node(
                uuid=self.uuid(),
                int_id=len(nodes) + 1,
                name=h.name,
                host=h,
                driver="redfish",
                driver_info={
                    "redfish_address": f"https://{h.bmc_ip}",
                    "redfish_system_id": "/redfish/v1/Systems/1",
                    "redfish_username": "admin",
                    "redfish_password": "******",
                },
                properties={
                    "cpus": m.host_vcpus,
                    "memory_mb": m.host_memory_mb,
                    "local_gb": m.host_local_gb,
                    "cpu_arch": "x86_64",
                    "capabilities": "boot_mode:uefi",
                },
                resource_class=f"gpu-{m.alias}-{m.per_host}",
                traits=[
                    f"CUSTOM_GPU_{m.alias.upper()}",
                    "CUSTOM_NVLINK" if m.per_host == 8 else "CUSTOM_PCIE",
                ],
                extra={"site": h.site, "rack": h.rack, "gpu_model": m.name, "gpu_count": m.per_host},
                conductor=controllers[len(nodes) % len(controllers)],
                created_at=created,
                updated_at=created + rng.uniform(60, 86400),
                provision_state=state,
                power_state="power off",
                description=f"{m.per_host} x {m.name}",
            )
            node.provision_updated_at = node.updated_at
            node.inspection_started_at = created + 60
            node.inspection_finished_at = created + 600
            if state == "enroll":
                node.power_state = None
                node.inspection_started_at = node.inspection_finished_at = None
            elif state == "active":
                tenant = rng.choice(tenants)
                node.power_state = "power on"
                node.instance_uuid = self.uuid()
                node.owner = tenant.id
                node.lessee = tenant.id
                node.instance_info = {
                    "image_source": images[0].id,
                    "display_name": f"{tenant.name}-bm-{len(nodes) + 1:04d}",
                    "root_gb": "200",
                }
                for g in h.gpus:
                    g.holder = node.instance_uuid
            elif state in ("deploy failed", "error"):
                node.last_error = f"Timeout reached while waiting for callback for node {node.uuid}"
            elif state == "clean failed":
                node.last_error = "Clean step erase_devices failed: NVMe secure erase timed out"
                node.maintenance, node.fault = True, "clean failure"
                node.maintenance_reason = node.last_error
            elif state == "inspect failed":
                node.last_error = "Inspection failed: BMC did not answer within 60 seconds"
            if k >= len(_GUARANTEED_STATES) and not node.maintenance and rng.random() < 0.04:
                node.maintenance, node.maintenance_reason = True, rng.choice(_MAINTENANCE_REASONS)
            nodes.append(node)
        return nodes
