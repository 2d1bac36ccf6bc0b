"""Fixtures for the StarlingX services of the lab: a started lab on a fake clock with sysinv,
dcmanager and fm in its catalog, a JSON client and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.server import Lab
from sovereign_tui.lab.starlingx import StarlingxServices, start_starlingx
from sovereign_tui.lab.starlingx_sim import StxTimings

TIMINGS = StxTimings(lock_s=15.0, unlock_s=90.0, sync_s=30.0)


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any

    @property
    def fault(self) -> str:
        """The faultstring of a wsme error body."""
        return str(orjson.loads(self.body["error_message"])["faultstring"])


class Stx:
    """A thin client for the lab's StarlingX services (JSON in, parsed JSON out)."""

    def __init__(self, http: aiohttp.ClientSession, lab: Lab, services: StarlingxServices) -> None:
        self.http = http
        self.lab = lab
        self.services = services
        self.sim = services.sim

    async def call(self, method: str, url: str, token: str | None, body: Any = None, **kw: Any) -> Reply:
        headers = {"X-Auth-Token": token} if token else {}
        if body is not None:
            kw["data"] = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, url, headers=headers, **kw) as r:
            raw = await r.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            return Reply(r.status, r.headers, parsed)

    async def sysinv(self, method: str, path: str, token: str | None, body: Any = None) -> Reply:
        return await self.call(method, self.services.urls["platform"] + path, token, body)

    async def dcmanager(
        self, method: str, path: str, token: str | None, body: Any = None, **kw: Any
    ) -> Reply:
        return await self.call(method, self.services.urls["dcmanager"] + path, token, body, **kw)

    async def fm(self, method: str, path: str, token: str | None, body: Any = None) -> Reply:
        return await self.call(method, self.services.urls["faultmanagement"] + path, token, body)

    async def token(self, user: str = "admin") -> str:
        c = self.lab.credentials
        password, project = (
            (c.password, c.project_name) if user == "admin" else (c.demo_password, c.demo_project_name)
        )
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        reply = await self.call("POST", f"{self.lab.urls['identity']}/auth/tokens", None, body)
        assert reply.status == 201, reply.body
        return str(reply.headers["X-Subject-Token"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stx(clock: FakeClock) -> AsyncIterator[Stx]:
    lab = Lab(hosts=24, seed=7, clock=clock)
    await lab.start()
    services = await start_starlingx(lab, timings=TIMINGS)
    try:
        async with aiohttp.ClientSession() as http:
            yield Stx(http, lab, services)
    finally:
        await services.stop()
        await lab.stop()


@pytest.fixture
async def admin(stx: Stx) -> str:
    return await stx.token()


@pytest.fixture
async def demo(stx: Stx) -> str:
    return await stx.token("demo")
