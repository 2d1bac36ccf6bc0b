"""The operations engine in the daemon: what console sessions (and any ``--attach`` client) ask
for runs here, as the session's operator and role, and goes on when the session ends.

The feed has checked the requester's role already; the engine checks it again (and audits a
refusal) whatever the feed let through. Plans are made on the daemon's latest snapshot. A start
names the plan the operator saw by its id and digest: the daemon plans again and refuses, in one
line, if the plan is no longer the same (a host's workloads moved, a pod appeared); otherwise the
operation runs that plan under the id shown, so the client follows it by the id it knows.

Every change of an operation's state (not its progress) republishes the journal's operations
(`Snapshot.operations`): the running, the interrupted and the latest finished ones. Stopping the
daemon leaves what still runs interrupted, not cancelled: what the clouds were doing goes on, and
the operation is resumed from the step it reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec

from sovereign_tui.clock import Clock
from sovereign_tui.config import Settings
from sovereign_tui.daemon.gateway import actor_for
from sovereign_tui.daemon.ops_wire import (
    flavor_fit_wire,
    provision_request,
    step_outcomes,
)
from sovereign_tui.daemon.protocol import (
    OperationDone,
    OperationEventFrame,
    OperationRequest,
    OperationResult,
    QueryRequest,
    QueryResult,
)
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.feed import SnapshotFeed
from sovereign_tui.model import Operation
from sovereign_tui.ops.engine import Actor, Operations, as_model
from sovereign_tui.ops.journal import JournalError, OperationRecord
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import LocalOperations, OperationError, OperationRun, error_line

log = logging.getLogger("sovereign_tui.serve")

SNAPSHOT_OPERATIONS = 20
"""Finished operations kept in the snapshots beside the running and interrupted ones."""

Publish = Callable[[tuple[Operation, ...]], None]


class EngineGateway:
    def __init__(self, operations: Operations, feed: SnapshotFeed, *, publish: Publish | None = None) -> None:
        self.operations = operations
        self._backend = LocalOperations(operations, owns=False)
        self._feed = feed
        self._publish_to = publish
        self._unfollowed: dict[str, OperationRun] = {}
        """Runs just started or resumed, until the feed follows them for their requester."""
        self._watchers: set[asyncio.Task[None]] = set()
        self.refresh()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        feed: SnapshotFeed,
        *,
        clock: Clock | None = None,
        publish: Publish | None = None,
    ) -> EngineGateway:
        """`OperationError` (kind journal) when the journal or the audit log cannot be opened."""
        try:
            operations = Operations.from_settings(settings, clock=clock)
        except (OSError, JournalError) as exc:
            raise OperationError(f"operations state: {exc}", "journal") from None
        return cls(operations, feed, publish=publish)

    async def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        # A daemon stopped (an upgrade, a reboot) leaves what runs interrupted rather than
        # cancelled: a live migration in flight finishes in Nova, and the operation is resumed
        # from the step it reached once the daemon is back (nothing is done twice).
        for run in list(self.operations.runs.values()):
            log.warning(
                "shutting down: operation %s (%s %s) left interrupted; resume it with "
                "'sovereign-tui operations resume %s'",
                run.op_id[:8],
                run.plan.kind,
                run.plan.target,
                run.op_id[:8],
            )
        self._unfollowed.clear()
        await self.operations.close(leave_running=True)

    # --- requests ---------------------------------------------------------------------------------

    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        try:
            return await self._submit(actor_for(who), request)
        except OperationError as exc:
            return OperationResult(id=request.id, ok=False, error=str(exc), error_kind=exc.kind)

    async def _submit(self, actor: Actor, request: OperationRequest) -> OperationResult:
        backend, target = self._backend, request.target
        if request.kind == "cancel":
            await backend.cancel(target, actor)
            return OperationResult(
                id=request.id, ok=True, message=f"operation {target[:8]}: cancel requested"
            )
        if request.kind == "abandon":
            rec = await backend.abandon(target, actor)
            self.refresh()
            return OperationResult(
                id=request.id,
                ok=True,
                message=f"{rec.kind} {rec.target}: {rec.state}",
                operation_id=rec.id,
                record=rec,
            )
        if request.kind == "resume":
            return self._running(request, await backend.resume(target, actor), "resumed")
        plan = await self._plan(request)
        if request.dry_run:
            return OperationResult(
                id=request.id,
                ok=True,
                message=f"{plan.kind} {plan.target}: {len(plan.steps)} steps, digest {plan.digest()[:12]}",
                plan=plan,
            )
        plan = self._as_shown(request, plan)
        run = await backend.start(plan, actor, confirmation=request.confirm)
        return self._running(request, run, "started")

    async def _plan(self, request: OperationRequest) -> Plan:
        backend, snapshot, target = self._backend, self._feed.snapshot(), request.target
        kind = request.kind
        if kind == "drain":
            return await backend.plan_drain(snapshot, target, force=request.force)
        if kind == "undrain":
            return await backend.plan_undrain(snapshot, target)
        if kind == "migrate":
            return await backend.plan_migrate(snapshot, target, to=request.to, cold=request.cold)
        if kind == "provide" or kind == "undeploy":
            return await backend.plan_node(snapshot, kind, target)
        if kind == "provision":
            spec = request.provision
            if spec is None or spec.name != target:
                raise OperationError(f"provision {target}: the request does not say what to create", "plan")
            return await backend.plan_provision(snapshot, provision_request(spec))
        raise OperationError(f"{kind} {target}: not something that is planned", "plan")

    def _as_shown(self, request: OperationRequest, plan: Plan) -> Plan:
        """`plan` under the id of the plan the operator saw, if it is still that plan."""
        what = f"{plan.kind} {plan.target}"
        shown_id, shown_digest = request.plan_id, request.digest
        if shown_id is None or shown_digest is None:
            raise OperationError(f"{what}: plan it first (a dry run) and start the plan shown", "plan")
        try:
            uuid.UUID(shown_id)
        except ValueError:
            raise OperationError(f"{what}: {shown_id!r} is not a plan's id; plan it again", "plan") from None
        digest = plan.digest()
        if digest != shown_digest:
            raise OperationError(
                f"{what}: the plan changed since it was shown (now {len(plan.steps)} steps, digest "
                f"{digest[:12]}, shown {shown_digest[:12]}); plan it again and check it",
                "plan",
            )
        if self._journaled(shown_id):
            raise OperationError(f"{what}: plan {shown_id[:8]} was started already; plan it again", "journal")
        return msgspec.structs.replace(plan, id=shown_id)

    def _journaled(self, op_id: str) -> bool:
        try:
            return self.operations.journal.get(op_id).id == op_id
        except JournalError:
            return False

    def _running(self, request: OperationRequest, run: OperationRun, verb: str) -> OperationResult:
        self._unfollowed[run.op_id] = run
        watcher = asyncio.ensure_future(self._watch(run))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        self.refresh()
        plan = run.plan
        return OperationResult(
            id=request.id,
            ok=True,
            message=f"{plan.kind} {plan.target} {verb}: operation {run.op_id[:8]}",
            operation_id=run.op_id,
            plan=plan,
        )

    async def query(self, who: Identity, request: QueryRequest) -> QueryResult:
        backend = self._backend
        try:
            if request.what == "recent":
                return self._records(request, await backend.recent(request.limit))
            if request.what == "interrupted":
                return self._records(request, await backend.interrupted())
            if request.what == "flavors":
                fits = await backend.offered_flavors(self._feed.snapshot())
                return QueryResult(id=request.id, ok=True, flavors=tuple(map(flavor_fit_wire, fits)))
            classes = await backend.kata_runtime_classes()
            return QueryResult(id=request.id, ok=True, runtime_classes=tuple(classes))
        except OperationError as exc:
            return QueryResult(id=request.id, ok=False, error=str(exc), error_kind=exc.kind)

    @staticmethod
    def _records(request: QueryRequest, records: list[OperationRecord]) -> QueryResult:
        return QueryResult(id=request.id, ok=True, records=tuple(records))

    # --- following ----------------------------------------------------------------------------------

    def follow(self, op_id: str) -> AsyncIterator[OperationEventFrame | OperationDone] | None:
        run = self._unfollowed.pop(op_id, None) or self.operations.runs.get(op_id)
        return None if run is None else _frames(run)

    async def _watch(self, run: OperationRun) -> None:
        async for event in run.events():
            if event.kind != "step-progress":
                self.refresh()
        with contextlib.suppress(Exception):
            await run.wait()
        self._unfollowed.pop(run.op_id, None)
        self.refresh()

    def refresh(self) -> None:
        """Publish the journal's operations to the snapshots."""
        if self._publish_to is None:
            return
        journal = self.operations.journal
        try:
            records = {r.id: r for r in journal.interrupted()}
            records.update((r.id, r) for r in journal.recent(SNAPSHOT_OPERATIONS))
        except (sqlite3.Error, JournalError) as exc:
            log.error("operations journal: cannot be read: %s", exc)
            return
        newest = sorted(records.values(), key=lambda r: r.created_at, reverse=True)
        self._publish_to(tuple(as_model(r) for r in newest))


async def _frames(run: OperationRun) -> AsyncIterator[OperationEventFrame | OperationDone]:
    async for event in run.events():
        yield OperationEventFrame(event=event)
    try:
        result = await run.wait()
    except Exception as exc:
        yield OperationDone(op_id=run.op_id, state="failed", message=error_line(exc))
        return
    yield OperationDone(
        op_id=result.op_id, state=result.state, message=result.message, steps=step_outcomes(result)
    )
