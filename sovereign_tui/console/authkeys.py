"""The operators' keys: an OpenSSH ``authorized_keys`` file whose lines carry a role.

Each line is ``[options] keytype base64 [comment]`` as OpenSSH writes it, with two options of
our own:

- ``sovereign-role="viewer|operator|admin"`` (required): the role of whoever logs in with the key.
  A line without it is skipped (and logged): no key gets a role it was not given.
- ``sovereign-name="alice"``: the operator name actions are attributed to; defaults to the
  comment when that is a valid name.

Standard options keep their OpenSSH meaning where asyncssh implements them (``from=``,
``no-port-forwarding``...). A line with ``cert-authority`` trusts a CA instead of a key: a user
certificate it signed is accepted when it is valid now and lists the login user name among its
principals (OpenSSH's rule; a certificate without principals is refused). The operator is the
login user name (certified by the CA); the role is the highest ``sovereign-role=<role>``
principal in the certificate (viewer when it has none), capped by the CA line's
``sovereign-role``. ``principals=`` on a CA line is not supported (it would leave the user name
uncertified) and such a line is skipped.

Example::

    sovereign-role="operator",sovereign-name="alice" ssh-ed25519 AAAAC3Nza... alice@laptop
    cert-authority,sovereign-role="admin",sovereign-name="corp-ca" ssh-ed25519 AAAAC3Nza... corp-ca
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from sovereign_tui.daemon.roles import ROLES, Role, highest, lowest, parse_role

log = logging.getLogger("sovereign_tui.console.keys")

ROLE_OPTION = "sovereign-role"
NAME_OPTION = "sovereign-name"
ROLE_PRINCIPAL_PREFIX = "sovereign-role="
"""A certificate principal ``sovereign-role=operator`` asks for that role."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")

Options = dict[str, list[str] | bool]


class AuthKeysError(ValueError):
    """A line or an option that cannot be used: one line naming it and the fix."""


@dataclass(frozen=True)
class KeyEntry:
    lineno: int
    name: str
    role: Role
    key: asyncssh.SSHKey
    cert_authority: bool
    options: Options
    line: str

    @property
    def fingerprint(self) -> str:
        return str(self.key.get_fingerprint())


@dataclass(frozen=True)
class AuthorizedKeys:
    """One reading of the file: its usable entries and a line for each one skipped."""

    entries: tuple[KeyEntry, ...] = ()
    problems: tuple[str, ...] = ()
    _index: dict[bytes, KeyEntry] = field(default_factory=dict, repr=False)

    def for_key(self, key: asyncssh.SSHKey, *, ca: bool = False) -> KeyEntry | None:
        entry = self._index.get(key.public_data)
        return entry if entry is not None and entry.cert_authority == ca else None

    def for_asyncssh(self) -> asyncssh.SSHAuthorizedKeys:
        """The usable lines, for asyncssh's own checks (signatures, ``from=``, certificates)."""
        keys = asyncssh.SSHAuthorizedKeys()
        if self.entries:
            keys.load("\n".join(e.line for e in self.entries))
        return keys

    def by_name(self, name: str) -> KeyEntry | None:
        return next((e for e in self.entries if e.name == name), None)


def split_options(line: str) -> tuple[str, str]:
    """(options text, rest) of an authorized_keys line: OpenSSH's quoting rules."""
    quoted = False
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in " \t" and not quoted:
            return line[:i], line[i:].strip()
    if quoted:
        raise AuthKeysError("unbalanced quote in the options")
    return line, ""


def parse_options(text: str) -> Options:
    options: Options = {}
    current = ""
    quoted = False
    escaped = False
    pieces: list[str] = []
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            pieces.append(current)
            current = ""
        else:
            current += ch
    pieces.append(current)
    for piece in pieces:
        if not piece:
            raise AuthKeysError("an empty option")
        name, eq, value = piece.partition("=")
        if not eq:
            options[name.lower()] = True
            continue
        if not name:
            raise AuthKeysError("an option without a name")
        values = options.setdefault(name.lower(), [])
        if isinstance(values, bool):
            raise AuthKeysError(f"option {name} given both with and without a value")
        values.append(value)
    return options


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _single(options: Options, name: str) -> str | None:
    values = options.get(name)
    if values is None:
        return None
    if isinstance(values, bool) or len(values) != 1:
        raise AuthKeysError(f"{name} needs exactly one value, e.g. {name}={quote('value')}")
    return values[0]


