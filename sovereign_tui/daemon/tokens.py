"""Capability tokens of console sessions.

The daemon starts every console session's TUI process itself, with a fresh random token in its
environment; the token is how that process's feed connection proves which session (operator and
role) it belongs to. A token dies with its session, and the feed drops the connections that
used it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sovereign_tui.daemon.roles import Identity


class SessionTokens:
    def __init__(self) -> None:
        self._by_token: dict[str, Identity] = {}
        self._on_revoke: list[Callable[[str], None]] = []

    def issue(self, identity: Identity) -> str:
        token = secrets.token_urlsafe(32)
        self._by_token[token] = identity
        return token

    def lookup(self, token: str) -> Identity | None:
        # Constant-time comparison is moot for a dict look-up of a 256-bit random key.
        return self._by_token.get(token)

    def revoke(self, token: str) -> None:
        if self._by_token.pop(token, None) is not None:
            for callback in self._on_revoke:
                callback(token)

    def on_revoke(self, callback: Callable[[str], None]) -> None:
        self._on_revoke.append(callback)

    def __len__(self) -> int:
        return len(self._by_token)
