"""The feed socket's protocol: NDJSON, one JSON object per line, each tagged by ``type``.

A client sends ``hello`` first, then any number of ``operation`` requests (plan, start, resume,
cancel, abandon) and ``query`` requests (the journal's recent or interrupted operations, what a
provision form offers). The daemon answers ``welcome`` (who the daemon takes the client to be),
``history`` (the GPUs' recent samples), then streams ``snapshot`` frames (the export's JSON of the
latest snapshot, under ``snapshot``; a slow reader skips generations), ``operation_result`` or
``query_result`` for each request (matched by ``id``; not necessarily in order), and ``goodbye``
with the reason before it closes a client. Decoding is strict: unknown fields, wrong types,
oversized values or an unknown ``type`` are errors, and the daemon closes a client that sends one.

Operations run in the daemon, as the client's identity. A start names the plan the operator saw
(its ``plan_id`` and ``digest``, from a ``dry_run`` answer); the daemon plans again and refuses if
the plan changed. The run keeps the plan's id. The client that started (or resumed) a run gets its
``operation_event`` frames (every event from the start) and an ``operation_done`` frame; the run
goes on if that client goes away. Every client sees operations in the snapshots.

Example::

    -> {"type":"hello","version":1}
    <- {"type":"welcome","version":1,"operator":"local:ops","role":"viewer","via":"local"}
    <- {"type":"history","gpus":[{"key":"GPU-5f1c...","holder":null,"held_since":0.0,...}]}
    <- {"type":"snapshot","snapshot":{"schema_version":1,"generation":7,...}}
    -> {"type":"operation","id":"1","kind":"drain","target":"gpu-a01","dry_run":true}
    <- {"type":"operation_result","id":"1","ok":false,
        "error":"local:ops (role viewer) may not drain; that needs the role operator or admin",
        "error_kind":"denied"}
    -> {"type":"query","id":"2","what":"recent"}
    <- {"type":"query_result","id":"2","ok":true,"records":[...]}
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from sovereign_tui.daemon.ops_wire import FlavorFitWire, ProvisionSpec, StepOutcome
from sovereign_tui.daemon.roles import Role
from sovereign_tui.export import to_json
from sovereign_tui.gpu_analytics import RingDump
from sovereign_tui.model import Snapshot
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.journal import OperationRecord
from sovereign_tui.ops.plan import Plan

PROTOCOL_VERSION = 1
TOKEN_ENV = "SOVEREIGN_TUI_SESSION_TOKEN"
"""Environment variable holding a console session's capability token."""
MAX_SERVER_FRAME = 512 * 1024 * 1024
"""Longest line a client accepts from the daemon (a snapshot of a very large fleet)."""

