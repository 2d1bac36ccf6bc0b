"""Nova steps through openstacksdk: compute service disable/enable, live and cold migration
(with confirm), server creation.

Migrations are followed through ``os-migrations`` (the record's status) and, while a live
migration runs, ``/servers/{id}/migrations`` (memory copied, for progress). Before asking for a
migration the adapter records the ids of the server's existing migration records; after a crash
a new record tells that the request was made (follow it), its absence that it was not (make it).
"""

from __future__ import annotations

from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, off_loop, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.plan import StepKind

LIVE_DONE = frozenset({"completed"})
LIVE_FAILED = frozenset({"failed", "error", "cancelled"})
COLD_FAILED = frozenset({"failed", "error", "reverted", "cancelled"})
GIB = 2**30


def os_error(exc: BaseException) -> str:
    """openstacksdk's exception as one line: the service's own message when it sent one."""
    details = getattr(exc, "details", None)
    status = getattr(exc, "status_code", None)
    text = details if isinstance(details, str) and details else getattr(exc, "message", None) or str(exc)
    return f"HTTP {status}: {one_line(text)}" if status else one_line(text)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """An SDK call off the loop; its HTTP and SDK errors become `StepFailed`."""
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions

    try:
        return await off_loop(fn, *args, **kwargs)
    except (exceptions.SDKException, ks.ClientException) as exc:
        raise StepFailed(os_error(exc)) from None


