"""Remote GPUs over SSH: one ``nvidia-smi`` exec per host and poll, on a connection kept open.

Why it is built this way (figures in PERF-FACTS, SSH section):
- a new SSH connection costs ~2.5 ms of client CPU and a round trip of handshakes, a command on an
  open one ~0.6 ms: one connection per host is kept and reused across polls, re-opened when it
  dropped (once per poll, so a dead idle connection costs no failed poll);
- asyncssh re-reads key files on every connection (~125 ms each) when given paths: the keys and
  the known_hosts file are read once and handed over as objects; ``~/.ssh/config`` and ssh-agent
  are not consulted, so what is configured here is all that is used;
- both queries run in one exec (`nvidia_smi_parse.COMMAND`), halving the round trips;
- the connect and the command are each bounded by the injected clock, inside the poller's timeout.

Host keys are always checked against known_hosts: an unknown key and a CHANGED key are distinct
errors, and neither is ever accepted. Before a new connection the known_hosts file is read again
if it changed (one stat), so a key added with ssh-keyscan or removed takes effect without a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncssh

from collectors.base import Capability
from collectors.nvidia_smi_parse import COMMAND, MAX_OUTPUT_BYTES, parse_output
from sovereign_tui.clock import Clock
from sovereign_tui.config_sources import NvidiaSmiSource, SshHost
from sovereign_tui.config_sources import validate_nvidia_smi as validate
from sovereign_tui.model import Observation
from sovereign_tui.poller import PollContext, PollError, Target

_T = TypeVar("_T")

DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


def endpoint_of(host: SshHost) -> str:
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"{address}:{host.port}"


class _Lost(Exception):
    """The connection failed under a command: worth one retry on a new connection."""


@dataclass
class _Link:
    """The kept-open connection to one host."""

    conn: asyncssh.SSHClientConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: int = 0


@dataclass
class _Auth:
    keys: list[asyncssh.SSHKey]
    known_hosts_path: Path
    known_hosts: asyncssh.SSHKnownHosts
    known_hosts_stamp: tuple[int, int, int]
    options: asyncssh.SSHClientConnectionOptions


async def _within(clock: Clock, seconds: float, awaitable: Awaitable[_T]) -> _T:
    """`awaitable`'s result, or TimeoutError once `seconds` have passed on `clock`."""
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep_until(clock.monotonic() + seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise TimeoutError


async def _read_bounded(stream: asyncssh.SSHReader[bytes], limit: int) -> bytes | None:
    """All of `stream`, or None when it passes `limit` bytes (the rest is discarded)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > limit:
            while await stream.read(65536):
                pass
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is edited or replaced (mtime alone can miss a quick rewrite)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


def _first_line(data: bytes) -> str:
    for line in data.decode(errors="replace").splitlines():
        if line.strip():
            flat = "".join(ch if ch.isprintable() else "?" for ch in line.strip())
            return flat[:120]
    return "no output"


class NvidiaSmiCollector:
    name = "nvidia-smi"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, settings: NvidiaSmiSource) -> None:
        self.settings = settings
        self._links: dict[str, _Link] = {h.name: _Link() for h in settings.hosts}
        self._sem = asyncio.Semaphore(settings.concurrency)
        self._auth: _Auth | None = None
        self._auth_lock = asyncio.Lock()
        self.connections_opened = 0
        """SSH connections opened since start, over every host (connection reuse shows here)."""

    def connections_to(self, host: str) -> int:
        return self._links[host].opened

    # --- targets ------------------------------------------------------------------------------

    def targets(self) -> list[Target]:
        if not self.settings.enabled:
            return []
        return [
            Target(
                id=f"nvidia-smi:{h.name}",
                source=self.name,
                endpoint=endpoint_of(h),
                interval_s=self.settings.interval_s,
                poll=functools.partial(self.poll_host, h),
                fingerprint=f"{h.user or ''}@{endpoint_of(h)}",
            )
            for h in self.settings.hosts
        ]

    async def poll_host(self, host: SshHost, ctx: PollContext) -> Observation:
        auth = await self._load_auth(host)
        async with self._sem:
            output = await self._query(host, auth, ctx.clock)
        gpus = parse_output(output, host.name, f"nvidia-smi:{host.name}", ctx.clock.time())
        return Observation(gpus=gpus)

    async def aclose(self) -> None:
        conns = [link.conn for link in self._links.values() if link.conn is not None]
        for link in self._links.values():
            link.conn = None
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)

    # --- keys and known hosts, read once --------------------------------------------------------

    def _user(self, host: SshHost) -> str:
        if host.user:
            return host.user
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            raise PollError(
                f"nvidia-smi: {host.name}: no local user name to log in as (set user for this host)"
            ) from None

    def _known_hosts_path(self) -> Path:
        return Path(self.settings.known_hosts or "~/.ssh/known_hosts").expanduser()

    def _key_paths(self) -> list[Path]:
        if self.settings.client_keys:
            return [Path(p).expanduser() for p in self.settings.client_keys]
        ssh_dir = Path("~/.ssh").expanduser()
        found = [ssh_dir / n for n in DEFAULT_KEY_NAMES if (ssh_dir / n).is_file()]
        return found[:1]

    async def _load_auth(self, host: SshHost) -> _Auth:
        if self._auth is not None:
            return self._auth
        async with self._auth_lock:
            if self._auth is None:
                self._auth = await asyncio.to_thread(self._read_auth, host)
            return self._auth

    def _read_auth(self, host: SshHost) -> _Auth:
        paths = self._key_paths()
        if not paths:
            raise PollError(
                f"nvidia-smi: {host.name}: no client key (set sources.nvidia_smi.client_keys, "
                "or create ~/.ssh/id_ed25519 and authorize it on the GPU hosts)"
            )
        keys = []
        for path in paths:
            try:
                keys.append(asyncssh.read_private_key(path))
            except OSError as exc:
                raise PollError(
                    f"nvidia-smi: {host.name}: client key {path} cannot be read ({exc.strerror}): "
                    "fix sources.nvidia_smi.client_keys"
                ) from None
            except (asyncssh.KeyImportError, ValueError) as exc:
                fix = (
                    "use an unencrypted key kept for monitoring"
                    if "assphrase" in str(exc)
                    else "give an OpenSSH private key"
                )
                raise PollError(f"nvidia-smi: {host.name}: client key {path}: {exc} ({fix})") from None
        kh_path = self._known_hosts_path()
        known, stamp = self._read_known_hosts(host, kh_path)
        return _Auth(keys, kh_path, known, stamp, self._options(keys, known))

    def _read_known_hosts(
        self, host: SshHost, path: Path
    ) -> tuple[asyncssh.SSHKnownHosts, tuple[int, int, int]]:
        try:
            return asyncssh.read_known_hosts(str(path)), _stamp(path)
        except FileNotFoundError:
            raise PollError(
                f"nvidia-smi: {host.name}: known_hosts {path} does not exist (create it with "
                "ssh-keyscan for each GPU host after checking the fingerprints)"
            ) from None
        except OSError as exc:
            raise PollError(
                f"nvidia-smi: {host.name}: known_hosts {path} cannot be read ({exc.strerror})"
            ) from None
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise PollError(f"nvidia-smi: {host.name}: known_hosts {path} is not valid ({exc})") from None

    def _options(
        self, keys: Sequence[asyncssh.SSHKey], known: asyncssh.SSHKnownHosts
    ) -> asyncssh.SSHClientConnectionOptions:
        return asyncssh.SSHClientConnectionOptions(
            known_hosts=known,
            client_keys=list(keys),
            agent_path=None,
            config=None,
            preferred_auth="publickey",
            # AES-GCM first: one AEAD call per packet (AES-NI) where asyncssh's chacha20-poly1305
            # builds two cipher contexts per packet; ~25% less client CPU per poll, measured.
            encryption_algs=[
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
            ],
            x509_trusted_certs=None,
            x509_trusted_cert_paths=[],
        )

    async def _reload_known_hosts(self, host: SshHost, auth: _Auth) -> None:
        """Read known_hosts again if it changed since it was read (a stat per new connection), so
        that keys added or removed take effect without a restart. A vanished file changes
        nothing: the keys read last stay in force."""
        try:
            if _stamp(auth.known_hosts_path) == auth.known_hosts_stamp:
                return
        except OSError:
            return
        known, stamp = await asyncio.to_thread(self._read_known_hosts, host, auth.known_hosts_path)
        auth.known_hosts, auth.known_hosts_stamp = known, stamp
        auth.options = self._options(auth.keys, known)

    # --- connections and the command ----------------------------------------------------------

    async def _query(self, host: SshHost, auth: _Auth, clock: Clock) -> str:
        link = self._links[host.name]
        async with link.lock:
            reused = link.conn is not None and not link.conn.is_closed()
            if not reused:
                link.conn = await self._connect(host, auth, clock, link)
            try:
                return await self._run(host, link, clock)
            except _Lost as exc:
                if not reused:
                    raise PollError(
                        f"nvidia-smi: {host.name}: connection lost during the command ({exc})"
                    ) from None
            link.conn = await self._connect(host, auth, clock, link)  # the kept one had died: once more
            try:
                return await self._run(host, link, clock)
            except _Lost as exc:
                raise PollError(
                    f"nvidia-smi: {host.name}: connection lost during the command ({exc})"
                ) from None

    async def _connect(
        self, host: SshHost, auth: _Auth, clock: Clock, link: _Link
    ) -> asyncssh.SSHClientConnection:
        self._discard(link)
        await self._reload_known_hosts(host, auth)
        user = self._user(host)
        try:
            conn = await _within(
                clock,
                self.settings.connect_timeout_s,
                asyncssh.connect(host.address, host.port, options=auth.options, username=user, config=None),
            )
        except asyncssh.HostKeyNotVerifiable:
            raise self._host_key_error(host, auth) from None
        except TimeoutError:
            raise PollError(
                f"nvidia-smi: {host.name}: no SSH login within {self.settings.connect_timeout_s:g}s "
                f"at {endpoint_of(host)} (check the address and that sshd answers)"
            ) from None
        except asyncssh.PermissionDenied:
            raise PollError(
                f"nvidia-smi: {host.name}: user {user} refused with the configured key "
                "(add its public key to that user's authorized_keys there)"
            ) from None
        except ConnectionRefusedError:
            raise PollError(
                f"nvidia-smi: {host.name}: connection refused at {endpoint_of(host)} "
                "(is sshd running there, on that port?)"
            ) from None
        except socket.gaierror as exc:
            raise PollError(
                f"nvidia-smi: {host.name}: cannot resolve {host.address} ({exc.strerror}): fix its address"
            ) from None
        except asyncssh.Error as exc:
            raise PollError(
                f"nvidia-smi: {host.name}: SSH failed at {endpoint_of(host)}: {exc.reason}"
            ) from None
        except OSError as exc:
            raise PollError(
                f"nvidia-smi: {host.name}: cannot connect to {endpoint_of(host)} ({exc.strerror or exc})"
            ) from None
        link.opened += 1
        self.connections_opened += 1
        return conn

    def _host_key_error(self, host: SshHost, auth: _Auth) -> PollError:
        port = host.port if host.port != 22 else None
        recorded = auth.known_hosts.match(host.address, host.address, port)[0]
        if recorded:
            return PollError(
                f"nvidia-smi: {host.name}: host key CHANGED since it was recorded in {auth.known_hosts_path} "
                "(possible man-in-the-middle attack; if the host was reinstalled, replace its entry "
                "after checking the new fingerprint)"
            )
        return PollError(
            f"nvidia-smi: {host.name}: host key not in {auth.known_hosts_path} "
            "(add it with ssh-keyscan after checking its fingerprint)"
        )

    def _discard(self, link: _Link) -> None:
        conn, link.conn = link.conn, None
        if conn is not None:
            conn.abort()

    async def _run(self, host: SshHost, link: _Link, clock: Clock) -> str:
        conn = link.conn
        assert conn is not None
        done = False
        try:
            output = await _within(clock, self.settings.command_timeout_s, self._exec(conn))
            done = True
        except TimeoutError:
            raise PollError(
                f"nvidia-smi: {host.name}: no answer from nvidia-smi within "
                f"{self.settings.command_timeout_s:g}s "
                "(the GPU or its driver may be hung: check nvidia-smi there)"
            ) from None
        except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
            raise _Lost(str(getattr(exc, "reason", "") or exc or type(exc).__name__)) from None
        finally:
            if not done:
                # A command that timed out, was cancelled or lost leaves the connection in doubt
                # (a dead peer looks the same as a slow one): the next poll opens a new one.
                self._discard(link)
        status, signal, out, err = output
        if signal is not None:
            raise PollError(f"nvidia-smi: {host.name}: nvidia-smi was killed by signal {signal}")
        if out is None:
            raise PollError(
                f"nvidia-smi: {host.name}: output larger than {MAX_OUTPUT_BYTES >> 20} MiB "
                "(this is not nvidia-smi's answer: check the command there)"
            )
        if status == 127:
            raise PollError(
                f"nvidia-smi: {host.name}: nvidia-smi not found (install the NVIDIA driver utilities, "
                "or put nvidia-smi on the SSH user's PATH)"
            )
        if status != 0:
            reason = _first_line(err) if err and err.strip() else _first_line(out)
            raise PollError(f"nvidia-smi: {host.name}: nvidia-smi failed (exit status {status}): {reason}")
        return out.decode(errors="replace")

    async def _exec(self, conn: asyncssh.SSHClientConnection) -> tuple[int, str | None, bytes | None, bytes]:
        """Exit status, signal, stdout (None when too large) and stderr of `COMMAND`."""
        proc: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
            COMMAND, stdin=asyncssh.DEVNULL, encoding=None
        )
        try:
            out, err = await asyncio.gather(
                _read_bounded(proc.stdout, MAX_OUTPUT_BYTES), _read_bounded(proc.stderr, 1 << 16)
            )
            await proc.wait_closed()
        finally:
            proc.close()
        if proc.exit_signal:
            return -1, proc.exit_signal[0], out, err or b""
        if proc.exit_status is None or proc.exit_status < 0:
            raise asyncssh.ConnectionLost("the channel closed without an exit status")
        return proc.exit_status, None, out, err or b""


__all__ = ["NvidiaSmiCollector", "NvidiaSmiSource", "SshHost", "endpoint_of", "validate"]
