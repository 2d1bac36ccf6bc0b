"""The HTTP faces of the lab's StarlingX: sysinv, dcmanager and fm views and handlers.

Shapes follow the services: sysinv and fm answer wsme collections (``{"ihosts": [...]}``, paged
with ``limit``/``marker`` and a ``next`` link when a page is full); dcmanager's subclouds carry
hyphenated keys beside ``sync_status`` and ``endpoint_sync_status``; fm keeps its affecting flags
as the strings ``True``/``False``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from sovereign_tui.lab.httpkit import (
    ApiError,
    iso_tz,
    iso_us,
    json_response,
    page_after,
    parse_limit,
    raw_json,
    read_json,
    truthy,
)
from sovereign_tui.lab.keystone import TOKEN
from sovereign_tui.lab.starlingx_alarms import StxAlarm
from sovereign_tui.lab.starlingx_sim import StarlingxSim, StxHost, Subcloud

MAX_LIMIT = 1000
"""sysinv's and fm's ``api.limit_max``: longer lists are paged with a ``next`` link."""


def _flag(value: bool) -> str:
    """fm keeps its affecting flags as the strings ``True`` and ``False``."""
    return "True" if value else "False"


def _dc_time(ts: float | None) -> str | None:
    """dcmanager's timestamps: ``2024-01-10 20:15:39.117366`` (a Python datetime's str)."""
    return None if ts is None else str(dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None))


def _admin(request: web.Request) -> None:
    if not request[TOKEN].is_admin:
        raise ApiError(403, "Policy doesn't allow this action to be performed: it needs the admin role.")


def _page(request: web.Request, keys: list[str], what: str) -> tuple[int, int, int]:
    limit = parse_limit(request.query, MAX_LIMIT) or MAX_LIMIT
    bounds = page_after(keys, {k: i for i, k in enumerate(keys)}, request.query.get("marker"), limit)
    if bounds is None:
        raise ApiError(400, f"Invalid marker: {what} {request.query.get('marker')} could not be found.")
    return bounds[0], bounds[1], limit


def _collection(
    name: str, items: list[bytes], request: web.Request, base: str, limit: int, last: str
) -> web.Response:
    """wsme's collection: the list, and ``next`` when the page is full."""
    body = b'{"' + name.encode() + b'":[' + b",".join(items) + b"]"
    if items and len(items) == limit:
        params = {k: v for k, v in request.query.items() if k != "marker"} | {
            "limit": str(limit),
            "marker": last,
        }
        body += b',"next":' + orjson.dumps(f"{base}{request.path}?{urlencode(params)}")
    return raw_json(body + b"}")


# --- sysinv ----------------------------------------------------------------------------------------


