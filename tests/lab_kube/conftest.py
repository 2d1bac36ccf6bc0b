"""A lab Kubernetes cluster behind its real HTTP API, and the real kubernetes client pointed at it
through a kubeconfig. The client is synchronous: tests call it off the event loop (`call`), while
the lab runs on the loop and its time moves only when a test advances the `FakeClock`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes import client, config

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.kube_api import KubeApiServer
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_objects import make_nodes

T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call in a thread, so the lab keeps serving on this loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@dataclass
class Lab:
    clock: FakeClock
    cluster: KubeCluster
    server: KubeApiServer
    kubeconfig: Path
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


async def first_line(lab: Lab, path: str, **params: str) -> tuple[int, Any]:
    """A raw GET over HTTP: the status and the first JSON line of the body (a watch's first
    event, or a whole error `Status`)."""
    headers = {"Authorization": f"Bearer {lab.server.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(lab.server.url + path, params=params) as resp,
    ):
        return resp.status, json.loads(await resp.content.readline())


async def start_lab(tmp_path: Path, **kw: Any) -> Lab:
    clock = FakeClock()
    nodes = kw.pop("nodes", 8)
    kw.setdefault("vms", 8)
    cluster = KubeCluster(make_nodes(nodes), seed=kw.pop("seed", 7), clock=clock, **kw)
    server = KubeApiServer(cluster)
    await server.start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return Lab(clock, cluster, server, kubeconfig, api)


async def stop_lab(lab: Lab) -> None:
    lab.api.close()
    await lab.server.stop()


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    running = await start_lab(tmp_path)
    yield running
    await stop_lab(running)
