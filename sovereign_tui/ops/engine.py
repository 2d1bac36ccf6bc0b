"""`Operations`: the one entry point for acting, used by the command line, the daemon's gateway
and (through the gateway) the screens. Plan, confirm, execute with progress events, cancel; list,
resume and abandon interrupted operations. Every call passes the role check in `roles` and lands
in the audit log; every run is journaled and holds its hosts' leases.

    ops = Operations.from_settings(settings)
    plan = await ops.plan_drain(snapshot, "gpu-07")            # a dry run is this, printed
    run = await ops.start(plan, Actor("alice", "operator"), confirmation="gpu-07")
    async for event in run.events(): ...                       # OpEvent: step-started, -progress...
    result = await run.wait()                                  # or run.cancel()
    for rec in ops.interrupted(): ...                          # after a crash: resume or abandon
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import Settings, state_home
from sovereign_tui.model import Operation, Snapshot
from sovereign_tui.ops.actions import Adapters, Connections, Targets
from sovereign_tui.ops.audit import AuditLog
from sovereign_tui.ops.executor import Executor, OperationResult, OpEvent, RunOptions
from sovereign_tui.ops.inventory import Inventory
from sovereign_tui.ops.journal import Journal, OperationRecord
from sovereign_tui.ops.leases import LeaseHeld
from sovereign_tui.ops.node_plans import NodeVerb, plan_node
from sovereign_tui.ops.plan import Plan, Step
from sovereign_tui.ops.plan_context import PlanContext
from sovereign_tui.ops.planners import plan_drain, plan_migrate, plan_undrain
from sovereign_tui.ops.provisioning import (
    FlavorFit,
    ProvisionRequest,
    fitting_flavors,
    kata_classes,
    plan_provision,
)
from sovereign_tui.ops.roles import PermissionDenied, allowed
from sovereign_tui.ops.settings import OpsSettings


@dataclass(frozen=True)
class Actor:
    """Who acts: the OS user or SSH key's name, and the role that goes with it."""

    name: str
    role: str


class ConfirmationRequired(Exception):
    """A destructive plan was started without the typed confirmation it needs."""


class RunHandle:
    """A running operation: its events, a cancel switch, and its result."""

    def __init__(self, op_id: str, plan: Plan) -> None:
        self.op_id = op_id
        self.plan = plan
        self.history: list[OpEvent] = []
        self._queues: list[asyncio.Queue[OpEvent | None]] = []
        self._cancel = asyncio.Event()
        self.task: asyncio.Task[OperationResult] | None = None

    def _publish(self, event: OpEvent | None) -> None:
        if event is not None:
            self.history.append(event)
        for q in self._queues:
            q.put_nowait(event)

    async def events(self) -> AsyncIterator[OpEvent]:
        """Every event from the start (those already past first), until the operation ends."""
        q: asyncio.Queue[OpEvent | None] = asyncio.Queue()
        for e in self.history:
            q.put_nowait(e)
        if self.task is not None and self.task.done():
            q.put_nowait(None)
        self._queues.append(q)
        try:
            while (event := await q.get()) is not None:
                yield event
        finally:
            self._queues.remove(q)

    def cancel(self) -> None:
        """Stop: running steps are cancelled and cleaned up (migrations aborted)."""
        self._cancel.set()

    async def wait(self) -> OperationResult:
        assert self.task is not None
        return await asyncio.shield(self.task)


