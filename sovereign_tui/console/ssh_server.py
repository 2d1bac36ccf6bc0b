"""The SSH console: an asyncssh server whose only service is a TUI session per login.

Public-key authentication only, against the authorized_keys file (`authkeys`: a role per key,
certificates from trusted CAs). A session needs a PTY and runs the TUI (`sessions`); a command
(``ssh host ls``), a subsystem (SFTP), agent or X11 forwarding, and every kind of port forwarding
are refused, each with the reason written to the audit sink. Login timeout, keepalives, an idle
timeout, a cap on sessions and a cool-down for addresses that fail to log in too often.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate, decode_ssh_certificate, decode_ssh_public_key

from sovereign_tui.audit_sink import AuditSink
from sovereign_tui.clock import Clock
from sovereign_tui.console.authkeys import (
    ROLE_PRINCIPAL_PREFIX,
    AuthorizedKeys,
    AuthorizedKeysFile,
    certificate_role,
)
from sovereign_tui.console.guard import FailedLogins
from sovereign_tui.console.sessions import TuiSession, session_command, session_env
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.daemon.tokens import SessionTokens

log = logging.getLogger("sovereign_tui.console")


class HostKeyError(Exception):
    """The host key cannot be read or written: one line naming the file and the fix."""


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The persisted host key; an ed25519 key is generated (0600) on first start."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise HostKeyError(f"{path}: readable by others; chmod 600 it (or remove it to make a new key)")
        try:
            return asyncssh.read_private_key(str(path))
        except (asyncssh.KeyImportError, OSError) as exc:
            raise HostKeyError(
                f"{path}: not a usable private key ({exc}); remove it to make a new one"
            ) from None
    key = asyncssh.generate_private_key("ssh-ed25519", comment="sovereign-tui console")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    log.info("generated the console's host key %s (%s)", path, key.get_fingerprint())
    return key


class ConsoleServer:
    def __init__(
        self,
        *,
        settings: ServeSettings,
        keys: AuthorizedKeysFile,
        host_key: asyncssh.SSHKey,
        tokens: SessionTokens,
        audit: AuditSink,
        socket_path: Path,
        clock: Clock,
        command: Callable[[Path], list[str]] = session_command,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.host_key = host_key
        self.tokens = tokens
        self.audit = audit
        self.socket_path = socket_path
        self.clock = clock
        self.command = command
        self.failures = FailedLogins(
            clock,
            limit=settings.failed_login_limit,
            window_s=settings.failed_login_window_s,
            cooldown_s=settings.failed_login_cooldown_s,
        )
        self.sessions: set[TuiSession] = set()
        self.connections: set[_Connection] = set()
        self._server: asyncssh.SSHAcceptor | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def record(self, event: dict[str, object]) -> None:
        """An audit event; a failure to write it is logged (logins alone are refused for it)."""
        try:
            self.audit.append(event)
        except Exception as exc:
            log.error("audit: cannot record %s: %s", event.get("event"), exc)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (the one picked when `port` is 0)."""
        s = self.settings
        self._server = await asyncssh.create_server(
            lambda: _Connection(self),
            host,
            port,
            server_host_keys=[self.host_key],
            process_factory=self._handle,
            encoding=None,
            line_editor=False,
            allow_pty=True,
            agent_forwarding=False,
            x11_forwarding=False,
            sftp_factory=None,
            allow_scp=False,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_host=None,
            login_timeout=s.login_timeout_s,
            keepalive_interval=s.keepalive_interval_s,
            keepalive_count_max=s.keepalive_count_max,
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("SSH console on %s:%d, host key %s", host, bound, self.host_key.get_fingerprint())
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.hang_up("the console is shutting down")
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # --- sessions -----------------------------------------------------------------------------

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._session(process)
        finally:
            self._handlers.discard(task)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        owner = process.get_extra_info("connection").get_owner()
        who = owner.identity if isinstance(owner, _Connection) else None
        if who is None:  # its login could not be recorded: the connection is being closed
            process.exit(1)
            return
        refusal = self._refusal(process)
        if refusal is not None:
            reason, message = refusal
            self.record(_event("session.refused", who, reason=reason))
            process.stderr.write(f"sovereign-tui: {message}\r\n".encode())
            process.exit(1)
            return
        token = self.tokens.issue(who)
        env = session_env(process.get_terminal_type() or "xterm-256color", token, process.env)
        session = TuiSession(
            process,
            command=self.command(self.socket_path),
            env=env,
            clock=self.clock,
            idle_timeout_s=self.settings.idle_timeout_s,
            grace_s=self.settings.session_grace_s,
        )
        self.sessions.add(session)
        started = self.clock.monotonic()
        self.record(_event("session.start", who))
        status, reason = 1, "the session failed"
        try:
            status, reason = await session.run()
        except Exception as exc:
            log.exception("console session of %s failed", who.operator)
            reason = f"the session failed: {exc}"
        finally:
            self.sessions.discard(session)
            self.tokens.revoke(token)
            duration = round(self.clock.monotonic() - started, 3)
            self.record(_event("session.end", who, reason=reason, status=status, duration_s=duration))
        with contextlib.suppress(Exception):
            process.exit(status)

    def _refusal(self, process: asyncssh.SSHServerProcess[bytes]) -> tuple[str, str] | None:
        """(audit reason, message for the client) when this session request is refused."""
        if process.command is not None:
            return (
                f"exec request: {process.command[:200]}",
                "this console runs no commands; connect without one to get the console",
            )
        if process.subsystem is not None:
            return f"subsystem request: {process.subsystem}", "this console offers no subsystems (no SFTP)"
        if process.get_terminal_type() is None:
            return "no terminal requested", "the console needs a terminal; connect with ssh -t"
        if len(self.sessions) >= self.settings.max_sessions:
            limit = self.settings.max_sessions
            return (
                f"session limit ({limit}) reached",
                f"all {limit} console sessions are in use; try again later",
            )
        return None


class _Connection(asyncssh.SSHServer):
    """One SSH connection: authentication, identity, and the refusal of everything but sessions."""

    def __init__(self, console: ConsoleServer) -> None:
        self._console = console
        self._conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self.username = ""
        self.identity: Identity | None = None
        self._keys = AuthorizedKeys()
        self._tried: set[bytes] = set()
        self._refused: list[str] = []
        self._accepted: tuple[str, str, Any] | None = None
        self._since = console.clock.monotonic()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        self._console.connections.add(self)
        # Certificates are checked here before asyncssh's own checks (which accept a certificate
        # that names no principal, and keep the certificate to themselves).
        original = conn.validate_public_key

        async def checked(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            return await self._validate(original, username, key_data, msg, signature)

        conn.validate_public_key = checked  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        self._console.connections.discard(self)
        if self.identity is not None:
            duration = round(self._console.clock.monotonic() - self._since, 3)
            reason = str(exc) if exc is not None else "closed"
            self._console.record(_event("logout", self.identity, reason=reason, duration_s=duration))
            return
        if not (self._refused or self.username):
            return
        reasons = self._refused or ["did not authenticate in time or gave up"]
        started = self._console.failures.record(self.address)
        self._console.record(
            {
                "event": "login.refused",
                "via": "ssh",
                "address": self.address,
                "user": self.username,
                "reason": "; ".join(reasons),
            }
        )
        if started:
            log.warning("%s: too many failed logins; refused for a while", self.address)

    def begin_auth(self, username: str) -> bool:
        self.username = username
        left = self._console.failures.cooling(self.address)
        if left > 0:
            self._refused = []  # not counted again
            self.username = ""
            self._console.record(
                {
                    "event": "login.refused",
                    "via": "ssh",
                    "address": self.address,
                    "user": username,
                    "reason": "cooling down after too many failed logins",
                }
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                f"too many failed logins from {self.address}; try again in {left:.0f} s",
            )
        self._keys = self._console.keys.current()
        assert self._conn is not None
        self._conn.set_authorized_keys(self._keys.for_asyncssh())
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # only keys of the authorized_keys file (checked by asyncssh)

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # only CAs of the authorized_keys file

    async def _validate(
        self, original: Callable[..., Any], username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        self._tried.add(key_data)
        if len(self._tried) > self._console.settings.max_auth_tries:
            self._refused.append(f"more than {self._console.settings.max_auth_tries} keys offered")
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many keys offered"
            )
        cert: SSHOpenSSHCertificate | None = None
        with contextlib.suppress(asyncssh.KeyImportError, ValueError):
            decoded = decode_ssh_certificate(key_data)
            if isinstance(decoded, SSHOpenSSHCertificate):
                cert = decoded
        if cert is not None:
            problem = self._certificate_problem(username, cert)
            if problem is not None:
                self._refused.append(problem)
                return False
        ok = bool(await original(username, key_data, msg, signature))
        if not ok:
            if cert is not None:
                self._refused.append("certificate expired, not yet valid, or not usable from this address")
            else:
                with contextlib.suppress(asyncssh.KeyImportError):
                    fingerprint = decode_ssh_public_key(key_data).get_fingerprint()
                    self._refused.append(f"unknown key {fingerprint}")
        elif signature:
            self._accepted = ("cert", username, cert) if cert is not None else ("key", username, key_data)
        return ok

    def _certificate_problem(self, username: str, cert: SSHOpenSSHCertificate) -> str | None:
        ca = self._keys.for_key(cert.signing_key, ca=True)
        if ca is None:
            return f"certificate from an untrusted CA {cert.signing_key.get_fingerprint()}"
        if not cert.principals:
            return "certificate names no principals"
        if username.startswith(ROLE_PRINCIPAL_PREFIX) or username not in cert.principals:
            return f"certificate not valid for user {username!r}"
        return None

    def auth_completed(self) -> None:
        accepted = self._accepted
        assert accepted is not None, "authenticated without an accepted key"
        kind, username, detail = accepted
        event: dict[str, object]
        if kind == "cert":
            cert: SSHOpenSSHCertificate = detail
            ca = self._keys.for_key(cert.signing_key, ca=True)
            assert ca is not None
            role = certificate_role(ca, list(cert.principals))
            self.identity = Identity(operator=username, role=role, via="ssh", address=self.address)
            event = {"ca": ca.name, "key_id": getattr(cert, "_key_id", ""), "key": cert.key.get_fingerprint()}
        else:
            entry = self._keys.for_key(decode_ssh_public_key(detail))
            assert entry is not None
            self.identity = Identity(operator=entry.name, role=entry.role, via="ssh", address=self.address)
            event = {"key": entry.fingerprint}
        self._since = self._console.clock.monotonic()
        try:
            self._console.audit.append(_event("login", self.identity, user=username, **event))
        except Exception as exc:  # no login goes unrecorded
            log.error("audit: cannot record the login of %s: %s", self.identity.operator, exc)
            self.identity = None
            raise asyncssh.DisconnectError(
                asyncssh.DISC_BY_APPLICATION,
                "the audit log cannot be written; logins are refused until it is fixed",
            ) from None
        log.info("login: %s (%s) from %s", self.identity.operator, self.identity.role, self.address)

    # --- everything but sessions is refused ----------------------------------------------------

    def _refuse(self, what: str) -> None:
        event: dict[str, object] = {
            "event": "forward.refused",
            "via": "ssh",
            "address": self.address,
            "reason": what,
        }
        if self.identity is not None:
            event.update(operator=self.identity.operator, role=self.identity.role)
        self._console.record(event)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        self._refuse(f"port forwarding to {dest_host}:{dest_port}")
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "port forwarding is disabled on this console"
        )

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._refuse(f"remote port forwarding from {listen_host}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refuse(f"forwarding to the socket {dest_path}")
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "socket forwarding is disabled on this console"
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refuse(f"remote socket forwarding from {listen_path}")
        return False

    def tun_requested(self, unit: int | None) -> bool:
        self._refuse("tunnel device forwarding")
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "tunnels are disabled")


def _event(name: str, who: Identity, **detail: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event": name,
        "operator": who.operator,
        "role": who.role,
        "via": who.via,
        "address": who.address,
    }
    event.update({k: v for k, v in detail.items() if v is not None})
    return event
