"""Who may do what: one table and one function, `allowed`, used by every entry point (the
command line, the daemon's gateway, the screens through it).

- viewer: looks only; no action at all.
- operator: plans and runs drain, undrain, migrate and provision, and the bare-metal provide and
  undeploy (gated as a deploy is); resumes and cancels operations.
- admin: everything an operator may, plus abandoning an interrupted operation (which releases
  its lease without finishing it) and forcing (StarlingX ``force-lock``, running past blockers).
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["viewer", "operator", "admin"]
Action = Literal[
    "drain", "undrain", "migrate", "provision", "provide", "undeploy", "resume", "cancel", "abandon", "force"
]

ROLES: tuple[Role, ...] = get_args(Role)
ACTIONS: tuple[Action, ...] = get_args(Action)

_OPERATOR: frozenset[str] = frozenset(
    {"drain", "undrain", "migrate", "provision", "provide", "undeploy", "resume", "cancel"}
)
_GRANTS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": _OPERATOR,
    "admin": _OPERATOR | {"abandon", "force"},
}


def allowed(role: str, action: str) -> bool:
    """Whether `role` may perform `action`. Unknown roles and actions are refused."""
    return action in _GRANTS.get(role, frozenset())


class PermissionDenied(Exception):
    """A role check failed; the message names the role, the action and who may do it."""

    def __init__(self, who: str, role: str, action: str) -> None:
        self.who, self.role, self.action = who, role, action
        may = [r for r in ROLES if allowed(r, action)]
        super().__init__(
            f"{who} (role {role}) may not {action}; that needs the role {' or '.join(may) or 'none'}"
        )


def require(who: str, role: str, action: str) -> None:
    if not allowed(role, action):
        raise PermissionDenied(who, role, action)
