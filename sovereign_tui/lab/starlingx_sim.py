"""StarlingX of the lab: the system controller's hosts, its subclouds and its alarms.

Built from the scenario, deterministically from its seed (with a random generator of its own, so
the other services' draws are untouched). The system controller is the scenario's central site:
its two first controllers (``ctl-01`` active, ``ctl-02`` standby) and its Nova hypervisors, as
workers with the same names (the same machines). Bare-metal hosts are Ironic's, not the
platform's. The edge sites of the scenario are subclouds, and `far_edge` small all-in-one
subclouds (``edge-01``...) are added so that even a small lab is a distributed cloud; a
subcloud's own hosts live in its own sysinv, not in the system controller's.

Initial states follow the other layers: a host whose Nova compute service is disabled is locked
(alarm 200.001), one whose service stopped reporting is offline (200.004). Lock and unlock walk
sysinv's states over simulated time (`Timeline`), and raise or clear 200.001 as fm does;
managing a subcloud re-audits its endpoints' sync status after a while.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sovereign_tui.lab.httpkit import ApiError
from sovereign_tui.lab.scenario import Scenario
from sovereign_tui.lab.starlingx_alarms import AlarmBoard
from sovereign_tui.lab.timeline import Event, Timeline

SOFTWARE_VERSION = "24.09"
ENDPOINT_TYPES = ("platform", "identity", "fm", "dc-cert", "firmware", "kubernetes", "kube-rootca", "usm")
ACTIONS = ("lock", "force-lock", "unlock", "force-unlock", "swact")
ACTIVE, STANDBY = "Controller-Active", "Controller-Standby"


@dataclass(frozen=True)
class StxTimings:
    lock_s: float = 15.0
    """From the lock request to locked/disabled/online (a force-lock takes a third of it)."""
    unlock_s: float = 90.0
    """From the unlock request to unlocked/enabled/available (the host reboots on the way)."""
    sync_s: float = 30.0
    """From managing a subcloud to its endpoints' sync audit."""


@dataclass(slots=True, eq=False)
class StxHost:
    id: int
    uuid: str
    hostname: str
    personality: str
    subfunctions: str
    mgmt_ip: str
    mgmt_mac: str
    bm_ip: str | None
    booted_at: float
    created_at: float
    capabilities: dict[str, Any] = field(default_factory=dict)
    administrative: str = "unlocked"
    operational: str = "enabled"
    availability: str = "available"
    task: str = ""
    action: str = "none"
    config_status: str | None = None
    config_applied: str = ""
    config_target: str = ""
    updated_at: float | None = None


@dataclass(slots=True, eq=False)
class Subcloud:
    id: int
    name: str
    region_name: str
    description: str
    location: str
    management_subnet: str
    management_state: str
    availability_status: str
    deploy_status: str
    created_at: float
    software_version: str = SOFTWARE_VERSION
    error_description: str = "No errors present"
    endpoints: dict[str, str] = field(default_factory=dict)
    drift: frozenset[str] = frozenset()
    """Endpoint types that stay out-of-sync after an audit (configuration drift)."""
    site: str | None = None
    """The scenario's site it stands for; None for the far-edge subclouds."""
    updated_at: float | None = None
    audit: Event | None = None

    @property
    def sync_status(self) -> str:
        values = set(self.endpoints.values())
        if "out-of-sync" in values:
            return "out-of-sync"
        return "in-sync" if values == {"in-sync"} else "unknown"


@dataclass(frozen=True)
class StxSystem:
    uuid: str
    name: str
    region_name: str
    distributed_cloud_role: str | None
    """``systemcontroller`` for a distributed cloud's central system, None for a standalone one."""
    created_at: float
    system_type: str = "Standard"
    system_mode: str = "duplex"
    software_version: str = SOFTWARE_VERSION


# Subcloud states the far-edge subclouds take in turn: (management, availability, deploy, drift).
_SUBCLOUD_STATES: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("managed", "online", "complete", frozenset()),
    ("managed", "online", "complete", frozenset({"platform"})),
    ("managed", "offline", "complete", frozenset()),
    ("unmanaged", "offline", "bootstrap-failed", frozenset()),
)


