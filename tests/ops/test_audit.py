"""The audit log: an intact log verifies; any edit, insertion, deletion, reordering or cut tail is
found and named with its line; a damaged tail refuses further appends; appends from several
processes at once interleave whole records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.audit import AuditError, AuditLog, head_path, verify

ROOT = Path(__file__).resolve().parents[2]


def _log(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path, FakeClock())
    for i in range(n):
        log.append(
            who="alice",
            role="operator",
            action="drain",
            target=f"gpu-{i:02d}",
            result="started",
            plan_digest=f"{i:064x}",
            operation=f"op-{i}",
        )
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _log(path, 6)
    report = verify(path)
    assert report.ok and report.records == 6, report.problems
    assert "intact: 6 records" in report.summary
    first = json.loads(_lines(path)[0])
    assert {"who", "role", "action", "target", "plan_digest", "result", "prev", "hash"} <= set(first)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("edit", "line 3 (seq 3): content does not match its hash"),
        ("delete", "line 3 (seq 4): does not follow"),
        ("insert", "line 4 (seq 3): does not follow"),
        ("swap", "line 2 (seq 3): does not follow"),
        ("truncate", "records were cut from the tail"),
        ("garbage", "line 6: incomplete"),
    ],
)
def test_tampering_is_detected_and_located(tmp_path: Path, tamper: str, expected: str) -> None:
    path = tmp_path / "audit.log"
    _log(path, 5)
    lines = _lines(path)
    if tamper == "edit":
        rec = json.loads(lines[2])
        rec["who"] = "mallory"
        lines[2] = json.dumps(rec, separators=(",", ":")) + "\n"
    elif tamper == "delete":
        del lines[2]
    elif tamper == "insert":
        lines.insert(3, lines[2])
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "truncate":
        lines = lines[:3]
    elif tamper == "garbage":
        lines.append('{"seq": 6, "who": "mall')
    path.write_text("".join(lines))
    report = verify(path)
    assert not report.ok
    assert expected in report.problems[0], report.problems
    assert report.summary.startswith("audit log FAILED verification")


def test_an_edit_that_recomputes_the_hash_still_breaks_the_chain(tmp_path: Path) -> None:
    from sovereign_tui.ops.audit import AuditRecord, record_hash

    path = tmp_path / "audit.log"
    _log(path, 4)
    lines = _lines(path)
    import msgspec

    rec = msgspec.json.decode(lines[1].encode(), type=AuditRecord)
    forged = msgspec.structs.replace(rec, result="succeeded")
    forged = msgspec.structs.replace(forged, hash=record_hash(forged))
    lines[1] = msgspec.json.encode(forged).decode() + "\n"
    path.write_text("".join(lines))
    report = verify(path)
    assert not report.ok and "line 3 (seq 3): does not follow" in report.problems[0]


def test_a_missing_head_pointer_fails_and_one_behind_is_a_note(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _log(path, 3)
    head = head_path(path)
    saved = head.read_bytes()
    head.unlink()
    assert "missing" in verify(path).problems[0]
    # a crash between the two writes leaves the head one record behind: accepted, and said
    head.write_bytes(saved)
    assert verify(path).ok
    lines = _lines(path)
    rec = json.loads(lines[-2])
    head.write_text(json.dumps({"seq": rec["seq"], "hash": rec["hash"]}))
    report = verify(path)
    assert report.ok and report.notes and "one record behind" in report.notes[0]


def test_a_damaged_tail_refuses_further_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = _log(path, 2)
    with path.open("a") as f:
        f.write('{"seq": 3, "who"')
    with pytest.raises(AuditError, match="incomplete"):
        log.append(who="bob", role="admin", action="abandon", target="x", result="abandoned")
    assert len(_lines(path)) == 3


def test_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    code = (
        "import sys\n"
        "from sovereign_tui.ops.audit import AuditLog\n"
        "log = AuditLog(sys.argv[1])\n"
        "for i in range(40):\n"
        "    log.append(who=sys.argv[2], role='operator', action='drain', target=str(i), result='done')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), f"writer-{k}"], cwd=ROOT) for k in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    report = verify(path)
    assert report.ok and report.records == 120, report.problems
    writers = {json.loads(line)["who"] for line in _lines(path)}
    assert writers == {"writer-0", "writer-1", "writer-2"}


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _log(path, 1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert head_path(path).stat().st_mode & 0o777 == 0o600