class SysinvApp:
    def __init__(self, sim: StarlingxSim, base: str) -> None:
        self.sim = sim
        self.base = base

    def host_view(self, h: StxHost) -> dict[str, Any]:
        sim = self.sim
        now = sim.timeline.wall()
        in_service = (h.administrative, h.operational) == ("unlocked", "enabled")
        return {
            "id": h.id,
            "uuid": h.uuid,
            "hostname": h.hostname,
            "personality": h.personality,
            "subfunctions": h.subfunctions,
            "subfunction_oper": h.operational,
            "subfunction_avail": h.availability,
            "administrative": h.administrative,
            "operational": h.operational,
            "availability": h.availability,
            "action": h.action,
            "ihost_action": h.action if h.task else "",
            "task": h.task,
            "vim_progress_status": "services-enabled" if in_service else "services-disabled",
            "uptime": 0 if h.availability == "offline" else int(now - h.booted_at),
            "mgmt_mac": h.mgmt_mac,
            "mgmt_ip": h.mgmt_ip,
            "bm_ip": h.bm_ip,
            "bm_type": "redfish" if h.bm_ip else None,
            "bm_username": "root" if h.bm_ip else None,
            "serialid": None,
            "location": {},
            "capabilities": dict(h.capabilities),
            "config_status": h.config_status,
            "config_applied": h.config_applied,
            "config_target": h.config_target,
            "invprovision": "provisioned",
            "inv_state": "inventoried",
            "install_state": "completed",
            "clock_synchronization": "ntp",
            "software_load": sim.system.software_version,
            "target_load": sim.system.software_version,
            "boot_device": "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0",
            "rootfs_device": "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0",
            "console": "ttyS0,115200",
            "tboot": "false",
            "reboot_needed": False,
            "isystem_uuid": sim.system.uuid,
            "created_at": iso_tz(h.created_at),
            "updated_at": iso_tz(h.updated_at),
            "links": [
                {"href": f"{self.base}/v1/ihosts/{h.uuid}", "rel": "self"},
                {"href": f"{self.base}/ihosts/{h.uuid}", "rel": "bookmark"},
            ],
        }

    def system_view(self) -> dict[str, Any]:
        s = self.sim.system
        return {
            "uuid": s.uuid,
            "name": s.name,
            "system_type": s.system_type,
            "system_mode": s.system_mode,
            "description": f"Sovereign lab, site {s.name}",
            "location": s.name,
            "contact": None,
            "latitude": None,
            "longitude": None,
            "software_version": s.software_version,
            "timezone": "UTC",
            "distributed_cloud_role": s.distributed_cloud_role,
            "region_name": s.region_name,
            "service_project_name": "services",
            "security_feature": "spectre_meltdown_v1",
            "capabilities": {"sdn_enabled": False, "shared_services": "[]", "https_enabled": True},
            "created_at": iso_tz(s.created_at),
            "updated_at": None,
            "links": [{"href": f"{self.base}/v1/isystems/{s.uuid}", "rel": "self"}],
        }

    def host_for(self, request: web.Request) -> StxHost:
        ident = request.match_info["ident"]
        host = self.sim.hosts_by_uuid.get(ident) or self.sim.hosts_by_name.get(ident)
        if host is None:
            raise ApiError(404, f"Server {ident} could not be found.")
        return host

    async def root(self, request: web.Request) -> web.Response:
        v1 = {"id": "v1", "links": [{"href": f"{self.base}/v1/", "rel": "self"}]}
        return json_response({"name": "StarlingX System API", "default_version": v1, "versions": [v1]})

    async def isystems(self, request: web.Request) -> web.Response:
        return json_response({"isystems": [self.system_view()]})

    async def ihosts(self, request: web.Request) -> web.Response:
        hosts = self.sim.hosts
        personality = request.query.get("personality")
        if personality:
            hosts = [h for h in hosts if h.personality == personality]
        start, end, limit = _page(request, [h.uuid for h in hosts], "host")
        page = hosts[start:end]
        items = [orjson.dumps(self.host_view(h)) for h in page]
        return _collection("ihosts", items, request, self.base, limit, page[-1].uuid if page else "")

    async def ihost(self, request: web.Request) -> web.Response:
        return json_response(self.host_view(self.host_for(request)))

    async def patch(self, request: web.Request) -> web.Response:
        host = self.host_for(request)
        _admin(request)
        ops = await read_json(request)
        if not isinstance(ops, list) or not ops:
            raise ApiError(400, "Expected a JSON patch: a list of {op, path, value} operations.")
        action: str | None = None
        for op in ops:
            if not isinstance(op, dict) or op.get("op") not in ("replace", "add"):
                raise ApiError(400, f"Invalid patch operation {op!r}: use op 'replace' on /action.")
            if op.get("path") != "/action":
                raise ApiError(400, f"Patching {op.get('path')!r} is not supported here; patch /action.")
            if not isinstance(op.get("value"), str):
                raise ApiError(400, "The /action value must be a string such as 'lock' or 'unlock'.")
            action = op["value"]
        assert action is not None
        self.sim.act(host, action)
        return json_response(self.host_view(host))


# --- dcmanager -------------------------------------------------------------------------------------


class DcmanagerApp:
    def __init__(self, sim: StarlingxSim, base: str) -> None:
        self.sim = sim
        self.base = base

    @staticmethod
    def view(sc: Subcloud) -> dict[str, Any]:
        first = int(sc.management_subnet.split(".")[2])
        net = f"192.168.{first}"
        return {
            "id": sc.id,
            "name": sc.name,
            "description": sc.description,
            "location": sc.location,
            "software-version": sc.software_version,
            "management-state": sc.management_state,
            "availability-status": sc.availability_status,
            "deploy-status": sc.deploy_status,
            "backup-status": None,
            "backup-datetime": None,
            "error-description": sc.error_description,
            "region-name": sc.region_name,
            "management-subnet": sc.management_subnet,
            "management-start-ip": f"{net}.2",
            "management-end-ip": f"{net}.50",
            "management-gateway-ip": f"{net}.1",
            "systemcontroller-gateway-ip": "192.168.204.101",
            "openstack-installed": False,
            "prestage-status": None,
            "prestage-versions": None,
            "group_id": 1,
            "peer_group_id": None,
            "rehome_data": None,
            "created-at": _dc_time(sc.created_at),
            "updated-at": _dc_time(sc.updated_at),
            "sync_status": sc.sync_status,
            "endpoint_sync_status": [{"endpoint_type": t, "sync_status": s} for t, s in sc.endpoints.items()],
        }

    def subcloud_for(self, request: web.Request) -> Subcloud:
        ref = request.match_info["ref"]
        sc = self.sim.subcloud(ref)
        if sc is None:
            raise ApiError(404, f"Subcloud {ref} not found")
        return sc

    async def root(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "versions": [
                    {
                        "id": "v1.0",
                        "status": "CURRENT",
                        "links": [{"href": f"{self.base}/v1.0/", "rel": "self"}],
                    }
                ]
            }
        )

    async def subclouds(self, request: web.Request) -> web.Response:
        return json_response({"subclouds": [self.view(sc) for sc in self.sim.subclouds]})

    async def subcloud(self, request: web.Request) -> web.Response:
        return json_response(self.view(self.subcloud_for(request)))

    async def patch(self, request: web.Request) -> web.Response:
        sc = self.subcloud_for(request)
        _admin(request)
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            body: Any = dict(await request.post())
        else:
            body = await read_json(request)
        if not isinstance(body, dict) or not body:
            raise ApiError(400, 'Body required: for example {"management-state": "unmanaged"}.')
        unknown = set(body) - {"management-state", "description", "location", "force"}
        if unknown:
            raise ApiError(
                400, f"Cannot update {', '.join(sorted(unknown))} in the lab; use management-state."
            )
        if "management-state" in body:  # first: a refusal changes nothing
            self.sim.set_management(sc, str(body["management-state"]))
        for key in ("description", "location"):
            if key in body:
                setattr(sc, key, str(body[key]))
        return json_response(self.view(sc))


