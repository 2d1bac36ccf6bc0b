"""The command line: help everywhere, one-line errors with exit status 2, and a real export run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from sovereign_tui.cli import build_parser, main
from sovereign_tui.export import checked_in_schema

SUBCOMMANDS = ["tui", "demo", "export", "lab"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sovereign_tui", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    listed = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(SUBCOMMANDS) <= set(listed)
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert f"usage: sovereign-tui {cmd}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["export", "--format", "xml"], "invalid choice: 'xml'"),
        (["demo", "--hosts", "0"], "must be at least 1"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_config_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "export"]) == 2
    err = capsys.readouterr().err
    assert err == f"{missing}: no such file (check --config or SOVEREIGN_TUI_CONFIG)\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[poller\n", "not valid TOML"),
        ("[poller]\nconcurrency = 'many'\n", "Expected `int`, got `str` - at `$.poller.concurrency`"),
        ("[sources.nvml]\nintervl_s = 3\n", "unknown field `intervl_s`"),
        ("[sources.host]\ninterval_s = -1\n", "sources.host.interval_s must be positive"),
    ],
)
def test_invalid_config_is_one_line_naming_file_and_problem(
    tmp_path: Path, content: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "sovereign.toml"
    cfg.write_text(content)
    assert main(["export", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{cfg}: ") and expected in err
    assert err.count("\n") == 1


def test_unreadable_and_directory_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--config", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root reads anything
        cfg = tmp_path / "locked.toml"
        cfg.write_text("")
        cfg.chmod(0)
        assert main(["export", "--config", str(cfg)]) == 2
        assert "not readable" in capsys.readouterr().err


def test_export_schema_prints_the_checked_in_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == checked_in_schema()


def test_export_runs_end_to_end_with_data_on_stdout_only(tmp_path: Path) -> None:
    """A real run: the host collector polls this machine; NVML, on a machine without an NVIDIA
    driver, is reported down on stderr while the JSON on stdout still validates."""
    cfg = tmp_path / "sovereign.toml"
    cfg.write_text(
        "[sources.host]\nname = 'mgmt-01'\n"
        "[sources.nvml]\nhost = 'mgmt-01'\nlibrary = '/nonexistent/libnvidia-ml.so.1'\n"
    )
    out = run_cli("export", "--config", str(cfg), "--timeout", "20", env={"XDG_STATE_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    jsonschema.validate(doc, checked_in_schema())
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert hosts["mgmt-01"]["machine"]["memory_total_bytes"] > 0
    health = {s["target"]: s for s in doc["sources"]}
    assert health["host:mgmt-01"]["up"] is True
    assert health["nvml:mgmt-01"]["up"] is False
    assert "export: source nvml:mgmt-01 is down: NVML" in out.stderr
    assert "Traceback" not in out.stderr
