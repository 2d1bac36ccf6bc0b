"""StarlingX: sysinv hosts as host facets, dcmanager subclouds as sites, fm alarms.

One poll target per service (``starlingx-sysinv:<cloud>``, ``starlingx-dcmanager:<cloud>``,
``starlingx-fm:<cloud>``), so a failing fm leaves hosts and subclouds fresh and says why. The
endpoints come from the Keystone catalog (types ``platform``, ``dcmanager``,
``faultmanagement``), whether or not they end in their version (``/v1``, ``/v1.0``).

A cloud whose catalog has no ``dcmanager`` is a standalone (not distributed) system, not a
fault: its dcmanager target stays up and reports no subclouds. It is kept rather than left out
because whether the catalog has one is only known after authenticating, and so that a system
that becomes a system controller shows its subclouds without a restart.

sysinv also gives the system itself (``/v1/isystems``): it becomes the `Site` of the system's own
hosts (the system controller, in a distributed cloud) and the site of their facets. Alarms name
their host when the entity is ``host=<name>[.<key>=<value>...]``, and their site when it is
``subcloud=<name>...`` (else the system's: fm asks sysinv for it once, briefly, if the sysinv
target has not read it yet, and goes on without a site when sysinv does not answer).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import msgspec

from collectors.base import Capability
from collectors.openstack import CloudRef, CloudSession, EndpointMissing, ServiceClient
from sovereign_tui.model import Alarm, FacetOf, Observation, Site, StarlingxFacet
from sovereign_tui.poller import PollContext, PollError, Target

PAGE = 1000
"""sysinv's and fm's largest page (their ``api.limit_max``)."""


class _IHost(msgspec.Struct):
    uuid: str
    hostname: str | None = None
    """None for a host discovered but not yet provisioned."""
    personality: str | None = None
    administrative: str | None = None
    operational: str | None = None
    availability: str | None = None
    task: str | None = None


class _IHosts(msgspec.Struct):
    ihosts: list[_IHost]
    next: str | None = None


class _ISystem(msgspec.Struct):
    name: str | None = None
    region_name: str | None = None
    software_version: str | None = None


class _ISystems(msgspec.Struct):
    isystems: list[_ISystem]


class _EndpointSync(msgspec.Struct):
    endpoint_type: str
    sync_status: str | None = None


_SUBCLOUD_KEYS = {
    "management_state": "management-state",
    "availability_status": "availability-status",
    "deploy_status": "deploy-status",
    "software_version": "software-version",
    "region_name": "region-name",
}


class _Subcloud(msgspec.Struct, rename=_SUBCLOUD_KEYS):
    name: str
    management_state: str | None = None
    availability_status: str | None = None
    deploy_status: str | None = None
    software_version: str | None = None
    region_name: str | None = None
    sync_status: str | None = None
    endpoint_sync_status: list[_EndpointSync] = msgspec.field(default_factory=list)


class _Subclouds(msgspec.Struct):
    subclouds: list[_Subcloud]


class _Alarm(msgspec.Struct):
    uuid: str
    alarm_id: str
    entity_instance_id: str = ""
    severity: str = ""
    reason_text: str | None = None
    timestamp: str | None = None


class _Alarms(msgspec.Struct):
    alarms: list[_Alarm] | None = None
    ialarms: list[_Alarm] | None = None
    """The name fm's api-ref uses; the service answers ``alarms``."""
    next: str | None = None


def entity_part(entity: str, key: str) -> str | None:
    """The value of ``key`` in an fm entity instance id such as ``host=ctl-02.ntp=10.10.0.1``."""
    found = re.search(rf"(?:^|\.){re.escape(key)}=(.+?)(?=\.[A-Za-z_][\w-]*=|$)", entity)
    return found.group(1) if found else None


def overall_sync(sc: _Subcloud) -> str | None:
    """The subcloud's sync status, or one derived from its endpoints' when it has none."""
    if sc.sync_status:
        return sc.sync_status
    values = {e.sync_status for e in sc.endpoint_sync_status}
    if not values:
        return None
    if "out-of-sync" in values:
        return "out-of-sync"
    return "in-sync" if values == {"in-sync"} else "unknown"


def _versioned(endpoint: str, version: str) -> str:
    return endpoint if endpoint.endswith(version) else f"{endpoint}{version}"


