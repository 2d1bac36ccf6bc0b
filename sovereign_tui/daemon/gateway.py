"""Where the daemon sends operation requests once it has checked the requester's role.

The operations engine plugs in here. `submit` answers when the request is accepted (or refused
by the engine itself), not when the operation ends: progress travels in the snapshots
(`Snapshot.operations`). Until an engine is built in, `UnavailableGateway` refuses every request.
"""

from __future__ import annotations

from typing import Protocol

from sovereign_tui.daemon.protocol import OperationRequest, OperationResult
from sovereign_tui.daemon.roles import Identity

UNAVAILABLE = "operations are not available in this build"


class OperationsGateway(Protocol):
    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        """Accept or refuse `request` on behalf of `who` (whose role the daemon has checked)."""
        ...


class UnavailableGateway:
    async def submit(self, who: Identity, request: OperationRequest) -> OperationResult:
        return OperationResult(id=request.id, ok=False, error=UNAVAILABLE)
