"""Placement of the lab: the resource providers and allocations Nova keeps there, read from the
live Nova state, so a server built, moved or deleted in the lab shows in its allocations.

Each hypervisor is a compute node provider (its uuid is the hypervisor id, its name the
hypervisor hostname) with VCPU, MEMORY_MB and DISK_GB. Under it, as Nova lays them out:

- a passed-through GPU is a PCI-in-Placement provider (Nova 2023.2+) named
  ``<hypervisor hostname>_<PCI address, upper case>`` with one ``CUSTOM_PCI_10DE_<product>``
  and the ``COMPUTE_MANAGED_PCI_DEVICE`` trait;
- a GPU carved into vGPUs is the libvirt driver's provider ``<hostname>_pci_0000_18_00_0`` with
  ``VGPU`` inventory.

While a server moves (live or cold migration, resize), its allocations on the source host belong
to the migration's uuid and the server holds the destination, as Nova's migration-based
allocations do; an evacuated server holds both until the move ends. A provider's generation
goes up whenever its allocations change.

Served under ``/placement`` (as devstack does), microversions 1.0 to 1.39 from
``OpenStack-API-Version: placement 1.X``; every API but the root needs an admin token::

    GET /                                   versions (no token)
    GET /resource_providers                 ?name= ?uuid= ?in_tree= (1.14)
    GET /resource_providers/{uuid}          and /inventories, /traits (1.6), /allocations
    GET /allocations/{consumer_uuid}
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import MV, ApiError, Handler, json_response, request_id
from sovereign_tui.lab.keystone import TOKEN, Token, TokenStore
from sovereign_tui.lab.nova_sim import Compute
from sovereign_tui.lab.scenario import Host, Migration, Server
from sovereign_tui.lab.timeline import Timeline

PREFIX = "/placement"
MIN_MV, MAX_MV = 0, 39
NVIDIA = "10DE"
MANAGED_PCI = "COMPUTE_MANAGED_PCI_DEVICE"
_ENDED = frozenset({"completed", "confirmed", "reverted", "error", "failed", "cancelled", "done"})
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 406: "Not Acceptable"}
_QUERY = {"name": 0, "uuid": 0, "in_tree": 14}
"""Query parameters of GET /resource_providers served here, and the microversion each needs."""
_UNSERVED = frozenset({"member_of", "resources", "required"})
"""Placement's other filters, which the lab refuses rather than ignore."""


def error_body(status: int, message: str) -> bytes:
    """Placement's error format (webob's, with an error code from 1.23)."""
    error = {
        "status": status,
        "title": _TITLES.get(status, "Error"),
        "detail": message,
        "code": "placement.undefined_code",
        "request_id": request_id(),
    }
    return orjson.dumps({"errors": [error]})


def pci_address(bus_id: str) -> str:
    """Nova's PCI address (``0000:18:00.0``) of an NVML/nvidia-smi bus id (``00000000:18:00.0``)."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


@dataclass(frozen=True)
class Provider:
    uuid: str
    name: str
    host: Host
    board: int | None = None
    """Index of the GPU on the host; None for the compute node itself."""
    vgpu: bool = False
    resource_class: str = ""
    """The device's class: ``CUSTOM_PCI_10DE_<product>`` passed through, ``VGPU`` carved."""

    @property
    def parent(self) -> str | None:
        return None if self.board is None else self.host.hypervisor_id


def _uuid(seed: int, name: str) -> str:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=16).digest()
    return str(uuidlib.UUID(bytes=digest, version=4))


