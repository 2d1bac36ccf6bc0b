"""A throwaway OpenSSH server (the real sshd) on loopback, for tests that need one.

It runs from a temporary directory with its own host key, one authorized client key, public-key
login only, and ``SetEnv PATH=<bin_dir>``: the programs a test puts in `bin_dir` (a fake
``nvidia-smi``, for example) are the only ones found on PATH, so a real one on the machine never
answers in their place. Missing sshd skips the test, or fails it when
``SOVEREIGN_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

SSHD = Path("/usr/sbin/sshd")
MISSING = "OpenSSH server not installed (apt-get install openssh-server)"
READY_WITHIN_S = 20.0


def require_sshd() -> None:
    if SSHD.exists():
        return
    if os.environ.get("SOVEREIGN_REQUIRE_SERVICES") == "1":
        pytest.fail(MISSING)
    pytest.skip(MISSING)


@dataclass
class Sshd:
    address: str
    port: int
    user: str
    host_key: asyncssh.SSHKey
    client_key: Path
    bin_dir: Path

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        public = (key or self.host_key).export_public_key("openssh").decode().strip()
        return f"[{self.address}]:{self.port} {public}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_key(key: asyncssh.SSHKey, path: Path) -> Path:
    path.touch(mode=0o600)
    key.write_private_key(str(path))
    return path


def _prepare(root: Path) -> tuple[asyncssh.SSHKey, Path, Path, str]:
    """Keys and directories under `root`: (host key, client key file, bin dir, user)."""
    root.mkdir(parents=True, exist_ok=True)
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    _write_key(host_key, root / "host_ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_key = _write_key(client, root / "id_ed25519")
    (root / "authorized_keys").write_text(client.export_public_key("openssh").decode())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    return host_key, client_key, bin_dir, getpass.getuser()


def _write_config(root: Path, port: int, bin_dir: Path, user: str) -> Path:
    config = root / "sshd_config"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'host_ed25519'}",
        "PidFile none",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        f"SetEnv PATH={bin_dir}",
    ]
    config.write_text("".join(f"{line}\n" for line in lines))
    return config


@contextlib.asynccontextmanager
async def run_sshd(root: Path) -> AsyncIterator[Sshd]:
    """Start sshd under `root`; stop it on exit."""
    require_sshd()
    host_key, client_key, bin_dir, user = _prepare(root)
    for _ in range(3):  # a free port can be taken between the probe and sshd's bind: retry
        port = _free_port()
        config = _write_config(root, port, bin_dir, user)
        proc = await asyncio.create_subprocess_exec(
            str(SSHD),
            "-D",
            "-e",
            "-f",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        log: list[str] = []
        try:
            async with asyncio.timeout(READY_WITHIN_S):
                while line := (await proc.stderr.readline()).decode(errors="replace"):
                    log.append(line.strip())
                    if "Server listening on" in line:
                        break
        except TimeoutError:
            pass
        if log and "Server listening on" in log[-1]:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if not any("Address already in use" in line for line in log):
            pytest.fail(f"sshd did not start: {' | '.join(log[-3:]) or 'no output'}")
    else:
        pytest.fail("sshd found no free port in 3 tries")

    async def drain() -> None:  # sshd logs every login: keep its pipe from filling
        assert proc.stderr is not None
        while await proc.stderr.readline():
            pass

    drainer = asyncio.create_task(drain())
    try:
        yield Sshd("127.0.0.1", port, user, host_key, client_key, bin_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
        await drainer
