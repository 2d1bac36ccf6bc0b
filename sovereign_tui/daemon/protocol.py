"""The feed socket's protocol: NDJSON, one JSON object per line, each tagged by ``type``.

A client sends ``hello`` first, then any number of ``operation`` requests. The daemon answers
``welcome`` (who the daemon takes the client to be), ``history`` (the GPUs' recent samples),
then streams ``snapshot`` frames (the
export's JSON of the latest snapshot, under ``snapshot``; a slow reader skips generations),
``operation_result`` for each request, and ``goodbye`` with the reason before it closes a
client. Decoding is strict: unknown fields, wrong types, oversized values or an unknown ``type``
are errors, and the daemon closes a client that sends one.

Example::

    -> {"type":"hello","version":1}
    <- {"type":"welcome","version":1,"operator":"local:ops","role":"viewer","via":"local"}
    <- {"type":"history","gpus":[{"key":"GPU-5f1c...","holder":null,"held_since":0.0,...}]}
    <- {"type":"snapshot","snapshot":{"schema_version":1,"generation":7,...}}
    -> {"type":"operation","id":"1","kind":"drain","target":"gpu-a01"}
    <- {"type":"operation_result","id":"1","ok":false,
        "error":"local:ops (role viewer) may not drain; that needs the role operator or admin"}
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sovereign_tui.daemon.roles import Role
from sovereign_tui.export import to_json
from sovereign_tui.gpu_analytics import RingDump
from sovereign_tui.model import Snapshot

PROTOCOL_VERSION = 1
TOKEN_ENV = "SOVEREIGN_TUI_SESSION_TOKEN"
"""Environment variable holding a console session's capability token."""
MAX_SERVER_FRAME = 512 * 1024 * 1024
"""Longest line a client accepts from the daemon (a snapshot of a very large fleet)."""

_Short = Annotated[str, msgspec.Meta(max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]

OperationKind = Literal["drain", "undrain", "migrate", "provision", "resume", "cancel", "abandon"]
"""The operations engine's actions (`sovereign_tui.ops.roles`), ``force`` aside: that one is a flag."""


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
    """The host or workload the operation is about."""
    params: Annotated[dict[_Short, _Text], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=dict)
    dry_run: bool = False
    """Plan only: show the steps, change nothing."""
    confirm: _Short | None = None
    """The typed confirmation (the host name) for destructive operations."""
    force: bool = False
    """Run past blockers (StarlingX ``force-lock``...): an admin's action of its own."""

    @property
    def actions(self) -> tuple[str, ...]:
        """What the requester's role must allow: the kind, and ``force`` when asked."""
        return (self.kind, "force") if self.force else (self.kind,)


ClientMessage = Hello | OperationRequest


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


class Goodbye(_Message, frozen=True, tag="goodbye"):
    reason: str


ServerMessage = Welcome | HistoryFrame | SnapshotFrame | OperationResult | Goodbye


# --- encoding --------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_SNAPSHOT_PREFIX = b'{"type":"snapshot","snapshot":'


def encode(message: ClientMessage | Welcome | HistoryFrame | OperationResult | Goodbye) -> bytes:
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
