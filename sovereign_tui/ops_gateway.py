"""What the screens need of the operations engine, as one small protocol, `OperationsBackend`.

The TUI never holds `Operations` itself: it holds a backend. `LocalOperations` runs the engine in
this process (``sovereign-tui`` on the management node); a session attached to the daemon gets a
backend that sends the same calls over the daemon's socket. Both keep to these rules:

- Every call is a coroutine, so a backend may be remote.
- Every refusal or failure the operator can act on is raised as `OperationError`, whose message
  is one line naming the thing and the fix (an unknown host, a role that may not, a host held by
  another operation and since when, a confirmation missing); `kind` says which, for the screens
  that treat one differently. Nothing else is raised for such cases.
- Planning changes nothing and needs no role; `start`, `cancel`, `resume` and `abandon` pass the
  role check of `sovereign_tui.ops.roles` on the backend's side, whatever the screens showed.
- `start` and `resume` answer once the operation is journaled and running; its progress comes
  from the returned `OperationRun`'s `events()` (every event from the operation's start, then
  live ones, ending after ``operation-finished``).

No UI toolkit here.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from sovereign_tui.config import Settings
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.actions.base import LayerUnavailable, StepFailed
from sovereign_tui.ops.audit import AuditError
from sovereign_tui.ops.engine import Actor, ConfirmationRequired, Operations
from sovereign_tui.ops.executor import OperationResult, OpEvent
from sovereign_tui.ops.journal import JournalError, OperationRecord
from sovereign_tui.ops.leases import LeaseHeld
from sovereign_tui.ops.node_plans import NodeVerb
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops.plan_context import PlanError
from sovereign_tui.ops.provisioning import FlavorFit, ProvisionRequest
from sovereign_tui.ops.roles import PermissionDenied

T = TypeVar("T")
ErrorKind = Literal["plan", "denied", "lease", "confirmation", "journal"]


class OperationError(Exception):
    """A refusal or failure, in one line. `kind`: plan (cannot be planned), denied (the role may
    not), lease (another operation holds a host), confirmation (not confirmed as the plan needs),
    journal (the journal or the audit log cannot be written, or no such operation)."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class OperationRun(Protocol):
    """An operation running on the backend."""

    @property
    def op_id(self) -> str: ...

    @property
    def plan(self) -> Plan: ...

    def events(self) -> AsyncIterator[OpEvent]:
        """Every event from the start, then live ones, until the operation has finished."""
        ...

    def cancel(self) -> None:
        """Ask the operation to stop (running steps are cleaned up); it finishes ``cancelled``."""
        ...

    async def wait(self) -> OperationResult: ...


class OperationsBackend(Protocol):
    async def plan_drain(self, snapshot: Snapshot, host: str, *, force: bool = False) -> Plan: ...

    async def plan_undrain(self, snapshot: Snapshot, host: str) -> Plan: ...

    async def plan_migrate(
        self, snapshot: Snapshot, workload: str, *, to: str | None = None, cold: bool = False
    ) -> Plan:
        """`workload`: a Nova server's id or name, or NAMESPACE/NAME of a KubeVirt VM or a pod."""
        ...

    async def plan_provision(self, snapshot: Snapshot, request: ProvisionRequest) -> Plan: ...

    async def plan_node(self, snapshot: Snapshot, verb: NodeVerb, node: str) -> Plan:
        """A bare-metal node's provide or undeploy; `node`: its name, uuid or host's name."""
        ...

    async def offered_flavors(self, snapshot: Snapshot) -> list[FlavorFit]:
        """GPU flavors that fit on some hypervisor now: the only ones a form offers."""
        ...

    async def kata_runtime_classes(self) -> list[str]: ...

    async def start(self, plan: Plan, actor: Actor, *, confirmation: str | None = None) -> OperationRun:
        """Journal and run `plan`; a destructive one needs its `confirm_phrase` as `confirmation`."""
        ...

    async def cancel(self, op_id: str, actor: Actor) -> None:
        """Cancel a running operation (also one this session did not start)."""
        ...

    async def recent(self, limit: int = 50) -> list[OperationRecord]:
        """The latest operations, newest first, with their steps (the journal)."""
        ...

    async def interrupted(self) -> list[OperationRecord]:
        """Operations whose process died mid-way: to resume or abandon."""
        ...

    async def resume(self, op_id: str, actor: Actor) -> OperationRun: ...

    async def abandon(self, op_id: str, actor: Actor) -> OperationRecord: ...

    async def close(self) -> None: ...


def as_operation_error(exc: BaseException) -> OperationError | None:
    """The engine's exceptions as `OperationError`; None for anything else (a bug: let it show)."""
    if isinstance(exc, OperationError):
        return exc
    if isinstance(exc, PlanError | LayerUnavailable | StepFailed):
        return OperationError(str(exc), "plan")
    if isinstance(exc, PermissionDenied):
        return OperationError(str(exc), "denied")
    if isinstance(exc, LeaseHeld):
        return OperationError(str(exc), "lease")
    if isinstance(exc, ConfirmationRequired):
        return OperationError(str(exc), "confirmation")
    if isinstance(exc, JournalError | AuditError):
        return OperationError(str(exc), "journal")
    return None


