"""Reading the real nvidia-smi captures in tests/fixtures/nvidia-smi (MIT, see the LICENSE there).

Each capture is a series of sections, each headed by the exact command that produced it, taken
idle and under load on a real GPU (RTX 2080 SUPER, H100 80GB HBM3, H200 in MIG mode). They hold
``--query-gpu=<a long field list> --format=csv`` and
``--query-compute-apps=<another list> --format=csv`` (with a header and with units), not our
exact queries. So: `gpu_rows` and `app_rows` pick the values of our fields by header name, and
`our_output` prints them the way our remote command does (``noheader,nounits``: the unit suffix
nvidia-smi adds without ``nounits`` is removed, nothing else changes). The parser is thereby tested
on real values, and expectations are derived from the same rows, never typed in by hand.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from collectors.nvidia_smi_parse import APP_FIELDS, APPS_QUERY, GPU_FIELDS, GPU_QUERY, SEPARATOR

DIR = Path(__file__).parent / "fixtures" / "nvidia-smi"
CAPTURES = sorted(DIR.glob("*.txt"))
PHASES = ("idle", "load")
_RULE = "#" * 80
_UNIT = re.compile(r"^(-?[0-9.]+) (MiB|W|%|MHz|us|ms)$")


@dataclass(frozen=True)
class Section:
    phase: str
    title: str
    command: str
    body: tuple[str, ...]


def sections(path: Path) -> list[Section]:
    lines = path.read_text().splitlines()
    found: list[Section] = []
    i = 0
    while i < len(lines):
        if lines[i] == _RULE and i + 1 < len(lines) and " :: " in lines[i + 1]:
            phase, _, title = lines[i + 1].removeprefix("# ").partition(" :: ")
            command = lines[i + 2].removeprefix("# $ ") if lines[i + 2].startswith("# $ ") else ""
            j = i + 2
            while lines[j] != _RULE:
                j += 1
            k = j + 1
            while k < len(lines) and lines[k] != _RULE:
                k += 1
            found.append(Section(phase, title, command, tuple(lines[j + 1 : k])))
            i = k
        else:
            i += 1
    return found


def section(path: Path, phase: str, command_prefix: str) -> Section:
    matches = [s for s in sections(path) if s.phase == phase and s.command.startswith(command_prefix)]
    assert len(matches) == 1, f"{path.name}: expected one {phase} section for {command_prefix!r}"
    return matches[0]


def _csv_rows(sec: Section) -> list[dict[str, str]]:
    body = [line for line in sec.body if line.strip()]
    header = [re.sub(r" \[[^]]*\]$", "", h.strip()) for h in body[0].split(", ")]
    rows = []
    for line in body[1:]:
        values = line.split(", ")
        assert len(values) == len(header), f"{sec.title}: a row does not match its header"
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def gpu_rows(path: Path, phase: str) -> list[dict[str, str]]:
    """Our GPU fields, as the capture printed them (units included)."""
    return [
        {f: row[f] for f in GPU_FIELDS} for row in _csv_rows(section(path, phase, "nvidia-smi --query-gpu="))
    ]


def app_rows(path: Path, phase: str) -> list[dict[str, str]]:
    """Our compute-apps fields, as the capture printed them."""
    rows = _csv_rows(section(path, phase, "nvidia-smi --query-compute-apps="))
    return [{f: row[f] for f in APP_FIELDS} for row in rows]


def strip_unit(value: str) -> str:
    m = _UNIT.match(value)
    return m.group(1) if m else value


def gpu_csv(rows: list[dict[str, str]]) -> str:
    return "".join(", ".join(strip_unit(r[f]) for f in GPU_FIELDS) + "\n" for r in rows)


def apps_csv(rows: list[dict[str, str]]) -> str:
    return "".join(", ".join(strip_unit(r[f]) for f in APP_FIELDS) + "\n" for r in rows)


def our_output(gpus: list[dict[str, str]], apps: list[dict[str, str]]) -> str:
    """What our combined remote command prints for these rows."""
    return f"{gpu_csv(gpus)}{SEPARATOR}\n{apps_csv(apps)}"


def full_query(path: Path, phase: str) -> dict[str, object]:
    """Facts from the same phase's ``nvidia-smi -q`` (an independent printout of the same GPU):
    name, UUID, bus id, memory total, MIG mode and the pids of compute (type C) processes."""
    body = section(path, phase, "nvidia-smi -q").body
    facts: dict[str, object] = {}
    pids: list[int] = []
    context = ""
    for i, line in enumerate(body):
        key, _, value = (part.strip() for part in line.partition(":"))
        if line.startswith("    ") and not line.startswith("     "):
            context = key
        if key == "Product Name":
            facts["name"] = value
        elif key == "GPU UUID":
            facts["uuid"] = value
        elif key == "Bus Id":
            facts["bus_id"] = value
        elif key == "Total" and context == "FB Memory Usage":
            facts["memory_total_mib"] = float(strip_unit(value))
        elif key == "Current" and context == "MIG Mode":
            facts["mig_mode"] = None if value == "N/A" else value
        elif key == "Process ID" and body[i + 1].strip().endswith(": C"):
            pids.append(int(value))
    facts["compute_pids"] = sorted(pids)
    return facts


def install_fake_nvidia_smi(bin_dir: Path, capture: Path, phase: str) -> None:
    """An ``nvidia-smi`` that answers our two queries with a capture's values (printed as
    ``noheader,nounits``, see tests/nvidia_smi_captures.py) and refuses anything else."""
    (bin_dir / "gpus.csv").write_text(gpu_csv(gpu_rows(capture, phase)))
    (bin_dir / "apps.csv").write_text(apps_csv(app_rows(capture, phase)))
    cat = shutil.which("cat")
    script = bin_dir / "nvidia-smi"
    script.write_text(
        f"""#!/bin/sh
# Replays {capture.name} ({phase}).
case "$*" in
  {shlex.quote(GPU_QUERY.removeprefix("nvidia-smi "))}) exec {cat} {bin_dir / "gpus.csv"} ;;
  {shlex.quote(APPS_QUERY.removeprefix("nvidia-smi "))}) exec {cat} {bin_dir / "apps.csv"} ;;
esac
echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
exit 2
"""
    )
    script.chmod(0o755)
