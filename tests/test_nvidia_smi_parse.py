"""The nvidia-smi parser, on the values of real captures (H100, H200 in MIG mode, RTX 2080 SUPER).

The captures hold nvidia-smi's csv with headers and units for a longer field list than ours; the
functions in tests/nvidia_smi_captures.py pick our fields by header name and print them in our exact
``noheader,nounits`` format (see its docstring). Expectations come from the same rows, and are
cross-checked against the capture's own ``nvidia-smi -q`` printout of the same GPU.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.nvidia_smi_parse import (
    APP_FIELDS,
    COMMAND,
    GPU_FIELDS,
    SEPARATOR,
    parse_output,
)
from sovereign_tui.model import Gpu
from sovereign_tui.poller import PollError
from tests.nvidia_smi_captures import (
    CAPTURES,
    PHASES,
    app_rows,
    full_query,
    gpu_rows,
    our_output,
    strip_unit,
)

HOST = "gpu-node-3"
SOURCE = f"nvidia-smi:{HOST}"
CASES = [
    pytest.param(path, phase, id=f"{path.stem.split('__')[1]}-{phase}")
    for path in CAPTURES
    for phase in PHASES
]
NUMBERS = {  # model attribute -> (nvidia-smi field, conversion)
    "memory_total_mib": ("memory.total", float),
    "memory_used_mib": ("memory.used", float),
    "util_gpu_pct": ("utilization.gpu", float),
    "util_memory_pct": ("utilization.memory", float),
    "temperature_c": ("temperature.gpu", float),
    "power_w": ("power.draw", float),
    "power_limit_w": ("power.limit", float),
    "ecc_uncorrected": ("ecc.errors.uncorrected.volatile.total", int),
}
TEXTS = {
    "name": "name",
    "bus_id": "pci.bus_id",
    "mig_mode": "mig.mode.current",
    "driver_version": "driver_version",
}
ATTR_OF = {**{f: a for a, (f, _) in NUMBERS.items()}, **{f: a for a, f in TEXTS.items()}}
UNAVAILABLE = [
    "[N/A]",
    "[Not Supported]",
    "[Requested functionality has been deprecated]",
    "[Unknown Error]",
    "[Insufficient Permissions]",
    "[GPU is lost]",
]


def expected_value(raw: str, convert: type) -> object:
    return None if raw.startswith("[") else convert(strip_unit(raw))


def parse(text: str) -> tuple[Gpu, ...]:
    return parse_output(text, HOST, SOURCE, 1_800_000_000.0)


def test_the_captures_are_all_there() -> None:
    assert {p.name.split("__")[1] for p in CAPTURES} == {
        "nvidia-geforce-rtx-2080-super",
        "nvidia-h100-80gb-hbm3",
        "nvidia-h200-mig",
    }


def test_the_command_asks_for_our_fields_in_one_exec() -> None:
    assert f"--query-gpu={','.join(GPU_FIELDS)} --format=csv,noheader,nounits" in COMMAND
    assert f"--query-compute-apps={','.join(APP_FIELDS)} --format=csv,noheader,nounits" in COMMAND
    assert f"&& echo {SEPARATOR} &&" in COMMAND


@pytest.mark.parametrize(("path", "phase"), CASES)
def test_every_capture_parses_to_its_values(path: Path, phase: str) -> None:
    rows, apps = gpu_rows(path, phase), app_rows(path, phase)
    gpus = parse(our_output(rows, apps))
    assert len(gpus) == len(rows) >= 1
    for gpu, row in zip(gpus, rows, strict=True):
        assert (gpu.host, gpu.source, gpu.stale) == (HOST, SOURCE, False)
        assert gpu.index == int(row["index"])
        assert gpu.uuid == row["uuid"]
        for attr, (fname, convert) in NUMBERS.items():
            assert getattr(gpu, attr) == expected_value(row[fname], convert), attr
        for attr, fname in TEXTS.items():
            assert getattr(gpu, attr) == (None if row[fname].startswith("[") else row[fname]), attr
        mine = sorted(
            (int(a["pid"]), a["process_name"], float(strip_unit(a["used_gpu_memory"])))
            for a in apps
            if a["gpu_uuid"] == gpu.uuid
        )
        assert [(p.pid, p.name, p.used_memory_mib) for p in gpu.processes] == mine


@pytest.mark.parametrize(("path", "phase"), CASES)
def test_parsed_values_agree_with_the_full_query_of_the_same_gpu(path: Path, phase: str) -> None:
    (gpu,) = parse(our_output(gpu_rows(path, phase), app_rows(path, phase)))
    facts = full_query(path, phase)
    assert (gpu.name, gpu.uuid, gpu.bus_id) == (facts["name"], facts["uuid"], facts["bus_id"])
    assert gpu.memory_total_mib == facts["memory_total_mib"]
    assert gpu.mig_mode == facts["mig_mode"]
    assert sorted(p.pid for p in gpu.processes) == facts["compute_pids"]


def test_the_loaded_captures_have_processes_and_the_mig_gpu_reads_as_such() -> None:
    """Guards the two test cases above against vacuous data: the load phases carry processes,
    and the MIG capture's GPU reports MIG on with utilization unavailable."""
    for path in CAPTURES:
        (gpu,) = parse(our_output(gpu_rows(path, "load"), app_rows(path, "load")))
        assert gpu.processes, path.name
        if "mig" in path.name:
            assert (gpu.mig_mode, gpu.util_gpu_pct, gpu.util_memory_pct) == ("Enabled", None, None)
            assert gpu.memory_used_mib
            assert gpu.memory_used_mib > 0


