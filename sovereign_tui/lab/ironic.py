"""Ironic (bare metal API v1) of the lab, microversions 1.1 to 1.109.

The version comes from ``X-OpenStack-Ironic-API-Version: 1.N`` (or ``latest``, or
``OpenStack-API-Version: baremetal 1.N``); without one the API answers as 1.1, as Ironic does:
fields newer than the version are left out, and ``available`` reads as null before 1.2. Every
answer under ``/v1`` carries the minimum, maximum and chosen version headers. Errors use
Ironic's body, ``{"error_message": "<JSON with faultstring, faultcode, debuginfo>"}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import (
    MV,
    ApiError,
    Handler,
    json_response,
    page_after,
    parse_limit,
    parse_minor,
    raw_json,
    read_json,
    truthy,
)
from sovereign_tui.lab.ironic_sim import Baremetal
from sovereign_tui.lab.ironic_views import BRIEF, FIELD_MIN, KNOWN_BASE, NodeViews
from sovereign_tui.lab.keystone import TOKEN, Token, TokenStore
from sovereign_tui.lab.scenario import Node
from sovereign_tui.lab.timeline import Timeline

MIN_MV, MAX_MV = 1, 109
MAX_LIMIT = 1000
H_MIN, H_MAX, H_VER = (
    "X-OpenStack-Ironic-API-Minimum-Version",
    "X-OpenStack-Ironic-API-Maximum-Version",
    "X-OpenStack-Ironic-API-Version",
)
_OPEN = frozenset({"/", "/v1", "/v1/"})
_PATCHABLE = (
    "/instance_info",
    "/extra",
    "/properties",
    "/driver_info",
    "/name",
    "/description",
    "/owner",
    "/lessee",
    "/instance_uuid",
    "/resource_class",
    "/conductor_group",
    "/protected",
)


def error_body(status: int, message: str) -> bytes:
    inner = orjson.dumps(
        {"faultstring": message, "faultcode": "Client" if status < 500 else "Server", "debuginfo": None}
    ).decode()
    return orjson.dumps({"error_message": inner})


def negotiate(headers: Any) -> int:
    raw = headers.get("X-OpenStack-Ironic-API-Version")
    if raw is None:
        for part in (headers.get("OpenStack-API-Version") or "").split(","):
            service, _, version = part.strip().partition(" ")
            if service.lower() == "baremetal":
                raw = version.strip()
    if raw is None:
        return MIN_MV
    if raw.lower() == "latest":
        return MAX_MV
    minor = parse_minor(raw, 1)
    bounds = {H_MIN: f"1.{MIN_MV}", H_MAX: f"1.{MAX_MV}"}
    if minor is None:
        raise ApiError(406, f"Invalid value for {H_VER} header: {raw}", bounds)
    if not MIN_MV <= minor <= MAX_MV:
        raise ApiError(
            406,
            f"Version 1.{minor} was requested but the minor version is not supported by this "
            f"service. The supported version range is: [1.{MIN_MV}, 1.{MAX_MV}].",
            bounds,
        )
    return minor


class IronicApp:
    def __init__(self, baremetal: Baremetal, tokens: TokenStore, identity_url: str, base_url: str) -> None:
        self.bm = baremetal
        self.sc = baremetal.sc
        self.tokens = tokens
        self.identity_url = identity_url
        self.base = base_url
        self.views = NodeViews(base_url)

    @web.middleware
    async def versioned(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        bounds = {H_MIN: f"1.{MIN_MV}", H_MAX: f"1.{MAX_MV}"}
        try:
            if request.path not in _OPEN:
                request[TOKEN] = self.tokens.require(request, self.identity_url)
            mv = negotiate(request.headers)
            request[MV] = mv
            bounds[H_VER] = f"1.{mv}"
            response = await handler(request)
        except ApiError as exc:
            exc.headers.update(bounds)
            raise
        response.headers.update(bounds)
        return response

    def visible(self, token: Token, n: Node) -> bool:
        pid = token.project.id if token.project is not None else None
        return token.is_admin or (pid is not None and pid in (n.owner, n.lessee))

    def node_for(self, request: web.Request) -> Node:
        ident, mv = request.match_info["ident"], request[MV]
        n = self.sc.nodes_by_uuid.get(ident) or (self.sc.nodes_by_name.get(ident) if mv >= 5 else None)
        if n is None or not self.visible(request[TOKEN], n):
            raise ApiError(404, f"Node {ident} could not be found.")
        return n

    def acting(self, request: web.Request, rule: str) -> Node:
        n = self.node_for(request)
        if not request[TOKEN].is_admin:
            raise ApiError(403, f"Access was denied to the following resource: baremetal:node:{rule}")
        return n

    # --- handlers --------------------------------------------------------------------------------

    def _version(self) -> dict[str, Any]:
        return {
            "id": "v1",
            "links": [{"href": f"{self.base}/v1/", "rel": "self"}],
            "status": "CURRENT",
            "min_version": f"1.{MIN_MV}",
            "version": f"1.{MAX_MV}",
        }

    async def root(self, request: web.Request) -> web.Response:
        v = self._version()
        return json_response(
            {
                "name": "OpenStack Ironic API",
                "description": "Ironic is an OpenStack project which "
                "enables the provision and management of baremetal machines.",
                "default_version": v,
                "versions": [v],
            }
        )

    async def v1(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": "v1",
                "links": [{"href": f"{self.base}/v1/", "rel": "self"}],
                "media_types": [
                    {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}
                ],
                "nodes": self.views.links("nodes/"),
                "ports": self.views.links("ports/"),
                "drivers": self.views.links("drivers/"),
                "version": self._version(),
            }
        )

    def _filtered(self, request: web.Request) -> list[Node]:
        q, token = request.query, request[TOKEN]
        checks: list[Any] = []
        if "provision_state" in q:
            checks.append(lambda n: n.provision_state == q["provision_state"])
        if "maintenance" in q:
            checks.append(lambda n: n.maintenance == truthy(q["maintenance"]))
        if "associated" in q:
            checks.append(lambda n: (n.instance_uuid is not None) == truthy(q["associated"]))
        for key in (
            "resource_class",
            "driver",
            "fault",
            "owner",
            "lessee",
            "conductor_group",
            "instance_uuid",
        ):
            if key in q:
                checks.append(lambda n, key=key: getattr(n, key) == q[key])
        return [n for n in self.sc.nodes if self.visible(token, n) and all(c(n) for c in checks)]

    async def nodes(self, request: web.Request) -> web.Response:
        detail = request.path.rstrip("/").endswith("/detail")
        q, mv = request.query, request[MV]
        if detail and "fields" in q:
            raise ApiError(400, "Can not specify ?detail=True and fields in the same request.")
        nodes = self._filtered(request)
        limit = parse_limit(q, MAX_LIMIT) or MAX_LIMIT
        keys = [n.uuid for n in nodes]
        bounds = page_after(keys, {k: i for i, k in enumerate(keys)}, q.get("marker"), limit)
        if bounds is None:
            raise ApiError(404, f"Node {q.get('marker')} could not be found.")
        page = nodes[bounds[0] : bounds[1]]
        if detail:
            parts = b",".join(self.views.node_bytes(n, mv) for n in page)
        else:
            fields = self._fields(q.get("fields"), mv) or [f for f in BRIEF if FIELD_MIN.get(f, 1) <= mv]
            parts = b",".join(
                orjson.dumps({k: v for k, v in self.views.node(n, mv).items() if k in fields}) for n in page
            )
        body = b'{"nodes":[' + parts + b"]"
        if page and len(page) == limit:
            params = {k: v for k, v in q.items() if k != "marker"} | {
                "limit": str(limit),
                "marker": page[-1].uuid,
            }
            body += b',"next":' + orjson.dumps(f"{self.base}{request.path}?{urlencode(params)}")
        return raw_json(body + b"}")

    @staticmethod
    def _fields(raw: str | None, mv: int) -> list[str] | None:
        if raw is None:
            return None
        if mv < 8:
            raise ApiError(406, "The fields parameter needs API version 1.8 or later")
        fields = [f.strip() for f in raw.split(",") if f.strip()]
        bad = [f for f in fields if (f not in FIELD_MIN and f not in KNOWN_BASE) or FIELD_MIN.get(f, 1) > mv]
        if bad:
            raise ApiError(400, f'Field(s) "{", ".join(bad)}" are not valid')
        return fields

    async def node_show(self, request: web.Request) -> web.Response:
        n, mv = self.node_for(request), request[MV]
        fields = self._fields(request.query.get("fields"), mv)
        view = self.views.node(n, mv)
        return json_response({k: v for k, v in view.items() if k in fields} if fields else view)

    async def node_states(self, request: web.Request) -> web.Response:
        n, mv = self.node_for(request), request[MV]
        v = self.views.node(n, mv)
        keys = (
            "console_enabled",
            "last_error",
            "power_state",
            "provision_state",
            "provision_updated_at",
            "raid_config",
            "target_power_state",
            "target_provision_state",
            "target_raid_config",
            "boot_mode",
            "secure_boot",
        )
        return json_response({k: v[k] for k in keys if k in v})

    async def provision(self, request: web.Request) -> web.Response:
        n = self.acting(request, "set_provision_state")
        body = await read_json(request)
        if not isinstance(body, dict) or "target" not in body:
            raise ApiError(400, "Invalid request body: 'target' is a required property")
        self.bm.provision(n, body["target"], request[MV], body)
        return web.Response(status=202, headers={"Location": f"{self.base}/v1/nodes/{n.uuid}/states"})

    async def power(self, request: web.Request) -> web.Response:
        n = self.acting(request, "set_power_state")
        body = await read_json(request)
        self.bm.set_power(n, body.get("target") if isinstance(body, dict) else None, request[MV])
        return web.Response(status=202, headers={"Location": f"{self.base}/v1/nodes/{n.uuid}/states"})

    async def maintenance_on(self, request: web.Request) -> web.Response:
        n = self.acting(request, "set_maintenance")
        body = await read_json(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        self.bm.set_maintenance(n, True, reason)
        return web.Response(status=202)

    async def maintenance_off(self, request: web.Request) -> web.Response:
        self.bm.set_maintenance(self.acting(request, "clear_maintenance"), False)
        return web.Response(status=202)

    async def patch(self, request: web.Request) -> web.Response:
        """JSON-patch of the fields an operator sets before a deploy (instance_info, extra, ...)."""
        n = self.acting(request, "update")
        self.bm._locked(n)
        ops = await read_json(request)
        if not isinstance(ops, list):
            raise ApiError(400, "Invalid patch: expected a list of operations")
        for op in ops:
            path = str(op.get("path", "")) if isinstance(op, dict) else ""
            kind = op.get("op") if isinstance(op, dict) else None
            top = "/" + path.strip("/").split("/")[0]
            if top not in _PATCHABLE or kind not in ("add", "replace", "remove"):
                raise ApiError(
                    400, f"Invalid patch operation {op!r} (the lab patches {', '.join(_PATCHABLE)})"
                )
            parts = path.strip("/").split("/")
            attr = parts[0]
            if len(parts) == 1:
                setattr(n, attr, None if kind == "remove" else op.get("value"))
            else:
                target = getattr(n, attr)
                if kind == "remove":
                    target.pop(parts[1], None)
                else:
                    target[parts[1]] = op.get("value")
        self.bm.touch(n)
        return json_response(self.views.node(n, request[MV]))

    async def create(self, request: web.Request) -> web.Response:
        token: Token = request[TOKEN]
        if not token.is_admin:
            raise ApiError(403, "Access was denied to the following resource: baremetal:node:create")
        body = await read_json(request)
        if not isinstance(body, dict) or not body.get("driver"):
            raise ApiError(400, "Invalid request body: 'driver' is a required property")
        mv = request[MV]
        now = self.bm.timeline.wall()
        n = Node(
            uuid=str(body.get("uuid") or self.sc.new_uuid()),
            int_id=len(self.sc.nodes) + 1,
            name=str(body.get("name") or "") or None,
            host=None,
            driver=str(body["driver"]),
            driver_info=dict(body.get("driver_info") or {}),
            properties=dict(body.get("properties") or {}),
            resource_class=str(body.get("resource_class") or ""),
            traits=[],
            extra=dict(body.get("extra") or {}),
            conductor=self.sc.controllers[0],
            created_at=now,
            updated_at=None,
            provision_state="enroll" if mv >= 11 else "available",
            power_state=None,
        )
        self.sc.nodes.append(n)
        self.sc.nodes_by_uuid[n.uuid] = n
        if n.name:
            self.sc.nodes_by_name[n.name] = n
        return json_response(
            self.views.node(n, mv), status=201, headers={"Location": f"{self.base}/v1/nodes/{n.uuid}"}
        )


def make_app(
    baremetal: Baremetal,
    tokens: TokenStore,
    faults: FaultBoard,
    timeline: Timeline,
    identity_url: str,
    base_url: str,
) -> web.Application:
    """The Ironic app; `base_url` is where it is served (``http://127.0.0.1:PORT``)."""
    ironic = IronicApp(baremetal, tokens, identity_url, base_url)
    app = web.Application(middlewares=[faults.middleware("ironic", timeline, error_body), ironic.versioned])
    r = app.router
    r.add_get("/", ironic.root)
    r.add_get("/v1", ironic.v1)
    r.add_get("/v1/", ironic.v1)
    r.add_get("/v1/nodes", ironic.nodes)
    r.add_post("/v1/nodes", ironic.create)
    r.add_get("/v1/nodes/detail", ironic.nodes)
    r.add_get("/v1/nodes/{ident}", ironic.node_show)
    r.add_patch("/v1/nodes/{ident}", ironic.patch)
    r.add_get("/v1/nodes/{ident}/states", ironic.node_states)
    r.add_put("/v1/nodes/{ident}/states/provision", ironic.provision)
    r.add_put("/v1/nodes/{ident}/states/power", ironic.power)
    r.add_put("/v1/nodes/{ident}/maintenance", ironic.maintenance_on)
    r.add_delete("/v1/nodes/{ident}/maintenance", ironic.maintenance_off)
    return app
