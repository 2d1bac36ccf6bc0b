"""The GPU benchmark at a tiny size: both labs start in their own processes, the real collectors
read every GPU through the real poller, SSH connections are reused, and the JSON has its keys.
No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import GPUS_PER_HOST, host_name
from bench.gpu_bench import main, missed_floors
from sovereign_tui.lab.dcgm_exporter import layout

SSH_HOSTS = 4
DCGM_ENDPOINTS = 6
KEYS = (
    "ssh_hosts",
    "gpus",
    "ssh_cycle_s",
    "ssh_first_cycle_s",
    "ssh_new_connections_steady",
    "cpu_us_per_ssh_poll",
    "dcgm_endpoints",
    "dcgm_gpus",
    "dcgm_cycle_s",
    "cpu_us_per_dcgm_poll",
)


def test_the_bench_reads_every_gpu_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results" / "gpu.json"
    argv = ["--ssh-hosts", str(SSH_HOSTS), "--dcgm-endpoints", str(DCGM_ENDPOINTS), "--cycles", "1"]
    code = main([*argv, "--out", str(out)])
    record = json.loads(out.read_text())
    assert code == (1 if missed_floors(record) else 0)
    for key in KEYS:
        assert key in record
    assert record["ssh_hosts"] == SSH_HOSTS
    assert record["gpus"] == SSH_HOSTS * GPUS_PER_HOST
    assert record["ssh_connections_first_cycle"] == SSH_HOSTS
    assert record["ssh_new_connections_steady"] == 0
    assert record["dcgm_endpoints"] == DCGM_ENDPOINTS
    rows = layout([(host_name(i), GPUS_PER_HOST) for i in range(DCGM_ENDPOINTS)], 0)
    assert record["dcgm_gpus"] == sum(len(r) for r in rows)
    assert len(record["ssh_cycles_s"]) == len(record["dcgm_cycles_s"]) == 1


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({}, []),
        ({"ssh_cycle_s": 2.5}, ["ssh_cycle_s"]),
        ({"ssh_new_connections_steady": 3}, ["ssh_new_connections_steady"]),
        ({"dcgm_cycle_s": 2.0, "ssh_cycle_s": 9.0}, ["ssh_cycle_s", "dcgm_cycle_s"]),
    ],
)
def test_each_missed_floor_is_named(changes: dict[str, float], named: list[str]) -> None:
    record = {"ssh_cycle_s": 0.5, "ssh_new_connections_steady": 0, "dcgm_cycle_s": 0.5, **changes}
    missed = missed_floors(record)
    assert [line.split()[0] for line in missed] == named
