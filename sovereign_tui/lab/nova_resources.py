"""Nova's infrastructure APIs in the lab: hypervisors, compute services, flavors, migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sovereign_tui.lab.httpkit import (
    MV,
    ApiError,
    json_response,
    page_after,
    parse_limit,
    raw_json,
    read_json,
    truthy,
)
from sovereign_tui.lab.scenario import Host

if TYPE_CHECKING:
    from sovereign_tui.lab.nova import NovaApp

MAX_LIMIT = 1000
_OLD_SERVICE_ACTIONS = {"enable", "disable", "disable-log-reason", "force-down"}


def add_resource_routes(app: web.Application, nova: NovaApp) -> None:
    res = _Resources(nova)
    r = app.router
    r.add_get("/v2.1/os-hypervisors", res.hypervisors)
    r.add_get("/v2.1/os-hypervisors/detail", res.hypervisors)
    r.add_get("/v2.1/os-hypervisors/{id}", res.hypervisor)
    r.add_get("/v2.1/os-services", res.services)
    r.add_put("/v2.1/os-services/{id}", res.service_update)
    r.add_get("/v2.1/flavors", res.flavors)
    r.add_get("/v2.1/flavors/detail", res.flavors)
    r.add_get("/v2.1/flavors/{id}", res.flavor)
    r.add_get("/v2.1/flavors/{id}/os-extra_specs", res.extra_specs)
    r.add_get("/v2.1/flavors/{id}/os-extra_specs/{key}", res.extra_spec)
    r.add_get("/v2.1/os-migrations", res.migrations)


class _Resources:
    def __init__(self, nova: NovaApp) -> None:
        self.nova = nova
        self.sc = nova.sc
        self.views = nova.views

    # --- hypervisors -----------------------------------------------------------------------------

    async def hypervisors(self, request: web.Request) -> web.Response:
        detail = request.path.endswith("/detail")
        self.nova.admin(request, "os_compute_api:os-hypervisors:list" + ("-detail" if detail else ""))
        mv: int = request[MV]
        q = request.query
        pattern = q.get("hypervisor_hostname_pattern") if mv >= 53 else None
        with_servers = mv >= 53 and truthy(q.get("with_servers"))
        hosts = [h for h in self.sc.hosts if h.role == "compute" and (pattern is None or pattern in h.fqdn)]
        full = False
        if mv >= 33 and pattern is None:
            key = [h.hypervisor_id if mv >= 53 else str(h.hyp_int_id) for h in hosts]
            limit = parse_limit(q, MAX_LIMIT)
            bounds = page_after(key, {k: i for i, k in enumerate(key)}, q.get("marker"), limit)
            if bounds is None:
                raise ApiError(400, f"marker [{q.get('marker')}] not found")
            hosts = hosts[bounds[0] : bounds[1]]
            full = bool(hosts) and len(hosts) == limit
        now = self.nova.compute.timeline.wall()
        out: dict[str, Any] = {
            "hypervisors": [self.views.hypervisor(h, mv, detail, with_servers, now) for h in hosts]
        }
        if full:
            last = hosts[-1].hypervisor_id if mv >= 53 else str(hosts[-1].hyp_int_id)
            out["hypervisors_links"] = self.nova.links(request, "hypervisors", last)
        return json_response(out)

    def _hypervisor_host(self, request: web.Request) -> Host:
        hid, mv = request.match_info["id"], request[MV]
        for h in self.sc.hosts:
            if h.role == "compute" and (h.hypervisor_id == hid if mv >= 53 else str(h.hyp_int_id) == hid):
                return h
        raise ApiError(404, f"Hypervisor with ID {hid} could not be found.")

    async def hypervisor(self, request: web.Request) -> web.Response:
        self.nova.admin(request, "os_compute_api:os-hypervisors:show")
        h = self._hypervisor_host(request)
        mv = request[MV]
        with_servers = mv >= 53 and truthy(request.query.get("with_servers"))
        now = self.nova.compute.timeline.wall()
        return json_response({"hypervisor": self.views.hypervisor(h, mv, True, with_servers, now)})

    # --- services --------------------------------------------------------------------------------

    async def services(self, request: web.Request) -> web.Response:
        self.nova.admin(request, "os_compute_api:os-services:list")
        q, mv = request.query, request[MV]
        now = self.nova.compute.timeline.wall()
        found = [
            self.views.service(s, mv, now)
            for s in self.sc.services
            if q.get("binary") in (None, s.binary) and q.get("host") in (None, s.host)
        ]
        return json_response({"services": found})

    async def service_update(self, request: web.Request) -> web.Response:
        self.nova.admin(request, "os_compute_api:os-services:update")
        mv: int = request[MV]
        sid = request.match_info["id"]
        body = await read_json(request)
        now = self.nova.compute.timeline.wall()
        if mv < 53:
            return self._old_service_update(sid, body, mv, now)
        svc = self.sc.services_by_id.get(sid)
        if svc is None:
            raise ApiError(404, f"Service {sid} could not be found.")
        self.nova.compute.update_service(svc, body)
        return json_response({"service": self.views.service(svc, mv, now)})

    def _old_service_update(self, action: str, body: Any, mv: int, now: float) -> web.Response:
        """Before 2.53: PUT /os-services/{enable|disable|disable-log-reason|force-down} with host+binary."""
        if action not in _OLD_SERVICE_ACTIONS or not isinstance(body, dict):
            raise ApiError(404, f"Unknown action {action}")
        svc = next(
            (s for s in self.sc.services if s.host == body.get("host") and s.binary == body.get("binary")),
            None,
        )
        if svc is None:
            raise ApiError(404, f"Host '{body.get('host')}' is not mapped to any cell")
        changes: dict[str, dict[str, Any]] = {
            "enable": {"status": "enabled"},
            "disable": {"status": "disabled"},
            "disable-log-reason": {"status": "disabled", "disabled_reason": body.get("disabled_reason")},
            "force-down": {"forced_down": bool(body.get("forced_down"))},
        }
        change = changes[action]
        self.nova.compute.update_service(svc, change)
        view = self.views.service(svc, mv, now)
        out = {
            k: view[k] for k in ("host", "binary", "status", "disabled_reason", "forced_down") if k in view
        }
        return json_response({"service": out})

    # --- flavors ---------------------------------------------------------------------------------

    async def flavors(self, request: web.Request) -> web.Response:
        detail, mv = request.path.endswith("/detail"), request[MV]
        return json_response({"flavors": [self.views.flavor(f, mv, detail) for f in self.sc.flavors]})

    def _flavor(self, request: web.Request) -> Any:
        fid = request.match_info["id"]
        f = self.sc.flavors_by_id.get(fid)
        if f is None:
            raise ApiError(404, f"Flavor {fid} could not be found.")
        return f

    async def flavor(self, request: web.Request) -> web.Response:
        return json_response({"flavor": self.views.flavor(self._flavor(request), request[MV], True)})

    async def extra_specs(self, request: web.Request) -> web.Response:
        return json_response({"extra_specs": dict(self._flavor(request).extra_specs)})

    async def extra_spec(self, request: web.Request) -> web.Response:
        f, key = self._flavor(request), request.match_info["key"]
        if key not in f.extra_specs:
            raise ApiError(404, f"Flavor {f.id} has no extra specs with key {key}.")
        return json_response({key: f.extra_specs[key]})

    # --- migrations ------------------------------------------------------------------------------

    async def migrations(self, request: web.Request) -> web.Response:
        self.nova.admin(request, "os_compute_api:os-migrations:index")
        q, mv = request.query, request[MV]
        wanted = {k: q[k] for k in ("instance_uuid", "migration_type", "status", "source_compute") if k in q}
        found = [
            m
            for m in reversed(self.sc.migrations)
            if all(
                str(getattr(m, "server_id" if k == "instance_uuid" else k)) == v for k, v in wanted.items()
            )
        ]
        full = False
        if mv >= 59:
            limit = parse_limit(q, MAX_LIMIT)
            keys = [m.uuid for m in found]
            bounds = page_after(keys, {k: i for i, k in enumerate(keys)}, q.get("marker"), limit)
            if bounds is None:
                raise ApiError(400, f"Marker {q.get('marker')} could not be found.")
            found = found[bounds[0] : bounds[1]]
            full = bool(found) and len(found) == limit
        body = b'{"migrations":' + orjson.dumps([self.views.migration(m, mv) for m in found])
        if full:
            body += b',"migrations_links":' + orjson.dumps(
                self.nova.links(request, "migrations", found[-1].uuid)
            )
        return raw_json(body + b"}")
