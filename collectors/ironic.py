"""Ironic: bare-metal nodes as host facets, deployed instances as `baremetal` workloads.

The API version is always sent (without it Ironic answers as 1.1): the newest both sides speak,
read from the root document's ``default_version`` (min and max).
"""

from __future__ import annotations

import msgspec

from collectors.base import Capability
from collectors.openstack import CloudRef, CloudServiceCollector, CloudSession
from sovereign_tui.model import FacetOf, IronicFacet, Observation, Workload
from sovereign_tui.poller import PollContext, PollError

OUR_MAX = (1, 109)
"""Newest Ironic API version whose node shape this collector reads (openstacksdk's cap too)."""
PAGE = 1000


class _Node(msgspec.Struct):
    uuid: str
    provision_state: str | None
    name: str | None = None
    target_provision_state: str | None = None
    power_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    last_error: str | None = None
    instance_uuid: str | None = None
    resource_class: str | None = None
    owner: str | None = None


class _Nodes(msgspec.Struct):
    nodes: list[_Node]
    next: str | None = None


class _Version(msgspec.Struct):
    version: str
    min_version: str = "1.1"


class _Root(msgspec.Struct):
    default_version: _Version


def _parse(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def negotiate(server_min: str, server_max: str, ours: tuple[int, int] = OUR_MAX) -> str:
    chosen = min(_parse(server_max), ours)
    if chosen < _parse(server_min):
        raise PollError(f"ironic: server needs API {server_min} or newer; this reads up to 1.109")
    return f"{chosen[0]}.{chosen[1]}"


class IronicCollector(CloudServiceCollector):
    name = "ironic"
    capabilities: frozenset[Capability] = frozenset({"read", "drain", "provision"})

    service_type = "baremetal"

    def __init__(
        self,
        ref: CloudRef,
        *,
        interval_s: float = 15.0,
        session: CloudSession | None = None,
        page_size: int = PAGE,
    ) -> None:
        super().__init__(ref, interval_s=interval_s, session=session, page_size=page_size)
        self.version: str | None = None

    async def _negotiate(self, ctx: PollContext) -> str:
        if self.version is None:
            _, endpoint = await self.session.credentials("baremetal")
            root = endpoint.removesuffix("/v1")
            doc, _ = await self.client.get_json(ctx.http, root + "/", timeout_s=ctx.timeout_s)
            try:
                v = msgspec.convert(doc, _Root).default_version
            except msgspec.ValidationError:
                raise PollError("ironic: the root version document is malformed") from None
            self.version = negotiate(v.min_version, v.version)
        return self.version

    async def poll(self, ctx: PollContext) -> Observation:
        version = await self._negotiate(ctx)
        headers = {"X-OpenStack-Ironic-API-Version": version}
        _, endpoint = await self.session.credentials("baremetal")
        base = endpoint if endpoint.endswith("/v1") else endpoint + "/v1"
        url: str | None = f"{base}/nodes/detail?limit={self.page_size}"
        nodes: list[_Node] = []
        while url is not None:
            doc, _ = await self.client.get_json(ctx.http, url, headers=headers, timeout_s=ctx.timeout_s)
            try:
                page = msgspec.convert(doc, _Nodes)
            except msgspec.ValidationError as exc:
                raise PollError(f"ironic: unexpected response from /v1/nodes/detail ({exc})") from None
            nodes.extend(page.nodes)
            url = page.next if page.nodes else None
        now = ctx.clock.time()
        src = self.target_id
        facets = []
        workloads = []
        for n in nodes:
            host = n.name or n.uuid
            facets.append(
                FacetOf(
                    host,
                    IronicFacet(
                        source=src,
                        observed_at=now,
                        node_uuid=n.uuid,
                        name=n.name,
                        provision_state=n.provision_state or "unknown",
                        power_state=n.power_state,
                        maintenance=n.maintenance,
                        maintenance_reason=n.maintenance_reason,
                        last_error=n.last_error,
                        instance_uuid=n.instance_uuid,
                        resource_class=n.resource_class,
                        target_provision_state=n.target_provision_state,
                    ),
                )
            )
            if n.instance_uuid:
                workloads.append(
                    Workload(
                        source=src,
                        observed_at=now,
                        kind="baremetal",
                        id=n.instance_uuid,
                        name=n.name or n.instance_uuid,
                        state=n.provision_state or "unknown",
                        host=host,
                        owner=n.owner,
                        flavor=n.resource_class,
                    )
                )
        return Observation(facets=tuple(facets), workloads=tuple(workloads))
