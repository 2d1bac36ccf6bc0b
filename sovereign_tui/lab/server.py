"""The lab's OpenStack side on loopback: Keystone, Nova, Ironic, Placement and the lab's control
endpoint, each on its own free port (bound to port 0, never a fixed one).

    lab = Lab(hosts=24, seed=0, clock=FakeClock())
    await lab.start()
    lab.urls["identity"]   # http://127.0.0.1:PORT/v3 (keystoneauth's auth_url)
    lab.write_config(tmp)  # clouds.yaml, kubeconfig, sovereign.toml pointing at it
    lab.faults.set("nova", error_rate=1.0)
    await lab.stop()

Everything is deterministic from ``seed`` and the requests made; simulated time comes from the
injected clock (`SystemClock` by default).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import Settings
from sovereign_tui.lab import admin, ironic, keystone, nova, placement
from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import Handler
from sovereign_tui.lab.ironic_sim import Baremetal, IronicTimings
from sovereign_tui.lab.nova_sim import Compute, Timings
from sovereign_tui.lab.scenario import ADMIN_PASSWORD, DEMO_PASSWORD, Scenario
from sovereign_tui.lab.timeline import Timeline

CLOUD = "sovereign-lab"
"""clouds.yaml name of the admin cloud; ``-appcred`` and ``-demo`` name the others."""


@dataclass(frozen=True)
class LabCredentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    app_credential_id: str
    app_credential_secret: str
    demo_username: str
    demo_password: str
    demo_project_name: str
    user_domain_id: str = "default"
    project_domain_id: str = "default"
    region: str = keystone.REGION


@dataclass(frozen=True)
class LabFiles:
    clouds_yaml: Path
    kubeconfig: Path
    settings: Path


class Lab:
    def __init__(
        self,
        hosts: int = 24,
        seed: int = 0,
        *,
        servers: int | None = None,
        clock: Clock | None = None,
        bind: str = "127.0.0.1",
        nova_timings: Timings | None = None,
        ironic_timings: IronicTimings | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.seed = seed
        self.bind = bind
        self.scenario = Scenario.generate(hosts, seed, servers=servers, now=self.clock.time())
        self.timeline = Timeline(self.clock)
        self.faults = FaultBoard(self.clock, seed)
        self.tokens = keystone.TokenStore(self.scenario, self.clock, self.faults)
        self.compute = Compute(self.scenario, self.timeline, nova_timings)
        self.baremetal = Baremetal(self.scenario, self.timeline, ironic_timings)
        self.urls: dict[str, str] = {}
        """``identity`` (auth URL, ends in /v3), ``compute`` (ends in /v2.1), ``baremetal``,
        ``placement`` (ends in /placement), ``lab``."""
        self._runners: list[web.AppRunner] = []
        self.requests: dict[str, int] = {}
        """Requests served per OpenStack service (keystone, nova, ironic, placement): what `GET /stats`
        shows."""

    # --- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runners:
            raise RuntimeError("the lab is already started")
        socks = {name: self._listen() for name in ("keystone", "nova", "ironic", "placement", "lab")}
        base = {name: f"http://{self.bind}:{s.getsockname()[1]}" for name, s in socks.items()}
        identity = f"{base['keystone']}/v3"
        self.urls = {
            "identity": identity,
            "compute": f"{base['nova']}/v2.1",
            "baremetal": base["ironic"],
            "placement": base["placement"] + placement.PREFIX,
            "lab": base["lab"],
        }
        self.tokens.register("identity", "keystone", identity)
        self.tokens.register("compute", "nova", self.urls["compute"])
        self.tokens.register("baremetal", "ironic", self.urls["baremetal"])
        self.tokens.register("placement", "placement", self.urls["placement"])
        apps = {
            "keystone": keystone.make_app(self.tokens, self.faults, self.timeline, base["keystone"]),
            "nova": nova.make_app(
                self.compute, self.tokens, self.faults, self.timeline, identity, base["nova"]
            ),
            "ironic": ironic.make_app(
                self.baremetal, self.tokens, self.faults, self.timeline, identity, base["ironic"]
            ),
            "placement": placement.make_app(self.compute, self.tokens, self.faults, self.timeline, identity),
            "lab": admin.make_app(self),
        }
        for name in ("keystone", "nova", "ironic", "placement"):
            apps[name].middlewares.insert(0, self._counter(name))
        try:
            for name, app in apps.items():
                runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
                await runner.setup()
                self._runners.append(runner)
                await web.SockSite(runner, socks[name]).start()
        except BaseException:
            await self.stop()
            raise

    def _counter(self, service: str) -> Middleware:
        self.requests[service] = 0

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.requests[service] += 1
            return await handler(request)

        return count

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.bind, 0))
        sock.listen(256)
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        self.faults.release()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def register_endpoint(self, service_type: str, name: str, url: str) -> None:
        """Add another service (platform, dcmanager, faultmanagement, ...) to the catalog of new tokens."""
        self.tokens.register(service_type, name, url)

    def settle(self) -> int:
        """Run the simulated events that are due now (requests do this themselves)."""
        return self.timeline.run_due()

    @property
    def credentials(self) -> LabCredentials:
        sc = self.scenario
        demo = sc.users[1]
        cred = sc.app_credentials[0]
        return LabCredentials(
            auth_url=self.urls.get("identity", ""),
            username=sc.users[0].name,
            password=ADMIN_PASSWORD,
            project_name=sc.projects[0].name,
            app_credential_id=cred.id,
            app_credential_secret=cred.secret,
            demo_username=demo.name,
            demo_password=DEMO_PASSWORD,
            demo_project_name=sc.projects_by_id[demo.default_project_id or ""].name,
        )

    def summary(self) -> dict[str, Any]:
        sc = self.scenario
        return {
            "seed": self.seed,
            "hosts": len(sc.hosts),
            "hypervisors": len(sc.compute_hosts),
            "nodes": len(sc.nodes),
            "servers": len(sc.servers),
            "flavors": len(sc.flavors),
            "projects": len(sc.projects),
            "sites": [s.name for s in sc.sites],
        }

    # --- configuration files ---------------------------------------------------------------------

    def write_config(self, directory: str | os.PathLike[str]) -> LabFiles:
        """Write clouds.yaml, a kubeconfig placeholder and a sovereign.toml that point at this lab."""
        if not self.urls:
            raise RuntimeError("start the lab before writing its configuration")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = LabFiles(out / "clouds.yaml", out / "kubeconfig", out / "sovereign.toml")
        files.clouds_yaml.write_text(self._clouds_yaml(), encoding="utf-8")
        files.clouds_yaml.chmod(0o600)
        files.kubeconfig.write_text(_KUBECONFIG, encoding="utf-8")
        files.settings.write_text(self._settings_toml(files.clouds_yaml.resolve()), encoding="utf-8")
        return files

    def _clouds_yaml(self) -> str:
        c = self.credentials
        q = _yaml_str
        common = f"    region_name: {q(c.region)}\n    interface: public\n    identity_api_version: 3\n"
        password_cloud = (
            "    auth_type: password\n    auth:\n"
            f"      auth_url: {q(c.auth_url)}\n      username: {{user}}\n      password: {{password}}\n"
            f"      project_name: {{project}}\n      user_domain_id: {q(c.user_domain_id)}\n"
            f"      project_domain_id: {q(c.project_domain_id)}\n"
        )
        return (
            f"# The embedded lab's clouds (seed {self.seed}); valid while `sovereign-tui lab` runs.\n"
            "clouds:\n"
            f"  {CLOUD}:\n"
            + password_cloud.format(user=q(c.username), password=q(c.password), project=q(c.project_name))
            + common
            + f"  {CLOUD}-appcred:\n    auth_type: v3applicationcredential\n    auth:\n"
            f"      auth_url: {q(c.auth_url)}\n      application_credential_id: {q(c.app_credential_id)}\n"
            f"      application_credential_secret: {q(c.app_credential_secret)}\n"
            + common
            + f"  {CLOUD}-demo:\n"
            + password_cloud.format(
                user=q(c.demo_username), password=q(c.demo_password), project=q(c.demo_project_name)
            )
            + common
        )

    def _settings_toml(self, clouds_yaml: Path) -> str:
        """Only keys the settings model knows are written (a test parses the result)."""
        sources = {f.name for f in msgspec.structs.fields(type(Settings().sources))}
        lines = [
            f"# lab: written by `sovereign-tui lab` for the embedded lab (seed {self.seed}, "
            f"{len(self.scenario.hosts)} hosts); its URLs are valid while the lab runs.",
            "",
        ]
        if "host" in sources:
            lines += ["[sources.host]", "enabled = true", ""]
        if "nvml" in sources:
            lines += [
                "# The lab's GPUs are simulated; this machine's own GPUs are not part of it.",
                "[sources.nvml]",
                "enabled = false",
                "",
            ]
        for name in ("nova", "ironic", "placement"):
            if name in sources:
                lines += [
                    f"[sources.{name}]",
                    "enabled = true",
                    f"cloud = {_toml_str(CLOUD)}",
                    f"clouds_yaml = {_toml_str(str(clouds_yaml))}",
                    "",
                ]
        return "\n".join(lines)


def _yaml_str(value: str) -> str:
    """A double-quoted YAML scalar (JSON string syntax is valid YAML)."""
    return msgspec.json.encode(value).decode()


def _toml_str(value: str) -> str:
    return msgspec.json.encode(value).decode()


_KUBECONFIG = """\
# Placeholder written by `sovereign-tui lab`: the lab's Kubernetes API is not served yet,
# so this kubeconfig names no cluster.
apiVersion: v1
kind: Config
clusters: []
contexts: []
users: []
current-context: ""
preferences: {}
"""


async def run_lab(
    hosts: int,
    seed: int,
    write_config_dir: str | os.PathLike[str] | None,
    *,
    servers: int | None = None,
    layers: tuple[str, ...] = ("openstack",),
    out: TextIO | None = None,
    on_ready: Callable[[Lab], None] | None = None,
) -> None:
    """Run the lab until cancelled: print one line with its URLs, optionally write its config.

    `layers` picks the parts beyond OpenStack (see `sovereign_tui.lab.fleet`). `on_ready` is
    called with the started OpenStack lab once the line is printed (tests wait on it)."""
    from sovereign_tui.lab.fleet import FleetLab

    fleet = FleetLab(hosts=hosts, seed=seed, servers=servers, layers=layers)
    lab = fleet.lab
    await fleet.start()
    try:
        files = fleet.write_config(write_config_dir) if write_config_dir is not None else None
        s = fleet.summary()
        where = f" config={files.clouds_yaml.parent}" if files else ""
        kube = f" kubernetes={s['kubernetes']}" if "kubernetes" in s else ""
        ssh = f" ssh_gpu_hosts={s['ssh_gpu_hosts']}" if "ssh_gpu_hosts" in s else ""
        print(
            f"sovereign-lab up: identity={lab.urls['identity']} compute={lab.urls['compute']} "
            f"baremetal={lab.urls['baremetal']} placement={lab.urls['placement']} lab={lab.urls['lab']}"
            f"{kube} hosts={s['hosts']} "
            f"servers={s['servers']} nodes={s['nodes']}{ssh} seed={seed}{where}",
            file=out or sys.stdout,
            flush=True,
        )
        if on_ready is not None:
            on_ready(lab)
        await asyncio.Event().wait()
    finally:
        await fleet.stop()
