"""GPU telemetry from dcgm-exporter: one ``GET /metrics`` per GPU host through the shared client.

Each exporter is its own poll target (``dcgm:<host:port>``, its endpoint the per-host limit's key),
so a fleet of thousands fans out under the poller's limits and one dead exporter marks only its
own host's GPUs stale. The text is read by the focused parser (`sovereign_tui.promtext`), one per
exporter, which looks only at the families below and remembers each exporter's series from the
last scrape (~0.06 ms for an 8-GPU node's ~37 KB page, where a generic parser takes milliseconds).

Rows are keyed by host, UUID and MIG GPU instance: dcgm-exporter prints a MIG GPU as one row per
GPU instance (the parent's UUID plus ``GPU_I_PROFILE``/``GPU_I_ID``), and those rows have no
``DCGM_FI_DEV_GPU_UTIL``, so their utilization comes from ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``.
`gpus_from_samples` is shared with the Prometheus source, which reads the same series.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import aiohttp
from yarl import URL

from collectors.base import Capability
from sovereign_tui.config_sources import DcgmSource, Endpoint
from sovereign_tui.config_sources import validate_dcgm as validate
from sovereign_tui.model import Gpu, Observation
from sovereign_tui.poller import PollContext, PollError, Target
from sovereign_tui.promtext import Labels, Parser, PromTextError, Sample

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
REMAPPED_UNCORRECTABLE = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FAMILIES: tuple[str, ...] = (
    GPU_UTIL,
    FB_USED,
    FB_FREE,
    GPU_TEMP,
    POWER_USAGE,
    XID_ERRORS,
    REMAPPED_UNCORRECTABLE,
    GR_ENGINE_ACTIVE,
)
DEFAULT_PORT = 9400
MAX_BODY_BYTES = 16 * 1024 * 1024
"""An exporter's page is tens of kilobytes; anything this large is not one."""
_BLANK = 2147483632.0
"""DCGM's smallest "blank" sentinel (DCGM_INT32_BLANK); values at or above it mean no value."""


# --- samples -> Gpu records -------------------------------------------------------------------


def _number(value: float) -> float | None:
    return None if math.isnan(value) or abs(value) >= _BLANK else value


def _int(value: float) -> int | None:
    number = _number(value)
    return None if number is None or math.isinf(number) else int(number)


def label_host(labels: Labels) -> str | None:
    """The exporter's own host label: ``Hostname`` (3.x) or ``hostname`` (newer builds)."""
    return labels.get("Hostname") or labels.get("hostname") or None


def holder_of(labels: Labels) -> str | None:
    """``pod:<namespace>/<pod>`` when dcgm maps the GPU to a pod. Behind Prometheus with
    Kubernetes discovery the exporter's own labels arrive renamed ``exported_*``."""
    pod = labels.get("exported_pod") or labels.get("pod")
    if not pod:
        return None
    namespace = labels.get("exported_namespace") or labels.get("namespace")
    return f"pod:{namespace}/{pod}" if namespace else f"pod:{pod}"


class _Row:
    """One GPU (or MIG GPU instance) being assembled from the samples of several families."""

    __slots__ = (
        "bus_id",
        "driver",
        "fields",
        "holders",
        "host",
        "index",
        "mig_instance",
        "mig_profile",
        "name",
        "uuid",
    )

    def __init__(self, labels: Labels, host: str, uuid: str, gi: str) -> None:
        gpu = labels.get("gpu", "")
        self.host = host
        self.uuid = uuid
        self.index = int(gpu) if gpu.isdigit() else -1
        self.name = labels.get("modelName") or None
        self.bus_id = labels.get("pci_bus_id") or None
        self.driver = labels.get("DCGM_FI_DRIVER_VERSION") or None
        self.mig_instance = int(gi) if gi.isdigit() else None
        self.mig_profile = (labels.get("GPU_I_PROFILE") or None) if gi else None
        self.fields: dict[str, float] = {}
        self.holders: list[str] = []

    def gpu(self, source: str, observed_at: float) -> Gpu:
        f = self.fields
        used = _number(f[FB_USED]) if FB_USED in f else None
        free = _number(f[FB_FREE]) if FB_FREE in f else None
        util = _number(f[GPU_UTIL]) if GPU_UTIL in f else None
        if util is None and GR_ENGINE_ACTIVE in f:
            ratio = _number(f[GR_ENGINE_ACTIVE])
            util = None if ratio is None else ratio * 100.0
        return Gpu(
            source=source,
            observed_at=observed_at,
            host=self.host,
            index=self.index,
            uuid=self.uuid,
            name=self.name,
            bus_id=self.bus_id,
            memory_total_mib=None if used is None or free is None else used + free,
            memory_used_mib=used,
            util_gpu_pct=util,
            temperature_c=_number(f[GPU_TEMP]) if GPU_TEMP in f else None,
            power_w=_number(f[POWER_USAGE]) if POWER_USAGE in f else None,
            mig_mode="Enabled" if self.mig_instance is not None else None,
            xid_last=(_int(f[XID_ERRORS]) or None) if XID_ERRORS in f else None,  # 0 until an XID is seen
            driver_version=self.driver,
            holder=", ".join(self.holders) or None,
            mig_profile=self.mig_profile,
            mig_instance=self.mig_instance,
            remapped_rows_uncorrectable=_int(f[REMAPPED_UNCORRECTABLE])
            if REMAPPED_UNCORRECTABLE in f
            else None,
        )


