"""What the lab's services share: JSON responses, errors, time formats, paging and auth checks."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[int, str], bytes]
"""Builds a service's own error body from a status and a message."""

JSON = "application/json"
MV: web.RequestKey[int] = web.RequestKey("mv", int)
"""The request's negotiated microversion minor (set by the service's version middleware)."""
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


class ApiError(Exception):
    """An error answer of a lab service, rendered in that service's error format."""

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.body = body
        """A body that overrides the service's format (keystonemiddleware's 401, in front of any service)."""


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON, headers=headers)


def raw_json(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Malformed request body: not JSON") from None


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


# --- time formats (each service has its own) ---------------------------------------------------


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def iso_z(ts: float) -> str:
    """Nova servers: ``2017-02-14T19:24:42Z``."""
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_us(ts: float) -> str:
    """Nova services, migrations, launched_at: ``2016-06-23T14:42:02.000000``."""
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%f")


def iso_us_z(ts: float) -> str:
    """Keystone tokens: ``2015-08-25T15:55:41.000000Z``."""
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_tz(ts: float | None) -> str | None:
    """Ironic: ``2016-08-18T22:28:49.946416+00:00``."""
    return None if ts is None else _utc(ts).isoformat()


# --- paging --------------------------------------------------------------------------------------


def parse_limit(query: Mapping[str, str], max_limit: int) -> int:
    """The page size asked for, capped at the service's maximum (as Nova and Ironic do)."""
    raw = query.get("limit")
    if raw is None:
        return max_limit
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(
            400, f"Invalid input for query parameters limit. Value: {raw}. Not a valid integer"
        ) from None
    if limit < 0:
        raise ApiError(400, f"Invalid input for query parameters limit. Value: {raw}. Must be >= 0")
    return min(limit, max_limit)


def page_after(
    ids: list[str], index: Mapping[str, int], marker: str | None, limit: int
) -> tuple[int, int] | None:
    """Slice bounds of the page after `marker` in `ids` (None when the marker is unknown)."""
    start = 0
    if marker is not None:
        pos = index.get(marker)
        if pos is None:
            return None
        start = pos + 1
    return start, min(start + limit, len(ids))


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on", "t", "y")


def parse_minor(raw: str, major: int) -> int | None:
    """The minor of a ``major.minor`` version string, None when it is not one."""
    head, _, tail = raw.strip().partition(".")
    if not head.isdigit() or not tail.isdigit() or int(head) != major:
        return None
    return int(tail)
