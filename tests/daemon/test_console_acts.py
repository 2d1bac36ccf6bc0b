"""Acting from the SSH console, end to end: a real ``sovereign-tui serve`` process polling the
embedded lab (on the real clock, its HTTP APIs on loopback), the real OpenSSH client in tmux, and
the keys an operator presses. An operator drains a lab host (a live migration of its one server,
seconds of real time); the operation runs in the daemon, attributed to ``ssh:<name>`` with the
key's role in the journal and the audit log. A viewer's Hosts screen offers no drain at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from screens.registry import SCREENS
from sovereign_tui.cli import main as cli_main
from sovereign_tui.lab.server import Lab
from sovereign_tui.ops.audit import AuditRecord
from sovereign_tui.ops.journal import Journal, OperationRecord

from .feedkit import GUARD_S, short_dir
from .sshkit import Target, Tmux, keygen, read_audit, require_clients, wait_until

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(rb"ready: feed (\S+), ssh port (\d+)")
KEY = {e.mode: e.key for e in SCREENS}
HOSTS, SEED, SERVERS = 6, 3, 6
"""A small lab: one server on most compute hosts."""
WIDTH, HEIGHT = 160, 48


@dataclass
class Console:
    lab: Lab
    target: Target
    keys: dict[str, Path]
    state: Path
    config: Path
    root: Path

    def operations(self) -> list[OperationRecord]:
        """The daemon's journal, newest first."""
        journal = Journal(self.state / "operations.db")
        try:
            return journal.recent()
        finally:
            journal.close()

    def audit(self) -> list[AuditRecord]:
        """The audit log's records as written (the engine's `detail` is plain text)."""
        lines = (self.state / "audit.log").read_text().splitlines()
        return [msgspec.json.decode(line, type=AuditRecord) for line in lines if line.endswith("}")]


def small_host(lab: Lab) -> str:
    """A compute host whose drain is one live migration of a small server with no GPU."""
    for host in lab.scenario.hosts:
        on = [s for s in lab.scenario.servers.values() if s.host == host.name]
        if host.role == "compute" and len(on) == 1 and on[0].vm_state == "active" and not on[0].gpus:
            return host.name
    raise AssertionError("the lab's scenario has no compute host with one small server")


def write_config(lab: Lab, root: Path) -> Path:
    """The lab's own sovereign.toml (`--write-config`), with the operations it may act on."""
    config = lab.write_config(root / "lab").settings
    ops = '[ops]\nlayers = ["nova", "ironic"]\npoll_interval_s = 0.5\n'
    config.write_text(config.read_text() + "\n" + ops)
    return config


def add_keys(root: Path) -> dict[str, Path]:
    authorized = root / "conf" / "sovereign-tui" / "authorized_keys"
    keys = {}
    for name, role in (("alice", "operator"), ("vera", "viewer")):
        keys[name] = root / "keys" / name
        keys[name].parent.mkdir(exist_ok=True)
        pub = keygen(keys[name], f"{name}@laptop")
        args = ["keys", "add", str(pub), "--name", name, "--role", role, "--authorized-keys", str(authorized)]
        assert cli_main(args) == 0
    return keys


