"""A drain run by the real command line in its own process is SIGKILLed mid-way, with an action
in flight at the lab; the journal it leaves is consistent and says which step was under way; the
host stays leased; a resume finishes the drain, skipping what was done, and the lab received every
action exactly once."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovereign_tui.clock import SystemClock
from sovereign_tui.ops.audit import verify
from sovereign_tui.ops.journal import Journal
from tests.ops.conftest import OpsLab, busiest_host, cli_env, start_fast_lab, stop_ops_lab, write_settings


@pytest.fixture
async def fast_lab(tmp_path: Path) -> AsyncIterator[OpsLab]:
    ol = await start_fast_lab(tmp_path, SystemClock())
    yield ol
    await stop_ops_lab(ol)


async def _cli(config: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sovereign_tui",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _actions(counts: Counter[str]) -> Counter[str]:
    return Counter({k: n for k, n in counts.items() if n})


@pytest.mark.parametrize(
    "kill_at",
    [
        r"nova\.live-migrate .*: (live migration|memory)",  # a Nova live migration is copying
        r"kubevirt\.evacuate .*: (eviction answered 429|kubevirt migration)",  # KubeVirt is migrating
    ],
)
async def test_a_killed_drain_resumes_to_completion_with_no_action_twice(
    fast_lab: OpsLab, tmp_path: Path, kill_at: str
) -> None:
    ol = fast_lab
    host = busiest_host(ol)
    config = write_settings(ol, tmp_path / "sovereign.toml")
    env = cli_env(tmp_path)

    proc = await _cli(config, env, "drain", host, "--yes")
    assert proc.stderr is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 120)).decode()
        assert line, "the drain ended before reaching the kill point:\n" + "".join(seen)
        seen.append(line)
        if re.search(kill_at, line):
            proc.send_signal(signal.SIGKILL)
            break
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before_resume = Counter(ol.counts)

    journal = Journal(ol.state_dir / "operations.db")
    try:
        assert journal.check() == []
        (rec,) = journal.interrupted()
        assert rec.kind == "drain" and rec.target == host
        reached = rec.step_reached
        assert reached is not None and reached.state == "started"
        assert re.search(kill_at.split(" ", 1)[0], reached.kind)
        assert rec.steps[0].state == "done" and rec.steps[0].kind == "nova.disable-service"
        assert [lease.op_id for lease in journal.leases(host)] == [rec.id]
    finally:
        journal.close()

    # the host stays held: a second drain is refused, naming who holds it
    code, _, err = await _finish(await _cli(config, env, "drain", host, "--yes"))
    assert code == 3 and f"{host} is held by" in err and rec.id in err
    code, out, _ = await _finish(await _cli(config, env, "operations"))
    assert code == 0 and "interrupted" in out and rec.id[:8] in out

    code, _, err = await _finish(await _cli(config, env, "operations", "resume", rec.id[:8], "--yes"))
    assert code == 0, err
    assert "done before" in err

    journal = Journal(ol.state_dir / "operations.db")
    try:
        done = journal.get(rec.id)
        assert done.state == "succeeded" and journal.check() == [] and journal.interrupted() == []
        attempts = {s.index: s.attempts for s in done.steps}
        assert attempts[reached.index] == 2  # the step under way ran again (it followed, not repeated)
        assert all(n == 1 for i, n in attempts.items() if rec.steps[i].state == "done")
        assert journal.leases(host) == []
    finally:
        journal.close()
    # every action landed once at the lab, whether it happened before or after the kill
    acted = _actions(ol.counts)
    assert acted and max(acted.values()) == 1, {k: n for k, n in acted.items() if n > 1}
    assert set(before_resume) <= set(acted)
    assert ol.stx.sim.hosts_by_name[host].administrative == "locked"
    assert not [s for s in ol.lab.scenario.servers.values() if s.host == host and s.vm_state == "active"]
    assert verify(ol.state_dir / "audit.log").ok