def gpus_from_samples(
    families: Mapping[str, Sequence[Sample]],
    *,
    source: str,
    observed_at: float,
    host_of: Callable[[Labels], str],
    holder_of: Callable[[Labels], str | None] = holder_of,
) -> tuple[Gpu, ...]:
    """One `Gpu` per GPU (or MIG GPU instance) found in the dcgm families' samples.

    Samples without a UUID label are not GPU series and are ignored. A GPU shared by several
    pods (time-slicing) is printed once per pod: its holder lists them all.
    """
    rows: dict[tuple[str, str, str], _Row] = {}
    by_labels: dict[int, _Row] = {}  # the parser shares one label mapping per distinct label set
    for family in FAMILIES:
        for labels, value in families.get(family, ()):
            row = by_labels.get(id(labels))
            if row is None:
                uuid = labels.get("UUID") or labels.get("uuid")
                if not uuid:
                    continue
                host = host_of(labels)
                gi = labels.get("GPU_I_ID") or ""
                key = (host, uuid, gi)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = _Row(labels, host, uuid, gi)
                by_labels[id(labels)] = row
                holder = holder_of(labels)
                if holder and holder not in row.holders:
                    row.holders.append(holder)
            row.fields[family] = value
    gpus = [row.gpu(source, observed_at) for row in rows.values()]
    gpus.sort(key=lambda g: (g.host, g.index, -1 if g.mig_instance is None else g.mig_instance))
    return tuple(gpus)


# --- the collector ----------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def fetch_text(ctx: PollContext, url: str, what: str, headers: Mapping[str, str] | None = None) -> str:
    """GET `url` through the shared client; any failure is one `PollError` line naming `what`."""
    try:
        async with ctx.http.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=ctx.timeout_s)
        ) as resp:
            if resp.status != 200:
                reason = f" {resp.reason}" if resp.reason else ""
                raise PollError(f"{what}: HTTP {resp.status}{reason} from {URL(url).path}")
            if (resp.content_length or 0) > MAX_BODY_BYTES:
                raise PollError(f"{what}: answer of {resp.content_length} bytes is too large")
            body = await resp.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise PollError(f"{what}: answer larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        raise PollError(f"{what}: no answer within {ctx.timeout_s:g}s") from None
    except aiohttp.ClientConnectionError as exc:
        raise PollError(f"{what}: cannot connect ({_short(exc)}); is it running and reachable?") from None
    except aiohttp.ClientPayloadError as exc:
        raise PollError(f"{what}: answer cut short ({_short(exc)})") from None
    return body.decode("utf-8", "replace")


class DcgmCollector:
    name = "dcgm"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, source: DcgmSource, *, origin: object = "sovereign.toml") -> None:
        self.source = source
        self.endpoints = validate(source, origin)
        # One parser per exporter: it remembers the series of the last scrape, so a scrape costs
        # a look-up and a float conversion per sample (~30 KB kept per 8-GPU exporter).
        self._parsers = {ep.hostport: Parser(FAMILIES) for ep in self.endpoints}

    def targets(self) -> list[Target]:
        if not self.source.enabled:
            return []
        return [
            Target(
                id=f"dcgm:{ep.hostport}",
                source=self.name,
                endpoint=ep.hostport,
                interval_s=self.source.interval_s,
                poll=functools.partial(self.poll, ep),
                timeout_s=self.source.timeout_s,
                fingerprint=f"{ep.url} {ep.host}",
            )
            for ep in self.endpoints
        ]

    async def poll(self, ep: Endpoint, ctx: PollContext) -> Observation:
        what = f"dcgm-exporter {ep.hostport}"
        text = await fetch_text(ctx, ep.url, what)
        try:
            families = self._parsers[ep.hostport].parse(text)
        except PromTextError as exc:
            raise PollError(f"{what}: malformed metrics text ({exc})") from None
        fallback = ep.host or ep.hostport.rsplit(":", 1)[0].strip("[]")

        def host_of(labels: Labels) -> str:
            return ep.host or label_host(labels) or fallback

        gpus = gpus_from_samples(
            families, source=f"dcgm:{ep.hostport}", observed_at=ctx.clock.time(), host_of=host_of
        )
        return Observation(gpus=gpus)

    async def aclose(self) -> None:
        return None