class NovaActions:
    kinds = frozenset(
        {
            StepKind.NOVA_DISABLE,
            StepKind.NOVA_ENABLE,
            StepKind.NOVA_LIVE_MIGRATE,
            StepKind.NOVA_COLD_MIGRATE,
            StepKind.NOVA_CREATE,
        }
    )

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    async def _compute(self) -> Any:
        return await self.connections.proxy("compute", "nova")

    async def run(self, ctx: StepContext) -> str:
        kind = ctx.step.kind
        if kind in (StepKind.NOVA_DISABLE, StepKind.NOVA_ENABLE):
            return await self._service(ctx, disable=kind == StepKind.NOVA_DISABLE)
        if kind == StepKind.NOVA_LIVE_MIGRATE:
            return await self._live(ctx)
        if kind == StepKind.NOVA_COLD_MIGRATE:
            return await self._cold(ctx)
        if kind == StepKind.NOVA_CREATE:
            return await self._create(ctx)
        raise StepFailed(f"nova: no action for {kind}")

    async def cancel(self, ctx: StepContext) -> str | None:
        if ctx.step.kind != StepKind.NOVA_LIVE_MIGRATE:
            if ctx.step.kind == StepKind.NOVA_COLD_MIGRATE:
                return "a cold migration cannot be aborted; it goes on in Nova"
            return None
        compute = await self._compute()
        server_id = ctx.step.target
        running = await call(lambda: list(compute.server_migrations(server_id)))
        if not running:
            return "no live migration in progress to abort"
        for m in running:
            await call(compute.abort_server_migration, m.id, server_id, ignore_missing=True)
        return f"aborted live migration {', '.join(str(m.id) for m in running)}"

    # --- compute services --------------------------------------------------------------------------

    async def _service(self, ctx: StepContext, *, disable: bool) -> str:
        compute = await self._compute()
        host = ctx.params["host"]
        found = await call(lambda: list(compute.services(host=host, binary="nova-compute")))
        svc = next((s for s in found if s.id == ctx.step.target), found[0] if found else None)
        if svc is None:
            raise StepFailed(f"nova: no nova-compute service on {host}")
        want = "disabled" if disable else "enabled"
        if svc.status == want:
            return f"compute service on {host} already {want}"
        if disable:
            reason = ctx.params.get("reason") or "drained"
            await call(compute.disable_service, svc, host=host, binary="nova-compute", disabled_reason=reason)
        else:
            await call(compute.enable_service, svc, host=host, binary="nova-compute")
        return f"compute service on {host} {want}"

    # --- migrations --------------------------------------------------------------------------------

    async def _records(self, compute: Any, server_id: str, mtype: str) -> list[Any]:
        return list(await call(lambda: list(compute.migrations(server_id=server_id, migration_type=mtype))))

    async def _new_record(self, ctx: StepContext, compute: Any, mtype: str) -> Any | None:
        """The migration record this step asked for: the one recorded, else one not known before."""
        records = await self._records(compute, ctx.step.target, mtype)
        mid = ctx.data.get("migration_id")
        if mid is not None:
            return next((m for m in records if str(m.id) == str(mid)), None)
        known = {str(i) for i in ctx.data.get("known_migrations", [])}
        fresh = [m for m in records if str(m.id) not in known]
        if not fresh:
            return None
        mine = max(fresh, key=lambda m: int(m.id) if str(m.id).isdigit() else 0)
        ctx.note(migration_id=str(mine.id))
        return mine

    async def _request(self, ctx: StepContext, compute: Any, mtype: str, issue: Any) -> None:
        known = [str(m.id) for m in await self._records(compute, ctx.step.target, mtype)]
        ctx.note(known_migrations=known, requested=True)
        await call(issue)

    async def _live(self, ctx: StepContext) -> str:
        compute = await self._compute()
        sid, source = ctx.step.target, ctx.params["source"]
        dest = ctx.params.get("dest") or None
        record = await self._new_record(ctx, compute, "live-migration") if ctx.data.get("requested") else None
        if record is None:
            server = await call(compute.get_server, sid)
            if server.compute_host != source and server.task_state is None:
                return f"already on {server.compute_host}"
            if server.status not in ("ACTIVE", "PAUSED"):
                raise StepFailed(f"server {server.name} is {server.status}; live migration needs ACTIVE")
            await self._request(
                ctx,
                compute,
                "live-migration",
                lambda: compute.live_migrate_server(sid, host=dest, block_migration="auto"),
            )
            record = await self._new_record(ctx, compute, "live-migration")
            if record is None:
                raise StepFailed("nova accepted the live migration but recorded no migration")
        while True:
            status = record.status
            if status in LIVE_DONE:
                server = await call(compute.get_server, sid)
                return f"live-migrated to {server.compute_host}"
            if status in LIVE_FAILED:
                raise StepFailed(f"live migration {status}: {await self._why(compute, sid)}")
            message, fraction = await self._live_progress(compute, sid, record)
            await ctx.pause(message, fraction)
            found = await self._new_record(ctx, compute, "live-migration")
            if found is None:
                raise StepFailed("the live migration's record disappeared")
            record = found

    async def _live_progress(self, compute: Any, sid: str, record: Any) -> tuple[str, float | None]:
        """What a running live migration has copied, from ``/servers/{id}/migrations``."""
        if record.status != "running":
            return f"live migration {record.status}", None
        running = await call(lambda: list(compute.server_migrations(sid)))
        m = next((r for r in running if str(r.id) == str(record.id)), None)
        total = getattr(m, "memory_total_bytes", None) if m is not None else None
        done = getattr(m, "memory_processed_bytes", None) if m is not None else None
        if total and done is not None:
            return f"memory {done / GIB:.1f} of {total / GIB:.1f} GiB copied", min(1.0, done / total)
        return "live migration running", None

    async def _why(self, compute: Any, sid: str) -> str:
        """The failure's reason, from the server's latest instance action events (2.84+ details)."""
        actions = await call(lambda: list(compute.server_actions(sid)))
        moves = [a for a in actions if a.action in ("live-migration", "migrate")]
        if not moves:
            return "no reason given"
        latest = max(moves, key=lambda a: a.start_time or "")
        full = await call(compute.get_server_action, latest.request_id, sid)
        for event in reversed(full.events or []):
            ev = event if isinstance(event, dict) else event.to_dict()
            if ev.get("result") == "Error":
                return one_line(ev.get("details") or ev.get("event") or "error")
        return one_line(full.message or "no reason given")

    async def _cold(self, ctx: StepContext) -> str:
        compute = await self._compute()
        sid, source = ctx.step.target, ctx.params["source"]
        dest = ctx.params.get("dest") or None
        record = await self._new_record(ctx, compute, "migration") if ctx.data.get("requested") else None
        if record is None:
            server = await call(compute.get_server, sid)
            if server.compute_host != source and server.status == "ACTIVE":
                return f"already on {server.compute_host}"
            if server.status not in ("ACTIVE", "SHUTOFF"):
                raise StepFailed(
                    f"server {server.name} is {server.status}; cold migration needs ACTIVE or SHUTOFF"
                )
            await self._request(ctx, compute, "migration", lambda: compute.migrate_server(sid, host=dest))
            record = await self._new_record(ctx, compute, "migration")
            if record is None:
                raise StepFailed("nova accepted the cold migration but recorded no migration")
        while True:
            if record.status == "confirmed":
                server = await call(compute.get_server, sid)
                return f"cold-migrated to {server.compute_host} (confirmed)"
            if record.status in COLD_FAILED:
                server = await call(compute.get_server, sid)
                fault = (server.fault or {}).get("message") if isinstance(server.fault, dict) else None
                raise StepFailed(f"cold migration {record.status}: {fault or await self._why(compute, sid)}")
            message = f"cold migration {record.status}"
            if record.status == "finished":
                server = await call(compute.get_server, sid)
                if server.status == "VERIFY_RESIZE":
                    await call(compute.confirm_server_resize, sid)
                    message = "resize confirmed"
            await ctx.pause(message)
            found = await self._new_record(ctx, compute, "migration")
            if found is None:
                raise StepFailed("the cold migration's record disappeared")
            record = found

    # --- servers -----------------------------------------------------------------------------------

    async def _create(self, ctx: StepContext) -> str:
        compute = await self._compute()
        p = ctx.params
        name = p["name"]
        sid = ctx.data.get("server_id")
        if sid is None:
            same = await call(lambda: [s for s in compute.servers(name=f"^{name}$") if s.name == name])
            if same:
                sid = same[0].id
                ctx.note(server_id=sid)
        if sid is None:
            attrs: dict[str, Any] = {"name": name, "flavor_id": p["flavor_id"], "image_id": p["image_id"]}
            net = p.get("network", "auto")
            attrs["networks"] = net if net in ("auto", "none") else [{"uuid": net}]
            if p.get("host"):
                attrs["availability_zone"] = f"{p.get('zone') or 'nova'}:{p['host']}"
            server = await call(compute.create_server, **attrs)
            sid = server.id
            ctx.note(server_id=sid)
        while True:
            server = await call(compute.get_server, sid)
            if server.status == "ACTIVE":
                return f"server {name} ({sid}) active on {server.compute_host}"
            if server.status == "ERROR":
                fault = server.fault.get("message") if isinstance(server.fault, dict) else None
                raise StepFailed(f"server {name} went to ERROR: {one_line(fault or 'no fault recorded')}")
            await ctx.pause(f"server {server.status.lower()} ({server.task_state or 'waiting'})")