# --- fm --------------------------------------------------------------------------------------------

_QUERY_FIELDS = frozenset(
    {"alarm_id", "entity_instance_id", "severity", "alarm_type", "uuid", "entity_type_id"}
)


class FmApp:
    def __init__(self, sim: StarlingxSim, base: str) -> None:
        self.sim = sim
        self.base = base

    def view(self, a: StxAlarm, expand: bool) -> dict[str, Any]:
        suppressed = a.alarm_id in self.sim.fm.suppressed
        out: dict[str, Any] = {
            "uuid": a.uuid,
            "alarm_id": a.alarm_id,
            "entity_instance_id": a.entity_instance_id,
            "severity": a.severity,
            "timestamp": iso_us(a.timestamp),
            "reason_text": a.reason_text,
            "mgmt_affecting": _flag(a.mgmt_affecting),
            "degrade_affecting": _flag(a.degrade_affecting),
            "suppression_status": "suppressed" if suppressed else "unsuppressed",
            "links": [{"href": f"{self.base}/v1/alarms/{a.uuid}", "rel": "self"}],
        }
        if expand:
            out |= {
                "alarm_state": "set",
                "entity_type_id": a.entity_type_id,
                "alarm_type": a.alarm_type,
                "probable_cause": a.probable_cause,
                "proposed_repair_action": a.proposed_repair_action,
                "service_affecting": _flag(a.service_affecting),
                "suppression": "True",
            }
        return out

    def _filters(self, request: web.Request) -> list[tuple[str, str]]:
        q = request.query
        fields, ops, values = q.getall("q.field", []), q.getall("q.op", []), q.getall("q.value", [])
        if not len(fields) == len(values) or (ops and len(ops) != len(fields)):
            raise ApiError(400, "Each q.field needs a q.value (and, if given, a q.op).")
        for i, name in enumerate(fields):
            if name not in _QUERY_FIELDS:
                raise ApiError(
                    400, f"Unknown query field {name!r}; known: {', '.join(sorted(_QUERY_FIELDS))}."
                )
            if ops and ops[i] != "eq":
                raise ApiError(400, f"Unsupported query operator {ops[i]!r}; the lab supports eq.")
        return list(zip(fields, values, strict=True))

    async def root(self, request: web.Request) -> web.Response:
        v1 = {"id": "v1", "links": [{"href": f"{self.base}/v1/", "rel": "self"}]}
        return json_response({"name": "Fault Management API", "default_version": v1, "versions": [v1]})

    async def alarms(self, request: web.Request) -> web.Response:
        q = request.query
        alarms = self.sim.fm.active(truthy(q.get("include_suppress")))
        for name, value in self._filters(request):
            alarms = [a for a in alarms if getattr(a, name) == value]
        start, end, limit = _page(request, [a.uuid for a in alarms], "alarm")
        page = alarms[start:end]
        expand = truthy(q.get("expand"))
        items = [orjson.dumps(self.view(a, expand)) for a in page]
        return _collection("alarms", items, request, self.base, limit, page[-1].uuid if page else "")

    async def summary(self, request: web.Request) -> web.Response:
        return json_response(self.sim.fm.summary(truthy(request.query.get("include_suppress"))))

    def alarm_for(self, request: web.Request) -> StxAlarm:
        ident = request.match_info["uuid"]
        found = self.sim.fm.by_uuid(ident)
        if found is None:
            raise ApiError(404, f"Alarm {ident} could not be found.")
        return found

    async def alarm(self, request: web.Request) -> web.Response:
        return json_response(self.view(self.alarm_for(request), True))

    async def delete(self, request: web.Request) -> web.Response:
        a = self.alarm_for(request)
        _admin(request)
        self.sim.fm.clear(a.alarm_id, a.entity_instance_id)
        return web.Response(status=204)
