"""The lab's own control endpoint (not an OpenStack API): faults and behaviour at run time.

GET    /                               urls, faults, injected-fault counts, scenario summary
GET    /faults                         every service's fault spec
GET    /stats                          requests served per OpenStack service since the start
PUT    /faults/{service}               change fields of a service's spec (JSON, FaultSpec fields)
DELETE /faults[/{service}]             clear one service's faults, or all
POST   /tokens/expire                  every issued token stops working now
PUT    /behaviour                      {"migration_failure_rate": f, "provision_failure_rate": f}
PUT    /nova/hosts/{host}/alive        {"alive": false} makes a compute service stop reporting
POST   /nova/servers/{id}/fail-next    the server's next migration fails
POST   /ironic/nodes/{ident}/fail-next the node's next provisioning action fails
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sovereign_tui.lab.httpkit import ApiError, Handler, json_response, raw_json, read_json

if TYPE_CHECKING:
    from sovereign_tui.lab.server import Lab


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message, "status": status})


def make_app(lab: Lab) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return json_response(
            {
                "urls": lab.urls,
                "faults": _faults(lab),
                "injected": lab.faults.injected,
                "scenario": lab.summary(),
            }
        )

    async def faults(request: web.Request) -> web.Response:
        return json_response(_faults(lab))

    async def stats(request: web.Request) -> web.Response:
        return json_response({"requests": dict(lab.requests)})

    async def set_faults(request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object of FaultSpec fields")
        try:
            spec = lab.faults.set(request.match_info["service"], **body)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        return json_response(spec.as_dict())

    async def clear_faults(request: web.Request) -> web.Response:
        lab.faults.clear(request.match_info.get("service"))
        return web.Response(status=204)

    async def expire_tokens(request: web.Request) -> web.Response:
        return json_response({"expired": lab.tokens.expire_all()})

    async def behaviour(request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        for key, target, attr in (
            ("migration_failure_rate", lab.compute, "migration_failure_rate"),
            ("provision_failure_rate", lab.baremetal, "failure_rate"),
        ):
            if key in body:
                value = body[key]
                if not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise ApiError(400, f"{key} must be a number between 0 and 1")
                setattr(target, attr, float(value))
        return json_response(
            {
                "migration_failure_rate": lab.compute.migration_failure_rate,
                "provision_failure_rate": lab.baremetal.failure_rate,
            }
        )

    async def host_alive(request: web.Request) -> web.Response:
        host = request.match_info["host"]
        body = await read_json(request)
        h = lab.scenario.hosts_by_name.get(host)
        if h is None or h.service is None:
            raise ApiError(404, f"no compute host {host}")
        lab.compute.set_compute_alive(host, bool(body.get("alive")) if isinstance(body, dict) else False)
        return web.Response(status=204)

    async def server_fail(request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in lab.scenario.servers:
            raise ApiError(404, f"no server {sid}")
        lab.compute.fail_next_migration(sid)
        return web.Response(status=204)

    async def node_fail(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        node = lab.scenario.nodes_by_uuid.get(ident) or lab.scenario.nodes_by_name.get(ident)
        if node is None:
            raise ApiError(404, f"no node {ident}")
        node.fail_next = True
        return web.Response(status=204)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Errors as JSON; no faults here, so the lab stays controllable whatever is injected."""
        lab.settle()
        try:
            return await handler(request)
        except ApiError as exc:
            return raw_json(error_body(exc.status, exc.message), exc.status)

    app = web.Application(middlewares=[errors])
    r = app.router
    r.add_get("/", index)
    r.add_get("/faults", faults)
    r.add_get("/stats", stats)
    r.add_put("/faults/{service}", set_faults)
    r.add_delete("/faults", clear_faults)
    r.add_delete("/faults/{service}", clear_faults)
    r.add_post("/tokens/expire", expire_tokens)
    r.add_put("/behaviour", behaviour)
    r.add_put("/nova/hosts/{host}/alive", host_alive)
    r.add_post("/nova/servers/{id}/fail-next", server_fail)
    r.add_post("/ironic/nodes/{ident}/fail-next", node_fail)
    return app


def _faults(lab: Lab) -> dict[str, Any]:
    return {name: spec.as_dict() for name, spec in lab.faults.all().items()}
