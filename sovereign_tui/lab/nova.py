"""Nova (compute API v2.1) of the lab, microversions 2.1 to 2.100.

The microversion comes from ``OpenStack-API-Version: compute 2.X`` or the legacy
``X-OpenStack-Nova-API-Version``; none means 2.1, ``latest`` means 2.100, out of range is 406, and
every versioned answer echoes the version it used. Admin-only APIs (hypervisors, services,
migrations, other projects' servers) answer 403 to other roles, as Nova's default policy does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import (
    MV,
    REQUEST_ID,
    ApiError,
    Handler,
    iso_us,
    json_response,
    page_after,
    parse_limit,
    raw_json,
    read_json,
    truthy,
)
from sovereign_tui.lab.keystone import TOKEN, Token, TokenStore
from sovereign_tui.lab.nova_sim import Compute
from sovereign_tui.lab.nova_views import Views, status_of
from sovereign_tui.lab.scenario import Server
from sovereign_tui.lab.timeline import Timeline

MIN_MV, MAX_MV = 1, 100
MAX_LIMIT = 1000
_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}
_OPEN = frozenset({"/", "/v2.1", "/v2.1/"})


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({_FAULTS.get(status, "computeFault"): {"code": status, "message": message}})


def negotiate(headers: Any) -> int:
    """The minor of the compute microversion a request asks for."""
    raw: str | None = None
    for part in (headers.get("OpenStack-API-Version") or "").split(","):
        service, _, version = part.strip().partition(" ")
        if service.lower() == "compute":
            raw = version.strip()
            break
    if raw is None:
        raw = headers.get("X-OpenStack-Nova-API-Version")
    if raw is None:
        return MIN_MV
    if raw.lower() == "latest":
        return MAX_MV
    major, _, tail = raw.strip().partition(".")
    if not major.isdigit() or not tail.isdigit():
        raise ApiError(
            400, f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum."
        )
    minor = int(tail)
    if int(major) != 2 or not MIN_MV <= minor <= MAX_MV:
        raise ApiError(
            406,
            f"Version {raw} is not supported by the API. Minimum is 2.{MIN_MV} and maximum is 2.{MAX_MV}.",
        )
    return minor


def version_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "links": [
            {"href": f"{base}/v2.1/", "rel": "self"},
            {"href": "http://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
        ],
        "status": "CURRENT",
        "version": f"2.{MAX_MV}",
        "min_version": f"2.{MIN_MV}",
        "updated": "2013-07-23T11:33:21Z",
    }


class NovaApp:
    def __init__(self, compute: Compute, tokens: TokenStore, identity_url: str, base_url: str) -> None:
        self.compute = compute
        self.sc = compute.sc
        self.tokens = tokens
        self.identity_url = identity_url
        self.base = base_url
        self.views = Views(compute.sc, base_url)

    # --- plumbing --------------------------------------------------------------------------------

    @web.middleware
    async def versioned(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _OPEN:
            return await handler(request)
        request[TOKEN] = self.tokens.require(request, self.identity_url)
        mv = negotiate(request.headers)
        request[MV] = mv
        echo = {
            "OpenStack-API-Version": f"compute 2.{mv}",
            "X-OpenStack-Nova-API-Version": f"2.{mv}",
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
        }
        try:
            response = await handler(request)
        except ApiError as exc:
            exc.headers.update(echo)
            raise
        response.headers.update(echo)
        return response

    def admin(self, request: web.Request, rule: str) -> Token:
        token: Token = request[TOKEN]
        if not token.is_admin:
            raise ApiError(403, f"Policy doesn't allow {rule} to be performed.")
        return token

    def server_for(self, request: web.Request) -> Server:
        token: Token = request[TOKEN]
        sid = request.match_info["id"]
        s = self.sc.servers.get(sid)
        if s is None or not (
            token.is_admin or (token.project is not None and token.project.id == s.project_id)
        ):
            raise ApiError(404, f"Instance {sid} could not be found.")
        return s

    def links(self, request: web.Request, key: str, marker: str) -> list[dict[str, str]]:
        params = {k: v for k, v in request.query.items() if k != "marker"}
        params["marker"] = marker
        return [{"href": f"{self.base}{request.path}?{urlencode(params)}", "rel": "next"}]

    # --- versions --------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        v2 = {
            "id": "v2.0",
            "links": [{"href": f"{self.base}/v2/", "rel": "self"}],
            "status": "DEPRECATED",
            "version": "",
            "min_version": "",
            "updated": "2025-07-04T12:00:00Z",
        }
        v21 = version_doc(self.base)
        v21.pop("media-types")
        v21["links"] = v21["links"][:1]
        return json_response({"versions": [v2, v21]})

    async def v21(self, request: web.Request) -> web.Response:
        return json_response({"version": version_doc(self.base)})

    # --- servers ---------------------------------------------------------------------------------

    def _server_ids(self, request: web.Request) -> list[str]:
        token: Token = request[TOKEN]
        q = request.query
        all_tenants = "all_tenants" in q and (q["all_tenants"] == "" or truthy(q["all_tenants"]))
        if all_tenants:
            self.admin(request, "os_compute_api:servers:detail:get_all_tenants")
        order, _ = self.compute.ordered()
        project = q.get("project_id") or q.get("tenant_id")
        host = q.get("host") if token.is_admin else None
        status = q.get("status", "").upper() or None
        name = q.get("name")
        if not all_tenants:
            project = token.project.id if token.project is not None else "-"
        if project is None and host is None and status is None and name is None:
            return order
        servers = self.sc.servers
        return [
            sid
            for sid in order
            if (project is None or servers[sid].project_id == project)
            and (host is None or servers[sid].host == host)
            and (status is None or status_of(servers[sid]) == status)
            and (name is None or name in servers[sid].name)
        ]

    def _page(self, request: web.Request) -> tuple[list[str], bool]:
        ids = self._server_ids(request)
        order, index = self.compute.ordered()
        if ids is not order:
            index = {sid: i for i, sid in enumerate(ids)}
        limit = parse_limit(request.query, MAX_LIMIT)
        bounds = page_after(ids, index, request.query.get("marker"), limit)
        if bounds is None:
            raise ApiError(400, f"marker [{request.query.get('marker')}] not found")
        page = ids[bounds[0] : bounds[1]]
        return page, bool(page) and len(page) == limit

    async def servers_detail(self, request: web.Request) -> web.Response:
        mv, admin = request[MV], request[TOKEN].is_admin
        page, full = self._page(request)
        servers, view = self.sc.servers, self.views
        body = b'{"servers":[' + b",".join(view.server_bytes(servers[sid], mv, admin) for sid in page) + b"]"
        if full:
            body += b',"servers_links":' + orjson.dumps(self.links(request, "servers", page[-1]))
        return raw_json(body + b"}")

    async def servers(self, request: web.Request) -> web.Response:
        page, full = self._page(request)
        out: dict[str, Any] = {"servers": [self.views.server_brief(self.sc.servers[sid]) for sid in page]}
        if full:
            out["servers_links"] = self.links(request, "servers", page[-1])
        return json_response(out)

    async def server_show(self, request: web.Request) -> web.Response:
        s = self.server_for(request)
        return json_response(
            {"server": self.views.server(s, request[MV], request[TOKEN].is_admin, show=True)}
        )

    async def server_delete(self, request: web.Request) -> web.Response:
        self.compute.delete(self.server_for(request))
        return web.Response(status=204)

    async def server_create(self, request: web.Request) -> web.Response:
        token: Token = request[TOKEN]
        mv: int = request[MV]
        body = await read_json(request)
        spec = body.get("server") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise ApiError(
                400, "Invalid input for field/attribute server. Value: None. 'server' is a required property"
            )
        for key in ("name", "flavorRef") + (("networks",) if mv >= 37 else ()):
            if key not in spec:
                raise ApiError(
                    400, f"Invalid input for field/attribute server. '{key}' is a required property"
                )
        flavor_id = str(spec["flavorRef"]).rstrip("/").rsplit("/", 1)[-1]
        flavor = self.sc.flavors_by_id.get(flavor_id)
        if flavor is None:
            raise ApiError(400, f"Flavor {flavor_id} could not be found.")
        image_id = str(spec.get("imageRef", "")).rstrip("/").rsplit("/", 1)[-1]
        image = self.sc.images_by_id.get(image_id)
        if image is None:
            raise ApiError(400, f"Can not find requested image {image_id}")
        forced, zone = None, spec.get("availability_zone")
        if zone is not None and not isinstance(zone, str):
            raise ApiError(400, f"Invalid input for field/attribute availability_zone. Value: {zone}.")
        if zone is not None and ":" in zone:
            self.admin(request, "os_compute_api:servers:create:forced_host")
            zone, _, rest = zone.partition(":")
            forced = rest.split(":")[0] or None
        if token.project is None:
            raise ApiError(403, "A project-scoped token is required to create servers.")
        hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
        s = self.compute.create(
            name=str(spec["name"]),
            flavor=flavor,
            image=image,
            project_id=token.project.id,
            user_id=token.user.id,
            request_id=request_id_of(request),
            forced_host=forced,
            zone=zone or None,
            metadata=spec.get("metadata"),
            description=spec.get("description"),
            key_name=spec.get("key_name"),
            hints=hints,
        )
        out = {
            "server": {
                "OS-DCF:diskConfig": "MANUAL",
                "adminPass": "lab-" + s.id[:12],
                "id": s.id,
                "links": self.views.server_links(s.id),
                "security_groups": [{"name": "default"}],
            }
        }
        return json_response(out, status=202, headers={"Location": f"{self.base}/v2.1/servers/{s.id}"})

    async def server_action(self, request: web.Request) -> web.Response:
        token: Token = request[TOKEN]
        mv: int = request[MV]
        s = self.server_for(request)
        body = await read_json(request)
        if not isinstance(body, dict) or len(body) != 1:
            raise ApiError(400, "Malformed request body: expected one action")
        action, arg = next(iter(body.items()))
        rid, uid, c = request_id_of(request), token.user.id, self.compute
        if action in ("os-migrateLive", "migrate", "evacuate"):
            self.admin(request, f"os_compute_api:os-migrate-server:{action}")
        if action == "os-migrateLive":
            arg = arg if isinstance(arg, dict) else {}
            if "block_migration" not in arg:
                raise ApiError(
                    400,
                    "Invalid input for field/attribute os-migrateLive. 'block_migration' is a "
                    "required property",
                )
            c.moves.live_migrate(s, arg.get("host"), rid, uid)
            return web.Response(status=202)
        if action == "migrate":
            host = arg.get("host") if isinstance(arg, dict) and mv >= 56 else None
            c.moves.cold_migrate(s, host, rid, uid)
            return web.Response(status=202)
        if action == "confirmResize":
            c.moves.confirm_resize(s)
            return web.Response(status=204)
        if action == "revertResize":
            c.moves.revert_resize(s)
            return web.Response(status=202)
        if action == "evacuate":
            c.moves.evacuate(s, (arg or {}).get("host") if isinstance(arg, dict) else None, mv, rid, uid)
            return web.Response(status=200)
        if action in ("os-stop", "os-start"):
            c.power(s, action, rid, uid)
            return web.Response(status=202)
        if action == "reboot":
            kind = str((arg or {}).get("type", "SOFT")).upper() if isinstance(arg, dict) else "SOFT"
            c.power(s, "reboot-hard" if kind == "HARD" else "reboot", rid, uid)
            return web.Response(status=202)
        raise ApiError(400, f"There is no such action: {action}")

    # --- server migrations and instance actions --------------------------------------------------

    def _need(self, request: web.Request, minor: int) -> None:
        if request[MV] < minor:
            raise ApiError(404, "The resource could not be found.")

    async def server_migrations(self, request: web.Request) -> web.Response:
        self._need(request, 23)
        self.admin(request, "os_compute_api:servers:migrations:index")
        s = self.server_for(request)
        now, mv = self.compute.timeline.now(), request[MV]
        moving = self.compute.moves.in_progress(s)
        return json_response({"migrations": [self.views.server_migration(m, mv, now) for m in moving]})

    def _migration_id(self, request: web.Request) -> int:
        try:
            return int(request.match_info["mid"])
        except ValueError:
            raise ApiError(404, f"Migration {request.match_info['mid']} could not be found.") from None

    async def server_migration(self, request: web.Request) -> web.Response:
        self._need(request, 23)
        self.admin(request, "os_compute_api:servers:migrations:show")
        s, mid = self.server_for(request), self._migration_id(request)
        found = [m for m in self.compute.moves.in_progress(s) if m.id == mid]
        if not found:
            raise ApiError(404, f"In-progress live migration {mid} is not found for server {s.id}.")
        now = self.compute.timeline.now()
        return json_response({"migration": self.views.server_migration(found[0], request[MV], now)})

    async def server_migration_abort(self, request: web.Request) -> web.Response:
        self._need(request, 24)
        self.admin(request, "os_compute_api:servers:migrations:delete")
        self.compute.moves.abort(self.server_for(request), self._migration_id(request), request[MV])
        return web.Response(status=202)

    async def server_migration_action(self, request: web.Request) -> web.Response:
        self._need(request, 22)
        self.admin(request, "os_compute_api:servers:migrations:force_complete")
        body = await read_json(request)
        if not isinstance(body, dict) or "force_complete" not in body:
            raise ApiError(400, 'Invalid input: expected {"force_complete": null}')
        self.compute.moves.force_complete(self.server_for(request), self._migration_id(request))
        return web.Response(status=202)

    async def instance_actions(self, request: web.Request) -> web.Response:
        s, mv = self.server_for(request), request[MV]
        acts = [self._action_view(s, a, mv) for a in reversed(s.actions)]
        return json_response({"instanceActions": acts})

    async def instance_action(self, request: web.Request) -> web.Response:
        s, mv, admin = self.server_for(request), request[MV], request[TOKEN].is_admin
        rid = request.match_info["rid"]
        act = next((a for a in s.actions if a.request_id == rid), None)
        if act is None:
            raise ApiError(404, f"Action for request_id {rid} on instance {s.id} not found")
        view = self._action_view(s, act, mv)
        events = []
        for e in act.events:
            ev = {
                "event": e["event"],
                "start_time": iso_us(e["start_time"]),
                "finish_time": iso_us(e["finish_time"]),
                "result": e["result"],
            }
            if admin:
                ev["traceback"] = None
                if mv >= 62:
                    ev["host"] = e["host"]
            if mv >= 62:
                ev["hostId"] = ""
            if mv >= 84:
                ev["details"] = e["details"] or None
            events.append(ev)
        view["events"] = events
        return json_response({"instanceAction": view})

    @staticmethod
    def _action_view(s: Server, a: Any, mv: int) -> dict[str, Any]:
        d = {
            "action": a.action,
            "instance_uuid": s.id,
            "message": a.message,
            "project_id": a.project_id,
            "request_id": a.request_id,
            "start_time": iso_us(a.start_time),
            "user_id": a.user_id,
        }
        if mv >= 58:
            d["updated_at"] = iso_us(a.updated_at)
        return d


def request_id_of(request: web.Request) -> str:
    """The request id the service middleware gave this request (also sent back in its headers)."""
    return str(request.get(REQUEST_ID, "req-unknown"))


def make_app(
    compute: Compute,
    tokens: TokenStore,
    faults: FaultBoard,
    timeline: Timeline,
    identity_url: str,
    base_url: str,
) -> web.Application:
    """The Nova app; `base_url` is where it is served (``http://127.0.0.1:PORT``)."""
    from sovereign_tui.lab.nova_resources import add_resource_routes

    nova = NovaApp(compute, tokens, identity_url, base_url)
    mw = faults.middleware("nova", timeline, error_body, ("X-Openstack-Request-Id", "X-Compute-Request-Id"))
    app = web.Application(middlewares=[mw, nova.versioned])
    r = app.router
    r.add_get("/", nova.root)
    r.add_get("/v2.1", nova.v21)
    r.add_get("/v2.1/", nova.v21)
    p = "/v2.1/servers"
    r.add_get(f"{p}/detail", nova.servers_detail)
    r.add_get(p, nova.servers)
    r.add_post(p, nova.server_create)
    r.add_get(p + "/{id}", nova.server_show)
    r.add_delete(p + "/{id}", nova.server_delete)
    r.add_post(p + "/{id}/action", nova.server_action)
    r.add_get(p + "/{id}/migrations", nova.server_migrations)
    r.add_get(p + "/{id}/migrations/{mid}", nova.server_migration)
    r.add_delete(p + "/{id}/migrations/{mid}", nova.server_migration_abort)
    r.add_post(p + "/{id}/migrations/{mid}/action", nova.server_migration_action)
    r.add_get(p + "/{id}/os-instance-actions", nova.instance_actions)
    r.add_get(p + "/{id}/os-instance-actions/{rid}", nova.instance_action)
    add_resource_routes(app, nova)
    return app
