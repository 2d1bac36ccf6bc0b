"""Fixtures for the lab's tests: a started lab on a fake clock, an HTTP client and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.lab.server import Lab

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "api-samples"


def sample(relpath: str) -> Any:
    return orjson.loads((SAMPLES / relpath).read_bytes())


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any
    raw: bytes


class Api:
    """A thin JSON client for the lab: JSON in, (status, headers, parsed JSON) out."""

    def __init__(self, http: aiohttp.ClientSession, lab: Lab) -> None:
        self.http = http
        self.lab = lab

    async def call(
        self, method: str, url: str, token: str | None = None, body: Any = None, **headers: str
    ) -> Reply:
        h = dict(headers)
        if token is not None:
            h["X-Auth-Token"] = token
        data = orjson.dumps(body) if body is not None else None
        if data is not None:
            h["Content-Type"] = "application/json"
        async with self.http.request(method, url, data=data, headers=h) as r:
            raw = await r.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            return Reply(r.status, r.headers, parsed, raw)

    async def token(
        self, user: str = "admin", password: str | None = None, project: str | None = None
    ) -> str:
        creds = self.lab.credentials
        if user == "admin":
            password, project = password or creds.password, project or creds.project_name
        else:
            password, project = password or creds.demo_password, project or creds.demo_project_name
        reply = await self.call(
            "POST", f"{self.lab.urls['identity']}/auth/tokens", body=password_auth(user, password, project)
        )
        assert reply.status == 201, reply.body
        return str(reply.headers["X-Subject-Token"])

    async def nova(
        self, method: str, path: str, token: str, mv: str | None = "2.100", body: Any = None
    ) -> Reply:
        headers = {"OpenStack-API-Version": f"compute {mv}"} if mv else {}
        return await self.call(method, self.lab.urls["compute"] + path, token, body, **headers)

    async def ironic(
        self, method: str, path: str, token: str, mv: str | None = "latest", body: Any = None
    ) -> Reply:
        headers = {"X-OpenStack-Ironic-API-Version": mv} if mv else {}
        return await self.call(method, self.lab.urls["baremetal"] + path, token, body, **headers)


def password_auth(user: str, password: str, project: str | None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def lab(clock: FakeClock) -> AsyncIterator[Lab]:
    lab = Lab(hosts=24, seed=7, clock=clock)
    await lab.start()
    yield lab
    await lab.stop()


@pytest.fixture
async def api(lab: Lab) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, lab)


@pytest.fixture
async def admin(api: Api) -> str:
    """A project-scoped admin token."""
    return await api.token()


@pytest.fixture
async def demo(api: Api) -> str:
    """A member token of one tenant project."""
    return await api.token("demo")
