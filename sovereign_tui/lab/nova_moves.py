"""Server moves in the lab's Nova: live and cold migration, resize confirm and revert, evacuation.

Each move is a chain of timeline events; its public record is a `Migration` (os-migrations), and
while it runs it holds a claim on the destination as Nova does, released on failure or abort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sovereign_tui.lab.httpkit import ApiError
from sovereign_tui.lab.nova_views import LIVE_ACTIVE
from sovereign_tui.lab.scenario import Host, Migration, Server, claim, fits, release
from sovereign_tui.lab.timeline import Event

if TYPE_CHECKING:
    from sovereign_tui.lab.nova_sim import Compute


@dataclass
class _Move:
    """What a migration in flight holds besides its public record."""

    migration: Migration
    server: Server
    dest: Host | None = None
    dest_gpus: list[int] = field(default_factory=list)
    dest_vgpus: list[int] = field(default_factory=list)
    src_gpus: list[int] = field(default_factory=list)
    src_vgpus: list[int] = field(default_factory=list)
    old_vm_state: str = "active"
    event: Event | None = None


def conflict(action: str, s: Server) -> ApiError:
    if s.task_state is not None:
        return ApiError(409, f"Cannot '{action}' instance {s.id} while it is in task_state {s.task_state}")
    return ApiError(409, f"Cannot '{action}' instance {s.id} while it is in vm_state {s.vm_state}")


class Moves:
    def __init__(self, compute: Compute) -> None:
        self.c = compute
        self.sc = compute.sc
        self.timeline = compute.timeline
        self._moves: dict[int, _Move] = {}

    def cancel_all(self, s: Server) -> None:
        """End every move of a server that is being deleted, releasing destination claims."""
        for move in [m for m in self._moves.values() if m.server is s]:
            self._end_move(move, "error")
            if move.dest is not None:
                release(move.dest, s, s.flavor)

    def _new_migration(self, s: Server, kind: str, status: str) -> _Move:
        src = self.sc.hosts_by_name[s.host] if s.host else None
        now = self.timeline.wall()
        m = Migration(
            id=len(self.sc.migrations) + 1,
            uuid=self.sc.new_uuid(),
            server_id=s.id,
            migration_type=kind,
            status=status,
            source_compute=s.host or "",
            source_node=src.fqdn if src else "",
            dest_compute=None,
            dest_node=None,
            dest_host=None,
            flavor_int_id=s.flavor.int_id,
            user_id=s.user_id,
            project_id=s.project_id,
            created=now,
            updated=now,
            memory_total=s.flavor.ram * 2**20,
        )
        self.sc.migrations.append(m)
        move = _Move(m, s, src_gpus=list(s.gpus), src_vgpus=list(s.vgpu_on), old_vm_state=s.vm_state)
        self._moves[m.id] = move
        return move

    def _set(self, move: _Move, status: str) -> None:
        move.migration.status = status
        move.migration.updated = self.timeline.wall()

    def _claim_dest(self, move: _Move, dest: Host) -> None:
        m, s = move.migration, move.server
        move.dest = dest
        move.dest_gpus, move.dest_vgpus = claim(dest, s, s.flavor)
        m.dest_compute, m.dest_node, m.dest_host = dest.name, dest.fqdn, dest.ip

    def _after(self, move: _Move, delay: float, fn: Any) -> None:
        move.event = self.timeline.after(delay, fn)

    def _end_move(self, move: _Move, status: str) -> None:
        if move.event is not None:
            move.event.cancel()
        self._set(move, status)
        self._moves.pop(move.migration.id, None)

    def _fails(self, s: Server) -> bool:
        if s.fail_next_move:
            s.fail_next_move = False
            return True
        return self.c.migration_failure_rate > 0 and self.sc.rng.random() < self.c.migration_failure_rate

    def _finish_on_dest(self, move: _Move) -> None:
        s, dest = move.server, move.dest
        assert dest is not None
        s.host, s.az = dest.name, f"az-{dest.site}"
        s.gpus, s.vgpu_on = move.dest_gpus, move.dest_vgpus

    def live_migrate(self, s: Server, host: str | None, request_id: str, user_id: str) -> Migration:
        if s.vm_state not in ("active", "paused") or s.task_state is not None:
            raise conflict("os-migrateLive", s)
        self._source_up(s)
        dest = self._dest_arg(s, host)
        move = self._new_migration(s, "live-migration", "queued")
        act = self.c.record_action(s, "live-migration", request_id, user_id, s.project_id)
        s.task_state = "migrating"
        self.c.touch(s)
        t = self.c.timings

        def prepare() -> None:
            self._set(move, "preparing")
            if s.gpus or s.vgpu_on:
                kind = "PCI passthrough devices" if s.gpus else "vGPU (mediated) devices"
                return fail(
                    "error",
                    f"Migration pre-check error: live migration of instances with {kind} "
                    "is not supported on this cloud",
                )
            target = dest if dest is not None else self.c.select(s.flavor, exclude=frozenset({s.host or ""}))
            if target is None or not fits(target, s.flavor):
                return fail("error", "No valid host was found. There are not enough hosts available.")
            self._claim_dest(move, target)
            self._after(move, t.live_preparing_s, running)

        def running() -> None:
            self._set(move, "running")
            m = move.migration
            m.running_since, m.running_s = self.timeline.now(), m.memory_total / t.live_bandwidth_bps
            if self._fails(s):
                self._after(
                    move,
                    0.6 * m.running_s,
                    lambda: fail(
                        "failed",
                        "Live migration failed: guest dirtied memory faster than it could be copied",
                        "compute_live_migration",
                    ),
                )
            else:
                self._after(move, m.running_s, post)

        def post() -> None:
            move.migration.finished_copy = True
            self._set(move, "post-migrating")
            self._after(move, t.live_post_s, completed)

        def completed() -> None:
            release(self.sc.hosts_by_name[move.migration.source_compute], s, s.flavor)
            self._finish_on_dest(move)
            s.task_state = None
            self._end_move(move, "completed")
            self.c.record_event(s, act, "compute_live_migration", True, s.host)
            self.c.touch(s)

        def fail(status: str, why: str, event: str = "compute_check_can_live_migrate_destination") -> None:
            if move.dest is not None:
                release(move.dest, s, s.flavor)
            s.task_state = None
            self._end_move(move, status)
            self.c.record_event(s, act, event, False, s.host, why)
            self.c.touch(s)

        move.event = self.timeline.after(t.live_queued_s, prepare)
        return move.migration

    def abort(self, s: Server, migration_id: int, mv: int) -> None:
        move = self._moves.get(migration_id)
        if move is None or move.server is not s:
            raise ApiError(404, f"Migration {migration_id} for instance {s.id} could not be found.")
        m = move.migration
        allowed = ("running",) if mv < 65 else ("queued", "preparing", "running")
        if m.migration_type != "live-migration" or m.status not in allowed:
            raise ApiError(
                400,
                f"Migration {m.id} state of instance {s.id} is {m.status}. Cannot abort "
                "live migration while the migration is in this state.",
            )
        if move.dest is not None:
            release(move.dest, s, s.flavor)
        s.task_state = None
        self._end_move(move, "cancelled")
        self.c.touch(s)

    def force_complete(self, s: Server, migration_id: int) -> None:
        move = self._moves.get(migration_id)
        if move is None or move.server is not s:
            raise ApiError(404, f"Migration {migration_id} for instance {s.id} could not be found.")
        m = move.migration
        if m.migration_type != "live-migration" or m.status != "running":
            raise ApiError(
                400,
                f"Migration {m.id} state of instance {s.id} is {m.status}. Cannot force_complete "
                "while the migration is in this state.",
            )
        if move.event is not None:
            move.event.cancel()
        m.finished_copy = True
        self._set(move, "post-migrating")
        # the scheduled completion of the copy is replaced by an immediate switch-over
        dest = move.dest
        assert dest is not None

        def completed() -> None:
            release(self.sc.hosts_by_name[m.source_compute], s, s.flavor)
            self._finish_on_dest(move)
            s.task_state = None
            self._end_move(move, "completed")
            self.c.touch(s)

        self._after(move, self.c.timings.live_post_s, completed)

    def in_progress(self, s: Server) -> list[Migration]:
        return [
            m.migration
            for m in self._moves.values()
            if m.server is s
            and m.migration.migration_type == "live-migration"
            and m.migration.status in LIVE_ACTIVE
        ]

    def _source_up(self, s: Server) -> None:
        src = self.sc.hosts_by_name.get(s.host or "")
        if src is not None and src.service is not None and not src.service.up:
            raise ApiError(409, f"Compute service of {src.name} is unavailable at this time.")

    def _dest_arg(self, s: Server, host: str | None) -> Host | None:
        if host is None:
            return None
        dest = self.sc.hosts_by_name.get(host)
        if dest is None or dest.role != "compute":
            raise ApiError(400, f"Compute host {host} could not be found.")
        if dest.name == s.host:
            raise ApiError(400, "The target host can't be the same one.")
        if dest.service is None or not dest.service.up:
            raise ApiError(400, f"Compute service of {host} is unavailable at this time.")
        return dest

    def cold_migrate(self, s: Server, host: str | None, request_id: str, user_id: str) -> Migration:
        if s.vm_state not in ("active", "stopped") or s.task_state is not None:
            raise conflict("migrate", s)
        self._source_up(s)
        dest = self._dest_arg(s, host)
        target = dest if dest is not None else self.c.select(s.flavor, exclude=frozenset({s.host or ""}))
        if target is None or not fits(target, s.flavor):
            raise ApiError(400, "No valid host was found. No valid host found for cold migrate")
        move = self._new_migration(s, "migration", "pre-migrating")
        self._claim_dest(move, target)
        act = self.c.record_action(s, "migrate", request_id, user_id, s.project_id)
        s.task_state = "resize_prep"
        self.c.touch(s)
        t = self.c.timings

        def step(status: str, task: str, delay: float, then: Any) -> Any:
            def run() -> None:
                self._set(move, status)
                s.task_state = task
                self.c.touch(s)
                self._after(move, delay, then)

            return run

        def finished() -> None:
            self._set(move, "finished")
            self._finish_on_dest(move)
            s.vm_state, s.task_state = "resized", None
            self.c.record_event(s, act, "compute_finish_resize", True, s.host)
            self.c.touch(s)

        def failed() -> None:
            if move.dest is not None:
                release(move.dest, s, s.flavor)
            s.vm_state, s.task_state = "error", None
            s.fault = {
                "code": 500,
                "created": self.timeline.wall(),
                "message": f"Migration failed: disk copy to {target.name} was interrupted",
                "details": "",
            }
            self._end_move(move, "error")
            self.c.record_event(s, act, "compute_resize_instance", False, s.host, s.fault["message"])
            self.c.touch(s)

        copied = step("post-migrating", "resize_finish", t.cold_post_s, finished)
        migrating = step("migrating", "resize_migrating", t.cold_copy_s, failed if self._fails(s) else copied)
        self._after(move, t.cold_prep_s, migrating)
        return move.migration

    def _resized_move(self, s: Server, action: str) -> _Move:
        move = next(
            (m for m in self._moves.values() if m.server is s and m.migration.status == "finished"), None
        )
        if s.vm_state != "resized" or s.task_state is not None or move is None:
            raise conflict(action, s)
        return move

    def confirm_resize(self, s: Server) -> None:
        move = self._resized_move(s, "confirmResize")
        release(self.sc.hosts_by_name[move.migration.source_compute], s, s.flavor)
        s.vm_state = move.old_vm_state
        self._end_move(move, "confirmed")
        self.c.touch(s)

    def revert_resize(self, s: Server) -> None:
        move = self._resized_move(s, "revertResize")
        m = move.migration
        self._set(move, "reverting")
        s.task_state = "resize_reverting"
        self.c.touch(s)

        def reverted() -> None:
            if move.dest is not None:
                release(move.dest, s, s.flavor)
            source = self.sc.hosts_by_name[m.source_compute]
            s.host, s.az, s.gpus, s.vgpu_on = source.name, f"az-{source.site}", move.src_gpus, move.src_vgpus
            s.vm_state, s.task_state = move.old_vm_state, None
            self._end_move(move, "reverted")
            self.c.touch(s)

        self._after(move, self.c.timings.revert_s, reverted)

    def evacuate(self, s: Server, host: str | None, mv: int, request_id: str, user_id: str) -> Migration:
        src = self.sc.hosts_by_name.get(s.host or "")
        if src is None or src.service is None:
            raise conflict("evacuate", s)
        if src.service.up:
            raise ApiError(400, f"Compute service of {src.name} is still in use.")
        if s.vm_state not in ("active", "stopped", "error") or s.task_state is not None:
            raise conflict("evacuate", s)
        dest = self._dest_arg(s, host)
        move = self._new_migration(s, "evacuation", "accepted")
        act = self.c.record_action(s, "evacuate", request_id, user_id, s.project_id)
        s.task_state = "rebuilding"
        self.c.touch(s)

        def rebuild() -> None:
            self._set(move, "pre-migrating")
            target = dest if dest is not None else self.c.select(s.flavor, exclude=frozenset({src.name}))
            if target is None or not fits(target, s.flavor):
                s.task_state = None
                self._end_move(move, "error")
                why = "No valid host was found."
                self.c.record_event(s, act, "conductor_rebuild_server", False, None, why)
                self.c.touch(s)
                return
            self._claim_dest(move, target)
            self._after(move, self.c.timings.evacuate_s, done)

        def done() -> None:
            release(src, s, s.flavor)
            self._finish_on_dest(move)
            stopped = mv >= 95 or move.old_vm_state == "stopped"
            s.vm_state, s.power_state = ("stopped", 4) if stopped else ("active", 1)
            s.task_state, s.fault = None, None
            self._end_move(move, "done")
            self.c.record_event(s, act, "compute_rebuild_instance", True, s.host)
            self.c.touch(s)

        self._after(move, 1.0, rebuild)
        return move.migration
