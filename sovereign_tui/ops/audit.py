"""The audit log: append-only, hash-chained JSON lines, each one flushed to disk before the
action it records goes on.

Every line is one record: who, their role, what they did, to what, the digest of the plan, the
result, and ``prev`` (the previous record's hash) and ``hash`` (SHA-256 of ``prev`` and the
record's canonical JSON). ``seq`` counts from 1. Beside the log, ``<log>.head`` holds the seq and
hash of the last record, replaced atomically after each append.

`verify` detects:
- an edited record (its hash no longer matches its content);
- an inserted, deleted or reordered record anywhere before the last one (the chain of ``prev``
  breaks, and ``seq`` skips);
- records cut from the tail (the log ends before the record the head pointer names), and a
  missing head pointer;
- a damaged line (not JSON, fields missing).

It cannot detect, because no secret is involved: someone with write access who rewrites the
whole chain from the first altered record onward *and* the head pointer consistently, or who
deletes log and head together. Against that, copy the head hash somewhere the writer cannot
reach (a remote log, a ticket) and compare. A head pointer that is one record *behind* the log is
what a crash between the two writes leaves, and is accepted.

Appends take an exclusive `flock` on the log, so the daemon and command-line runs on one machine
interleave whole records. A log whose tail is damaged refuses further appends (`AuditError`):
actions are not taken unrecorded.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from sovereign_tui.clock import Clock, SystemClock

GENESIS = "0" * 64


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: float
    who: str
    role: str
    action: str
    target: str
    result: str
    plan_digest: str | None = None
    operation: str | None = None
    detail: str | None = None
    prev: str
    hash: str = ""


class _Head(msgspec.Struct, frozen=True):
    seq: int
    hash: str


class AuditError(Exception):
    """The log cannot be appended to (damaged tail, unwritable file): one line naming the fix."""


def record_hash(record: AuditRecord) -> str:
    body = msgspec.json.encode(msgspec.structs.replace(record, hash=""), order="sorted")
    return hashlib.sha256(record.prev.encode() + b"\n" + body).hexdigest()


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


class AuditLog:
    def __init__(self, path: str | os.PathLike[str], clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()

    def append(
        self,
        *,
        who: str,
        role: str,
        action: str,
        target: str,
        result: str,
        plan_digest: str | None = None,
        operation: str | None = None,
        detail: str | None = None,
    ) -> AuditRecord:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"audit log {self.path}: cannot be opened ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = self._tail(fd)
            rec = AuditRecord(
                seq=seq + 1,
                at=self.clock.time(),
                who=who,
                role=role,
                action=action,
                target=target,
                result=result,
                plan_digest=plan_digest,
                operation=operation,
                detail=detail,
                prev=prev,
            )
            rec = msgspec.structs.replace(rec, hash=record_hash(rec))
            os.write(fd, msgspec.json.encode(rec) + b"\n")
            os.fsync(fd)
            self._write_head(_Head(rec.seq, rec.hash))
            return rec
        finally:
            os.close(fd)  # closing releases the lock

    def _tail(self, fd: int) -> tuple[int, str]:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        chunk = min(size, 64 * 1024)
        data = os.pread(fd, chunk, size - chunk)
        if not data.endswith(b"\n"):
            raise AuditError(
                f"audit log {self.path}: its last line is incomplete; run `sovereign-tui audit verify`"
            )
        last = data[:-1].rsplit(b"\n", 1)[-1]
        try:
            rec = msgspec.json.decode(last, type=AuditRecord)
        except msgspec.DecodeError:
            raise AuditError(
                f"audit log {self.path}: its last line is damaged; run `sovereign-tui audit verify`"
            ) from None
        if record_hash(rec) != rec.hash:
            raise AuditError(
                f"audit log {self.path}: its last record was altered; run `sovereign-tui audit verify`"
            )
        return rec.seq, rec.hash

    def _write_head(self, head: _Head) -> None:
        target = head_path(self.path)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(head))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@dataclass
class VerifyReport:
    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.ok:
            extra = f" ({'; '.join(self.notes)})" if self.notes else ""
            return f"audit log intact: {self.records} records, chain and head pointer check out{extra}"
        return f"audit log FAILED verification: {self.problems[0]}"


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the whole chain and the head pointer; the first problem found is named with its line."""
    log = Path(path)
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return VerifyReport(False, 0, [f"{log}: no such file"])
    except OSError as exc:
        return VerifyReport(False, 0, [f"{log}: cannot be read ({exc.strerror})"])
    report = VerifyReport(True, 0)
    prev, seq = GENESIS, 0
    hashes: dict[int, str] = {}
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        report.problems.append(f"line {len(lines)}: incomplete (no newline): the tail was cut or damaged")
    for lineno, raw in enumerate(lines, 1):
        try:
            rec = msgspec.json.decode(raw, type=AuditRecord)
        except msgspec.DecodeError as exc:
            report.problems.append(f"line {lineno}: not a valid record ({exc})")
            break
        if rec.hash != record_hash(rec):
            report.problems.append(f"line {lineno} (seq {rec.seq}): content does not match its hash (edited)")
            break
        if rec.prev != prev:
            report.problems.append(
                f"line {lineno} (seq {rec.seq}): does not follow the record before it "
                "(a record was inserted, deleted or reordered)"
            )
            break
        if rec.seq != seq + 1:
            report.problems.append(f"line {lineno}: seq {rec.seq} where {seq + 1} was expected")
            break
        prev, seq = rec.hash, rec.seq
        hashes[seq] = rec.hash
    report.records = seq
    if not report.problems:
        _check_head(log, seq, hashes, report)
    report.ok = not report.problems
    return report


def _check_head(log: Path, seq: int, hashes: dict[int, str], report: VerifyReport) -> None:
    try:
        head = msgspec.json.decode(head_path(log).read_bytes(), type=_Head)
    except FileNotFoundError:
        if seq:
            report.problems.append(f"{head_path(log)}: missing, so a cut tail cannot be ruled out")
        return
    except (OSError, msgspec.DecodeError):
        report.problems.append(f"{head_path(log)}: damaged")
        return
    if head.seq > seq:
        report.problems.append(
            f"the head pointer names record {head.seq} but the log ends at {seq}: "
            "records were cut from the tail"
        )
    elif hashes.get(head.seq) != head.hash and head.seq > 0:
        report.problems.append(f"the head pointer's hash does not match record {head.seq}")
    elif head.seq == seq - 1:
        report.notes.append("head pointer one record behind: an append was interrupted before it moved")
    elif head.seq < seq:
        report.problems.append(
            f"the head pointer names record {head.seq} but the log has {seq}: records were appended "
            "without it moving"
        )
