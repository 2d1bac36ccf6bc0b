"""Fault injection, per service: added latency, errors, hangs, malformed bodies, early token death.

A `FaultBoard` holds one `FaultSpec` per service name (``keystone``, ``nova``, ``ironic``, ...).
Set it when building the lab or at run time, from Python::

    lab.faults.set("nova", latency_s=0.2, error_rate=0.1)
    lab.faults.set("ironic", timeout_rate=1.0, path="/v1/nodes")   # hang node listings
    lab.faults.set("keystone", token_lifetime_s=5)                  # tokens die after 5 s
    lab.faults.clear("nova")

or over HTTP on the lab's admin endpoint (``PUT /faults/nova`` with the same fields as JSON).

Draws come from a random generator seeded from the lab's seed, so a run is repeatable; a rate
of 1.0 always fires. Latency and hangs wait on the lab's clock, so under a `FakeClock` a test
decides when a hung request would end (a hang outlasts any sane client timeout and ends with 504,
or when the lab stops).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sovereign_tui.clock import Clock
from sovereign_tui.lab.httpkit import REQUEST_ID, ApiError, ErrorBody, Handler, raw_json, request_id
from sovereign_tui.lab.timeline import Timeline


@dataclass(frozen=True)
class FaultSpec:
    latency_s: float = 0.0
    """Added before every matching request is answered."""
    error_rate: float = 0.0
    """Share of matching requests answered with `error_status` (in the service's error format)."""
    error_status: int = 503
    timeout_rate: float = 0.0
    """Share of matching requests that hang for `hang_s`, past any client timeout."""
    hang_s: float = 3600.0
    malformed_rate: float = 0.0
    """Share of matching answers whose JSON body is cut in half (status and headers kept)."""
    path: str = ""
    """Only requests whose path starts with this are affected ("" = all)."""
    token_lifetime_s: float | None = None
    """Keystone only: tokens issued while set stop working after this many seconds, although
    their ``expires_at`` still promises the full lifetime."""

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be between 0 and 1, got {value}")
        if self.latency_s < 0 or self.hang_s < 0:
            raise ValueError("fault latency_s and hang_s must not be negative")
        if not 400 <= self.error_status <= 599:
            raise ValueError(f"fault error_status must be an HTTP error status, got {self.error_status}")

    @property
    def active(self) -> bool:
        return bool(self.latency_s or self.error_rate or self.timeout_rate or self.malformed_rate)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = frozenset(f.name for f in dataclasses.fields(FaultSpec))


class FaultBoard:
    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.clock = clock
        self._specs: dict[str, FaultSpec] = {}
        self._rng = random.Random(seed ^ 0x5EED)
        self._released = asyncio.Event()
        self._waiting = 0
        self._changed = asyncio.Condition()
        self.injected: dict[str, int] = {}
        """How many faults fired, per ``service:kind`` (for tests and the admin endpoint)."""

    def get(self, service: str) -> FaultSpec:
        return self._specs.get(service, FaultSpec())

    def set(self, service: str, spec: FaultSpec | None = None, **changes: Any) -> FaultSpec:
        """Replace `service`'s spec with `spec`, or change the named fields of the current one."""
        unknown = set(changes) - FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}; known: {sorted(FIELDS)}")
        new = dataclasses.replace(spec or self.get(service), **changes)
        self._specs[service] = new
        return new

    def clear(self, service: str | None = None) -> None:
        """Clear one service's faults, or every service's."""
        if service is None:
            self._specs.clear()
        else:
            self._specs.pop(service, None)

    def all(self) -> Mapping[str, FaultSpec]:
        return dict(self._specs)

    def release(self) -> None:
        """End every hang now (the lab calls this when it stops)."""
        self._released.set()

    def _draw(self, rate: float) -> bool:
        return rate >= 1.0 or (rate > 0.0 and self._rng.random() < rate)

    def _count(self, service: str, kind: str) -> None:
        key = f"{service}:{kind}"
        self.injected[key] = self.injected.get(key, 0) + 1

    @property
    def waiting(self) -> int:
        """Requests now held by a latency or hang fault."""
        return self._waiting

    async def wait_waiting(self, count: int = 1) -> None:
        """Return once at least `count` requests are held by a latency or hang fault (tests use
        this before advancing a fake clock)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._waiting >= count)

    async def _notify(self, delta: int) -> None:
        async with self._changed:
            self._waiting += delta
            self._changed.notify_all()

    async def _wait(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep_until(self.clock.monotonic() + seconds))
        released = asyncio.ensure_future(self._released.wait())
        await asyncio.sleep(0)  # let the sleeper register with the clock before anyone is told
        await self._notify(1)
        try:
            await asyncio.wait({sleeper, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            released.cancel()
            self._waiting -= 1

    def middleware(
        self,
        service: str,
        timeline: Timeline,
        error_body: ErrorBody,
        request_id_headers: tuple[str, ...] = ("X-Openstack-Request-Id",),
    ) -> Any:
        """The one middleware of a lab service: runs due simulated events, injects faults, turns
        `ApiError` (and anything unexpected) into the service's error format, adds request ids."""

        @web.middleware
        async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
            timeline.run_due()
            spec = self._specs.get(service)
            hit = spec is not None and spec.active and request.path.startswith(spec.path)
            rid = request_id()
            request[REQUEST_ID] = rid
            ids = dict.fromkeys(request_id_headers, rid)
            if hit and spec is not None:
                if spec.latency_s:
                    self._count(service, "latency")
                    await self._wait(spec.latency_s)
                if self._draw(spec.timeout_rate):
                    self._count(service, "timeout")
                    await self._wait(spec.hang_s)
                    return raw_json(error_body(504, "Gateway Timeout"), 504, ids)
                if self._draw(spec.error_rate):
                    self._count(service, "error")
                    return raw_json(error_body(spec.error_status, "Injected fault"), spec.error_status, ids)
            try:
                response = await handler(request)
            except ApiError as exc:
                body = exc.body if exc.body is not None else error_body(exc.status, exc.message)
                response = raw_json(body, exc.status, exc.headers)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = raw_json(error_body(exc.status, exc.reason), exc.status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lab bug must still answer like a service, not hang up
                response = raw_json(error_body(500, f"Internal error: {type(exc).__name__}: {exc}"), 500)
            response.headers.update(ids)
            if (
                hit
                and spec is not None
                and isinstance(response, web.Response)
                and self._draw(spec.malformed_rate)
            ):
                raw = response.body
                if isinstance(raw, bytes) and raw:
                    self._count(service, "malformed")
                    response.body = raw[: len(raw) // 2]
            return response

        return mw