def several_gpus() -> list[dict[str, str]]:
    """Every capture's rows as one host's GPUs. The captures' UUIDs are masked to one value, so
    each row gets a distinct UUID and index here; processes follow their row's new UUID."""
    rows = []
    for path in CAPTURES:
        for phase in PHASES:
            rows.append(dict(gpu_rows(path, phase)[0]))
    for i, row in enumerate(rows):
        row["index"], row["uuid"] = str(i), f"GPU-{i:08d}-0000-0000-0000-000000000000"
    return rows


def test_several_gpus_keep_their_order_and_their_own_processes() -> None:
    rows = several_gpus()
    apps = []
    for row, path in zip(rows[1::2], CAPTURES, strict=True):  # the load rows
        for a in app_rows(path, "load"):
            apps.append({**a, "gpu_uuid": row["uuid"]})
    gpus = parse(our_output(list(reversed(rows)), apps))
    assert [g.index for g in gpus] == list(range(len(rows)))
    assert [g.uuid for g in gpus] == [r["uuid"] for r in rows]
    for gpu in gpus:
        assert sorted(p.pid for p in gpu.processes) == sorted(
            int(a["pid"]) for a in apps if a["gpu_uuid"] == gpu.uuid
        )
    assert sum(len(g.processes) for g in gpus) == len(apps)


@pytest.mark.parametrize("word", UNAVAILABLE)
@pytest.mark.parametrize("field", [f for f in GPU_FIELDS if f not in ("index", "uuid")])
def test_unavailable_values_read_as_none_and_leave_the_rest(word: str, field: str) -> None:
    row = dict(gpu_rows(CAPTURES[1], "load")[0])
    (before,) = parse(our_output([row], []))
    (after,) = parse(our_output([{**row, field: word}], []))
    attr = ATTR_OF[field]
    assert getattr(before, attr) is not None
    assert getattr(after, attr) is None
    rest_before, rest_after = msgspec.structs.asdict(before), msgspec.structs.asdict(after)
    del rest_before[attr], rest_after[attr]
    assert rest_after == rest_before


def test_a_process_without_memory_figure_or_with_a_comma_in_its_name() -> None:
    row = gpu_rows(CAPTURES[1], "load")[0]
    apps = [
        {
            "gpu_uuid": row["uuid"],
            "pid": "4242",
            "process_name": "/opt/a,b/train",
            "used_gpu_memory": "[N/A]",
        },
        {
            "gpu_uuid": "GPU-ffffffff-0000-0000-0000-000000000000",
            "pid": "77",
            "process_name": "x",
            "used_gpu_memory": "1",
        },
    ]
    (gpu,) = parse(our_output([row], apps))
    assert [(p.pid, p.name, p.used_memory_mib) for p in gpu.processes] == [(4242, "/opt/a,b/train", None)]


def test_no_compute_apps_and_no_gpus() -> None:
    row = gpu_rows(CAPTURES[0], "idle")[0]
    (gpu,) = parse(our_output([row], []).rstrip("\n"))
    assert gpu.processes == ()
    assert parse(f"{SEPARATOR}\n") == ()


def malformed_outputs() -> dict[str, str]:
    row = gpu_rows(CAPTURES[1], "load")[0]
    good = our_output([row], app_rows(CAPTURES[1], "load"))
    gpu_line = good.partition("\n")[0]
    return {
        "missing a field": good.replace(gpu_line, gpu_line.rsplit(",", 1)[0], 1),
        "one field too many": good.replace(gpu_line, gpu_line + ", 7", 1),
        "a word for a number": good.replace(f", {strip_unit(row['memory.used'])},", ", lots,", 1),
        "index not a number": good.replace(gpu_line, "x" + gpu_line[1:], 1),
        "no uuid": good.replace(row["uuid"], "[N/A]", 1),
        "no separator": good.replace(f"{SEPARATOR}\n", ""),
        "garbage": "\x00\xff Segmentation fault (core dumped)\n",
        "empty": "",
        "driver gone": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        "bad pid": good.replace(f", {app_rows(CAPTURES[1], 'load')[0]['pid']},", ", pid?,", 1),
        "short app line": f"{gpu_line}\n{SEPARATOR}\n{row['uuid']}, 12\n",
        "a uuid twice": f"{gpu_line}\n{gpu_line}\n{SEPARATOR}\n",
    }


@pytest.mark.parametrize("case", list(malformed_outputs()))
def test_malformed_output_is_one_line_naming_the_host(case: str) -> None:
    text = malformed_outputs()[case]
    with pytest.raises(PollError) as err:
        parse(text)
    message = str(err.value)
    assert message.startswith(f"nvidia-smi: {HOST}: ")
    assert "\n" not in message
    assert len(message) < 300


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789,. []\n-GPUNA/abc=" + SEPARATOR)), max_size=200))
def test_any_output_parses_or_fails_with_a_poll_error(text: str) -> None:
    message = ""
    try:
        gpus = parse(text)
    except PollError as exc:
        message = str(exc)
        gpus = ()
    assert all(isinstance(g, Gpu) for g in gpus)
    if message:
        assert "\n" not in message
        assert message.startswith(f"nvidia-smi: {HOST}: ")