class PlacementView:
    """Placement's records, computed from the Nova simulation whenever they are asked for."""

    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.sc = compute.sc
        self.providers: list[Provider] = []
        for h in self.sc.compute_hosts:
            self.providers.append(Provider(h.hypervisor_id, h.fqdn, h))
            for g in h.gpus:
                addr = pci_address(g.bus_id)
                if h.vgpu:
                    name = f"{h.fqdn}_pci_{addr.replace(':', '_').replace('.', '_')}"
                else:
                    name = f"{h.fqdn}_{addr.upper()}"
                rc = "VGPU" if h.vgpu else f"CUSTOM_PCI_{NVIDIA}_{h.model.product_id.upper()}"
                self.providers.append(Provider(_uuid(self.sc.seed, name), name, h, g.index, h.vgpu, rc))
        self.by_uuid = {p.uuid: p for p in self.providers}
        self.by_host: dict[str, list[Provider]] = {}
        for p in self.providers:
            self.by_host.setdefault(p.host.name, []).append(p)
        self._generations: dict[str, tuple[Any, int]] = {}

    # --- what Nova keeps here --------------------------------------------------------------

    def moving(self) -> dict[str, Migration]:
        """Server id -> its move in progress whose source allocations the migration holds."""
        return {
            m.server_id: m
            for m in self.sc.migrations
            if m.status not in _ENDED and m.migration_type != "evacuation"
        }

    def _consumer(self, server_id: str, host: Host, moving: dict[str, Migration]) -> str:
        m = moving.get(server_id)
        return m.uuid if m is not None and m.source_compute == host.name else server_id

    def inventories(self, p: Provider) -> dict[str, dict[str, Any]]:
        def inv(total: int, ratio: float = 1.0) -> dict[str, Any]:
            return {
                "allocation_ratio": ratio,
                "max_unit": total,
                "min_unit": 1,
                "reserved": 0,
                "step_size": 1,
                "total": total,
            }

        h = p.host
        if p.board is None:
            return {"DISK_GB": inv(h.local_gb), "MEMORY_MB": inv(h.memory_mb), "VCPU": inv(h.vcpus, 4.0)}
        total = h.model.vgpus_per_gpu if p.vgpu else 1
        return {p.resource_class: inv(total)}

    def traits(self, p: Provider) -> list[str]:
        if p.board is None:
            svc = p.host.service
            return ["COMPUTE_NODE"] + (["COMPUTE_STATUS_DISABLED"] if svc and svc.disabled else [])
        return [] if p.vgpu else [MANAGED_PCI]

    def allocations(
        self, p: Provider, moving: dict[str, Migration] | None = None
    ) -> dict[str, dict[str, int]]:
        """Consumer -> resource class -> amount, on one provider."""
        moving = self.moving() if moving is None else moving
        h = p.host
        out: dict[str, dict[str, int]] = {}
        if p.board is None:
            for sid in sorted(h.server_ids):
                s = self.sc.servers.get(sid)
                if s is not None:
                    out[self._consumer(sid, h, moving)] = _flavor_resources(s)
            return out
        g = h.gpus[p.board]
        if p.vgpu:
            for sid, n in sorted(Counter(g.vgpu_holders).items()):
                out[self._consumer(sid, h, moving)] = {"VGPU": n}
        elif g.holder is not None and g.holder in self.sc.servers:
            out[self._consumer(g.holder, h, moving)] = {p.resource_class: 1}
        return out

    def _signature(self, p: Provider, moving: dict[str, Migration]) -> Any:
        """What a provider's generation follows: its consumers (a server's resources never change
        in the lab, so they are not needed) and, for a compute node, its disabled trait."""
        h = p.host
        if p.board is None:
            svc = h.service
            servers = self.sc.servers
            consumers = sorted(self._consumer(sid, h, moving) for sid in h.server_ids if sid in servers)
            return (tuple(consumers), bool(svc and svc.disabled))
        g = h.gpus[p.board]
        if p.vgpu:
            return tuple(sorted(self._consumer(sid, h, moving) for sid in g.vgpu_holders))
        return self._consumer(g.holder, h, moving) if g.holder in self.sc.servers else None

    def generation(self, p: Provider, moving: dict[str, Migration] | None = None) -> int:
        """The provider's generation: one more each time its allocations or traits are seen changed."""
        sig = self._signature(p, self.moving() if moving is None else moving)
        seen = self._generations.get(p.uuid)
        gen = 1 if seen is None else seen[1] + (seen[0] != sig)
        self._generations[p.uuid] = (sig, gen)
        return gen

    def of_consumer(self, consumer: str) -> tuple[dict[Provider, dict[str, int]], Server | None, str]:
        """A consumer's allocations per provider, its server and its type (INSTANCE, MIGRATION)."""
        moving = self.moving()
        server = self.sc.servers.get(consumer)
        kind = "INSTANCE"
        hosts: set[str] = set()
        if server is not None:
            m = moving.get(consumer)
            hosts = {server.host or ""} | ({m.source_compute, m.dest_compute or ""} if m else set())
        else:
            m = next((x for x in moving.values() if x.uuid == consumer), None)
            if m is not None:
                server, kind, hosts = self.sc.servers.get(m.server_id), "MIGRATION", {m.source_compute}
        found: dict[Provider, dict[str, int]] = {}
        for host in sorted(hosts):
            for p in self.by_host.get(host, ()):
                resources = self.allocations(p, moving).get(consumer)
                if resources:
                    found[p] = resources
        return found, server, kind


