"""A real OpenSSH client for the console tests: keys and certificates made with ssh-keygen, the
client run directly (refusals) or inside tmux (a real terminal for the TUI), and waits on what
the terminal shows or the audit log records, each with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .feedkit import GUARD_S

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
TMUX = shutil.which("tmux")


def require_clients() -> None:
    missing = [
        name for name, path in (("ssh", SSH), ("ssh-keygen", SSH_KEYGEN), ("tmux", TMUX)) if path is None
    ]
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install openssh-client tmux)"
        if os.environ.get("SOVEREIGN_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)  # .ci/run installs them: missing there is a failure
        pytest.skip(reason)


def keygen(path: Path, comment: str = "") -> Path:
    """A new ed25519 key pair at `path` (and `path`.pub); returns the public key's path."""
    subprocess.run(
        [SSH_KEYGEN or "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_name(path.name + ".pub")


def sign(ca: Path, key: Path, *, key_id: str, principals: list[str], validity: str = "-5m:+1h") -> Path:
    """A user certificate for `key` signed by `ca` (OpenSSH's ssh-keygen); returns its path."""
    args = [SSH_KEYGEN or "ssh-keygen", "-q", "-s", str(ca), "-I", key_id, "-V", validity]
    if principals:
        args += ["-n", ",".join(principals)]
    subprocess.run([*args, str(key.with_name(key.name + ".pub"))], check=True)
    return key.with_name(key.name + "-cert.pub")


def fingerprint(pub: Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN or "ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


_sources = itertools.count(2)


def fresh_source() -> str:
    """A loopback address of its own, so failed logins of one test never cool down another's."""
    n = next(_sources)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@dataclass
class Target:
    port: int
    known_hosts: Path
    audit: Callable[[], list[dict[str, Any]]]

    def args(
        self,
        key: Path,
        *extra: str,
        user: str = "ops",
        source: str = "127.0.0.1",
        command: tuple[str, ...] = (),
    ) -> list[str]:
        return [
            SSH or "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", "-b", source, *extra, f"{user}@127.0.0.1", *command,
        ]  # fmt: skip

    async def ssh(
        self,
        key: Path,
        *extra: str,
        user: str = "ops",
        source: str = "127.0.0.1",
        command: tuple[str, ...] = (),
    ) -> tuple[int, str]:
        """Run the client to its end: (exit status, what it printed on stderr and stdout)."""
        proc = await asyncio.create_subprocess_exec(
            *self.args(key, *extra, user=user, source=source, command=command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), GUARD_S)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def event(self, kind: str, after: int, **match: Any) -> dict[str, Any]:
        """The first audit event of `kind` past index `after` whose fields match."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [
                e for e in self.audit()[after:]
                if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
            ]  # fmt: skip
            return bool(found)

        await wait_until(seen, f"audit event {kind} {match}")
        return found[0]


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The records of the hash-chained audit log, as the events the daemon gave it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        if line.endswith("}"):
            rec = json.loads(line)
            detail = json.loads(rec["detail"] or "{}")
            events.append({"event": rec["action"], "operator": rec["who"], "role": rec["role"],
                           "target": rec["target"], "result": rec["result"], **detail})  # fmt: skip
    return events


async def wait_until(condition: Callable[[], bool], what: str, guard_s: float = GUARD_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + guard_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Tmux:
    """One detached tmux server and session: a real terminal for the SSH client."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.status_file = socket.with_name(socket.name + ".status")

    def _run(self, *args: str) -> str:
        out = subprocess.run(
            [TMUX or "tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout

    def start(self, command: list[str], width: int = 100, height: int = 30) -> None:
        # The exit status goes to a file written by the shell that waited for the client: tmux
        # may notice a pane's process ending late (it waits for SIGCHLD, which the processes
        # that started it can hold blocked), the file is there as soon as the client is gone.
        self.status_file.unlink(missing_ok=True)
        line = " ".join(_quote(a) for a in command)
        status, tmp = _quote(str(self.status_file)), _quote(str(self.status_file) + ".tmp")
        script = f"{line}; echo $? > {tmp} && mv {tmp} {status}"
        self._run("new-session", "-d", "-x", str(width), "-y", str(height), script)
        self._run("set-option", "-t", "0", "remain-on-exit", "on")

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "0")

    def send(self, *keys: str) -> None:
        self._run("send-keys", "-t", "0", *keys)

    def resize(self, width: int, height: int) -> None:
        self._run("resize-window", "-t", "0", "-x", str(width), "-y", str(height))

    def exit_status(self) -> int | None:
        """The SSH client's exit status once it has ended, else None."""
        try:
            return int(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def modes(self) -> dict[str, str]:
        """Terminal modes the program in the pane left set (the alternate screen, mouse reporting;
        tmux hides the cursor of a dead pane itself, so that one cannot be told)."""
        names = ("alternate_on", "mouse_any_flag", "mouse_sgr_flag")
        values = self._run("display-message", "-p", "-t", "0", " ".join(f"#{{{n}}}" for n in names)).split()
        return dict(zip(names, values, strict=True))

    async def shows(self, text: str | Callable[[str], bool], what: str | None = None) -> str:
        """Wait until the terminal shows `text` (or the predicate holds); returns the screen."""
        test = (lambda s: text in s) if isinstance(text, str) else text
        shown = ""

        def ok() -> bool:
            nonlocal shown
            shown = self.screen()
            return test(shown)

        try:
            await wait_until(ok, what or repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the terminal shows:\n{shown}") from None
        return shown

    async def exited(self) -> int:
        status: int | None = None

        def done() -> bool:
            nonlocal status
            status = self.exit_status()
            return status is not None

        await wait_until(done, "the ssh client to exit")
        assert status is not None
        return status

    def kill(self) -> None:
        self._run("kill-server")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
