"""The Prometheus GPU source: against a small in-test server answering in the query API's own
shapes (always), and against a real Prometheus scraping the lab's exporters (where installed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from collectors.dcgm import FAMILIES
from collectors.prometheus import PrometheusGpuSource, query_of
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import ConfigError
from sovereign_tui.config_sources import PrometheusSource
from sovereign_tui.lab.dcgm_exporter import DcgmLab, LabGpu, layout, render, sample, start_dcgm_lab
from sovereign_tui.model import Gpu
from sovereign_tui.poller import Poller
from sovereign_tui.promtext import parse
from sovereign_tui.store import Store
from tests.test_dcgm import assert_matches, key_of

PROMETHEUS = shutil.which("prometheus")
MISSING = "Prometheus not installed (apt-get install prometheus)"
HOSTS = [("gpu-p1", 2), ("gpu-p2", 5), ("gpu-p3", 3)]


async def poll_once(source: PrometheusSource, clock: FakeClock) -> tuple[tuple[Gpu, ...], str | None]:
    store = Store(clock)
    poller = Poller(store, clock=clock)
    try:
        poller.set_targets(PrometheusGpuSource(source).targets())
        await poller.run_once()
        (health,) = store.snapshot().sources
        return store.snapshot().gpus, health.last_error
    finally:
        await poller.close()


def go_float(value: float) -> str:
    """A sample value as Prometheus writes it in JSON (Go's shortest 'f' formatting)."""
    return str(int(value)) if value.is_integer() else repr(value)


# --- an in-test server with the API's shapes ------------------------------------------------------


def vector_from_lab(
    rows_by_instance: dict[str, list[LabGpu]], t: float, kubernetes: bool
) -> list[dict[str, Any]]:
    """The instant vector Prometheus holds after scraping these exporters at `t`: the exporter's
    samples, empty labels dropped, ``instance``/``job`` added; under Kubernetes discovery the
    exporter's pod labels renamed ``exported_*`` and the target's own pod labels added."""
    result = []
    for instance, rows in rows_by_instance.items():
        for family, samples in parse(render(rows, t), FAMILIES).items():
            for labels, value in samples:
                metric = {k: v for k, v in labels.items() if v}
                if kubernetes:
                    for name in ("pod", "namespace", "container"):
                        if name in metric:
                            metric[f"exported_{name}"] = metric.pop(name)
                    metric |= {"pod": "nvidia-dcgm-exporter-5rl4f", "namespace": "gpu-operator"}
                metric |= {"__name__": family, "instance": instance, "job": "dcgm"}
                result.append({"metric": metric, "value": [t, go_float(value)]})
    return result


@dataclass
class FakeApi:
    url: str
    queries: list[str]
    auth: list[str | None]


Answer = Callable[[web.Request], web.Response]
StartApi = Callable[[Answer], Awaitable[FakeApi]]


@pytest.fixture
async def api() -> AsyncIterator[StartApi]:
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> FakeApi:
        queries: list[str] = []
        auth: list[str | None] = []

        async def handle(request: web.Request) -> web.Response:
            queries.append(request.query["query"])
            auth.append(request.headers.get("Authorization"))
            return answer(request)

        app = web.Application()
        app.router.add_get("/api/v1/query", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return FakeApi(f"http://127.0.0.1:{port}", queries, auth)

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_the_vector_becomes_the_same_gpus_as_a_direct_scrape(api: StartApi, tmp_path: Path) -> None:
    clock = FakeClock()
    t = clock.time()
    rows = layout(HOSTS, seed=11)
    by_instance = {f"10.0.0.{i + 1}:9400": r for i, r in enumerate(rows)}
    body = {
        "status": "success",
        "data": {"resultType": "vector", "result": vector_from_lab(by_instance, t, True)},
    }
    server = await api(lambda _: web.json_response(body))
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    source = PrometheusSource(
        enabled=True, url=server.url, selector='job="dcgm"', bearer_token_file=str(token)
    )
    gpus, error = await poll_once(source, clock)
    assert error is None
    assert server.queries == [query_of('job="dcgm"')]
    assert server.queries[0].startswith('{__name__=~"DCGM_FI_DEV_GPU_UTIL|')
    assert server.queries[0].endswith(',job="dcgm"}')
    assert server.auth == ["Bearer s3cret"]
    got = {g.key: g for g in gpus}
    expected = [(row, sample(row, t)) for host_rows in rows for row in host_rows]
    assert set(got) == {key_of(row) for row, _ in expected}
    for row, s in expected:
        assert_matches(got[key_of(row)], row, s)  # holders come from the exported_* labels
        assert got[key_of(row)].source == f"prometheus:127.0.0.1:{server.url.rsplit(':', 1)[1]}"


async def test_hosts_come_from_the_configured_labels(api: StartApi) -> None:
    clock = FakeClock()
    rows = layout(HOSTS[:1], seed=2)
    vector = vector_from_lab({"gpu-node-9.lab:9400": rows[0]}, clock.time(), False)
    for item in vector:
        item["metric"].pop("Hostname", None)
        item["metric"].pop("hostname", None)
    server = await api(
        lambda _: web.json_response({"status": "success", "data": {"resultType": "vector", "result": vector}})
    )
    gpus, _ = await poll_once(PrometheusSource(enabled=True, url=server.url), clock)
    assert len(gpus) == len(rows[0])
    assert {g.host for g in gpus} == {"gpu-node-9.lab"}  # instance, without its port
    for item in vector:  # a relabelled node label, per GPU
        item["metric"]["node"] = f"n-{item['metric']['UUID'][4:12]}"
    gpus, _ = await poll_once(
        PrometheusSource(enabled=True, url=server.url, host_labels=("node", "instance")), clock
    )
    assert len(gpus) == len(rows[0])
    assert all(g.host == f"n-{g.uuid[4:12]}" for g in gpus)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"status":"error","errorType":"bad_data",'
            b'"error":"invalid parameter \\"query\\": 1:3: parse error: unexpected"}',
            'query refused (HTTP 400, bad_data: invalid parameter "query": 1:3: parse error: unexpected)',
        ),
        (
            503,
            b'{"status":"error","errorType":"unavailable","error":"Service Unavailable"}',
            "query refused (HTTP 503, unavailable: Service Unavailable)",
        ),
        (502, b"<html><body>Bad Gateway</body></html>", "HTTP 502 from /api/v1/query"),
        (200, b"<html>login</html>", "the answer is not a Prometheus query API response"),
        (
            200,
            b'{"status":"success","data":{"resultType":"matrix","result":[]}}',
            "expected an instant vector, got a matrix",
        ),
    ],
)
async def test_api_errors_are_one_line(api: StartApi, status: int, body: bytes, expected: str) -> None:
    server = await api(lambda _: web.Response(status=status, body=body, content_type="application/json"))
    gpus, error = await poll_once(PrometheusSource(enabled=True, url=server.url), FakeClock())
    assert gpus == ()
    hostport = server.url.removeprefix("http://")
    assert error == f"prometheus {hostport}: {expected}"


