"""The remote command for `nvidia_smi` and the parser of its output.

Both queries run in one SSH exec, joined by ``&&`` so that the exit status is non-zero when either
fails and a failed GPU query does not run the second one::

    nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits && echo <SEPARATOR>
      && nvidia-smi --query-compute-apps=<APP_FIELDS> --format=csv,noheader,nounits

nvidia-smi writes one line per GPU (``, `` between fields), numbers without units (MiB, %, C, W),
and a bracketed word for a value it cannot give: ``[N/A]``, ``[Not Supported]``,
``[Requested functionality has been deprecated]``, ``[Unknown Error]``, ``[GPU is lost]``...
Those become None. Anything else that does not fit (a wrong field count, a word where a number
belongs) is malformed output: a `PollError` naming the host, never a half-read GPU.

On a GPU in MIG mode the compute-apps query reports processes under the parent GPU's UUID (see
the H200 capture), so processes attach to GPUs by UUID. A process under a UUID the GPU query did
not list (a GPU that vanished between the two queries) is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from sovereign_tui.model import Gpu, GpuProcess
from sovereign_tui.poller import PollError

GPU_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "utilization.memory",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "ecc.errors.uncorrected.volatile.total",
    "mig.mode.current",
    "driver_version",
)
APP_FIELDS: tuple[str, ...] = ("gpu_uuid", "pid", "process_name", "used_gpu_memory")
FORMAT = "--format=csv,noheader,nounits"
SEPARATOR = "::compute-apps::"
"""Printed between the two queries; no CSV line can be it. Plain so that every login shell (sh,
bash, zsh, csh, fish) echoes it unchanged: zsh would expand a word that starts with ``=``."""

GPU_QUERY = f"nvidia-smi --query-gpu={','.join(GPU_FIELDS)} {FORMAT}"
APPS_QUERY = f"nvidia-smi --query-compute-apps={','.join(APP_FIELDS)} {FORMAT}"
COMMAND = f"{GPU_QUERY} && echo {SEPARATOR} && {APPS_QUERY}"
"""The exact command sent to every host."""

MAX_OUTPUT_BYTES = 1 << 20
"""A host that prints more than this is not running nvidia-smi: the output is refused unread."""

_T = TypeVar("_T")


def _missing(value: str) -> bool:
    """nvidia-smi's words for "no value": bracketed (``[N/A]``, ``[Not Supported]``, ...) or a
    bare ``N/A``."""
    return (value.startswith("[") and value.endswith("]")) or value in ("N/A", "")


def _clip(text: str, limit: int = 60) -> str:
    """A fragment of untrusted output, fit for one line of an error message."""
    flat = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _Line:
    """The fields of one CSV line, with typed accessors that name the field on failure."""

    __slots__ = ("fields", "host", "what")

    def __init__(self, host: str, what: str, fields: list[str]) -> None:
        self.host = host
        self.what = what
        self.fields = fields

    def fail(self, field: str, value: str) -> PollError:
        return PollError(
            f"nvidia-smi: {self.host}: malformed {self.what}: {field} is {_clip(value)!r} "
            "(expected a number or [N/A]; check nvidia-smi on that host)"
        )

    def optional(self, i: int, name: str, convert: Callable[[str], _T]) -> _T | None:
        value = self.fields[i]
        if _missing(value):
            return None
        try:
            return convert(value)
        except ValueError:
            raise self.fail(name, value) from None

    def text(self, i: int) -> str | None:
        value = self.fields[i]
        return None if _missing(value) else value


def _split(line: str) -> list[str]:
    return [f.strip() for f in line.split(",")]


def parse_gpu_lines(text: str, host: str, source: str, observed_at: float) -> list[Gpu]:
    """The ``--query-gpu`` section: one `Gpu` per line, processes not yet attached."""
    gpus: list[Gpu] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        fields = _split(raw)
        if len(fields) != len(GPU_FIELDS):
            raise PollError(
                f"nvidia-smi: {host}: malformed GPU line ({len(fields)} fields, expected "
                f"{len(GPU_FIELDS)}): {_clip(raw)!r} (check nvidia-smi on that host)"
            )
        line = _Line(host, "GPU line", fields)
        index = line.optional(0, "index", int)
        uuid = line.text(1)
        if index is None or uuid is None:
            raise PollError(
                f"nvidia-smi: {host}: malformed GPU line without index or UUID: {_clip(raw)!r} "
                "(check nvidia-smi on that host)"
            )
        gpus.append(
            Gpu(
                source=source,
                observed_at=observed_at,
                host=host,
                index=index,
                uuid=uuid,
                name=line.text(2),
                bus_id=line.text(3),
                memory_total_mib=line.optional(4, "memory.total", float),
                memory_used_mib=line.optional(5, "memory.used", float),
                util_gpu_pct=line.optional(6, "utilization.gpu", float),
                util_memory_pct=line.optional(7, "utilization.memory", float),
                temperature_c=line.optional(8, "temperature.gpu", float),
                power_w=line.optional(9, "power.draw", float),
                power_limit_w=line.optional(10, "power.limit", float),
                ecc_uncorrected=line.optional(11, "ecc.errors.uncorrected.volatile.total", int),
                mig_mode=line.text(12),
                driver_version=line.text(13),
            )
        )
    return gpus


def parse_app_lines(text: str, host: str) -> dict[str, list[GpuProcess]]:
    """The ``--query-compute-apps`` section: processes keyed by their GPU's UUID.

    The process name is the one field that may hold a comma (it is a path), so the line is split
    from both ends: two fields from the left, one from the right.
    """
    by_uuid: dict[str, list[GpuProcess]] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        left = raw.split(",", 2)
        if len(left) != 3 or "," not in left[2]:
            raise PollError(
                f"nvidia-smi: {host}: malformed compute-apps line (expected {len(APP_FIELDS)} fields): "
                f"{_clip(raw)!r} (check nvidia-smi on that host)"
            )
        name, _, memory = left[2].rpartition(",")
        line = _Line(
            host, "compute-apps line", [left[0].strip(), left[1].strip(), name.strip(), memory.strip()]
        )
        uuid = line.text(0)
        pid = line.optional(1, "pid", int)
        if uuid is None or pid is None:
            raise PollError(
                f"nvidia-smi: {host}: malformed compute-apps line without GPU UUID or pid: "
                f"{_clip(raw)!r} (check nvidia-smi on that host)"
            )
        process = GpuProcess(
            pid=pid, name=line.text(2), used_memory_mib=line.optional(3, "used_gpu_memory", float)
        )
        by_uuid.setdefault(uuid, []).append(process)
    return by_uuid


def parse_output(text: str, host: str, source: str, observed_at: float) -> tuple[Gpu, ...]:
    """The whole output of `COMMAND`: GPUs with their processes attached, ordered by index."""
    text = text.replace("\r\n", "\n")
    gpu_text, sep, apps_text = text.partition(f"\n{SEPARATOR}\n")
    if not sep:
        if text.rstrip("\n").endswith(SEPARATOR):  # no compute apps and no trailing newline
            gpu_text, apps_text = text.rstrip("\n")[: -len(SEPARATOR)], ""
        elif text.startswith(f"{SEPARATOR}\n"):  # no GPU lines at all
            gpu_text, apps_text = "", text[len(SEPARATOR) + 1 :]
        else:
            first = text.strip().splitlines()[0] if text.strip() else "nothing"
            raise PollError(
                f"nvidia-smi: {host}: unexpected output {_clip(first)!r} "
                "(the host did not run nvidia-smi's queries: check that nvidia-smi works there)"
            )
    gpus = parse_gpu_lines(gpu_text, host, source, observed_at)
    processes = parse_app_lines(apps_text, host)
    seen: set[str] = set()
    attached: list[Gpu] = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.uuid in seen:
            raise PollError(
                f"nvidia-smi: {host}: two GPUs report UUID {gpu.uuid} (check nvidia-smi -L there)"
            )
        seen.add(gpu.uuid)
        procs = processes.get(gpu.uuid)
        if procs:
            procs.sort(key=lambda p: p.pid)
            gpu = msgspec.structs.replace(gpu, processes=tuple(procs))
        attached.append(gpu)
    return tuple(attached)
