"""`RemoteOperations`: the `OperationsBackend` of a console attached to the daemon.

Every call goes over the feed socket (`FeedClient`) and runs in the daemon, as the identity the
daemon gave this connection (a console session's operator and role): the `actor` the screens pass
is not sent, and cannot widen what the daemon allows. Plans are made on the daemon's snapshot;
a start sends back the plan's id and digest, and the daemon refuses a plan that changed since.
A run's events and end are those the daemon forwards; if the connection drops, `events()` ends
and `wait()` says so in one line while the operation goes on in the daemon. Closing the backend
(the console quitting) leaves the daemon's operations running.

Refusals and failures are `OperationError`s carrying the daemon's one line and kind; a feed that
is not connected fails each call with ``not connected to the daemon at SOCKET``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec

from sovereign_tui.daemon.feed_client import FeedClient, RunChannel
from sovereign_tui.daemon.ops_wire import (
    ProvisionSpec,
    flavor_fit,
    provision_spec,
    run_result,
)
from sovereign_tui.daemon.protocol import (
    OperationKind,
    OperationRequest,
    OperationResult,
    QueryKind,
    QueryRequest,
    QueryResult,
    Welcome,
)
from sovereign_tui.daemon.roles import actor_name
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.engine import Actor
from sovereign_tui.ops.executor import OperationResult as RunResult
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.journal import OperationRecord
from sovereign_tui.ops.node_plans import NodeVerb
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops.provisioning import FlavorFit, ProvisionRequest
from sovereign_tui.ops_gateway import ErrorKind, OperationError, OperationRun

log = logging.getLogger("sovereign_tui.feed_client")

LOST: ErrorKind = "journal"
"""The kind of an error that is not the daemon's answer (the feed is down): the daemon, which
keeps the journal, cannot be reached."""

MAX_SHOWN = 256
"""Plans remembered for a start; an older one is planned again."""


def actor_of(welcome: Welcome) -> Actor:
    """Who this connection acts as, by the daemon's word: what the app's role gating follows."""
    return Actor(actor_name(welcome.operator, welcome.via), welcome.role)


class RemoteRun:
    """An operation running in the daemon, followed over the feed."""

    def __init__(self, backend: RemoteOperations, plan: Plan, channel: RunChannel, actor: Actor) -> None:
        self._backend = backend
        self._actor = actor
        self._plan = plan
        self._channel = channel
        self._cancelling: asyncio.Task[None] | None = None

    @property
    def op_id(self) -> str:
        return self._channel.op_id

    @property
    def plan(self) -> Plan:
        return self._plan

    def events(self) -> AsyncIterator[OpEvent]:
        return self._channel.events()

    def cancel(self) -> None:
        """Ask the daemon to cancel it (a refusal is logged; the events say how it ended)."""
        if self._cancelling is None or self._cancelling.done():
            self._cancelling = asyncio.ensure_future(self._cancel())

    async def _cancel(self) -> None:
        try:
            await self._backend.cancel(self.op_id, self._actor)
        except OperationError as exc:
            log.warning("cancel of %s: %s", self.op_id[:8], exc)

    async def wait(self) -> RunResult:
        channel = self._channel
        await channel.ended()
        done = channel.done
        if done is None:
            raise OperationError(channel.lost or "the operation can no longer be followed", LOST)
        return run_result(done.op_id, done.state, done.message, done.steps)


class RemoteOperations:
    def __init__(self, client: FeedClient) -> None:
        self.client = client
        self._asked: dict[str, OperationRequest] = {}
        """Plan id -> the dry run that made it, for its start."""

    # --- planning ---------------------------------------------------------------------------------

    async def plan_drain(self, snapshot: Snapshot, host: str, *, force: bool = False) -> Plan:
        return await self._plan(self._dry_run("drain", host, force=force))

    async def plan_undrain(self, snapshot: Snapshot, host: str) -> Plan:
        return await self._plan(self._dry_run("undrain", host))

    async def plan_migrate(
        self, snapshot: Snapshot, workload: str, *, to: str | None = None, cold: bool = False
    ) -> Plan:
        return await self._plan(self._dry_run("migrate", workload, to=to, cold=cold))

    async def plan_provision(self, snapshot: Snapshot, request: ProvisionRequest) -> Plan:
        try:
            spec = provision_spec(request)
        except ValueError as exc:
            raise OperationError(str(exc), "plan") from None
        return await self._plan(self._dry_run("provision", request.name, provision=spec))

    async def plan_node(self, snapshot: Snapshot, verb: NodeVerb, node: str) -> Plan:
        return await self._plan(self._dry_run(verb, node))

    def _dry_run(
        self,
        kind: OperationKind,
        target: str,
        *,
        force: bool = False,
        to: str | None = None,
        cold: bool = False,
        provision: ProvisionSpec | None = None,
    ) -> OperationRequest:
        return OperationRequest(
            id=self._id(),
            kind=kind,
            target=target,
            dry_run=True,
            force=force,
            to=to,
            cold=cold,
            provision=provision,
        )

    async def _plan(self, request: OperationRequest) -> Plan:
        result = _ok(await self.client.request(request))
        if not isinstance(result.plan, Plan):
            raise OperationError(f"{request.kind} {request.target}: the daemon answered no plan", "plan")
        self._asked[result.plan.id] = request
        while len(self._asked) > MAX_SHOWN:  # plans shown and never started
            del self._asked[next(iter(self._asked))]
        return result.plan

    async def offered_flavors(self, snapshot: Snapshot) -> list[FlavorFit]:
        return [flavor_fit(f) for f in (await self._query("flavors")).flavors]

    async def kata_runtime_classes(self) -> list[str]:
        return list((await self._query("runtime_classes")).runtime_classes)

    # --- acting -------------------------------------------------------------------------------------

    async def start(self, plan: Plan, actor: Actor, *, confirmation: str | None = None) -> OperationRun:
        asked = self._asked.get(plan.id)
        if asked is None:
            raise OperationError(
                f"{plan.kind} {plan.target}: not a plan the daemon made; plan it again", "plan"
            )
        request = msgspec.structs.replace(
            asked, id=self._id(), dry_run=False, confirm=confirmation, plan_id=plan.id, digest=plan.digest()
        )
        result, channel = await self.client.start_run(request)
        run = self._run(_ok(result), channel, plan, actor)  # a refused plan may be started again
        self._asked.pop(plan.id, None)
        return run

    async def resume(self, op_id: str, actor: Actor) -> OperationRun:
        result, channel = await self.client.start_run(
            OperationRequest(id=self._id(), kind="resume", target=op_id)
        )
        return self._run(_ok(result), channel, None, actor)

    def _run(
        self, result: OperationResult, channel: RunChannel | None, shown: Plan | None, actor: Actor
    ) -> RemoteRun:
        plan = result.plan if isinstance(result.plan, Plan) else shown
        if channel is None or plan is None:
            raise OperationError("the daemon started an operation without saying which", "journal")
        return RemoteRun(self, plan, channel, actor)

    async def cancel(self, op_id: str, actor: Actor) -> None:
        _ok(await self.client.request(OperationRequest(id=self._id(), kind="cancel", target=op_id)))

    async def abandon(self, op_id: str, actor: Actor) -> OperationRecord:
        result = _ok(await self.client.request(OperationRequest(id=self._id(), kind="abandon", target=op_id)))
        if not isinstance(result.record, OperationRecord):
            raise OperationError(f"abandon {op_id}: the daemon answered no record", "journal")
        return result.record

    # --- the journal ----------------------------------------------------------------------------------

    async def recent(self, limit: int = 50) -> list[OperationRecord]:
        return list((await self._query("recent", limit=limit)).records)

    async def interrupted(self) -> list[OperationRecord]:
        return list((await self._query("interrupted")).records)

    async def close(self) -> None:
        """Nothing to release: the daemon's operations run on after this console."""

    # --- helpers --------------------------------------------------------------------------------------

    def _id(self) -> str:
        return self.client.next_request_id()

    async def _query(self, what: QueryKind, limit: int = 50) -> QueryResult:
        result = await self.client.query(QueryRequest(id=self._id(), what=what, limit=limit))
        if not result.ok:
            raise OperationError(result.error or f"{what}: refused by the daemon", result.error_kind or LOST)
        return result


def _ok(result: OperationResult) -> OperationResult:
    if not result.ok:
        kind = result.error_kind if isinstance(result.error_kind, str) else LOST
        raise OperationError(result.error or "refused by the daemon", kind)
    return result
