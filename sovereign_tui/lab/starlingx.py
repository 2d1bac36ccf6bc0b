"""StarlingX services of the lab: sysinv (``platform``), dcmanager and fm (``faultmanagement``).

Each is an aiohttp app on its own free port (sysinv's default 6385 is Ironic's too), validating
``X-Auth-Token`` against the lab Keystone as keystonemiddleware would, with the lab's fault
injection (services ``sysinv``, ``dcmanager``, ``fm``) and errors in the wsme format these
services answer with: ``{"error_message": "<JSON with faultstring, faultcode, debuginfo>"}``.

    services = await start_starlingx(lab)       # after lab.start(); registers the catalog
    services.sim.hosts_by_name["ctl-02"]        # the state behind the APIs (`starlingx_sim`)
    await services.stop()                       # before lab.stop()

sysinv: ``GET /v1/isystems``, ``GET /v1/ihosts`` (paged: ``limit``, ``marker``, ``next``),
``GET|PATCH /v1/ihosts/{uuid or hostname}`` (JSON patch ``/action``: lock, force-lock, unlock,
force-unlock, swact). dcmanager: ``GET /v1.0/subclouds``, ``GET|PATCH /v1.0/subclouds/{name or
id}`` (``management-state``; JSON or form data). fm: ``GET /v1/alarms`` (``include_suppress``,
``expand``, ``q.field/q.op/q.value``, ``limit``/``marker``), ``GET /v1/alarms/summary``,
``GET|DELETE /v1/alarms/{uuid}``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sovereign_tui.lab.httpkit import Handler
from sovereign_tui.lab.keystone import TOKEN, TokenStore
from sovereign_tui.lab.starlingx_apps import DcmanagerApp, FmApp, SysinvApp
from sovereign_tui.lab.starlingx_sim import StarlingxSim, StxTimings

if TYPE_CHECKING:
    from sovereign_tui.lab.server import Lab

_OPEN = frozenset({"/", "/v1", "/v1/", "/v1.0", "/v1.0/"})
"""Version documents answer without a token, as behind keystonemiddleware's exemptions."""
SERVICES = {"platform": "sysinv", "dcmanager": "dcmanager", "faultmanagement": "fm"}
"""Catalog service type -> service name (also the name of its faults on the lab's fault board)."""


def error_body(status: int, message: str) -> bytes:
    inner = orjson.dumps(
        {"faultstring": message, "faultcode": "Client" if status < 500 else "Server", "debuginfo": None}
    ).decode()
    return orjson.dumps({"error_message": inner})


def _authenticated(tokens: TokenStore, identity_url: str, open_paths: frozenset[str]) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in open_paths:
            request[TOKEN] = tokens.require(request, identity_url)
        return await handler(request)

    return mw


# --- starting them ---------------------------------------------------------------------------------


@dataclass
class StarlingxServices:
    """The running StarlingX services of a lab."""

    sim: StarlingxSim
    urls: dict[str, str]
    """Catalog URL per service type: platform (ends in /v1), dcmanager (/v1.0), faultmanagement."""
    runners: list[web.AppRunner] = field(default_factory=list)

    async def stop(self) -> None:
        runners, self.runners = self.runners, []
        for runner in runners:
            await runner.cleanup()


def make_apps(sim: StarlingxSim, lab: Lab, bases: dict[str, str]) -> dict[str, web.Application]:
    """The apps for the service types in `bases` (type -> ``http://host:port``), keyed by type."""
    apps: dict[str, web.Application] = {}
    for service_type, base in bases.items():
        app = web.Application(
            middlewares=[
                lab.faults.middleware(SERVICES[service_type], lab.timeline, error_body),
                _authenticated(lab.tokens, lab.urls["identity"], _OPEN),
            ]
        )
        r = app.router
        if service_type == "platform":
            s = SysinvApp(sim, base)
            r.add_get("/", s.root)
            r.add_get("/v1/isystems", s.isystems)
            r.add_get("/v1/ihosts", s.ihosts)
            r.add_get("/v1/ihosts/{ident}", s.ihost)
            r.add_patch("/v1/ihosts/{ident}", s.patch)
        elif service_type == "dcmanager":
            d = DcmanagerApp(sim, base)
            r.add_get("/", d.root)
            r.add_get("/v1.0/subclouds", d.subclouds)
            r.add_get("/v1.0/subclouds/{ref}", d.subcloud)
            r.add_patch("/v1.0/subclouds/{ref}", d.patch)
        else:
            f = FmApp(sim, base)
            r.add_get("/", f.root)
            r.add_get("/v1/alarms", f.alarms)
            r.add_get("/v1/alarms/summary", f.summary)  # before {uuid}: routes match in order
            r.add_get("/v1/alarms/{uuid}", f.alarm)
            r.add_delete("/v1/alarms/{uuid}", f.delete)
        apps[service_type] = app
    return apps


async def start_starlingx(
    lab: Lab, *, timings: StxTimings | None = None, far_edge: int = 4, distributed: bool = True
) -> StarlingxServices:
    """Serve sysinv, dcmanager and fm for a started `lab`, each on a free port of its bind address,
    and add them to its Keystone catalog (types platform, dcmanager, faultmanagement) and
    `lab.urls`. With `distributed` False the system is a standalone one: no subclouds, and no
    dcmanager in the catalog. Call `stop()` on the result before stopping the lab."""
    if "identity" not in lab.urls:
        raise RuntimeError("start the lab before its StarlingX services")
    sim = StarlingxSim(lab.scenario, lab.timeline, timings, far_edge=far_edge, distributed=distributed)
    types = [t for t in SERVICES if distributed or t != "dcmanager"]
    socks = {t: _listen(lab.bind) for t in types}
    bases = {t: f"http://{lab.bind}:{s.getsockname()[1]}" for t, s in socks.items()}
    suffix = {"platform": "/v1", "dcmanager": "/v1.0", "faultmanagement": ""}
    urls = {t: bases[t] + suffix[t] for t in types}
    services = StarlingxServices(sim, urls)
    try:
        for service_type, app in make_apps(sim, lab, bases).items():
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
            await runner.setup()
            services.runners.append(runner)
            await web.SockSite(runner, socks[service_type]).start()
    except BaseException:
        await services.stop()
        for sock in socks.values():
            sock.close()
        raise
    for service_type, url in urls.items():
        lab.register_endpoint(service_type, SERVICES[service_type], url)
        lab.urls[service_type] = url
    return services


def _listen(bind: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, 0))
    sock.listen(256)
    sock.setblocking(False)
    return sock
