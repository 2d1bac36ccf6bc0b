"""Where the daemon sends operation requests once it has checked the requester's role.

`submit` answers when the request is planned, accepted or refused, not when the operation ends.
For a start or a resume that it accepts (an ``operation_id`` in the answer), the feed then calls
`follow` at once and forwards what it yields to that client only; every client sees operations in
the snapshots (`Snapshot.operations`). `EngineGateway` (`sovereign_tui.daemon.engine_gateway`)
runs the operations engine; `UnavailableGateway` refuses everything where there is none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from sovereign_tui.daemon.protocol import (
    OperationDone,
    OperationEventFrame,
    OperationRequest,
    OperationResult,
    QueryRequest,
    QueryResult,
)
from sovereign_tui.daemon.roles import Identity, actor_name
from sovereign_tui.ops.engine import Actor

UNAVAILABLE = "operations are not available in this build"


def actor_for(who: Identity) -> Actor:
    return Actor(actor_name(who.operator, who.via), who.role)


class OperationsGateway(Protocol):
    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        """Plan, start, resume, cancel or abandon on behalf of `who` (whose role the daemon has
        checked); a refusal is an answer with ``ok`` false, never an exception."""
        ...

    async def query(self, who: Identity, request: QueryRequest) -> QueryResult: ...

    def follow(self, op_id: str) -> AsyncIterator[OperationEventFrame | OperationDone] | None:
        """The events of an operation this gateway runs, from its first, then its end; None when
        it runs no such operation."""
        ...


class UnavailableGateway:
    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        return OperationResult(id=request.id, ok=False, error=UNAVAILABLE)

    async def query(self, who: Identity, request: QueryRequest) -> QueryResult:
        return QueryResult(id=request.id, ok=False, error=UNAVAILABLE)

    def follow(self, op_id: str) -> AsyncIterator[OperationEventFrame | OperationDone] | None:
        return None