def _flavor_resources(s: Server) -> dict[str, int]:
    f = s.flavor
    out = {"VCPU": f.vcpus, "MEMORY_MB": f.ram}
    if f.disk:
        out["DISK_GB"] = f.disk
    return out


def negotiate(headers: Any) -> int:
    """The minor of the placement microversion a request asks for (1.0 when none)."""
    raw: str | None = None
    for part in (headers.get("OpenStack-API-Version") or "").split(","):
        service, _, version = part.strip().partition(" ")
        if service.lower() == "placement":
            raw = version.strip()
    if raw is None:
        return MIN_MV
    if raw.lower() == "latest":
        return MAX_MV
    major, _, minor = raw.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise ApiError(400, f"invalid version string: {raw}")
    if int(major) != 1 or not MIN_MV <= int(minor) <= MAX_MV:
        raise ApiError(406, f"Unacceptable version header: {raw}")
    return int(minor)


class PlacementApp:
    def __init__(self, view: PlacementView, tokens: TokenStore, identity_url: str) -> None:
        self.view = view
        self.tokens = tokens
        self.identity_url = identity_url
        self._links: dict[tuple[str, int], list[dict[str, str]]] = {}

    @web.middleware
    async def versioned(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mv = negotiate(request.headers)
        request[MV] = mv
        echo = {"OpenStack-API-Version": f"placement 1.{mv}", "Vary": "openstack-api-version"}
        try:
            if request.path.rstrip("/") != PREFIX:
                request[TOKEN] = self.tokens.require(request, self.identity_url)
            response = await handler(request)
        except ApiError as exc:
            exc.headers.update(echo)
            raise
        response.headers.update(echo)
        return response

    def _admin(self, request: web.Request, rule: str) -> None:
        token: Token = request[TOKEN]
        if not token.is_admin:
            raise ApiError(403, f"Policy does not allow placement:{rule} to be performed.")

    def _provider(self, request: web.Request) -> Provider:
        rp = self.view.by_uuid.get(request.match_info["uuid"])
        if rp is None:
            raise ApiError(404, f"No resource provider with uuid {request.match_info['uuid']} found")
        return rp

    def _provider_view(
        self, p: Provider, mv: int, moving: dict[str, Migration] | None = None
    ) -> dict[str, Any]:
        links = self._links.get((p.uuid, mv))
        if links is None:
            url = f"{PREFIX}/resource_providers/{p.uuid}"
            rels = ["inventories", "usages"] + ["aggregates"] * (mv >= 1) + ["traits"] * (mv >= 6)
            rels += ["allocations"] * (mv >= 11)
            links = [{"rel": "self", "href": url}] + [{"rel": r, "href": f"{url}/{r}"} for r in rels]
            self._links[(p.uuid, mv)] = links
        d: dict[str, Any] = {
            "uuid": p.uuid,
            "name": p.name,
            "generation": self.view.generation(p, moving),
            "links": links,
        }
        if mv >= 14:
            d["parent_provider_uuid"] = p.parent
            d["root_provider_uuid"] = p.host.hypervisor_id
        return d

    async def root(self, request: web.Request) -> web.Response:
        version = {
            "id": f"v1.{MIN_MV}",
            "max_version": f"1.{MAX_MV}",
            "min_version": f"1.{MIN_MV}",
            "status": "CURRENT",
            "links": [{"rel": "self", "href": ""}],
        }
        return json_response({"versions": [version]})

    async def providers(self, request: web.Request) -> web.Response:
        self._admin(request, "resource_providers:list")
        mv, q = request[MV], request.query
        unserved = sorted(k for k in q if k in _UNSERVED)
        if unserved:
            raise ApiError(400, f"The lab's Placement does not filter on '{unserved[0]}'")
        unknown = sorted(k for k in q if k not in _QUERY or mv < _QUERY[k])
        if unknown:
            raise ApiError(
                400,
                "Invalid query string parameters: Additional properties are not allowed "
                f"('{unknown[0]}' was unexpected)",
            )
        found = self.view.providers
        if "name" in q:
            found = [p for p in found if p.name == q["name"]]
        if "uuid" in q:
            found = [p for p in found if p.uuid == q["uuid"]]
        if "in_tree" in q:
            tree = self.view.by_uuid.get(q["in_tree"])
            root = tree.host.hypervisor_id if tree is not None else None
            found = [p for p in found if p.host.hypervisor_id == root]
        moving = self.view.moving()
        return json_response({"resource_providers": [self._provider_view(p, mv, moving) for p in found]})

    async def provider(self, request: web.Request) -> web.Response:
        self._admin(request, "resource_providers:show")
        return json_response(self._provider_view(self._provider(request), request[MV]))

    async def inventories(self, request: web.Request) -> web.Response:
        self._admin(request, "resource_providers:inventories:list")
        p = self._provider(request)
        body = {
            "inventories": self.view.inventories(p),
            "resource_provider_generation": self.view.generation(p),
        }
        return json_response(body)

    async def traits(self, request: web.Request) -> web.Response:
        if request[MV] < 6:
            raise ApiError(404, "The resource could not be found.")
        self._admin(request, "resource_providers:traits:list")
        p = self._provider(request)
        return json_response(
            {"traits": self.view.traits(p), "resource_provider_generation": self.view.generation(p)}
        )

    async def provider_allocations(self, request: web.Request) -> web.Response:
        self._admin(request, "resource_providers:allocations:list")
        p, mv = self._provider(request), request[MV]
        allocs = self.view.allocations(p)
        out: dict[str, Any] = {}
        for consumer, resources in allocs.items():
            out[consumer] = {"resources": resources} | ({"consumer_generation": 1} if mv >= 28 else {})
        return json_response({"allocations": out, "resource_provider_generation": self.view.generation(p)})

    async def consumer_allocations(self, request: web.Request) -> web.Response:
        self._admin(request, "allocations:list")
        mv = request[MV]
        found, server, kind = self.view.of_consumer(request.match_info["consumer"])
        body: dict[str, Any] = {
            "allocations": {
                p.uuid: {"generation": self.view.generation(p), "resources": r} for p, r in found.items()
            }
        }
        if found and server is not None and mv >= 12:
            body["project_id"], body["user_id"] = server.project_id, server.user_id
            if mv >= 28:
                body["consumer_generation"] = 1
            if mv >= 38:
                body["consumer_type"] = kind
        return json_response(body)


def make_app(
    compute: Compute, tokens: TokenStore, faults: FaultBoard, timeline: Timeline, identity_url: str
) -> web.Application:
    """The Placement app, its API under `PREFIX`."""
    placement = PlacementApp(PlacementView(compute), tokens, identity_url)
    mw = faults.middleware("placement", timeline, error_body)
    app = web.Application(middlewares=[mw, placement.versioned])
    r, rp = app.router, f"{PREFIX}/resource_providers"
    r.add_get(PREFIX, placement.root)
    r.add_get(PREFIX + "/", placement.root)
    r.add_get(rp, placement.providers)
    r.add_get(rp + "/{uuid}", placement.provider)
    r.add_get(rp + "/{uuid}/inventories", placement.inventories)
    r.add_get(rp + "/{uuid}/traits", placement.traits)
    r.add_get(rp + "/{uuid}/allocations", placement.provider_allocations)
    r.add_get(PREFIX + "/allocations/{consumer}", placement.consumer_allocations)
    return app
