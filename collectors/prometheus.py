"""GPU telemetry read back from Prometheus (or Thanos Query) instead of from every exporter.

Fleets that already scrape dcgm-exporter into Prometheus answer one instant query for the whole
fleet: ``GET /api/v1/query?query={__name__=~"DCGM_FI_DEV_GPU_UTIL|..."}``, one target, one round
trip, however many GPU hosts there are (DESIGN section 9). The series are the exporter's, with the
labels Prometheus adds (``instance``, ``job``; the exporter's ``pod``/``namespace`` renamed
``exported_*`` under Kubernetes discovery), so they become the same `Gpu` records as the direct
scrape (`collectors.dcgm.gpus_from_samples`).

An exporter that stops answering makes its series stale in Prometheus, and an instant query no
longer returns them: its GPUs leave this source's view rather than showing old values as fresh.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec
from yarl import URL

from collectors.base import Capability
from collectors.dcgm import FAMILIES, MAX_BODY_BYTES, gpus_from_samples, holder_of, label_host
from sovereign_tui.config_sources import ConfigError, PrometheusSource
from sovereign_tui.model import Observation
from sovereign_tui.poller import PollContext, PollError, Target
from sovereign_tui.promtext import Labels, Sample


class _Series(msgspec.Struct):
    metric: dict[str, str]
    value: tuple[float, str]


class _Data(msgspec.Struct, rename="camel"):
    result_type: str
    result: list[_Series]


class _Answer(msgspec.Struct, rename="camel"):
    status: str
    data: _Data | None = None
    error_type: str | None = None
    error: str | None = None


def query_of(selector: str = "") -> str:
    """The one instant query that returns every dcgm family this source reads."""
    names = "|".join(FAMILIES)
    extra = selector.strip().strip(",")
    return f'{{__name__=~"{names}"{"," + extra if extra else ""}}}'


def host_resolver(host_labels: tuple[str, ...]) -> Callable[[Labels], str]:
    """The host of a series: the first of `host_labels` present (``instance`` without its port)."""

    def host_of(labels: Labels) -> str:
        for name in host_labels:
            value = labels.get(name)
            if value:
                return _strip_port(value) if name == "instance" else value
        return label_host(labels) or _strip_port(labels.get("instance", "")) or "unknown"

    return host_of


def holder_resolver(exporter_pods: tuple[str, ...]) -> Callable[[Labels], str | None]:
    """`collectors.dcgm.holder_of`, except that the exporters' own pods hold nothing."""

    def holder(labels: Labels) -> str | None:
        pod = labels.get("exported_pod") or labels.get("pod")
        if pod and any(fnmatch.fnmatchcase(pod, pattern) for pattern in exporter_pods):
            return None
        return holder_of(labels)

    return holder


def _strip_port(instance: str) -> str:
    if instance.startswith("["):  # [v6]:port
        return instance[1 : instance.find("]")] if "]" in instance else instance
    head, sep, tail = instance.rpartition(":")
    return head if sep and tail.isdigit() and ":" not in head else instance


def samples_of(data: _Data) -> dict[str, list[Sample]]:
    """Series of an instant vector grouped by metric name, as the text parser returns them."""
    families: dict[str, list[Sample]] = {name: [] for name in FAMILIES}
    for series in data.result:
        samples = families.get(series.metric.get("__name__", ""))
        if samples is None:
            continue
        try:
            value = float(series.value[1])
        except ValueError:
            value = math.nan
        samples.append((series.metric, value))
    return families


class PrometheusGpuSource:
    name = "prometheus"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, source: PrometheusSource, *, origin: object = "sovereign.toml") -> None:
        where = f"{origin}: sources.prometheus"
        self.source = source
        base = URL(source.url.strip().rstrip("/"))
        if source.enabled and (base.scheme not in ("http", "https") or not base.host or base.port is None):
            raise ConfigError(f"{where}.url must be an http(s) URL such as http://prometheus:9090")
        if not 0 < source.timeout_s < source.interval_s:
            raise ConfigError(f"{where}.timeout_s must be positive and shorter than interval_s")
        if not source.host_labels:
            raise ConfigError(f"{where}.host_labels must name at least one label (e.g. instance)")
        self.url = str(base / "api/v1/query") if base.host else ""
        host = base.host or ""
        self.hostport = f"[{host}]:{base.port}" if ":" in host else f"{host}:{base.port}"
        self.query = query_of(source.selector)
        self.headers = {"Accept": "application/json"}
        if source.enabled and source.bearer_token_file:
            try:
                token = Path(source.bearer_token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{where}.bearer_token_file: cannot read {source.bearer_token_file} ({exc.strerror})"
                ) from None
            self.headers["Authorization"] = f"Bearer {token}"
        self.host_of = host_resolver(source.host_labels)
        self.holder_of = holder_resolver(source.exporter_pods)

    async def aclose(self) -> None:
        return None  # polls use the poller's shared HTTP client: nothing of its own to close

    def targets(self) -> list[Target]:
        if not self.source.enabled:
            return []
        return [
            Target(
                id=f"prometheus:{self.hostport}",
                source=self.name,
                endpoint=self.hostport,
                interval_s=self.source.interval_s,
                poll=self.poll,
                timeout_s=self.source.timeout_s,
                fingerprint=f"{self.url} {self.query} {self.source.host_labels} {self.source.exporter_pods}",
            )
        ]

    async def poll(self, ctx: PollContext) -> Observation:
        data = await self._query(ctx)
        gpus = gpus_from_samples(
            samples_of(data),
            source=f"prometheus:{self.hostport}",
            observed_at=ctx.clock.time(),
            host_of=self.host_of,
            holder_of=self.holder_of,
        )
        return Observation(gpus=gpus)

    async def _query(self, ctx: PollContext) -> _Data:
        what = f"prometheus {self.hostport}"
        try:
            async with ctx.http.get(
                self.url,
                params={"query": self.query},
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=ctx.timeout_s),
            ) as resp:
                body = await resp.content.read(MAX_BODY_BYTES + 1)
                status = resp.status
        except TimeoutError:
            raise PollError(f"{what}: no answer within {ctx.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            reason = (
                "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else exc.os_error
            )
            raise PollError(f"{what}: cannot connect ({reason}); is the query API at {self.url}?") from None
        except aiohttp.ClientError as exc:
            raise PollError(f"{what}: request failed ({type(exc).__name__}: {exc})") from None
        if len(body) > MAX_BODY_BYTES:
            raise PollError(f"{what}: answer larger than {MAX_BODY_BYTES} bytes; narrow it with `selector`")
        try:
            answer = msgspec.json.decode(body, type=_Answer)
        except (msgspec.DecodeError, msgspec.ValidationError):
            if status != 200:
                raise PollError(f"{what}: HTTP {status} from {URL(self.url).path}") from None
            raise PollError(f"{what}: the answer is not a Prometheus query API response") from None
        if answer.status != "success" or answer.data is None:
            detail = f"{answer.error_type or 'error'}: {answer.error or 'no detail'}"
            raise PollError(f"{what}: query refused (HTTP {status}, {_one_line(detail)})")
        if answer.data.result_type != "vector":
            raise PollError(f"{what}: expected an instant vector, got a {answer.data.result_type}")
        return answer.data


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."