class StarlingxSim:
    """The platform's state; the sysinv, dcmanager and fm apps read and change it."""

    def __init__(
        self,
        scenario: Scenario,
        timeline: Timeline,
        timings: StxTimings | None = None,
        *,
        far_edge: int = 4,
        distributed: bool = True,
    ) -> None:
        if far_edge < 0:
            raise ValueError(f"far_edge must not be negative, got {far_edge}")
        self.sc = scenario
        self.timeline = timeline
        self.timings = timings or StxTimings()
        self.rng = random.Random(scenario.seed ^ 0x57A12)
        self.listeners: list[Callable[[StxHost], None]] = []
        """Called with a host after each change of its state (the lab can taint Kubernetes nodes)."""
        now = timeline.wall()
        central = next((s for s in scenario.sites if s.kind == "central"), scenario.sites[0])
        role = "systemcontroller" if distributed else None
        self.system = StxSystem(self._uuid(), central.name, central.region, role, now - 400 * 86400)
        self.hosts: list[StxHost] = []
        self.subclouds: list[Subcloud] = []
        self.fm = AlarmBoard(timeline, self.rng)
        self._build_hosts(central.name, now)
        self.subclouds_by_name: dict[str, Subcloud] = {}
        if distributed:
            edge_sites = [s.name for s in scenario.sites if s.name != central.name]
            self._build_subclouds(edge_sites, far_edge, now)
        self.hosts_by_uuid = {h.uuid: h for h in self.hosts}
        self.hosts_by_name = {h.hostname: h for h in self.hosts}

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _mac(self) -> str:
        return "3c:fd:fe:" + ":".join(f"{self.rng.randrange(256):02x}" for _ in range(3))

    # --- generation --------------------------------------------------------------------------------

    def _add_host(
        self, name: str, personality: str, subfunctions: str, ip: str, bm_ip: str | None, now: float
    ) -> StxHost:
        config = self._uuid()
        host = StxHost(
            id=len(self.hosts) + 1,
            uuid=self._uuid(),
            hostname=name,
            personality=personality,
            subfunctions=subfunctions,
            mgmt_ip=ip,
            mgmt_mac=self._mac(),
            bm_ip=bm_ip,
            booted_at=now - self.rng.uniform(2, 120) * 86400,
            created_at=now - self.rng.uniform(200, 400) * 86400,
            config_applied=config,
            config_target=config,
        )
        self.hosts.append(host)
        return host

    def _build_hosts(self, site: str, now: float) -> None:
        for i, name in enumerate(self.sc.controllers[:2]):
            ctl = self._add_host(name, "controller", "controller", f"192.168.204.{2 + i}", None, now)
            ctl.capabilities = {"Personality": ACTIVE if i == 0 else STANDBY, "stor_function": "monitor"}
        workers: list[StxHost] = []
        for h in self.sc.hosts:
            if h.role != "compute" or h.site != site:
                continue
            worker = self._add_host(h.name, "worker", "worker", h.ip, h.bmc_ip, now)
            svc = h.service
            if svc is not None and svc.disabled:
                worker.administrative, worker.operational, worker.availability = (
                    "locked",
                    "disabled",
                    "online",
                )
                self._host_alarm(worker, "200.001", now - self.rng.uniform(600, 86400))
            elif svc is not None and not svc.alive:
                worker.operational, worker.availability = "disabled", "offline"
                self._host_alarm(worker, "200.004", svc.last_seen or now)
            else:
                workers.append(worker)
        # Whatever the seed, one host has an out-of-date configuration and one a busy platform CPU.
        for k, worker in enumerate(workers):
            draw = self.rng.random()
            if k == 0 or (k > 1 and draw < 0.03):
                worker.config_target = self._uuid()
                worker.config_status = "Config out-of-date"
                self._host_alarm(worker, "250.001", now - self.rng.uniform(60, 3600))
            elif k == 1 or (k > 1 and draw < 0.06):
                worker.availability = "degraded"
                self._host_alarm(worker, "100.101", now - self.rng.uniform(60, 3600))
        if len(self.hosts) > 1:
            standby = self.hosts[1]
            self.fm.set(
                "100.114",
                f"host={standby.hostname}.ntp=10.10.0.1",
                "minor",
                "NTP address 10.10.0.1 is not a valid or a reachable NTP server.",
                at=now - 7200,
                entity_type="host.ntp",
                alarm_type="communication",
                cause="unknown",
                repair="Monitor and if condition persists, contact next level of support.",
            )
        self.fm.set(
            "500.210",
            "system.certificate.mode=ssl",
            "warning",
            "Certificate 'system certificate-show ssl' (mode=ssl) expiring soon.",
            at=now - 86400,
            entity_type="system.certificate",
            alarm_type="processing-error",
            cause="certificate-expiration",
            repair="Renew the certificate before it expires.",
        )

    def _build_subclouds(self, edge_sites: list[str], far_edge: int, now: float) -> None:
        specs: list[tuple[str, str | None, tuple[str, str, str, frozenset[str]]]] = [
            (name, name, _SUBCLOUD_STATES[0]) for name in edge_sites
        ]
        specs += [
            (f"edge-{k + 1:02d}", None, _SUBCLOUD_STATES[k % len(_SUBCLOUD_STATES)]) for k in range(far_edge)
        ]
        for name, site, (mgmt, avail, deploy, drift) in specs:
            n = len(self.subclouds) + 1
            sc = Subcloud(
                id=n,
                name=name,
                region_name=uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
                description=f"GPU site {name}" if site else f"Far-edge all-in-one {name}",
                location=f"Site {name}",
                management_subnet=f"192.168.{100 + n}.0/24",
                management_state=mgmt,
                availability_status=avail,
                deploy_status=deploy,
                created_at=now - self.rng.uniform(30, 300) * 86400,
                drift=drift,
                site=site,
            )
            if deploy == "bootstrap-failed":
                sc.software_version = "22.12"
                sc.error_description = (
                    "Failed to bootstrap the subcloud: unable to reach the install boot server"
                )
            managed_online = mgmt == "managed" and avail == "online"
            sc.endpoints = {t: self._audited(sc, t) if managed_online else "unknown" for t in ENDPOINT_TYPES}
            self.subclouds.append(sc)
            if avail == "offline" and mgmt == "managed":
                self.fm.subcloud_offline(sc.name, now - self.rng.uniform(600, 7200))
            self.fm.sync(
                sc.name, sc.endpoints, sc.management_state == "managed", now - self.rng.uniform(600, 7200)
            )
        self.subclouds_by_name = {s.name: s for s in self.subclouds}

    def _host_alarm(self, host: StxHost, alarm_id: str, at: float | None = None) -> None:
        self.fm.host(host.hostname, alarm_id, at, applied=host.config_applied, target=host.config_target)

    # --- hosts: lock, unlock, swact --------------------------------------------------------------

    def _changed(self, host: StxHost) -> None:
        host.updated_at = self.timeline.wall()
        for listener in self.listeners:
            listener(host)

    def _later(self, host: StxHost, delay_s: float, fn: Callable[[], None]) -> None:
        def run() -> None:
            fn()
            self._changed(host)

        self.timeline.after(delay_s, run)

    def _is_active(self, host: StxHost) -> bool:
        return host.capabilities.get("Personality") == ACTIVE

    def _standby_ready(self, host: StxHost) -> StxHost | None:
        for other in self.hosts:
            if (
                other is not host
                and other.personality == "controller"
                and (other.administrative, other.operational, other.availability)
                == ("unlocked", "enabled", "available")
                and not other.task
            ):
                return other
        return None

    def act(self, host: StxHost, action: str) -> None:
        """Start `action` on `host`, or refuse it (400) with sysinv's kind of message."""
        if action not in ACTIONS:
            raise ApiError(400, f"Invalid action '{action}'; the lab supports {', '.join(ACTIONS)}.")
        if host.task:
            raise ApiError(
                400, f"Host {host.hostname} has an action in progress ({host.task}); try again later."
            )
        if action in ("lock", "force-lock"):
            self._lock(host, force=action == "force-lock")
        elif action in ("unlock", "force-unlock"):
            self._unlock(host, force=action == "force-unlock")
        else:
            self._swact(host)
        self._changed(host)

    def _lock(self, host: StxHost, force: bool) -> None:
        if host.administrative == "locked":
            raise ApiError(400, f"Avoiding 'lock' action on already 'locked' host {host.hostname}.")
        if host.personality == "controller" and self._is_active(host):
            standby = self._standby_ready(host)
            if not force:
                raise ApiError(400, "Rejected: Can not lock an active controller.")
            if standby is None:
                raise ApiError(
                    400,
                    "Rejected: Can not lock the only active controller: no standby controller is available.",
                )
            # A force-lock of the active controller first hands activity to the standby.
            host.capabilities["Personality"], standby.capabilities["Personality"] = STANDBY, ACTIVE
            self._changed(standby)
        host.task, host.action = "Locking", "force-lock" if force else "lock"

        def locked() -> None:
            host.administrative, host.operational, host.availability = "locked", "disabled", "online"
            host.task, host.action = "", "none"
            self._host_alarm(host, "200.001")

        self._later(host, self.timings.lock_s / (3 if force else 1), locked)

    def _unlock(self, host: StxHost, force: bool) -> None:
        if host.administrative == "unlocked":
            raise ApiError(400, f"Avoiding 'unlock' action on already 'unlocked' host {host.hostname}.")
        if host.availability == "offline" and not force:
            raise ApiError(
                400, f"Can not unlock host {host.hostname} while it is offline; power it on or force-unlock."
            )
        host.task, host.action = "Unlocking", "force-unlock" if force else "unlock"
        total = self.timings.unlock_s

        def rebooting() -> None:
            host.administrative, host.availability, host.task = "unlocked", "offline", "Rebooting"
            self.fm.clear("200.001", f"host={host.hostname}")

        def testing() -> None:
            host.availability, host.task = "intest", "Testing"
            host.booted_at = self.timeline.wall()

        def enabled() -> None:
            entity = f"host={host.hostname}"
            host.config_applied, host.config_status = host.config_target, None
            for alarm_id in ("250.001", "100.101", "200.004"):
                self.fm.clear(alarm_id, entity)
            host.operational, host.availability, host.task, host.action = "enabled", "available", "", "none"

        self._later(host, 0.2 * total, rebooting)
        self._later(host, 0.6 * total, testing)
        self._later(host, total, enabled)

    def _swact(self, host: StxHost) -> None:
        if host.personality != "controller" or not self._is_active(host):
            raise ApiError(400, f"Swact action not allowed for non-active controller host {host.hostname}.")
        standby = self._standby_ready(host)
        if standby is None:
            raise ApiError(
                400, "Swact action not allowed: no standby controller is unlocked, enabled and available."
            )
        host.capabilities["Personality"], standby.capabilities["Personality"] = STANDBY, ACTIVE
        self._changed(standby)

    # --- subclouds -----------------------------------------------------------------------------------

    def _audited(self, sc: Subcloud, endpoint: str) -> str:
        return "out-of-sync" if endpoint in sc.drift else "in-sync"

    def subcloud(self, ref: str) -> Subcloud | None:
        """By name, or by id as dcmanager also accepts."""
        found = self.subclouds_by_name.get(ref)
        if found is None and ref.isdigit():
            found = next((s for s in self.subclouds if s.id == int(ref)), None)
        return found

    def set_management(self, sc: Subcloud, state: str) -> None:
        if state not in ("managed", "unmanaged"):
            raise ApiError(400, f"Invalid management-state '{state}': use managed or unmanaged.")
        if sc.management_state == state:
            raise ApiError(400, f"Subcloud {sc.name} is already {state}.")
        if state == "managed" and (sc.availability_status != "online" or sc.deploy_status != "complete"):
            raise ApiError(
                400,
                f"Subcloud {sc.name} can be managed only when it is online and its deploy is complete "
                f"(it is {sc.availability_status}, deploy-status {sc.deploy_status}).",
            )
        sc.management_state = state
        sc.updated_at = self.timeline.wall()
        sc.endpoints = dict.fromkeys(sc.endpoints, "unknown")
        if sc.audit is not None:
            sc.audit.cancel()
            sc.audit = None
        self.fm.sync(sc.name, sc.endpoints, sc.management_state == "managed")
        if state == "managed":

            def audit() -> None:
                sc.audit = None
                sc.endpoints = {t: self._audited(sc, t) for t in sc.endpoints}
                sc.updated_at = self.timeline.wall()
                self.fm.sync(sc.name, sc.endpoints, sc.management_state == "managed")

            sc.audit = self.timeline.after(self.timings.sync_s, audit)

    def set_subcloud_online(self, sc: Subcloud, online: bool) -> None:
        """Training knob: a subcloud loses or regains its link to the system controller."""
        sc.availability_status = "online" if online else "offline"
        sc.updated_at = self.timeline.wall()
        if online:
            self.fm.clear("280.001", f"subcloud={sc.name}")
        else:
            if sc.management_state == "managed":
                self.fm.subcloud_offline(sc.name)
            sc.endpoints = dict.fromkeys(sc.endpoints, "unknown")
            self.fm.sync(sc.name, sc.endpoints, sc.management_state == "managed")