async def test_an_unreachable_api_names_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, error = await poll_once(PrometheusSource(enabled=True, url=f"http://127.0.0.1:{port}"), FakeClock())
    assert error == (
        f"prometheus 127.0.0.1:{port}: cannot connect (connection refused); "
        f"is the query API at http://127.0.0.1:{port}/api/v1/query?"
    )


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\.prometheus\.url must be an http\(s\) URL"):
        PrometheusGpuSource(PrometheusSource(enabled=True, url="prometheus:9090x"))
    with pytest.raises(ConfigError, match="timeout_s must be positive and shorter than interval_s"):
        PrometheusGpuSource(PrometheusSource(enabled=True, url="http://p:9090", timeout_s=20.0))
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"bearer_token_file: cannot read {missing}"):
        PrometheusGpuSource(
            PrometheusSource(enabled=True, url="http://p:9090", bearer_token_file=str(missing))
        )
    assert PrometheusGpuSource(PrometheusSource()).targets() == []


# --- a real Prometheus scraping the lab ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RealPrometheus:
    url: str
    lab: DcgmLab
    clock: FakeClock


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[RealPrometheus]:
    if PROMETHEUS is None:
        if os.environ.get("SOVEREIGN_REQUIRE_SERVICES") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    clock = FakeClock()  # the lab's values stay put while Prometheus scrapes them
    lab = await start_dcgm_lab(HOSTS, clock, seed=5)
    targets = ", ".join(f"'{lab.endpoint(name)}'" for name, _ in HOSTS)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        f"scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: [{targets}]\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    want = sum(len(lab.rows(name)) for name, _ in HOSTS)
    try:
        await _wait_for_series(url, want, proc, tmp_path / "prometheus.log")
        yield RealPrometheus(url, lab, clock)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
        await lab.stop()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _wait_for_series(url: str, want: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Until the query API returns every lab row's temperature series (Prometheus up and every
    exporter scraped once), within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60.0
    query = "DCGM_FI_DEV_GPU_TEMP"
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.returncode is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}: {_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/api/v1/query", params={"query": query}) as resp:
                    if resp.status == 200 and len((await resp.json())["data"]["result"]) >= want:
                        return
            if loop.time() > deadline:
                pytest.fail(f"prometheus did not return {want} series within 60s: {_tail(log)}")
            await asyncio.sleep(0.2)  # polling the condition above, not waiting for a guess


@pytest.mark.real_service
async def test_a_real_prometheus_returns_every_lab_gpu(prometheus: RealPrometheus) -> None:
    lab, clock = prometheus.lab, prometheus.clock
    gpus, error = await poll_once(
        PrometheusSource(enabled=True, url=prometheus.url, selector='job="dcgm"'), clock
    )
    assert error is None
    got = {g.key: g for g in gpus}
    t = clock.time()
    expected = [(row, s) for name, _ in HOSTS for row, s in lab.expected(name, t)]
    assert set(got) == {key_of(row) for row, _ in expected}
    for row, s in expected:
        assert_matches(got[key_of(row)], row, s)  # hosts from both Hostname and hostname labels
    assert {g.host for g in gpus} == {name for name, _ in HOSTS}