def error_line(exc: BaseException) -> str:
    """Any exception as the one line a screen shows: the engine's own message, else its type too."""
    mapped = as_operation_error(exc)
    if mapped is not None:
        return str(mapped)
    return f"{type(exc).__name__}: {exc}"


async def _guarded(call: Awaitable[T]) -> T:
    """Await `call`, re-raising the engine's exceptions as `OperationError`."""
    try:
        return await call
    except Exception as exc:
        mapped = as_operation_error(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from None


def _sync(fn: Callable[..., T], *args: Any) -> T:
    """Call `fn`, re-raising the engine's exceptions as `OperationError`."""
    try:
        return fn(*args)
    except Exception as exc:
        mapped = as_operation_error(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from None


class LocalOperations:
    """`OperationsBackend` over an `Operations` in this process. `close` closes the engine when
    the backend owns it (the default; not so where several apps share one engine)."""

    def __init__(self, operations: Operations, *, owns: bool = True) -> None:
        self.operations = operations
        self.owns = owns

    async def plan_drain(self, snapshot: Snapshot, host: str, *, force: bool = False) -> Plan:
        return await _guarded(self.operations.plan_drain(snapshot, host, force=force))

    async def plan_undrain(self, snapshot: Snapshot, host: str) -> Plan:
        return await _guarded(self.operations.plan_undrain(snapshot, host))

    async def plan_migrate(
        self, snapshot: Snapshot, workload: str, *, to: str | None = None, cold: bool = False
    ) -> Plan:
        return await _guarded(self.operations.plan_migrate(snapshot, workload, to=to, cold=cold))

    async def plan_provision(self, snapshot: Snapshot, request: ProvisionRequest) -> Plan:
        return await _guarded(self.operations.plan_provision(snapshot, request))

    async def plan_node(self, snapshot: Snapshot, verb: NodeVerb, node: str) -> Plan:
        return await _guarded(self.operations.plan_node(snapshot, verb, node))

    async def offered_flavors(self, snapshot: Snapshot) -> list[FlavorFit]:
        return await _guarded(self.operations.offered_flavors(snapshot))

    async def kata_runtime_classes(self) -> list[str]:
        return await _guarded(self.operations.kata_runtime_classes())

    async def start(self, plan: Plan, actor: Actor, *, confirmation: str | None = None) -> OperationRun:
        return await _guarded(self.operations.start(plan, actor, confirmation=confirmation))

    async def cancel(self, op_id: str, actor: Actor) -> None:
        ops = self.operations
        rec = _sync(ops.journal.get, op_id)
        _sync(ops.check, actor, "cancel", rec.target, rec.digest)
        run = ops.runs.get(rec.id)
        if run is None:
            where = "no longer runs" if rec.state != "running" else f"runs in process {rec.pid}"
            raise OperationError(
                f"operation {rec.id[:8]} ({rec.kind} {rec.target}) {where}: cancel it where it runs",
                "journal",
            )
        run.cancel()

    async def recent(self, limit: int = 50) -> list[OperationRecord]:
        return _sync(self.operations.recent, limit)

    async def interrupted(self) -> list[OperationRecord]:
        return _sync(self.operations.interrupted)

    async def resume(self, op_id: str, actor: Actor) -> OperationRun:
        return await _guarded(self.operations.resume(op_id, actor))

    async def abandon(self, op_id: str, actor: Actor) -> OperationRecord:
        return _sync(self.operations.abandon, op_id, actor)

    async def close(self) -> None:
        if self.owns:
            await self.operations.close()


def os_user() -> str:
    """The name this process acts under: the OS user (as the command line does)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def local_backend(settings: Settings) -> tuple[LocalOperations, Actor]:
    """The engine for `settings` in this process, and who acts: the OS user with ``ops.role``.
    `OperationError` (kind journal) when the journal or audit log cannot be opened."""
    try:
        operations = _sync(Operations.from_settings, settings)
    except OSError as exc:
        raise OperationError(f"operations state: {exc}", "journal") from None
    return LocalOperations(operations), Actor(os_user(), settings.ops.role)


def confirmation_for(plan: Plan, typed: str) -> str | None:
    """What to pass to `start` for `plan` when the operator typed `typed` for a batch of plans:
    its phrase when it is one of the typed words, else what was typed (which the engine refuses)."""
    phrase = plan.confirm_phrase
    if phrase is None:
        return None
    return phrase if phrase in typed.split() else typed


def batch_phrase(plans: Sequence[Plan]) -> str | None:
    """What the operator types to run `plans` together: the destructive plans' names, spaced."""
    phrases = [p.confirm_phrase for p in plans if p.confirm_phrase is not None]
    return " ".join(phrases) if phrases else None


__all__ = [
    "Actor",
    "LocalOperations",
    "OperationError",
    "OperationRun",
    "OperationsBackend",
    "ProvisionRequest",
    "batch_phrase",
    "confirmation_for",
    "error_line",
    "local_backend",
    "os_user",
]
