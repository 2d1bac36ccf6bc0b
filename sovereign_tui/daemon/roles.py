"""Who talks to the daemon: an operator name and a role, decided by the daemon itself (from the
SSH login or the socket's peer), never taken from what a client says.

The roles and what each may do are the operations engine's one table (`sovereign_tui.ops.roles`);
this module adds the order between them and the identity the feed and the console carry.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from sovereign_tui.ops.roles import ROLES, Role

__all__ = ["ROLES", "Identity", "Role", "actor_name", "highest", "lowest", "parse_role"]

_RANK = {role: rank for rank, role in enumerate(ROLES)}  # viewer < operator < admin


def parse_role(text: str) -> Role:
    """The role named by `text`; ValueError naming the valid ones otherwise."""
    for role in ROLES:
        if text == role:
            return role
    raise ValueError(f"unknown role {text!r} (one of {', '.join(ROLES)})")


def lowest(a: Role, b: Role) -> Role:
    return a if _RANK[a] <= _RANK[b] else b


def highest(roles: list[Role]) -> Role | None:
    if not roles:
        return None
    return max(roles, key=lambda role: _RANK[role])


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a feed client or console session acts as."""

    operator: str
    """The name actions are attributed to."""
    role: Role
    via: Literal["ssh", "local"]
    """How they reached the daemon: a console session, or the socket on this machine."""
    address: str | None = None
    """The SSH client's address, for console sessions."""


def actor_name(operator: str, via: str) -> str:
    """The name an identity acts under in the journal and every audit record: a console
    session's operator as ``ssh:NAME`` (apart from an OS user of the same name), a local client's
    as is (already ``local:USER``)."""
    return f"ssh:{operator}" if via == "ssh" else operator
