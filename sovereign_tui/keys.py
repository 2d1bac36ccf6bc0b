"""``sovereign-tui keys``: add, list and remove the operators' keys in the authorized_keys file.

Every change rewrites the file atomically (a 0600 temporary file in the same directory, synced,
then renamed over it) under an exclusive lock, keeping the lines it does not touch byte for
byte. The daemon re-reads the file when it changes, so a change holds from the next login.
The file's format: `sovereign_tui.console.authkeys`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import asyncssh

from sovereign_tui.console.authkeys import (
    NAME_OPTION,
    NAME_PATTERN,
    ROLE_OPTION,
    parse_authorized_keys,
    quote,
)
from sovereign_tui.daemon.roles import Role

EXIT_ERROR = 2


class KeysError(Exception):
    """One line naming the file or key and the fix."""


def read_public_key(path: Path) -> asyncssh.SSHKey:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeysError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysError(f"{path}: cannot be read ({exc})") from None
    with contextlib.suppress(asyncssh.KeyImportError, ValueError):
        asyncssh.import_private_key(text)
        raise KeysError(f"{path}: is a private key; give the public one ({path}.pub)")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeysError(f"{path}: holds {len(lines)} keys; give a file with exactly one public key")
    try:
        return asyncssh.import_public_key(lines[0])
    except asyncssh.KeyImportError:
        pass
    with contextlib.suppress(asyncssh.KeyImportError):
        asyncssh.import_certificate(lines[0])
        raise KeysError(f"{path}: is a certificate; trust its CA instead (keys add CA.pub --ca ...)")
    raise KeysError(f"{path}: not an OpenSSH public key")


def key_line(key: asyncssh.SSHKey, *, name: str, role: Role, ca: bool) -> str:
    options = [f"{ROLE_OPTION}={quote(role)}", f"{NAME_OPTION}={quote(name)}"]
    if ca:
        options.insert(0, "cert-authority")
    public = key.export_public_key("openssh").decode().strip()
    return f"{','.join(options)} {public}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def replace_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600): readers see the old file or the new, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add_key(path: Path, key_file: Path, *, name: str, role: Role, ca: bool = False) -> str:
    """Add a key (or a CA) and return the line written."""
    if not NAME_PATTERN.fullmatch(name):
        raise KeysError(f"name {name!r}: use letters, digits and . _ @ + - (64 at most)")
    key = read_public_key(key_file)
    with _locked(path):
        text = _read(path)
        current = parse_authorized_keys(text, str(path))
        if (same := current.by_name(name)) is not None:
            raise KeysError(f"{path}: a key named {name!r} exists (line {same.lineno}); remove it first")
        if (same := current.for_key(key) or current.for_key(key, ca=True)) is not None:
            raise KeysError(f"{path}: this key is already listed as {same.name!r} (line {same.lineno})")
        line = key_line(key, name=name, role=role, ca=ca)
        if text and not text.endswith("\n"):
            text += "\n"
        replace_atomically(path, text + line + "\n")
    return line


def remove_key(path: Path, name: str) -> None:
    with _locked(path):
        text = _read(path)
        current = parse_authorized_keys(text, str(path))
        entry = current.by_name(name)
        if entry is None:
            raise KeysError(f"{path}: no key named {name!r} (see `sovereign-tui keys list`)")
        kept = [ln for no, ln in enumerate(text.splitlines(keepends=True), start=1) if no != entry.lineno]
        replace_atomically(path, "".join(kept))


def list_keys(path: Path, out: TextIO, err: TextIO) -> None:
    current = parse_authorized_keys(_read(path), str(path))
    rows = [("NAME", "ROLE", "KIND", "FINGERPRINT")]
    rows += [(e.name, e.role, "ca" if e.cert_authority else "key", e.fingerprint) for e in current.entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3] + "\n")
    for problem in current.problems:
        err.write(f"keys: {problem}\n")


def run_keys(
    action: str,
    path: Path,
    *,
    key_file: Path | None = None,
    name: str | None = None,
    role: Role | None = None,
    ca: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    try:
        if action == "add":
            assert key_file is not None and name is not None and role is not None
            add_key(path, key_file, name=name, role=role, ca=ca)
            stderr.write(f"keys: added {name!r} ({role}{', CA' if ca else ''}) to {path}\n")
        elif action == "remove":
            assert name is not None
            remove_key(path, name)
            stderr.write(f"keys: removed {name!r} from {path}\n")
        else:
            list_keys(path, stdout, stderr)
    except KeysError as exc:
        stderr.write(f"keys: {exc}\n")
        return EXIT_ERROR
    except OSError as exc:
        stderr.write(f"keys: {exc.filename or path}: {exc.strerror or exc}\n")
        return EXIT_ERROR
    return 0
