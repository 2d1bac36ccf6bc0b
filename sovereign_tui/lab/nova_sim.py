"""Nova's behaviour in the lab: scheduling onto free GPUs, builds, live and cold migrations,
evacuation, power actions and compute services, each step an event on the lab's timeline.

Rules kept from Nova: a live migration walks queued -> preparing -> running -> post-migrating ->
completed and moves the server at the end (its memory copy progresses with time); a server with
passed-through GPUs or vGPUs fails the live-migration pre-check (asynchronously, as from 2.34); a
cold migration ends in VERIFY_RESIZE until ``confirmResize`` or ``revertResize``; evacuation is
refused while the source compute service is up; a build that finds no host ends in ERROR with
Nova's "No valid host" fault. Failures can be forced per server (`fail_next_migration`) or drawn
at `migration_failure_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sovereign_tui.lab.httpkit import ApiError
from sovereign_tui.lab.nova_moves import Moves, conflict
from sovereign_tui.lab.scenario import (
    Flavor,
    Host,
    Image,
    InstanceAction,
    Scenario,
    Server,
    Service,
    claim,
    fits,
    release,
    server_ip,
    server_mac,
)
from sovereign_tui.lab.timeline import Timeline


@dataclass
class Timings:
    """Simulated durations, in seconds of the lab's clock."""

    schedule_s: float = 1.0
    build_s: float = 8.0
    power_s: float = 3.0
    live_queued_s: float = 1.0
    live_preparing_s: float = 2.0
    live_bandwidth_bps: float = 8 * 2**30
    """Guest memory copied per second during a live migration."""
    live_post_s: float = 2.0
    cold_prep_s: float = 1.0
    cold_copy_s: float = 12.0
    cold_post_s: float = 2.0
    revert_s: float = 4.0
    evacuate_s: float = 10.0