class StarlingxCollector:
    name = "starlingx"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(
        self,
        ref: CloudRef,
        *,
        interval_s: float = 30.0,
        session: CloudSession | None = None,
        page_size: int = PAGE,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"starlingx page_size must be at least 1, got {page_size}")
        self.ref = ref
        self.interval_s = interval_s
        self.session = session or CloudSession(ref)
        self.page_size = page_size
        self.sysinv = ServiceClient(self.session, "platform", "sysinv")
        self.dcmanager = ServiceClient(self.session, "dcmanager", "dcmanager")
        self.fm = ServiceClient(self.session, "faultmanagement", "fm")
        self.target_ids = {svc: f"starlingx-{svc}:{ref.cloud}" for svc in ("sysinv", "dcmanager", "fm")}
        self.system_name: str | None = None
        """The system's name, once sysinv has answered (the site of its hosts and alarms)."""

    def targets(self) -> list[Target]:
        polls = {"sysinv": self.poll_sysinv, "dcmanager": self.poll_dcmanager, "fm": self.poll_fm}
        return [
            Target(
                id=self.target_ids[svc],
                source=self.name,
                endpoint=f"cloud:{self.ref.cloud}",
                interval_s=self.interval_s,
                poll=poll,
                fingerprint=f"{self.ref!r} page={self.page_size}",
            )
            for svc, poll in polls.items()
        ]

    async def _paged(self, ctx: PollContext, client: ServiceClient, url: str, kind: type[Any]) -> list[Any]:
        """Every item of a wsme collection, following ``next`` while pages come back full."""
        items: list[Any] = []
        seen: set[str] = set()
        next_url: str | None = url
        while next_url is not None:
            if next_url in seen:
                raise PollError(f"{client.name}: paging repeats {next_url.split('?')[0]}; the listing loops")
            seen.add(next_url)
            doc, _ = await client.get_json(ctx.http, next_url, timeout_s=ctx.timeout_s)
            try:
                page = msgspec.convert(doc, kind)
            except msgspec.ValidationError as exc:
                raise PollError(
                    f"{client.name}: unexpected response from {url.split('?')[0]} ({exc})"
                ) from None
            found = page.ihosts if isinstance(page, _IHosts) else (page.alarms or page.ialarms or [])
            items.extend(found)
            next_url = page.next if found else None
        return items

    # --- sysinv ------------------------------------------------------------------------------------

    async def _base(self) -> str:
        _, endpoint = await self.session.credentials("platform")
        return _versioned(endpoint, "/v1")

    async def _system(self, ctx: PollContext, base: str, timeout_s: float) -> _ISystem:
        """The system (``/v1/isystems``), and its name remembered as the site of its alarms."""
        doc, _ = await self.sysinv.get_json(ctx.http, f"{base}/isystems", timeout_s=timeout_s)
        try:
            systems = msgspec.convert(doc, _ISystems).isystems
        except msgspec.ValidationError as exc:
            raise PollError(f"sysinv: unexpected response from /v1/isystems ({exc})") from None
        system = systems[0] if systems else _ISystem()
        self.system_name = self._site_of(system)
        return system

    def _site_of(self, system: _ISystem) -> str:
        return system.name or self.ref.region or self.ref.cloud

    async def poll_sysinv(self, ctx: PollContext) -> Observation:
        base = await self._base()
        system = await self._system(ctx, base, ctx.timeout_s)
        url = f"{base}/ihosts?limit={self.page_size}"
        hosts: list[_IHost] = await self._paged(ctx, self.sysinv, url, _IHosts)
        now = ctx.clock.time()
        src = self.target_ids["sysinv"]
        site = self._site_of(system)
        facets = tuple(
            FacetOf(
                h.hostname or h.uuid,
                StarlingxFacet(
                    source=src,
                    observed_at=now,
                    uuid=h.uuid,
                    personality=h.personality or "unknown",
                    administrative=h.administrative or "unknown",
                    operational=h.operational or "unknown",
                    availability=h.availability or "unknown",
                    task=h.task or None,
                    site=site,
                ),
            )
            for h in hosts
        )
        own = Site(
            source=src,
            observed_at=now,
            name=site,
            region=system.region_name or self.ref.region,
            availability="online",
            software_version=system.software_version,
        )
        return Observation(facets=facets, sites=(own,))

    # --- dcmanager ---------------------------------------------------------------------------------

    async def poll_dcmanager(self, ctx: PollContext) -> Observation:
        try:
            _, endpoint = await self.session.credentials("dcmanager")
        except EndpointMissing:
            return Observation()  # a standalone system: no subclouds, and nothing wrong
        url = _versioned(endpoint, "/v1.0") + "/subclouds"
        doc, _ = await self.dcmanager.get_json(ctx.http, url, timeout_s=ctx.timeout_s)
        try:
            subclouds = msgspec.convert(doc, _Subclouds).subclouds
        except msgspec.ValidationError as exc:
            raise PollError(f"dcmanager: unexpected response from /v1.0/subclouds ({exc})") from None
        now = ctx.clock.time()
        src = self.target_ids["dcmanager"]
        sites = tuple(
            Site(
                source=src,
                observed_at=now,
                name=sc.name,
                region=sc.region_name,
                management=sc.management_state,
                availability=sc.availability_status,
                deploy_status=sc.deploy_status,
                sync_status=overall_sync(sc),
                software_version=sc.software_version,
            )
            for sc in subclouds
        )
        return Observation(sites=sites)

    # --- fm ------------------------------------------------------------------------------------------

    async def poll_fm(self, ctx: PollContext) -> Observation:
        if self.system_name is None:
            # Best effort, briefly: without sysinv the alarms are still worth showing, site unknown.
            with contextlib.suppress(PollError):
                await self._system(ctx, await self._base(), ctx.timeout_s / 4)
        _, endpoint = await self.session.credentials("faultmanagement")
        url = f"{_versioned(endpoint, '/v1')}/alarms?limit={self.page_size}"
        found: list[_Alarm] = await self._paged(ctx, self.fm, url, _Alarms)
        now = ctx.clock.time()
        src = self.target_ids["fm"]
        alarms = tuple(
            Alarm(
                source=src,
                observed_at=now,
                id=a.uuid,
                alarm_id=a.alarm_id,
                severity=a.severity,
                entity=a.entity_instance_id,
                reason=a.reason_text or "",
                timestamp=a.timestamp or "",
                site=entity_part(a.entity_instance_id, "subcloud") or self.system_name,
                host=entity_part(a.entity_instance_id, "host"),
            )
            for a in found
        )
        return Observation(alarms=alarms)

    async def aclose(self) -> None:
        return None