_Short = Annotated[str, msgspec.Meta(max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

OperationKind = Literal[
    "drain", "undrain", "migrate", "provision", "provide", "undeploy", "resume", "cancel", "abandon"
]
"""The operations engine's actions (`sovereign_tui.ops.roles`), ``force`` aside: that one is a flag."""
PlanKind = Literal["drain", "undrain", "migrate", "provision", "provide", "undeploy"]
PLAN_KINDS: tuple[PlanKind, ...] = get_args(PlanKind)
"""The kinds that are planned (``dry_run``) and then started."""
QueryKind = Literal["recent", "interrupted", "flavors", "runtime_classes"]
ErrorKind = Literal["plan", "denied", "lease", "confirmation", "journal"]
"""`sovereign_tui.ops_gateway.ErrorKind`, spelled out so that reading the feed needs no engine."""
_Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class _Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    pass


# --- client -> daemon ------------------------------------------------------------------------


class Hello(_Message, frozen=True, tag="hello"):
    version: int
    token: _Short | None = None
    """A console session's capability token (from `TOKEN_ENV`); absent for a local client."""
    client: _Short = ""
    """Free text naming the client program, for the log."""


class OperationRequest(_Message, frozen=True, tag="operation"):
    id: _Short
    """Chosen by the client; the result carries it back."""
    kind: OperationKind
    target: _Name
    """The host (drain, undrain), workload (migrate), new workload's name (provision), bare-metal
    node (provide, undeploy), or the operation's id (resume, cancel, abandon)."""
    dry_run: bool = False
    """Plan only: answer the plan, change nothing."""
    confirm: _Name | None = None
    """The typed confirmation (the host name) for destructive operations."""
    force: bool = False
    """Run past blockers (StarlingX ``force-lock``...): an admin's action of its own."""
    to: _Name | None = None
    """migrate: the destination host (else the scheduler's choice)."""
    cold: bool = False
    """migrate: cold rather than live."""
    provision: ProvisionSpec | None = None
    """provision: what to create (``target`` is its name)."""
    plan_id: _Short | None = None
    """A start: the id of the plan the operator saw; the operation keeps it."""
    digest: _Digest | None = None
    """A start: the digest of the plan the operator saw; the daemon refuses a plan that changed."""

    @property
    def actions(self) -> tuple[str, ...]:
        """What the requester's role must allow: the kind, and ``force`` when asked."""
        return (self.kind, "force") if self.force else (self.kind,)

    @property
    def starts_run(self) -> bool:
        """A start or a resume: its events go to the requester."""
        return not self.dry_run and (self.kind in PLAN_KINDS or self.kind == "resume")


class QueryRequest(_Message, frozen=True, tag="query"):
    """Read-only: the journal's operations (any role), or what a provision form offers."""

    id: _Short
    what: QueryKind
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    """recent: how many, newest first."""

    @property
    def actions(self) -> tuple[str, ...]:
        return ("provision",) if self.what in ("flavors", "runtime_classes") else ()


ClientMessage = Hello | OperationRequest | QueryRequest


# --- daemon -> client ------------------------------------------------------------------------


class Welcome(_Message, frozen=True, tag="welcome"):
    version: int
    operator: str
    role: Role
    via: str


class SnapshotFrame(_Message, frozen=True, tag="snapshot"):
    snapshot: Snapshot


class HistoryFrame(_Message, frozen=True, tag="history"):
    """The GPUs' recent samples, sent once after ``welcome`` and before the first snapshot, so a
    console that attaches shows sparklines and idle flags at once."""

    gpus: tuple[RingDump, ...]


class OperationResult(_Message, frozen=True, tag="operation_result"):
    id: str
    ok: bool
    message: str | None = None
    """What happened, for the operator (a plan's summary, an operation's id and state)."""
    error: str | None = None
    """Why it was refused or failed: one line."""
    operation_id: str | None = None
    error_kind: ErrorKind | UnsetType = UNSET
    """What kind of refusal (`sovereign_tui.ops_gateway.OperationError.kind`); absent when ok."""
    plan: Plan | UnsetType = UNSET
    """A dry run's plan, or the plan a started or resumed operation runs."""
    record: OperationRecord | UnsetType = UNSET
    """An abandoned operation's journal record."""


class QueryResult(_Message, frozen=True, tag="query_result"):
    id: str
    ok: bool
    error: str | None = None
    error_kind: ErrorKind | None = None
    records: tuple[OperationRecord, ...] = ()
    """recent (newest first), interrupted."""
    flavors: tuple[FlavorFitWire, ...] = ()
    runtime_classes: tuple[str, ...] = ()


class OperationEventFrame(_Message, frozen=True, tag="operation_event"):
    """An event of an operation this client started or resumed (from its first event on)."""

    event: OpEvent


class OperationDone(_Message, frozen=True, tag="operation_done"):
    """The end of an operation this client follows; no more events for it."""

    op_id: str
    state: str
    """succeeded | failed | cancelled"""
    message: str
    steps: tuple[StepOutcome, ...] = ()


class Goodbye(_Message, frozen=True, tag="goodbye"):
    reason: str


ServerMessage = (
    Welcome
    | HistoryFrame
    | SnapshotFrame
    | OperationResult
    | QueryResult
    | OperationEventFrame
    | OperationDone
    | Goodbye
)


# --- encoding --------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_SNAPSHOT_PREFIX = b'{"type":"snapshot","snapshot":'


def encode(
    message: ClientMessage
    | Welcome
    | HistoryFrame
    | OperationResult
    | QueryResult
    | OperationEventFrame
    | OperationDone
    | Goodbye,
) -> bytes:
    """One message as a line (newline included)."""
    return _encoder.encode(message) + b"\n"


def snapshot_line(snapshot: Snapshot) -> bytes:
    """A snapshot frame whose ``snapshot`` member is byte for byte the export's JSON."""
    return _SNAPSHOT_PREFIX + to_json(snapshot) + b"}\n"


def snapshot_json(line: bytes) -> bytes:
    """The export JSON inside a snapshot frame made by `snapshot_line`."""
    if not (line.startswith(_SNAPSHOT_PREFIX) and line.rstrip(b"\n").endswith(b"}")):
        raise ValueError("not a snapshot frame")
    return line[len(_SNAPSHOT_PREFIX) : len(line.rstrip(b"\n")) - 1]


def decode_client(line: bytes) -> ClientMessage:
    """Raises msgspec.DecodeError (bad JSON) or msgspec.ValidationError (bad shape)."""
    return _client_decoder.decode(line)


def decode_server(line: bytes) -> ServerMessage:
    return _server_decoder.decode(line)


def reason_of(exc: Exception) -> str:
    """One line saying what was wrong with a line that failed to decode."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid message: {text}"
    return f"invalid JSON: {text}"
