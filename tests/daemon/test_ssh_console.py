"""The SSH console with a real OpenSSH client.

Most tests share one real daemon (``sovereign-tui serve`` in its own process, polling this
machine), reached with ``ssh`` run directly (refusals: exit status and message) or inside tmux
(a real terminal: the real TUI is drawn, keys move between screens, a resize reaches it). The
limits that need time to pass (cool-down, idle timeout) run against an in-process daemon on a
FakeClock. Every outcome is also checked in the audit log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tui_data import fill

from sovereign_tui.audit_sink import MemoryAuditSink
from sovereign_tui.cli import main as cli_main
from sovereign_tui.clock import FakeClock
from sovereign_tui.daemon.serve import Daemon
from sovereign_tui.daemon.settings import ServePaths, ServeSettings
from sovereign_tui.ops.audit import verify
from sovereign_tui.store import Store

from .feedkit import short_dir
from .sshkit import (
    Target,
    Tmux,
    fingerprint,
    fresh_source,
    keygen,
    read_audit,
    require_clients,
    sign,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(rb"ready: feed (\S+), ssh port (\d+)")


@dataclass
class Keys:
    alice: Path
    vera: Path
    eve: Path
    bob: Path
    ca: Path
    rogue_ca: Path
    certs: dict[str, Path]
    authorized: Path


def make_keys(root: Path) -> Keys:
    k = root / "keys"
    k.mkdir()
    for name in ("alice", "vera", "eve", "bob", "ca", "rogue_ca"):
        keygen(k / name, f"{name}@laptop")
    certs = {}
    for name in ("c_operator", "c_plain", "c_noprinc", "c_otheruser", "c_expired", "c_rogue"):
        keygen(k / name)
    certs["c_operator"] = sign(
        k / "ca", k / "c_operator", key_id="carol", principals=["ops", "sovereign-role=operator"]
    )
    certs["c_plain"] = sign(k / "ca", k / "c_plain", key_id="dan", principals=["ops"])
    certs["c_noprinc"] = sign(k / "ca", k / "c_noprinc", key_id="nobody", principals=[])
    certs["c_otheruser"] = sign(k / "ca", k / "c_otheruser", key_id="zed", principals=["zed"])
    certs["c_expired"] = sign(
        k / "ca", k / "c_expired", key_id="old", principals=["ops"], validity="20200101:20200102"
    )
    certs["c_rogue"] = sign(
        k / "rogue_ca", k / "c_rogue", key_id="mallory", principals=["ops", "sovereign-role=admin"]
    )
    authorized = root / "conf" / "sovereign-tui" / "authorized_keys"
    for name, role, extra in (
        ("alice", "operator", []),
        ("vera", "viewer", []),
        ("corp-ca", "admin", ["--ca"]),
    ):
        pub = k / ("ca.pub" if name == "corp-ca" else f"{name}.pub")
        args = [
            "keys",
            "add",
            str(pub),
            "--name",
            name,
            "--role",
            role,
            *extra,
            "--authorized-keys",
            str(authorized),
        ]
        assert cli_main(args) == 0
    return Keys(k / "alice", k / "vera", k / "eve", k / "bob", k / "ca", k / "rogue_ca", certs, authorized)


@dataclass
class Served:
    target: Target
    keys: Keys
    socket: Path
    root: Path
    process: subprocess.Popen[bytes]


def start_daemon(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, int, Path]:
    config = root / "sovereign.toml"
    config.write_text("[sources.nvml]\nenabled = false\n")
    log = root / "serve.log"
    env = {**os.environ, "XDG_STATE_HOME": str(root / "state"), "XDG_CONFIG_HOME": str(root / "conf"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sovereign_tui", "--config", str(config), "serve",
             "--ssh-listen", "127.0.0.1", "--ssh-port", "0",
             "--socket", str(root / "run" / "feed.sock"), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while (found := READY.search(log.read_bytes())) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the daemon did not start:\n{log.read_text()}")
        time.sleep(0.05)  # polling the daemon's log for its ready line, with a deadline
    host_pub = root / "state" / "sovereign-tui" / "ssh_host_ed25519_key.pub"
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{int(found.group(2))} {host_pub.read_text()}")
    return proc, Path(found.group(1).decode()), int(found.group(2)), known_hosts


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    require_clients()
    with short_dir() as root:
        keys = make_keys(root)
        proc, sock, port, known_hosts = start_daemon(root)
        audit_log = root / "state" / "sovereign-tui" / "audit.log"
        try:
            yield Served(Target(port, known_hosts, lambda: read_audit(audit_log)), keys, sock, root, proc)
        finally:
            if proc.poll() is None:
                stop_daemon(proc)


@pytest.fixture
def tmux(served: Served) -> Iterator[Tmux]:
    term = Tmux(served.root / f"tmux-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield term
    finally:
        term.kill()


async def test_a_login_is_a_tui_that_moves_between_screens_and_follows_resizes(
    served: Served, tmux: Tmux
) -> None:
    t = served.target
    mark = len(t.audit())
    tmux.start(t.args(served.keys.alice), width=100, height=30)
    await tmux.shows("sources 1/1 up", "the overview with this machine's source up")
    login = await t.event("login", mark, operator="ssh:alice")
    assert login["role"] == "operator" and login["key"] == fingerprint(served.keys.alice.with_suffix(".pub"))
    attach = await t.event("feed.attach", mark, operator="ssh:alice")  # the session's TUI proved who it is
    assert (attach["role"], attach["via"]) == ("operator", "ssh")
    from screens.registry import SCREENS

    tmux.send(next(e.key for e in SCREENS if e.mode == "sources"))
    await tmux.shows(f"host:{socket.gethostname()}", "the sources screen listing this machine")
    assert max(len(line) for line in tmux.screen().splitlines()) <= 100
    tmux.resize(132, 40)
    await tmux.shows(
        lambda s: max(len(line) for line in s.splitlines()) > 100, "the TUI drawn at the new width"
    )
    tmux.send("q")
    assert await tmux.exited() == 0
    end = await t.event("session.end", mark, operator="ssh:alice")
    assert (end["status"], end["reason"]) == (0, "the console exited")
    await t.event("logout", mark, operator="ssh:alice")


def _reason(event: dict[str, object]) -> str:
    return str(event.get("reason", ""))


async def test_an_unknown_key_is_refused(served: Served) -> None:
    t = served.target
    mark = len(t.audit())
    source = fresh_source()
    status, said = await t.ssh(served.keys.eve, "-tt", source=source)
    assert status == 255 and "Permission denied (publickey)" in said
    refused = await t.event("login.refused", mark, address=source)
    assert f"unknown key {fingerprint(served.keys.eve.with_suffix('.pub'))}" in _reason(refused)


async def test_a_removed_key_is_refused_from_the_next_login(served: Served) -> None:
    t, keys = served.target, served.keys
    args = ["--authorized-keys", str(keys.authorized)]
    assert (
        cli_main(
            ["keys", "add", str(keys.bob.with_suffix(".pub")), "--name", "bob", "--role", "viewer", *args]
        )
        == 0
    )
    mark = len(t.audit())
    status, said = await t.ssh(keys.bob, "-T")
    assert status == 1 and "needs a terminal" in said  # logged in: the daemon read the new line
    await t.event("login", mark, operator="ssh:bob", role="viewer")
    assert cli_main(["keys", "remove", "bob", *args]) == 0
    mark = len(t.audit())
    source = fresh_source()
    status, said = await t.ssh(keys.bob, "-T", source=source)
    assert status == 255 and "Permission denied (publickey)" in said
    assert "unknown key" in _reason(await t.event("login.refused", mark, address=source))


CERT_REFUSALS = [
    pytest.param("c_rogue", "certificate from an untrusted CA {rogue}", id="another-ca"),
    pytest.param("c_noprinc", "certificate names no principals", id="no-principals"),
    pytest.param("c_otheruser", "certificate not valid for user 'ops'", id="another-user"),
    pytest.param("c_expired", "certificate expired, not yet valid", id="expired"),
]


@pytest.mark.parametrize(("cert", "reason"), CERT_REFUSALS)
async def test_certificates_that_must_not_pass(served: Served, cert: str, reason: str) -> None:
    t, keys = served.target, served.keys
    mark = len(t.audit())
    source = fresh_source()
    status, said = await t.ssh(keys.certs[cert].parent / cert, "-tt", source=source)
    assert status == 255 and "Permission denied (publickey)" in said
    expected = reason.format(rogue=fingerprint(keys.rogue_ca.with_suffix(".pub")))
    assert expected in _reason(await t.event("login.refused", mark, address=source))


@pytest.mark.parametrize(
    ("cert", "role"),
    [pytest.param("c_operator", "operator", id="role-principal"), pytest.param("c_plain", "viewer")],
)
async def test_a_certificate_from_the_ca_logs_in_as_the_user_with_its_role(
    served: Served, cert: str, role: str
) -> None:
    t = served.target
    mark = len(t.audit())
    status, _ = await t.ssh(served.keys.certs[cert].parent / cert, "-T")
    assert status == 1  # authenticated; the session then refused for want of a terminal
    login = await t.event("login", mark, operator="ssh:ops")
    assert (login["role"], login["ca"]) == (role, "corp-ca")


SESSION, FORWARD = "session.refused", "forward.refused"
REQUEST_REFUSALS = [
    pytest.param(["-tt"], ("ls", "-l"), 1, "this console runs no commands", SESSION, "exec request: ls -l",
                 id="exec"),
    pytest.param(["-s"], ("backup",), 1, "offers no subsystems", SESSION, "subsystem request: backup",
                 id="subsystem"),
    pytest.param(["-W", "127.0.0.1:22"], (), 255, "administratively prohibited: port forwarding is disabled",
                 FORWARD, "port forwarding to 127.0.0.1:22", id="stdio-forward"),
    pytest.param(["-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"], (), 255,
                 "remote port forwarding failed", FORWARD, "remote port forwarding from",
                 id="remote-forward"),
    pytest.param(["-T"], (), 1, "the console needs a terminal", SESSION, "no terminal requested",
                 id="no-pty"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "command", "status", "message", "event", "reason"), REQUEST_REFUSALS)
async def test_everything_but_a_console_session_is_refused(
    served: Served,
    options: list[str],
    command: tuple[str, ...],
    status: int,
    message: str,
    event: str,
    reason: str,
) -> None:
    t = served.target
    mark = len(t.audit())
    got, said = await t.ssh(served.keys.alice, *options, command=command)
    assert got == status and message in said, said
    refused = await t.event(event, mark, operator="ssh:alice")
    assert reason in _reason(refused)


async def test_sftp_is_refused(served: Served) -> None:
    status, said = await served.target.ssh(served.keys.alice, "-s", command=("sftp",))
    assert status != 0 and "subsystem request failed" in said


async def test_a_local_forward_is_refused_when_used(served: Served) -> None:
    import asyncio

    t = served.target
    mark = len(t.audit())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *t.args(served.keys.alice, "-N", "-L", f"{local_port}:127.0.0.1:{t.port}"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await t.event("login", mark, operator="ssh:alice")
        opened = False

        async def try_forward() -> bool:
            nonlocal opened
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            except OSError:
                return False  # the client is not listening yet
            opened = True
            await reader.read()  # the client closes it once the daemon refuses the channel
            writer.close()
            return True

        while not await try_forward():
            await asyncio.sleep(0.05)
        assert opened
        refused = await t.event("forward.refused", mark, operator="ssh:alice")
        assert _reason(refused) == f"port forwarding to 127.0.0.1:{t.port}"
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert b"administratively prohibited" in err


async def test_sigterm_closes_sessions_and_removes_the_socket(tmp_path: Path) -> None:
    require_clients()
    with short_dir() as root:
        keys = make_keys(root)
        proc, sock, port, known_hosts = start_daemon(root)
        audit_log = root / "state" / "sovereign-tui" / "audit.log"
        target = Target(port, known_hosts, lambda: read_audit(audit_log))
        term = Tmux(root / "tmux")
        try:
            term.start(target.args(keys.vera))
            await term.shows("sources 1/1 up")
            assert sock.exists()
            assert stop_daemon(proc) == 0
            shown = await term.shows("session closed: the console is shutting down")
            assert await term.exited() != 0
            assert term.modes() == {"alternate_on": "0", "mouse_any_flag": "0", "mouse_sgr_flag": "0"}, shown
            assert not sock.exists()
            ended = [e for e in target.audit() if e["event"] == "session.end"]
            shutdown = ("ssh:vera", "the console is shutting down")
            assert [(e["operator"], e["reason"]) for e in ended] == [shutdown]
            assert verify(audit_log).ok, verify(audit_log).summary
            host_key = root / "state" / "sovereign-tui" / "ssh_host_ed25519_key"
            assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
            first_key = host_key.read_bytes()
            proc, _, port, known_hosts = start_daemon(root)  # a restart keeps the host key
            assert host_key.read_bytes() == first_key
            status, said = await Target(port, known_hosts, target.audit).ssh(keys.vera, "-T")
            assert status == 1 and "needs a terminal" in said  # logged in: the host key checked out
            assert stop_daemon(proc) == 0
        finally:
            term.kill()
            if proc.poll() is None:
                proc.kill()


# --- limits, on an in-process daemon with a FakeClock ------------------------------------------


@dataclass
class Local:
    daemon: Daemon
    clock: FakeClock
    audit: MemoryAuditSink
    target: Target
    keys: Keys
    root: Path


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    require_clients()
    with short_dir() as root:
        keys = make_keys(root)
        clock = FakeClock()
        store = Store(clock)
        fill(store, clock)
        audit = MemoryAuditSink(clock)
        settings = ServeSettings(
            ssh_listen="127.0.0.1", ssh_port=0, failed_login_limit=2, failed_login_cooldown_s=600,
            max_sessions=1, idle_timeout_s=900, login_timeout_s=3.0,
        )  # fmt: skip
        paths = ServePaths(socket=root / "run" / "feed.sock", host_key=root / "hostkey",
                           authorized_keys=keys.authorized)  # fmt: skip
        daemon = Daemon(store, settings, paths=paths, clock=clock, audit=audit)
        await daemon.start()
        assert daemon.ssh_port is not None
        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{daemon.ssh_port} {(root / 'hostkey.pub').read_text()}")
        try:
            yield Local(
                daemon, clock, audit, Target(daemon.ssh_port, known_hosts, lambda: audit.events), keys, root
            )
        finally:
            await daemon.stop()


async def test_an_address_that_keeps_failing_cools_down(local: Local) -> None:
    t, keys = local.target, local.keys
    for _ in range(2):
        status, _ = await t.ssh(keys.eve, "-T")
        assert status == 255
    await wait_until(lambda: len(local.audit.of("login.refused")) == 2, "two failed logins recorded")
    status, said = await t.ssh(keys.alice, "-T")  # the right key, from the same address
    assert status == 255 and "too many failed logins from 127.0.0.1" in said
    assert _reason(await t.event("login.refused", 2)) == "cooling down after too many failed logins"
    await local.clock.advance(601)
    status, said = await t.ssh(keys.alice, "-T")
    assert status == 1 and "needs a terminal" in said


async def test_sessions_are_capped_and_idle_ones_closed(local: Local) -> None:
    t, keys = local.target, local.keys
    first = Tmux(local.root / "tmux")
    try:
        first.start(t.args(keys.alice))
        await first.shows("sources 5/5 up", "the first session's TUI")
        status, said = await t.ssh(keys.vera, "-tt")
        assert status == 1 and "all 1 console sessions are in use" in said
        await t.event("session.refused", 0, operator="vera", reason="session limit (1) reached")
        await local.clock.advance(901)
        await first.shows("session closed: no keystroke for 15 min")
        assert await first.exited() == 1
        await t.event("session.end", 0, operator="alice", reason="no keystroke for 15 min")
        assert not local.daemon.console or not local.daemon.console.sessions
    finally:
        first.kill()


async def test_a_connection_that_never_logs_in_is_closed(local: Local) -> None:
    """The login timeout (here 3 s of real time: asyncssh keeps it) closes a silent client."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", local.target.port)
    banner = await asyncio.wait_for(reader.readline(), 30)
    assert banner.startswith(b"SSH-2.0-")
    writer.write(b"SSH-2.0-silent\r\n")  # then nothing: no key exchange, no login
    await asyncio.wait_for(reader.read(), 30)  # returns once the daemon hangs up
    assert reader.at_eof()
    writer.close()
    assert not local.audit.of("login")


def test_the_systemd_unit_runs_a_command_the_cli_accepts() -> None:
    from sovereign_tui.cli import build_parser

    unit = (ROOT / "appliance" / "systemd" / "sovereign-tui.service").read_text()
    lines = iter(unit.split("ExecStart=", 1)[1].splitlines())
    command = [next(lines)]
    while command[-1].endswith("\\"):  # systemd's continuation lines
        command.append(next(lines))
    argv = " ".join(line.rstrip("\\") for line in command).split()
    assert argv[0] == "/usr/bin/sovereign-tui"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.socket == "/run/sovereign-tui/feed.sock"
    assert "KillMode=mixed" in unit and "User=sovereign" in unit
