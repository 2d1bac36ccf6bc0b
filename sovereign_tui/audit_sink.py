"""Where the daemon and the console record who did what: logins, logouts, refusals, requests.

`AuditSink` is the one method they need. On an appliance it is `OpsAuditSink`: the operations
engine's hash-chained audit log (`sovereign_tui.ops.audit`), the same file the operations
themselves are recorded in, so one chain holds a login and the drain that followed it.
`MemoryAuditSink` keeps events in a list, for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import msgspec

from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import Settings, state_home
from sovereign_tui.daemon.roles import actor_name
from sovereign_tui.ops.audit import AuditLog

AuditEvent = dict[str, Any]
"""Always has ``event`` (``login``, ``login.refused``, ``session.start``, ``session.end``,
``logout``, ``forward.refused``, ``feed.attach``, ``operation.refused``...); usually
``operator``, ``role``, ``via``, ``address`` and ``reason``."""


class AuditSink(Protocol):
    def append(self, event: AuditEvent) -> None:
        """Record `event` durably before returning; raise when it cannot be recorded."""
        ...


def audit_log_path(settings: Settings) -> Path:
    """The operations engine's audit log: ``ops.audit_log``, or ``audit.log`` in its state dir."""
    ops = settings.ops
    if ops.audit_log:
        return Path(ops.audit_log)
    return Path(ops.state_dir or state_home()) / "audit.log"


class OpsAuditSink:
    """Console and feed events as records of the operations audit log.

    ``who`` is the operator as the engine names it (``ssh:NAME`` for a console session; for a
    refused login: the user name tried), ``action`` the event,
    ``target`` what it was about (``console`` for SSH events, ``feed`` for the socket),
    ``result`` ``refused`` or ``ok`` (``failed`` for a request the engine turned down), and
    ``detail`` the rest as compact JSON (address, reason, key fingerprint...).
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def append(self, event: AuditEvent) -> None:
        rest = dict(event)
        action = str(rest.pop("event"))
        operator = rest.pop("operator", None)
        # the name the journal and the engine's records give the same operator (ssh:NAME)
        who = actor_name(str(operator), str(rest.get("via"))) if operator else rest.get("user") or "-"
        role = rest.pop("role", None) or "-"
        target = rest.pop("target", None) or ("console" if rest.get("via") == "ssh" else "feed")
        ok = rest.pop("ok", True)
        result = "refused" if action.endswith(".refused") else ("ok" if ok else "failed")
        detail = msgspec.json.encode(
            {k: v for k, v in rest.items() if v is not None}, order="sorted"
        ).decode()
        self.log.append(
            who=str(who), role=str(role), action=action, target=str(target), result=result, detail=detail
        )


class MemoryAuditSink:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self.events: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self.events.append({"at": self._clock.time(), **event})

    def of(self, kind: str) -> list[AuditEvent]:
        return [e for e in self.events if e["event"] == kind]


def open_audit_sink(settings: Settings, clock: Clock | None = None) -> AuditSink:
    return OpsAuditSink(AuditLog(audit_log_path(settings), clock))