def _fingerprint_name(key: asyncssh.SSHKey) -> str:
    """A name for a key that has none: ``key-`` and the start of its fingerprint."""
    digest = str(key.get_fingerprint()).split(":", 1)[-1]
    return "key-" + re.sub(r"[^A-Za-z0-9]", "", digest)[:12]


def _is_key(text: str) -> bool:
    try:
        asyncssh.import_public_key(text)
    except asyncssh.KeyImportError:
        return False
    return True


def parse_line(line: str, lineno: int) -> KeyEntry:
    """One key line; AuthKeysError naming what is wrong."""
    if _is_key(line):
        raise AuthKeysError(f"no {ROLE_OPTION} option (prefix the line with {ROLE_OPTION}={quote('viewer')})")
    opts_text, rest = split_options(line)
    options = parse_options(opts_text)
    try:
        key = asyncssh.import_public_key(rest)
    except asyncssh.KeyImportError as exc:
        raise AuthKeysError(f"not a public key ({exc})") from None
    role_text = _single(options, ROLE_OPTION)
    if role_text is None:
        raise AuthKeysError(
            f"no {ROLE_OPTION} option (add {ROLE_OPTION}={quote('viewer')} or operator or admin)"
        )
    try:
        role = parse_role(role_text)
    except ValueError as exc:
        raise AuthKeysError(f"{ROLE_OPTION}: {exc}") from None
    ca = options.get("cert-authority") is True
    if ca and "principals" in options:
        raise AuthKeysError(
            "principals= on a cert-authority line is not supported (certificates must name the login user)"
        )
    name = _single(options, NAME_OPTION)
    if name is None:
        comment = (key.get_comment() or "").strip()
        name = comment if NAME_PATTERN.fullmatch(comment) else _fingerprint_name(key)
    if not NAME_PATTERN.fullmatch(name):
        raise AuthKeysError(f"{NAME_OPTION} {name!r}: use letters, digits and . _ @ + - (64 at most)")
    return KeyEntry(
        lineno=lineno, name=name, role=role, key=key, cert_authority=ca, options=options, line=line
    )


def parse_authorized_keys(text: str, origin: str = "authorized_keys") -> AuthorizedKeys:
    entries: list[KeyEntry] = []
    problems: list[str] = []
    index: dict[bytes, KeyEntry] = {}
    names: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = parse_line(line, lineno)
        except AuthKeysError as exc:
            problems.append(f"{origin}:{lineno}: {exc}; line skipped")
            continue
        if entry.key.public_data in index:
            problems.append(
                f"{origin}:{lineno}: the same key as line {index[entry.key.public_data].lineno}; skipped"
            )
            continue
        if entry.name in names:
            problems.append(f"{origin}:{lineno}: name {entry.name!r} is used by an earlier line; skipped")
            continue
        names.add(entry.name)
        index[entry.key.public_data] = entry
        entries.append(entry)
    return AuthorizedKeys(tuple(entries), tuple(problems), index)


def certificate_role(entry: KeyEntry, principals: list[str]) -> Role:
    """The role a certificate signed by the CA of `entry` gets (see the module's docstring)."""
    asked: list[Role] = []
    for principal in principals:
        if principal.startswith(ROLE_PRINCIPAL_PREFIX):
            text = principal[len(ROLE_PRINCIPAL_PREFIX) :]
            if text in ROLES:
                asked.append(parse_role(text))
    return lowest(highest(asked) or "viewer", entry.role)


class AuthorizedKeysFile:
    """The file, re-read whenever it changes (so ``keys add`` takes effect at the next login)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, ...] | None = None
        self._keys = AuthorizedKeys()

    def current(self) -> AuthorizedKeys:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp != ():
                log.warning(
                    "%s: no such file; nobody can log in (add a key with `sovereign-tui keys add`)", self.path
                )
            self._stamp, self._keys = (), AuthorizedKeys()
            return self._keys
        stamp = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_mode)
        if stamp != self._stamp:
            if info.st_mode & 0o022:
                log.warning("%s: writable by others; keys are not read from it (chmod 600)", self.path)
                self._keys = AuthorizedKeys()
            else:
                self._keys = parse_authorized_keys(self.path.read_text(errors="replace"), str(self.path))
                for problem in self._keys.problems:
                    log.warning("%s", problem)
            self._stamp = stamp
        return self._keys