async def start_serve(root: Path, config: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`sovereign-tui serve` in its own process; waits (without blocking the loop the lab runs
    on) for its ready line."""
    log = root / "serve.log"
    env = {**os.environ, "XDG_STATE_HOME": str(root / "state"), "XDG_CONFIG_HOME": str(root / "conf"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sovereign_tui", "--config", str(config), "serve",
            "--ssh-listen", "127.0.0.1", "--ssh-port", "0", "--socket", str(root / "run" / "feed.sock"),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    found: list[re.Match[bytes]] = []

    def ready() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"the daemon exited:\n{log.read_text()}")
        found[:] = [m for m in [READY.search(log.read_bytes())] if m is not None]
        return bool(found)

    try:
        await wait_until(ready, "the daemon's ready line", guard_s=60)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc, int(found[0].group(2))


async def stop_serve(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), GUARD_S)
    except TimeoutError:
        proc.kill()
        raise


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    require_clients()
    with short_dir() as root:
        lab = Lab(hosts=HOSTS, seed=SEED, servers=SERVERS)
        await lab.start()
        try:
            keys = add_keys(root)
            config = write_config(lab, root)
            proc, port = await start_serve(root, config)
            try:
                state = root / "state" / "sovereign-tui"
                known_hosts = root / "known_hosts"
                known_hosts.write_text(
                    f"[127.0.0.1]:{port} {(state / 'ssh_host_ed25519_key.pub').read_text()}"
                )
                target = Target(port, known_hosts, lambda: read_audit(state / "audit.log"))
                yield Console(lab, target, keys, state, config, root)
            finally:
                if proc.returncode is None:
                    assert await stop_serve(proc) == 0
        finally:
            await lab.stop()


@contextlib.contextmanager
def terminal(root: Path, name: str) -> Iterator[Tmux]:
    term = Tmux(root / f"tmux-{name}")
    try:
        yield term
    finally:
        term.kill()


def all_sources_up(screen: str) -> bool:
    found = re.search(r"sources (\d+)/(\d+) up", screen)
    return found is not None and found.group(1) == found.group(2)


def footer(screen: str) -> str:
    return [line for line in screen.splitlines() if line.strip()][-1]


def table_focused(lab: Lab) -> Callable[[str], bool]:
    """The Hosts table has the focus: the line under it details the host under the cursor."""
    hosts = tuple(f"{h.name} · " for h in lab.scenario.hosts)
    return lambda screen: any(line.lstrip().startswith(hosts) for line in screen.splitlines())


def filtering(screen: str) -> bool:
    """The filter box has the focus: the footer offers only its own keys (keys typed before the
    box has it would reach the table's screen, and `d` there plans a drain)."""
    keys = footer(screen)
    return "esc Clear" in keys and "Screens" not in keys


async def test_an_operator_drains_a_host_from_the_ssh_console(console: Console) -> None:
    host = small_host(console.lab)
    (server,) = [s for s in console.lab.scenario.servers.values() if s.host == host]
    t = console.target
    with terminal(console.root, "alice") as term:
        term.start(t.args(console.keys["alice"]), width=WIDTH, height=HEIGHT)
        await term.shows(all_sources_up, "the overview with every source of the lab up")
        term.send(KEY["hosts"])
        shown = await term.shows(table_focused(console.lab), "the Hosts screen, its table taking the keys")
        assert host in shown and "Drain" in footer(shown), footer(shown)  # the operator's footer offers it
        term.send("/")
        await term.shows(filtering, "the filter box taking the keys")
        term.send(*host, "Enter")  # only that host's row, back to the table
        others = [h.name for h in console.lab.scenario.hosts if h.name != host]
        await term.shows(lambda s: host in s and not any(h in s for h in others), "the table filtered")
        term.send("d")
        shown = await term.shows(f"type {host} to run it", "the drain's plan, asking for the host's name")
        assert f"live-migrate    {server.name}" in shown and "DESTRUCTIVE" in shown
        assert not console.operations()  # planned in the daemon, nothing started
        term.send(*host, "Enter")
        shown = await term.shows(f"drain {host}: succeeded", "the drain to end well on the plan screen")
        assert "2/2 steps done" in shown
        term.send("Escape")
        await term.shows(lambda s: "Drain" in footer(s), "back on the Hosts screen")
        term.send("q")
        assert await term.exited() == 0

    assert console.lab.scenario.hosts_by_name[host].service.disabled  # type: ignore[union-attr]
    assert server.host != host  # live-migrated off by the daemon's engine
    (rec,) = console.operations()
    assert (rec.kind, rec.target, rec.state) == ("drain", host, "succeeded")
    assert (rec.operator, rec.role) == ("ssh:alice", "operator")
    ops = [
        (r.who, r.role, r.result) for r in console.audit() if r.operation == rec.id and r.action == "drain"
    ]
    assert ops == [("ssh:alice", "operator", "started"), ("ssh:alice", "operator", "succeeded")]
    audit_log = console.state / "audit.log"
    assert cli_main(["--config", str(console.config), "audit", "verify", str(audit_log)]) == 0


async def test_a_viewer_console_offers_no_drain(console: Console) -> None:
    t = console.target
    with terminal(console.root, "vera") as term:
        term.start(t.args(console.keys["vera"]), width=WIDTH, height=HEIGHT)
        await term.shows(all_sources_up, "the overview with every source of the lab up")
        term.send(KEY["hosts"])
        shown = await term.shows(table_focused(console.lab), "the Hosts screen, its table taking the keys")
        keys = footer(shown)
        assert "Filter" in keys and not {"Drain", "Undrain", "Mark"} & set(keys.split()), keys
        # `d` does nothing: the `/` after it reaches the Hosts screen's filter, not a plan screen
        term.send("d", "/")
        shown = await term.shows(filtering, "the filter box on the Hosts screen")
        assert "to run it" not in shown and "Drain" not in shown
        term.send("Escape")
        await term.shows(lambda s: not filtering(s), "the filter closed")
        term.send("q")
        assert await term.exited() == 0
    assert not console.operations()
    assert [(r.who, r.role) for r in console.audit() if r.action == "feed.attach"] == [("ssh:vera", "viewer")]
    assert not [r for r in console.audit() if r.result == "denied"]  # nor was the daemon asked
