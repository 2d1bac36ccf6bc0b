"""The SSH benchmark end to end at toy size: two sessions, one cycle; its JSON has every key."""

from __future__ import annotations

import json
from pathlib import Path

from bench import ssh_bench

KEYS = {
    "sessions", "api_requests_per_cycle_one", "api_requests_per_cycle_many", "daemon_rss_mb",
    "login_ms_p50", "login_ms_p95", "keystroke_ms_p50", "keystroke_ms_p95",
}  # fmt: skip


def test_ssh_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "ssh.json"
    status = ssh_bench.main(["--sessions", "2", "--cycles", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result.keys() >= KEYS
    assert result["sessions"] == 2
    assert result["api_requests_per_cycle_one"] > 0
    assert status in (0, 1)
