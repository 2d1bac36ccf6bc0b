"""The ``[serve]`` settings and what ``serve`` says when it cannot start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from sovereign_tui.daemon.settings import ServeSettings, resolve_paths, validate

ROOT = Path(__file__).resolve().parents[2]


def test_the_section_decodes_strictly_from_toml() -> None:
    serve = msgspec.toml.decode(
        b'local_role = "operator"\nssh_port = 22\nmax_sessions = 4\n', type=ServeSettings
    )
    assert (serve.local_role, serve.ssh_port, serve.max_sessions) == ("operator", 22, 4)
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'root'"):
        msgspec.toml.decode(b'local_role = "root"\n', type=ServeSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown field `shell`"):
        msgspec.toml.decode(b"shell = true\n", type=ServeSettings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssh_port": 70000}, "ssh_port must be a port number from 0 to 65535"),
        ({"max_sessions": 0}, "max_sessions must be at least 1"),
        ({"login_timeout_s": 0.0}, "login_timeout_s must be positive"),
    ],
)
def test_settings_that_cannot_work_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(msgspec.structs.replace(ServeSettings(), **change))


def test_paths_default_under_the_xdg_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "conf"))
    paths = resolve_paths(ServeSettings())
    assert paths.socket == tmp_path / "state" / "sovereign-tui" / "run" / "feed.sock"
    assert paths.host_key == tmp_path / "state" / "sovereign-tui" / "ssh_host_ed25519_key"
    assert paths.authorized_keys == tmp_path / "conf" / "sovereign-tui" / "authorized_keys"


def test_serve_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    out = subprocess.run(
        [sys.executable, "-m", "sovereign_tui", "serve", "--no-ssh", "--socket", str(shared / "feed.sock")],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "s"), "XDG_CONFIG_HOME": str(tmp_path / "c")},
    )  # fmt: skip
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("serve:")]
    assert errors == [
        f"serve: feed socket: {shared}: open to other users (mode 755); "
        "put the feed socket in a directory of its own (mode 700)"
    ]
    assert "Traceback" not in out.stderr
