"""Settings of `sovereign-tui serve`: the ``[serve]`` section of ``sovereign.toml``.

Every field has a default that works for an appliance; command-line options override them.
Paths left unset resolve under the XDG directories (`resolve_paths`): state (host key, socket,
audit log) under ``$XDG_STATE_HOME/sovereign-tui``, the operators' keys under
``$XDG_CONFIG_HOME/sovereign-tui``.

This module imports nothing of the project but `roles`, so `sovereign_tui.config` can embed it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from sovereign_tui.daemon.roles import Role


class ServeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    socket: str | None = None
    """Path of the feed's Unix socket; default ``<state>/run/feed.sock``. Its directory is made
    0700 and the socket 0600: only the daemon's own user (and root) can connect."""
    local_role: Role = "viewer"
    """Role of a client that connects to the socket as its owner, without a console session's
    token (a TUI or export run on the appliance with ``--attach``)."""
    ssh: bool = True
    """Run the SSH console."""
    ssh_listen: str = "0.0.0.0"
    """Address the SSH console listens on."""
    ssh_port: int = 2222
    """Port of the SSH console; 0 picks a free one (logged at start)."""
    host_key: str | None = None
    """The console's ed25519 host key; default ``<state>/ssh_host_ed25519_key``, generated (0600)
    on first start."""
    authorized_keys: str | None = None
    """The operators' keys, OpenSSH authorized_keys format with a ``sovereign-role`` option per
    line (see `sovereign_tui.console.authkeys`); default ``<config>/authorized_keys``. Re-read
    when it changes: ``sovereign-tui keys add`` takes effect at the next login."""
    login_timeout_s: float = 30.0
    """Time a client has to authenticate before it is disconnected."""
    keepalive_interval_s: float = 30.0
    """Interval of keepalive requests to an idle client; 0 disables them."""
    keepalive_count_max: int = 3
    """Unanswered keepalives after which a client is disconnected."""
    idle_timeout_s: float = 1800.0
    """A console session with no keystroke for this long is closed; 0 disables it."""
    max_sessions: int = 16
    """Most console sessions open at once; one more is refused with a message."""
    max_auth_tries: int = 6
    """Most keys one connection may offer before it is disconnected."""
    failed_login_limit: int = 5
    """Failed logins from one address within `failed_login_window_s` that start a cool-down."""
    failed_login_window_s: float = 300.0
    failed_login_cooldown_s: float = 600.0
    """How long an address that hit the limit is refused at once."""
    metrics_port: int | None = None
    """Port of the Prometheus ``/metrics`` endpoint; unset: no endpoint."""
    metrics_listen: str = "127.0.0.1"
    """Address the metrics endpoint listens on."""
    feed_max_line_bytes: int = 65536
    """Longest line a feed client may send; a longer one closes that client."""
    feed_hello_timeout_s: float = 10.0
    """Time a feed client has to send its hello."""
    feed_stalled_after_s: float = 30.0
    """A feed client that has not taken a frame for this long is dropped."""
    session_grace_s: float = 5.0
    """Time a session's TUI process has to exit after a hang-up before it is killed."""


@dataclass(frozen=True)
class ServePaths:
    socket: Path
    host_key: Path
    authorized_keys: Path


def serve_settings(settings: object) -> ServeSettings:
    """The ``[serve]`` section of the settings (defaults while `Settings` has none)."""
    found = getattr(settings, "serve", None)
    return found if isinstance(found, ServeSettings) else ServeSettings()


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var) or str(Path.home() / fallback)
    return Path(base) / "sovereign-tui"


def default_authorized_keys() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "authorized_keys"


def resolve_paths(serve: ServeSettings) -> ServePaths:
    state = _xdg("XDG_STATE_HOME", ".local/state")
    return ServePaths(
        socket=Path(serve.socket) if serve.socket else state / "run" / "feed.sock",
        host_key=Path(serve.host_key) if serve.host_key else state / "ssh_host_ed25519_key",
        authorized_keys=Path(serve.authorized_keys) if serve.authorized_keys else default_authorized_keys(),
    )


def validate(serve: ServeSettings, origin: str = "[serve]") -> None:
    """ValueError naming the field and the fix for settings that cannot work."""
    for name in ("ssh_port", "metrics_port"):
        port = getattr(serve, name)
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"{origin}: {name} must be a port number from 0 to 65535, got {port}")
    for name in ("max_sessions", "max_auth_tries", "failed_login_limit", "feed_max_line_bytes"):
        if getattr(serve, name) < 1:
            raise ValueError(f"{origin}: {name} must be at least 1")
    for name in ("login_timeout_s", "feed_hello_timeout_s", "feed_stalled_after_s", "session_grace_s"):
        if getattr(serve, name) <= 0:
            raise ValueError(f"{origin}: {name} must be positive")
