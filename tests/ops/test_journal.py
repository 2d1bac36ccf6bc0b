"""The journal and leases in SQLite (WAL), and the guards around starting an operation: roles,
typed confirmation, a host already held. An operation left running by a process that died (a
real one, here) is listed as interrupted with the step it reached; resume takes it over, abandon
releases its hosts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.actions import Targets
from sovereign_tui.ops.audit import verify
from sovereign_tui.ops.engine import Actor, ConfirmationRequired, Operations
from sovereign_tui.ops.journal import Journal, JournalError
from sovereign_tui.ops.leases import LeaseHeld
from sovereign_tui.ops.plan import Plan, Step, StepKind, encode_plan, new_plan
from sovereign_tui.ops.roles import ACTIONS, ROLES, PermissionDenied, allowed
from sovereign_tui.ops.settings import OpsSettings

ROOT = Path(__file__).resolve().parents[2]


def _plan(host: str = "gpu-01", kind: str = "drain") -> Plan:
    steps = [
        Step(index=0, kind=StepKind.NOVA_DISABLE, target="svc-1", target_name=host, description="disable"),
        Step(index=0, kind=StepKind.KUBE_CORDON, target=host, target_name=host, description="cordon"),
        Step(index=0, kind=StepKind.STX_LOCK, target="ihost-1", target_name=host, description="lock"),
    ]
    return new_plan(kind, host, steps, now=1000.0, leases=[host])  # type: ignore[arg-type]


def test_the_journal_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    j = Journal(tmp_path / "ops.db")
    j.close()
    db = sqlite3.connect(tmp_path / "ops.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "ops.db").stat().st_mode & 0o777 == 0o600


def test_an_operation_is_recorded_with_its_plan_steps_and_leases(tmp_path: Path) -> None:
    j = Journal(tmp_path / "ops.db")
    plan = _plan()
    j.create(plan, operator="alice", role="operator", now=1000.0)
    rec = j.get(plan.id[:8])  # a unique prefix will do
    assert rec.plan == plan and rec.digest == plan.digest() and rec.state == "running"
    assert [s.state for s in rec.steps] == ["pending"] * 3
    assert [(lease.key, lease.holder) for lease in j.leases()] == [("gpu-01", "alice")]
    assert not rec.interrupted  # this process is alive
    assert j.check() == []


def test_steps_are_journaled_before_and_after_and_finishing_releases_the_host(tmp_path: Path) -> None:
    j = Journal(tmp_path / "ops.db")
    plan = _plan()
    j.create(plan, operator="alice", role="operator", now=1000.0)
    assert j.step_started(plan.id, 0, 1001.0) == 1
    j.step_note(plan.id, 0, {"migration_id": "7"})
    j.step_note(plan.id, 0, {"requested": True})
    assert j.get(plan.id).step_reached.index == 0  # type: ignore[union-attr]
    j.step_finished(plan.id, 0, "done", "disabled", 1002.0)
    first = j.get(plan.id).steps[0]
    assert (first.state, first.attempts, first.outcome) == ("done", 1, "disabled")
    assert first.data == {"migration_id": "7", "requested": True}
    assert j.get(plan.id).step_reached.index == 1  # type: ignore[union-attr]
    j.finish(plan.id, "failed", "stopped", 1003.0)
    rec = j.get(plan.id)
    assert rec.state == "failed" and [s.state for s in rec.steps] == ["done", "skipped", "skipped"]
    assert j.leases() == [] and j.check() == []


def test_a_held_host_refuses_a_second_operation_naming_holder_and_since(tmp_path: Path) -> None:
    j = Journal(tmp_path / "ops.db")
    first = _plan()
    j.create(first, operator="alice", role="operator", now=1_800_000_000.0)
    second = _plan(kind="undrain")
    with pytest.raises(LeaseHeld) as err:
        j.create(second, operator="bob", role="admin", now=1_800_000_100.0)
    text = str(err.value)
    assert "gpu-01 is held by alice since" in text and first.id in text and "drain operation" in text
    with pytest.raises(JournalError):
        j.get(second.id)  # nothing of the refused one was recorded
    assert [lease.op_id for lease in j.leases("gpu-01")] == [first.id]


_DIE = """
import sys
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import decode_plan
j = Journal(sys.argv[1])
plan = decode_plan(open(sys.argv[2], 'rb').read())
j.create(plan, operator='alice', role='operator', now=1000.0)
j.step_started(plan.id, 0, 1001.0)
j.step_finished(plan.id, 0, 'done', 'ok', 1002.0)
j.step_started(plan.id, 1, 1003.0)
"""


def _died_mid_way(tmp_path: Path, plan: Plan) -> Path:
    """A real process records an operation, starts its second step, and exits without finishing."""
    db = tmp_path / "operations.db"
    (tmp_path / "plan.json").write_bytes(encode_plan(plan))
    subprocess.run([sys.executable, "-c", _DIE, str(db), str(tmp_path / "plan.json")], cwd=ROOT, check=True)
    return db


def test_an_operation_whose_process_died_is_interrupted_at_the_step_it_reached(tmp_path: Path) -> None:
    plan = _plan()
    j = Journal(_died_mid_way(tmp_path, plan))
    (rec,) = j.interrupted()
    assert rec.id == plan.id and rec.interrupted and rec.state == "running"
    assert rec.step_reached is not None and (rec.step_reached.index, rec.step_reached.state) == (1, "started")
    assert j.leases("gpu-01")[0].op_id == plan.id  # still held until resumed or abandoned
    assert j.check() == []
    adopted = j.adopt(plan.id, 2000.0)
    assert (
        not adopted.interrupted and adopted.steps[0].state == "done" and adopted.steps[1].state == "started"
    )
    with pytest.raises(JournalError, match="is running in process"):
        j.adopt(plan.id, 2001.0)  # ours now: not twice


async def test_abandon_needs_admin_releases_the_host_and_is_audited(tmp_path: Path) -> None:
    plan = _plan()
    _died_mid_way(tmp_path, plan)
    ops = Operations(OpsSettings(), Targets(), clock=FakeClock(), state_dir=tmp_path)
    try:
        with pytest.raises(PermissionDenied, match="needs the role admin"):
            ops.abandon(plan.id, Actor("bob", "operator"))
        rec = ops.abandon(plan.id[:8], Actor("root", "admin"))
        assert rec.state == "abandoned" and "abandoned by root at step 2" in (rec.message or "")
        assert ops.journal.leases() == [] and ops.interrupted() == [] and ops.journal.check() == []
        lines = ops.audit.path.read_text().splitlines()
        assert '"result":"denied"' in lines[0] and '"action":"abandon"' in lines[1]
        assert verify(ops.audit.path).ok
    finally:
        await ops.close()


async def test_starting_checks_role_confirmation_and_lease_and_audits_refusals(tmp_path: Path) -> None:
    ops = Operations(OpsSettings(), Targets(layers=()), clock=FakeClock(), state_dir=tmp_path)
    plan = _plan()
    try:
        with pytest.raises(PermissionDenied):
            await ops.start(plan, Actor("carol", "viewer"), confirmation="gpu-01")
        with pytest.raises(ConfirmationRequired, match="type the name 'gpu-01'"):
            await ops.start(plan, Actor("bob", "operator"), confirmation="gpu-02")
        with pytest.raises(PermissionDenied, match="may not force"):
            await ops.start(plan, Actor("bob", "operator"), confirmation="gpu-01", force=True)
        assert ops.journal.recent() == []  # none of these recorded an operation
        # another operation holds the host
        other = _plan(kind="undrain")
        ops.journal.create(other, operator="alice", role="operator", now=1000.0)
        with pytest.raises(LeaseHeld, match="held by alice"):
            await ops.start(plan, Actor("bob", "operator"), confirmation="gpu-01")
        results = [
            line.split('"result":"')[1].split('"')[0] for line in ops.audit.path.read_text().splitlines()
        ]
        assert results == ["denied", "denied", "refused"]
    finally:
        await ops.close()


def test_roles_are_one_table() -> None:
    assert not any(allowed("viewer", a) for a in ACTIONS)
    assert {a for a in ACTIONS if allowed("operator", a)} == {
        "drain",
        "undrain",
        "migrate",
        "provision",
        "provide",
        "undeploy",
        "resume",
        "cancel",
    }
    assert all(allowed("admin", a) for a in ACTIONS)
    assert not allowed("root", "drain") and not allowed("admin", "reboot-the-world")
    assert ROLES == ("viewer", "operator", "admin")
