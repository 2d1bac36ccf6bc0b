"""The poller benchmark at a tiny size: it runs end to end, both pollers parse every endpoint's
samples, and the JSON it writes has every key. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import GPUS_PER_HOST, SAMPLES_PER_ENDPOINT, WANTED, dcgm_payload, host_name
from bench.poller_bench import RECORD_KEYS, main, run
from sovereign_tui.promtext import parse

N = 20


def test_the_payload_is_a_ten_kilobyte_dcgm_answer_for_eight_gpus() -> None:
    body = dcgm_payload(3)
    assert 8_000 <= len(body) <= 14_000
    families = parse(body.decode(), WANTED)
    assert sum(len(s) for s in families.values()) == SAMPLES_PER_ENDPOINT
    for samples in families.values():
        assert {labels["Hostname"] for labels, _ in samples} == {host_name(3)}
        assert sorted(int(labels["gpu"]) for labels, _ in samples) == list(range(GPUS_PER_HOST))


def test_both_pollers_parse_every_endpoint() -> None:
    result = run(n=N, latency_ms=5.0, cycles=1)
    for side in (result.poller, result.threadpool):
        assert side.failures == []
        assert len(side.samples) == N
        assert set(side.samples.values()) == {SAMPLES_PER_ENDPOINT}
        assert side.gpus == N * GPUS_PER_HOST
        assert len(side.cycle_s) == len(side.cpu_s) == 1
    record = result.record
    assert tuple(record) == RECORD_KEYS
    assert record["n"] == N
    assert record["lower_bound_s"] == pytest.approx(0.005)


def test_the_command_writes_its_json_and_names_the_failed_floors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "poller.json"
    # Floors no run can meet (a ratio of at most 0, a speedup of a billion): both fail.
    argv = ["--n", str(N), "--latency-ms", "5", "--cycles", "1", "--out", str(out)]
    code = main([*argv, "--max-ratio", "0", "--min-speedup", "1e9"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ratio_to_bound" in err
    assert "speedup_vs_threadpool" in err
    record = json.loads(out.read_text())
    assert tuple(record) == RECORD_KEYS
    assert record["n"] == N
    assert record["concurrency"] == 256
    assert record["latency_ms"] == 5.0
    for key in ("cycle_s", "lower_bound_s", "ratio_to_bound", "threadpool_cycle_s"):
        assert isinstance(record[key], float)
        assert record[key] > 0
    assert isinstance(record["speedup_vs_threadpool"], float)
    assert record["speedup_vs_threadpool"] > 0
    assert isinstance(record["cpu_us_per_poll"], float)
    assert record["cpu_us_per_poll"] > 0


def test_bad_arguments_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--latency-ms", "0"])
    assert caught.value.code == 2
    assert "--latency-ms must be positive" in capsys.readouterr().err
