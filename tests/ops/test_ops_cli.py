"""The operations verbs as an operator types them, in a real process against the lab: dry runs
(table and JSON) that change nothing, refusals (role, no confirmation, wrong name typed), one-line
errors, progress on stderr and the exit status, `operations`, and `audit verify`."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovereign_tui.clock import SystemClock
from sovereign_tui.ops.audit import verify
from tests.ops.conftest import (
    OpsLab,
    busiest_host,
    cli_env,
    live_movable,
    pick_host,
    servers_on,
    start_fast_lab,
    stop_ops_lab,
    write_settings,
)

CliLab = tuple[OpsLab, Path, dict[str, str]]


async def run_cli(
    config: Path, env: dict[str, str], *args: str, stdin: int | None = None, typed: str | None = None
) -> tuple[int, str, str]:
    """The command in its own process (the lab keeps serving on this loop meanwhile)."""
    master = None
    if typed is not None:  # a terminal to type the confirmation on
        master, slave = pty.openpty()
        stdin = slave
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sovereign_tui",
        "--config",
        str(config),
        *args,
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    if master is not None:
        os.close(slave)
        os.write(master, (typed or "").encode() + b"\n")
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    if master is not None:
        os.close(master)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli_lab(ops_lab: OpsLab, tmp_path: Path) -> tuple[OpsLab, Path, dict[str, str]]:
    """The lab on its fake clock: enough for everything that plans but does not run."""
    return ops_lab, write_settings(ops_lab, tmp_path / "sovereign.toml"), cli_env(tmp_path)


@pytest.fixture
async def running_lab(tmp_path: Path) -> AsyncIterator[tuple[OpsLab, Path, dict[str, str]]]:
    ol = await start_fast_lab(tmp_path, SystemClock())
    yield ol, write_settings(ol, tmp_path / "sovereign.toml"), cli_env(tmp_path)
    await stop_ops_lab(ol)


async def test_a_dry_run_prints_the_plan_and_changes_nothing(cli_lab: CliLab) -> None:
    ol, config, env = cli_lab
    host = busiest_host(ol)
    code, out, err = await run_cli(config, env, "drain", host, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["kind"] == "drain" and plan["target"] == host and plan["confirm_phrase"] == host
    assert (
        plan["steps"][0]["kind"] == "nova.disable-service" and plan["steps"][-1]["kind"] == "starlingx.lock"
    )
    code, out, err = await run_cli(config, env, "drain", host, "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert (
        lines[0].startswith(f"drain {host}: {len(plan['steps'])} steps") and plan["digest"][:12] in lines[0]
    )
    assert lines[1].split()[:4] == ["#", "LAYER", "STEP", "TARGET"]
    assert sum(1 for line in lines if line[:1].isdigit()) == len(plan["steps"])
    assert sum(ol.counts.values()) == 0
    assert not (ol.state_dir / "audit.log").exists()


async def test_refusals_change_nothing_and_say_why(cli_lab: CliLab, tmp_path: Path) -> None:
    ol, config, env = cli_lab
    host = busiest_host(ol)
    # no terminal and no --yes
    code, _, err = await run_cli(config, env, "drain", host)
    assert code == 3 and "confirmation needed" in err
    # the wrong name typed
    code, _, err = await run_cli(config, env, "drain", host, typed="some-other-host")
    assert code == 3 and f"Type the name {host}" in err and "not confirmed: nothing was done" in err
    # a viewer may not act, and the attempt is audited
    viewer = write_settings(ol, tmp_path / "viewer.toml", role="viewer")
    code, _, err = await run_cli(viewer, env, "drain", host, "--yes", "--operator", "carol")
    assert code == 3 and "refused: carol (role viewer) may not drain" in err
    assert sum(ol.counts.values()) == 0
    lines = (ol.state_dir / "audit.log").read_text().splitlines()
    assert len(lines) == 1 and '"who":"carol"' in lines[0] and '"result":"denied"' in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drain", "no-such-host"], "drain: host 'no-such-host' is not known to any configured layer"),
        (["migrate", "nowhere/nothing"], "migrate: no server, KubeVirt VM or pod named 'nowhere/nothing'"),
        (["provision", "vm", "x", "--image", "i"], "provision: provision vm needs --flavor and --image"),
        (["operations", "resume"], "operations resume: give the operation's id"),
    ],
)
async def test_what_cannot_be_done_is_one_line_exit_2(cli_lab: CliLab, args: list[str], message: str) -> None:
    _, config, env = cli_lab
    code, _out, err = await run_cli(config, env, *args, "--dry-run" if args[0] != "operations" else "--json")
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


async def test_a_run_reports_progress_and_its_failure_in_the_exit_status(running_lab: CliLab) -> None:
    ol, config, env = running_lab
    host = pick_host(ol, lambda h: sum(live_movable(s) for s in servers_on(ol, h)))
    server = next(s for s in servers_on(ol, host) if live_movable(s))
    ol.lab.compute.fail_next_migration(server.id)
    code, out, err = await run_cli(config, env, "migrate", server.name, "--yes", "--json")
    assert code == 1
    assert f"[1/1] nova.live-migrate {server.name}: started" in err
    assert f"[1/1] nova.live-migrate {server.name}: failed: live migration failed" in err
    doc = json.loads(out.splitlines()[-1])
    assert doc["result"]["state"] == "failed" and doc["plan"]["target"] == server.name
    # typed confirmation on a terminal, then it runs
    code, _, err = await run_cli(config, env, "migrate", server.name, typed=server.name)
    assert code == 0, err
    assert server.host != host and ol.counts[f"nova.live-migrate:{server.id}"] == 2
    code, out, _ = await run_cli(config, env, "operations", "--json")
    ops = json.loads(out)
    assert [o["state"] for o in ops] == ["succeeded", "failed"] and all(o["operator"] for o in ops)
    code, out, _ = await run_cli(config, env, "audit", "verify")
    assert code == 0 and out.startswith("audit log intact")
    assert verify(ol.state_dir / "audit.log").records == 3 + 3  # start, step, end for each run


async def test_audit_verify_fails_on_a_tampered_log(cli_lab: CliLab, tmp_path: Path) -> None:
    ol, config, env = cli_lab
    viewer = write_settings(ol, tmp_path / "viewer.toml", role="viewer")
    for _ in range(2):  # two audited refusals make a log of two records
        await run_cli(viewer, env, "undrain", busiest_host(ol), "--yes")
    log = ol.state_dir / "audit.log"
    code, out, _ = await run_cli(config, env, "audit", "verify", str(log))
    assert code == 0 and "2 records" in out
    log.write_text(log.read_text().replace('"result":"denied"', '"result":"succeeded"', 1))
    code, out, _ = await run_cli(config, env, "audit", "verify", str(log))
    assert code == 1 and "FAILED" in out and "line 1" in out
