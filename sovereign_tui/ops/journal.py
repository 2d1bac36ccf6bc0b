"""The operations journal: SQLite in WAL mode, written before and after every step.

Each operation is a row (its plan as JSON, who runs it, its state, the process that runs it) and
each step a row (pending -> started -> done | failed | blocked | cancelled | skipped, the number
of attempts, what the adapter recorded while it ran, the outcome). A step is marked ``started``
and committed *before* its adapter acts, and ``done`` after; so after a crash or a kill the
journal says which step was under way, and a resume runs the stored plan from there, skipping
every step already done. The step that was under way is run again through its adapter, which
first looks at the object's state (and at what it recorded, e.g. a migration's name) and
finishes, follows or starts the action accordingly: nothing is done twice.

An operation whose state is ``running`` but whose process is gone (pid and start time no longer
match, checked with psutil) is *interrupted*: listed on start, resumable or abandonable, and still
holding its leases.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psutil

from sovereign_tui.ops import leases
from sovereign_tui.ops.plan import Plan, decode_plan, encode_plan

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    plan BLOB NOT NULL,
    digest TEXT NOT NULL,
    operator TEXT NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    message TEXT,
    pid INTEGER,
    pid_started REAL,
    machine TEXT
);
CREATE INDEX IF NOT EXISTS operations_state ON operations(state);
CREATE TABLE IF NOT EXISTS steps (
    op_id TEXT NOT NULL REFERENCES operations(id),
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    data TEXT NOT NULL DEFAULT '{}',
    outcome TEXT,
    PRIMARY KEY (op_id, idx)
);
"""
STEP_FINAL = frozenset({"done", "failed", "blocked", "cancelled", "skipped"})
OP_FINAL = frozenset({"succeeded", "failed", "cancelled", "abandoned"})


class StepRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One step as journaled (strict: the daemon's feed carries records as they are)."""

    index: int
    kind: str
    target: str
    state: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    data: dict[str, Any]
    outcome: str | None


class OperationRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operation as journaled; `interrupted`: its process is gone (judged where it was read)."""

    id: str
    kind: str
    target: str
    plan: Plan
    digest: str
    operator: str
    role: str
    state: str
    options: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None
    message: str | None
    pid: int | None
    steps: tuple[StepRecord, ...] = ()
    interrupted: bool = False

    @property
    def step_reached(self) -> StepRecord | None:
        """The step under way when it stopped (started, not finished), else the first not done."""
        started = [s for s in self.steps if s.state == "started"]
        if started:
            return started[0]
        return next((s for s in self.steps if s.state not in STEP_FINAL), None)

    @property
    def done_count(self) -> int:
        return sum(1 for s in self.steps if s.state == "done")


def _me() -> tuple[int, float]:
    pid = os.getpid()
    return pid, psutil.Process(pid).create_time()


def _alive(pid: int | None, started: float | None, machine: str | None) -> bool:
    if pid is None:
        return False
    if machine and machine != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        proc = psutil.Process(pid)
        return started is None or abs(proc.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class JournalError(Exception):
    pass


class Journal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA + leases.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"operations journal {self.path}: cannot be opened ({exc})") from None
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- writing ---------------------------------------------------------------------------------

    def create(
        self, plan: Plan, *, operator: str, role: str, now: float, options: dict[str, Any] | None = None
    ) -> None:
        """Record the operation, its steps (pending) and its leases in one transaction;
        `leases.LeaseHeld` when another operation holds one of the hosts."""
        pid, started = _me()
        with self._tx() as db:
            leases.acquire(db, plan.leases, plan.id, operator, now)
            db.execute(
                "INSERT INTO operations (id, kind, target, plan, digest, operator, role, state, options,"
                " created_at, updated_at, pid, pid_started, machine)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    plan.id,
                    plan.kind,
                    plan.target,
                    encode_plan(plan),
                    plan.digest(),
                    operator,
                    role,
                    msgspec.json.encode(options or {}).decode(),
                    now,
                    now,
                    pid,
                    started,
                    socket.gethostname(),
                ),
            )
            db.executemany(
                "INSERT INTO steps (op_id, idx, kind, target, state) VALUES (?, ?, ?, ?, 'pending')",
                [(plan.id, s.index, s.kind.value, s.target) for s in plan.steps],
            )

    def adopt(self, op_id: str, now: float) -> OperationRecord:
        """Take over an interrupted or failed operation in this process (for a resume)."""
        rec = self.get(op_id)
        if rec.state == "running" and not rec.interrupted:
            raise JournalError(f"operation {op_id} is running in process {rec.pid}; it cannot be resumed")
        if rec.state in ("succeeded", "abandoned", "cancelled"):
            raise JournalError(f"operation {op_id} is {rec.state}; there is nothing to resume")
        pid, started = _me()
        with self._tx() as db:
            if rec.state == "failed":  # its leases were released: take them again
                leases.acquire(db, rec.plan.leases, op_id, rec.operator, now)
            db.execute(
                "UPDATE operations SET state='running', pid=?, pid_started=?, machine=?, updated_at=?,"
                " finished_at=NULL, message=NULL WHERE id=?",
                (pid, started, socket.gethostname(), now, op_id),
            )
            db.execute(
                "UPDATE steps SET state='pending' WHERE op_id=?"
                " AND state IN ('failed', 'cancelled', 'skipped', 'blocked')",
                (op_id,),
            )
        return self.get(op_id)

    def step_started(self, op_id: str, index: int, now: float) -> int:
        """Mark a step started (committed before the adapter acts); returns its attempt number."""
        with self._tx() as db:
            db.execute(
                "UPDATE steps SET state='started', attempts=attempts+1, started_at=?, finished_at=NULL,"
                " outcome=NULL WHERE op_id=? AND idx=?",
                (now, op_id, index),
            )
            db.execute("UPDATE operations SET updated_at=? WHERE id=?", (now, op_id))
            row = db.execute("SELECT attempts FROM steps WHERE op_id=? AND idx=?", (op_id, index)).fetchone()
        return int(row[0])

    def step_note(self, op_id: str, index: int, data: dict[str, Any]) -> None:
        """Record what a running step learned that a resume needs (merged into its data)."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM steps WHERE op_id=? AND idx=?", (op_id, index)).fetchone()
            merged = {**msgspec.json.decode(row[0]), **data} if row else dict(data)
            db.execute(
                "UPDATE steps SET data=? WHERE op_id=? AND idx=?",
                (msgspec.json.encode(merged).decode(), op_id, index),
            )

    def step_finished(self, op_id: str, index: int, state: str, outcome: str | None, now: float) -> None:
        if state not in STEP_FINAL:
            raise ValueError(f"not a final step state: {state}")
        with self._tx() as db:
            db.execute(
                "UPDATE steps SET state=?, outcome=?, finished_at=? WHERE op_id=? AND idx=?",
                (state, outcome, now, op_id, index),
            )
            db.execute("UPDATE operations SET updated_at=? WHERE id=?", (now, op_id))

    def finish(self, op_id: str, state: str, message: str | None, now: float) -> None:
        """End the operation and release its leases."""
        if state not in OP_FINAL:
            raise ValueError(f"not a final operation state: {state}")
        with self._tx() as db:
            db.execute(
                "UPDATE operations SET state=?, message=?, finished_at=?, updated_at=? WHERE id=?",
                (state, message, now, now, op_id),
            )
            db.execute(
                "UPDATE steps SET state='skipped' WHERE op_id=? AND state IN ('pending', 'started')",
                (op_id,),
            )
            leases.release(db, op_id)

    def abandon(self, op_id: str, who: str, now: float) -> OperationRecord:
        rec = self.get(op_id)
        if rec.state in OP_FINAL:
            raise JournalError(f"operation {op_id} is already {rec.state}")
        if rec.state == "running" and not rec.interrupted:
            raise JournalError(f"operation {op_id} is running in process {rec.pid}; cancel it instead")
        reached = rec.step_reached
        where = f" at step {reached.index + 1}" if reached is not None else ""
        self.finish(op_id, "abandoned", f"abandoned by {who}{where}", now)
        return self.get(op_id)

    # --- reading ---------------------------------------------------------------------------------

    _OP_COLUMNS = (
        "id, kind, target, plan, digest, operator, role, state, options, created_at, updated_at,"
        " finished_at, message, pid, pid_started, machine"
    )

    def _record(self, row: tuple[Any, ...]) -> OperationRecord:
        steps = tuple(
            StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], msgspec.json.decode(r[7]), r[8])
            for r in self.db.execute(
                "SELECT idx, kind, target, state, attempts, started_at, finished_at, data, outcome"
                " FROM steps WHERE op_id=? ORDER BY idx",
                (row[0],),
            )
        )
        state, pid, pid_started, machine = row[7], row[13], row[14], row[15]
        return OperationRecord(
            id=row[0],
            kind=row[1],
            target=row[2],
            plan=decode_plan(row[3]),
            digest=row[4],
            operator=row[5],
            role=row[6],
            state=state,
            options=msgspec.json.decode(row[8]),
            created_at=row[9],
            updated_at=row[10],
            finished_at=row[11],
            message=row[12],
            pid=pid,
            steps=steps,
            interrupted=state == "running" and not _alive(pid, pid_started, machine),
        )

    def get(self, op_id: str) -> OperationRecord:
        row = self.db.execute(f"SELECT {self._OP_COLUMNS} FROM operations WHERE id=?", (op_id,)).fetchone()
        if row is None:
            # accept a unique prefix, as operators copy short ids
            rows = self.db.execute(
                f"SELECT {self._OP_COLUMNS} FROM operations WHERE id LIKE ?", (op_id + "%",)
            ).fetchall()
            if len(rows) != 1:
                raise JournalError(f"no operation {op_id!r} in the journal (see `sovereign-tui operations`)")
            row = rows[0]
        return self._record(row)

    def recent(self, limit: int = 50) -> list[OperationRecord]:
        rows = self.db.execute(
            f"SELECT {self._OP_COLUMNS} FROM operations ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._record(r) for r in rows]

    def interrupted(self) -> list[OperationRecord]:
        """Operations left running by a process that is gone."""
        rows = self.db.execute(
            f"SELECT {self._OP_COLUMNS} FROM operations WHERE state='running' ORDER BY created_at"
        ).fetchall()
        return [r for r in (self._record(row) for row in rows) if r.interrupted]

    def leases(self, key: str | None = None) -> list[leases.Lease]:
        return leases.held(self.db, key)

    def check(self) -> list[str]:
        """Consistency problems (empty when consistent): SQLite's own check, and journal rules."""
        problems = [r[0] for r in self.db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        for op_id, state in self.db.execute("SELECT id, state FROM operations"):
            started = self.db.execute(
                "SELECT COUNT(*) FROM steps WHERE op_id=? AND state='started'", (op_id,)
            ).fetchone()[0]
            if state in OP_FINAL and started:
                problems.append(f"operation {op_id} is {state} but has a step still started")
            held = self.db.execute("SELECT COUNT(*) FROM leases WHERE op_id=?", (op_id,)).fetchone()[0]
            if state in OP_FINAL and held:
                problems.append(f"operation {op_id} is {state} but still holds leases")
        return problems