class Operations:
    def __init__(
        self,
        settings: OpsSettings,
        targets: Targets,
        *,
        clock: Clock | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        base = Path(state_dir or settings.state_dir or state_home())
        self.journal = Journal(base / "operations.db")
        self.audit = AuditLog(settings.audit_log or base / "audit.log", self.clock)
        self.adapters = Adapters(Connections(targets))
        self.inventory = Inventory(self.adapters)
        self.runs: dict[str, RunHandle] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> Operations:
        return cls(settings.ops, Targets.from_settings(settings), clock=clock)

    async def close(self, *, leave_running: bool = False) -> None:
        """Stop every run here: cancelled (their steps cleaned up: a Nova live migration aborted,
        a KubeVirt one deleted), or with `leave_running` only stopped being followed, their
        journal rows left ``running`` so that once this process is gone they read as interrupted,
        to be resumed, while what the clouds were doing goes on."""
        for run in list(self.runs.values()):
            if leave_running:
                if run.task is not None:
                    run.task.cancel()
            else:
                run.cancel()
            if run.task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await run.task
        await self.adapters.close()
        self.journal.close()

    # --- planning (no role needed: a plan changes nothing) -----------------------------------------

    def _ctx(self, snapshot: Snapshot) -> PlanContext:
        return PlanContext(snapshot, self.inventory, self.settings, self.clock)

    async def plan_drain(self, snapshot: Snapshot, host: str, *, force: bool = False) -> Plan:
        return await plan_drain(self._ctx(snapshot), host, force=force)

    async def plan_undrain(self, snapshot: Snapshot, host: str) -> Plan:
        return await plan_undrain(self._ctx(snapshot), host)

    async def plan_migrate(
        self, snapshot: Snapshot, workload: str, *, to: str | None = None, cold: bool = False
    ) -> Plan:
        return await plan_migrate(self._ctx(snapshot), workload, to=to, cold=cold)

    async def plan_provision(self, snapshot: Snapshot, request: ProvisionRequest) -> Plan:
        return await plan_provision(self._ctx(snapshot), request)

    async def plan_node(self, snapshot: Snapshot, verb: NodeVerb, node: str) -> Plan:
        """A bare-metal node's provide (manageable -> available) or undeploy (active -> available)."""
        return await plan_node(self._ctx(snapshot), verb, node)

    async def offered_flavors(self, snapshot: Snapshot) -> list[FlavorFit]:
        """The GPU flavors a provision screen may offer: those that fit somewhere now."""
        return fitting_flavors(snapshot, await self.inventory.flavors())

    async def kata_runtime_classes(self) -> list[str]:
        """The Kata runtime classes present in the cluster, for a Kata pod's choice."""
        return kata_classes(await self.inventory.runtime_classes())

    # --- acting ----------------------------------------------------------------------------------

    def check(self, actor: Actor, action: str, target: str, digest: str | None = None) -> None:
        """The role check; a refusal is audited and raised as `PermissionDenied`."""
        if not allowed(actor.role, action):
            self.audit.append(
                who=actor.name,
                role=actor.role,
                action=action,
                target=target,
                result="denied",
                plan_digest=digest,
                detail="role does not allow it",
            )
            raise PermissionDenied(actor.name, actor.role, action)

    async def start(
        self,
        plan: Plan,
        actor: Actor,
        *,
        confirmation: str | None = None,
        continue_on_failure: bool = False,
        force: bool = False,
    ) -> RunHandle:
        """Check the role, the confirmation and the leases, journal the operation, and run it."""
        digest = plan.digest()
        self.check(actor, plan.kind, plan.target, digest)
        if force or plan.params.get("force") == "true":
            self.check(actor, "force", plan.target, digest)
            force = True
        phrase = plan.confirm_phrase
        if phrase is not None and confirmation != phrase:
            raise ConfirmationRequired(f"this plan is destructive: type the name {phrase!r} to confirm it")
        options = {"continue_on_failure": continue_on_failure, "force": force}
        try:
            self.journal.create(
                plan, operator=actor.name, role=actor.role, now=self.clock.time(), options=options
            )
        except LeaseHeld as exc:
            self.audit.append(
                who=actor.name,
                role=actor.role,
                action=plan.kind,
                target=plan.target,
                result="refused",
                plan_digest=digest,
                detail=str(exc),
            )
            raise
        try:
            self.audit.append(
                who=actor.name,
                role=actor.role,
                action=plan.kind,
                target=plan.target,
                result="started",
                plan_digest=digest,
                operation=plan.id,
            )
        except Exception:
            self.journal.finish(plan.id, "failed", "the audit log could not be written", self.clock.time())
            raise
        return self._launch(self.journal.get(plan.id), actor, RunOptions(continue_on_failure, force))

    def _launch(self, record: OperationRecord, actor: Actor, options: RunOptions) -> RunHandle:
        plan = record.plan
        digest = plan.digest()
        handle = RunHandle(plan.id, plan)

        def step_audit(step: Step, state: str, outcome: str | None) -> None:
            self.audit.append(
                who=actor.name,
                role=actor.role,
                action=step.kind.value,
                target=step.target_name,
                result=state,
                plan_digest=digest,
                operation=plan.id,
                detail=outcome,
            )

        executor = Executor(self.adapters, self.journal, self.clock, self.settings, step_audit=step_audit)

        async def main() -> OperationResult:
            try:
                result = await executor.run(
                    record, options=options, cancel=handle._cancel, emit=handle._publish
                )
                self.audit.append(
                    who=actor.name,
                    role=actor.role,
                    action=plan.kind,
                    target=plan.target,
                    result=result.state,
                    plan_digest=digest,
                    operation=plan.id,
                    detail=result.message,
                )
                return result
            finally:
                handle._publish(None)
                self.runs.pop(plan.id, None)

        handle.task = asyncio.ensure_future(main())
        self.runs[plan.id] = handle
        return handle

    # --- interrupted operations ---------------------------------------------------------------

    def interrupted(self) -> list[OperationRecord]:
        """Operations whose process died mid-way: each says the step it reached."""
        return self.journal.interrupted()

    def recent(self, limit: int = 50) -> list[OperationRecord]:
        return self.journal.recent(limit)

    async def resume(self, op_id: str, actor: Actor, *, continue_on_failure: bool | None = None) -> RunHandle:
        """Run an interrupted (or failed) operation on from where it stopped; steps done are skipped."""
        rec = self.journal.get(op_id)
        self.check(actor, "resume", rec.target, rec.digest)
        self.check(actor, rec.kind, rec.target, rec.digest)
        rec = self.journal.adopt(rec.id, self.clock.time())
        reached = rec.step_reached
        self.audit.append(
            who=actor.name,
            role=actor.role,
            action="resume",
            target=rec.target,
            result="started",
            plan_digest=rec.digest,
            operation=rec.id,
            detail=f"from step {reached.index + 1}" if reached else None,
        )
        cof = (
            rec.options.get("continue_on_failure", False)
            if continue_on_failure is None
            else continue_on_failure
        )
        return self._launch(rec, actor, RunOptions(bool(cof), bool(rec.options.get("force", False))))

    def abandon(self, op_id: str, actor: Actor) -> OperationRecord:
        """Give an interrupted operation up: its leases are released, its steps left as they are."""
        rec = self.journal.get(op_id)
        self.check(actor, "abandon", rec.target, rec.digest)
        out = self.journal.abandon(rec.id, actor.name, self.clock.time())
        self.audit.append(
            who=actor.name,
            role=actor.role,
            action="abandon",
            target=rec.target,
            result="abandoned",
            plan_digest=rec.digest,
            operation=rec.id,
            detail=out.message,
        )
        return out


def as_model(rec: OperationRecord) -> Operation:
    """A journal record as the model's `Operation` (what the snapshot and the screens show)."""
    reached = rec.step_reached
    state = "interrupted" if rec.interrupted else rec.state
    return Operation(
        id=rec.id,
        kind=rec.kind,
        target=rec.target,
        operator=rec.operator,
        state=state,
        started_at=rec.created_at,
        step=(reached.index + 1) if reached is not None else rec.done_count,
        steps=len(rec.steps),
        message=rec.message,
    )


__all__ = [
    "Actor",
    "ConfirmationRequired",
    "LeaseHeld",
    "OperationResult",
    "Operations",
    "PermissionDenied",
    "ProvisionRequest",
    "RunHandle",
    "as_model",
]