class Compute:
    def __init__(self, scenario: Scenario, timeline: Timeline, timings: Timings | None = None) -> None:
        self.sc = scenario
        self.timeline = timeline
        self.timings = timings or Timings()
        self.migration_failure_rate = 0.0
        """Share of migrations that fail while copying (drawn from the scenario's seeded generator)."""
        self._order: list[str] = list(scenario.servers)  # newest first, as Nova sorts by default
        self._index: dict[str, int] | None = None
        self.moves = Moves(self)
        """Migrations, resizes and evacuations in flight."""

    # --- listing ---------------------------------------------------------------------------------

    def ordered(self) -> tuple[list[str], dict[str, int]]:
        """Server ids in Nova's default order (created_at desc) and each one's position."""
        if self._index is None:
            self._index = {sid: i for i, sid in enumerate(self._order)}
        return self._order, self._index

    def touch(self, s: Server) -> None:
        s.updated = self.timeline.wall()
        s.cache.clear()

    def touch_host(self, host: Host) -> None:
        for sid in host.server_ids:
            srv = self.sc.servers.get(sid)
            if srv is not None:
                srv.cache.clear()

    def record_action(
        self, s: Server, action: str, request_id: str, user_id: str, project_id: str
    ) -> InstanceAction:
        now = self.timeline.wall()
        act = InstanceAction(action, request_id, user_id, project_id, now, now)
        s.actions.append(act)
        return act

    def record_event(
        self, s: Server, act: InstanceAction, name: str, ok: bool, host: str | None, details: str = ""
    ) -> None:
        now = self.timeline.wall()
        act.updated_at = now
        if not ok:
            act.message = "Error"
        act.events.append(
            {
                "event": name,
                "start_time": act.start_time,
                "finish_time": now,
                "result": "Success" if ok else "Error",
                "host": host,
                "details": details,
            }
        )

    # --- scheduling ----------------------------------------------------------------------------

    def select(
        self,
        flavor: Flavor,
        exclude: frozenset[str] = frozenset(),
        forced: str | None = None,
        zone: str | None = None,
    ) -> Host | None:
        """The host a new claim of `flavor` goes to: GPU flavors pack onto the fullest host that
        still fits; others go where most RAM is free."""
        if forced is not None:
            host = self.sc.hosts_by_name.get(forced)
            ok = host is not None and host.service is not None and host.service.up and fits(host, flavor)
            return host if ok else None
        best: Host | None = None
        best_key: tuple[int, str] | None = None
        for h in self.sc.hosts:
            svc = h.service
            if h.role != "compute" or svc is None or not svc.up or svc.disabled or h.name in exclude:
                continue
            if zone not in (None, "nova", f"az-{h.site}"):
                continue
            if not fits(h, flavor):
                continue
            if flavor.gpu_count:
                key = (len(h.free_gpus()), h.name)
            elif flavor.vgpus:
                key = (h.free_vgpus(), h.name)
            else:
                key = (-(h.memory_mb - h.memory_mb_used), h.name)
            if best_key is None or key < best_key:
                best, best_key = h, key
        return best

    # --- servers -------------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        flavor: Flavor,
        image: Image,
        project_id: str,
        user_id: str,
        request_id: str,
        forced_host: str | None = None,
        zone: str | None = None,
        metadata: dict[str, str] | None = None,
        description: str | None = None,
        key_name: str | None = None,
        hints: dict[str, Any] | None = None,
    ) -> Server:
        sc = self.sc
        sc.server_counter += 1
        n = sc.server_counter
        project = sc.projects_by_id[project_id]
        now = self.timeline.wall()
        s = Server(
            id=sc.new_uuid(),
            name=name,
            project_id=project_id,
            user_id=user_id,
            flavor=flavor,
            image=image,
            host=None,
            vm_state="building",
            power_state=0,
            created=now,
            updated=now,
            number=n,
            ip=server_ip(n),
            mac=server_mac(n),
            network=f"{project.name}-net",
            az="nova",
            task_state="scheduling",
            key_name=key_name,
            metadata=dict(metadata or {}),
            description=description,
            scheduler_hints=dict(hints or {}),
        )
        sc.servers[s.id] = s
        self._order.insert(0, s.id)
        self._index = None
        sc.generation += 1
        act = self.record_action(s, "create", request_id, user_id, project_id)
        s.pinned_az = zone
        self.timeline.after(self.timings.schedule_s, lambda: self._schedule(s, act, forced_host))
        return s

    def _schedule(self, s: Server, act: InstanceAction, forced: str | None) -> None:
        if s.id not in self.sc.servers:
            return
        host = self.select(s.flavor, forced=forced, zone=s.pinned_az)
        if host is None:
            s.vm_state, s.task_state = "error", None
            s.fault = {
                "code": 500,
                "created": self.timeline.wall(),
                "message": "No valid host was found. There are not enough hosts available.",
                "details": f"No compute host has room for flavor {s.flavor.name}",
            }
            why = s.fault["message"]
            self.record_event(s, act, "conductor_schedule_and_build_instances", False, None, why)
            self.touch(s)
            return
        s.gpus, s.vgpu_on = claim(host, s, s.flavor)
        s.host, s.az, s.task_state = host.name, f"az-{host.site}", "spawning"
        self.touch(s)
        self.timeline.after(self.timings.build_s, lambda: self._built(s, act, host))

    def _built(self, s: Server, act: InstanceAction, host: Host) -> None:
        if s.id not in self.sc.servers:
            return
        s.vm_state, s.task_state, s.power_state = "active", None, 1
        s.launched_at = self.timeline.wall()
        self.record_event(s, act, "compute__do_build_and_run_instance", True, host.name)
        self.touch(s)

    def delete(self, s: Server) -> None:
        self.moves.cancel_all(s)
        if s.host is not None:
            release(self.sc.hosts_by_name[s.host], s, s.flavor)
        del self.sc.servers[s.id]
        self._order.remove(s.id)
        self._index = None
        self.sc.generation += 1

    def power(self, s: Server, action: str, request_id: str, user_id: str) -> None:
        """os-stop, os-start, reboot (soft or hard)."""
        wants = {
            "os-stop": ("active", "powering-off", "stopped", 4, "stop"),
            "os-start": ("stopped", "powering-on", "active", 1, "start"),
            "reboot": ("active", "rebooting", "active", 1, "reboot"),
            "reboot-hard": ("active", "rebooting_hard", "active", 1, "reboot"),
        }
        need, task, final, power, name = wants[action]
        if s.vm_state != need or s.task_state is not None:
            raise conflict(action.split("-hard")[0], s)
        act = self.record_action(s, name, request_id, user_id, s.project_id)
        s.task_state = task
        self.touch(s)

        def done() -> None:
            if s.id in self.sc.servers and s.task_state == task:
                s.vm_state, s.task_state, s.power_state = final, None, power
                self.record_event(s, act, f"compute_{name}_instance", True, s.host)
                self.touch(s)

        self.timeline.after(self.timings.power_s, done)

    # --- migrations ----------------------------------------------------------------------------

    def fail_next_migration(self, server_id: str) -> None:
        """Make the next migration of this server fail (tests, operator training)."""
        self.sc.servers[server_id].fail_next_move = True

    # --- compute services ----------------------------------------------------------------------

    def update_service(self, svc: Service, body: Any) -> None:
        """PUT /os-services/{id} (2.53+): status, disabled_reason, forced_down."""
        if not isinstance(body, dict) or not ({"status", "forced_down"} & body.keys()):
            raise ApiError(400, "At least one of 'status' or 'forced_down' should be specified.")
        if svc.binary != "nova-compute":
            raise ApiError(
                400,
                f"Updating a {svc.binary} service is not supported. Only nova-compute services "
                "can be updated.",
            )
        status, reason, forced = body.get("status"), body.get("disabled_reason"), body.get("forced_down")
        if status not in (None, "enabled", "disabled"):
            raise ApiError(400, f"Invalid input for field/attribute status. Value: {status}.")
        if reason is not None and status != "disabled":
            raise ApiError(400, "Specifying a disabled_reason is only supported when the status is disabled.")
        if forced is not None and not isinstance(forced, bool):
            raise ApiError(400, f"Invalid input for field/attribute forced_down. Value: {forced}.")
        if status == "disabled":
            svc.disabled, svc.disabled_reason = True, reason
        elif status == "enabled":
            svc.disabled, svc.disabled_reason = False, None
        if forced is not None:
            svc.forced_down = forced
            if forced and svc.alive:
                svc.last_seen = self.timeline.wall()
        self.touch_host(self.sc.hosts_by_name[svc.host])

    def set_compute_alive(self, host: str, alive: bool) -> None:
        """Make a compute service stop (or resume) reporting, as when its host dies."""
        h = self.sc.hosts_by_name[host]
        assert h.service is not None
        if h.service.alive and not alive:
            h.service.last_seen = self.timeline.wall()
        h.service.alive = alive
        self.touch_host(h)
