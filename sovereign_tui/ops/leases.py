"""Leases: a host under an operation is held, in the journal's database, until the operation ends.

A lease is a row (key, operation, holder, since). It is taken in the same transaction that
records the operation, so two operators racing for one host cannot both win: the second is
refused with who holds it and since when. An interrupted operation keeps its leases until it is
resumed to its end or abandoned, so nobody acts on a host whose drain stopped half-way by
accident. Keys are host names, or ``workload:<kind>/<name>`` for what a provision creates.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    op_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_op ON leases(op_id);
"""


@dataclass(frozen=True)
class Lease:
    key: str
    op_id: str
    holder: str
    since: float


class LeaseHeld(Exception):
    """Another operation holds the key: the message names it, its holder and since when."""

    def __init__(self, lease: Lease, kind: str | None = None) -> None:
        self.lease = lease
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))
        what = f"{kind} operation" if kind else "operation"
        super().__init__(
            f"{lease.key} is held by {lease.holder} since {since} ({what} {lease.op_id}); "
            "wait for it to finish, or resume or abandon it (`sovereign-tui operations`)"
        )


def acquire(conn: sqlite3.Connection, keys: tuple[str, ...], op_id: str, holder: str, now: float) -> None:
    """Take every key for `op_id` or none (call inside the transaction that records the operation)."""
    for key in keys:
        row = conn.execute(
            "SELECT l.key, l.op_id, l.holder, l.since, o.kind FROM leases l "
            "LEFT JOIN operations o ON o.id = l.op_id WHERE l.key = ?",
            (key,),
        ).fetchone()
        if row is not None and row[1] != op_id:
            raise LeaseHeld(Lease(row[0], row[1], row[2], row[3]), row[4])
    conn.executemany(
        "INSERT OR REPLACE INTO leases (key, op_id, holder, since) VALUES (?, ?, ?, ?)",
        [(k, op_id, holder, now) for k in keys],
    )


def release(conn: sqlite3.Connection, op_id: str) -> None:
    conn.execute("DELETE FROM leases WHERE op_id = ?", (op_id,))


def held(conn: sqlite3.Connection, key: str | None = None) -> list[Lease]:
    """Every lease, or the one on `key`."""
    if key is None:
        rows = conn.execute("SELECT key, op_id, holder, since FROM leases ORDER BY since").fetchall()
    else:
        rows = conn.execute("SELECT key, op_id, holder, since FROM leases WHERE key = ?", (key,)).fetchall()
    return [Lease(*r) for r in rows]
