"""Placement: which consumer holds each GPU, from the device resource providers Nova keeps there.

Nova's API does not say which device a server holds; Placement does. A passed-through device is a
PCI-in-Placement provider (Nova 2023.2+) named ``<hypervisor hostname>_<PCI address>``, a GPU
carved into vGPUs is the libvirt driver's ``<hypervisor hostname>_pci_0000_18_00_0``; both are
children of the compute node's provider, and their allocations name the consumer (the server, or
a migration while the server moves).

Placement has no bulk allocation listing, so a poll lists every provider (one request) and re-reads
the allocations of a device provider only when its generation moved (Placement bumps it on every
change of its allocations): a quiet cloud costs one request a poll, and a first poll cut short
keeps what it read for the next. Consumer types (1.38+) are read once per new consumer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec

from collectors.base import Capability
from collectors.openstack import CloudRef, CloudServiceCollector, CloudSession, EndpointMissing
from sovereign_tui.gpu_attribution import pci_address
from sovereign_tui.model import GpuAllocation, Observation
from sovereign_tui.poller import PollContext, PollError

OUR_MAX = (1, 39)
"""Newest Placement microversion whose shapes this collector reads."""
NEED = (1, 14)
"""Nested providers (parent and root uuids) appear at 1.14."""
TYPES_FROM = (1, 38)
"""Consumer types (INSTANCE, MIGRATION) appear at 1.38."""
CONCURRENCY = 8
"""Requests in flight at once for the allocations of changed providers."""
NVIDIA = "10DE"
_VGPU_DEVICE = re.compile(r"pci_([0-9a-f]{4})_([0-9a-f]{2})_([0-9a-f]{2})_([0-7])")


class _Provider(msgspec.Struct):
    uuid: str
    name: str
    generation: int | None = None
    parent_provider_uuid: str | None = None
    root_provider_uuid: str | None = None


class _Providers(msgspec.Struct):
    resource_providers: list[_Provider]


class _Version(msgspec.Struct):
    max_version: str
    min_version: str = "1.0"


class _Root(msgspec.Struct):
    versions: list[_Version]


class _Used(msgspec.Struct):
    resources: dict[str, int]


class _ProviderAllocations(msgspec.Struct):
    allocations: dict[str, _Used]
    resource_provider_generation: int | None = None


class _ConsumerAllocations(msgspec.Struct):
    allocations: dict[str, Any]
    consumer_type: str | None = None


def _parse(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def negotiate(server_min: str, server_max: str, ours: tuple[int, int] = OUR_MAX) -> tuple[int, int]:
    chosen = min(_parse(server_max), ours)
    if chosen < NEED or chosen < _parse(server_min):
        raise PollError(
            f"placement: the service speaks {server_min} to {server_max}; this reads nested providers "
            f"(1.{NEED[1]}) up to 1.{OUR_MAX[1]}"
        )
    return chosen


def device_address(name: str, root_name: str) -> str | None:
    """The PCI address a device provider's name carries under its compute node's name: Nova's
    ``<root>_0000:18:00.0`` (PCI in Placement) or libvirt's ``<root>_pci_0000_18_00_0`` (vGPU)."""
    if not name.startswith(root_name + "_"):
        return None
    tail = name[len(root_name) + 1 :]
    vgpu = _VGPU_DEVICE.fullmatch(tail.lower())
    if vgpu is not None:
        domain, bus, slot, function = vgpu.groups()
        tail = f"{domain}:{bus}:{slot}.{function}"
    return pci_address(tail)


def is_gpu_class(resource_class: str) -> bool:
    """Whether a device's resource class may be a GPU: everything but another vendor's PCI class."""
    return not resource_class.startswith("CUSTOM_PCI_") or resource_class.startswith(f"CUSTOM_PCI_{NVIDIA}_")


class PlacementCollector(CloudServiceCollector):
    name = "placement"
    capabilities: frozenset[Capability] = frozenset({"read"})

    service_type = "placement"

    def __init__(
        self,
        ref: CloudRef,
        *,
        interval_s: float = 15.0,
        session: CloudSession | None = None,
        page_size: int = 1000,
    ) -> None:
        super().__init__(ref, interval_s=interval_s, session=session, page_size=page_size)
        self.version: tuple[int, int] | None = None
        self._allocations: dict[str, tuple[int | None, dict[str, dict[str, int]]]] = {}
        """Device provider uuid -> (its generation when read, consumer -> resource class -> amount)."""
        self._types: dict[str, str] = {}
        """Consumer uuid -> its Placement consumer type."""

    async def _get(self, ctx: PollContext, path: str, kind: type[Any]) -> Any:
        v = self.version
        headers = {"OpenStack-API-Version": f"placement {v[0]}.{v[1]}"} if v is not None else None
        try:
            doc, _ = await self.client.get_json(ctx.http, path, headers=headers, timeout_s=ctx.timeout_s)
        except EndpointMissing as exc:
            raise PollError(
                f"placement: {exc} (register Placement in Keystone, or set sources.placement.enabled = false)"
            ) from None
        try:
            return msgspec.convert(doc, kind)
        except msgspec.ValidationError as exc:
            raise PollError(f"placement: unexpected response from {path.split('?')[0]} ({exc})") from None

    async def _negotiate(self, ctx: PollContext) -> tuple[int, int]:
        if self.version is None:
            root = await self._get(ctx, "/", _Root)
            if not root.versions:
                raise PollError("placement: the root version document lists no version")
            v = root.versions[0]
            self.version = negotiate(v.min_version, v.max_version)
        return self.version

    async def poll(self, ctx: PollContext) -> Observation:
        version = await self._negotiate(ctx)
        listing = await self._get(ctx, "/resource_providers", _Providers)
        roots = {p.uuid: p for p in listing.resource_providers if p.parent_provider_uuid is None}
        devices: list[tuple[_Provider, _Provider, str]] = []
        for p in listing.resource_providers:
            root = roots.get(p.root_provider_uuid or "") if p.parent_provider_uuid else None
            addr = device_address(p.name, root.name) if root is not None else None
            if root is not None and addr is not None:
                devices.append((p, root, addr))
        live = {p.uuid for p, _, _ in devices}
        for gone in self._allocations.keys() - live:
            del self._allocations[gone]
        changed = [
            p
            for p, _, _ in devices
            if p.generation is None or self._allocations.get(p.uuid, (None,))[0] != p.generation
        ]
        await _bounded([partial(self._read_allocations, ctx, p) for p in changed])
        consumers = {c for _, held in self._allocations.values() for c in held}
        for gone in self._types.keys() - consumers:
            del self._types[gone]
        if version >= TYPES_FROM:
            await _bounded([partial(self._read_type, ctx, c) for c in sorted(consumers - self._types.keys())])
        now = ctx.clock.time()
        found: list[GpuAllocation] = []
        for p, root, addr in devices:
            for consumer, resources in sorted(self._allocations[p.uuid][1].items()):
                for rc, amount in sorted(resources.items()):
                    if amount <= 0 or not is_gpu_class(rc):
                        continue
                    found.append(
                        GpuAllocation(
                            source=self.target_id,
                            observed_at=now,
                            hypervisor=root.name,
                            hypervisor_id=root.uuid,
                            bus_id=addr,
                            provider=p.uuid,
                            consumer=consumer,
                            consumer_type=self._types.get(consumer),
                            resource_class=rc,
                            amount=amount,
                        )
                    )
        detail = {"devices": str(len(devices)), "allocations": str(len(found)), "read": str(len(changed))}
        return Observation(gpu_allocations=tuple(found), health_detail=detail)

    async def _read_allocations(self, ctx: PollContext, p: _Provider) -> None:
        doc = await self._get(ctx, f"/resource_providers/{p.uuid}/allocations", _ProviderAllocations)
        generation = (
            doc.resource_provider_generation if doc.resource_provider_generation is not None else p.generation
        )
        self._allocations[p.uuid] = (generation, {c: dict(u.resources) for c, u in doc.allocations.items()})

    async def _read_type(self, ctx: PollContext, consumer: str) -> None:
        doc = await self._get(ctx, f"/allocations/{consumer}", _ConsumerAllocations)
        if doc.consumer_type:
            self._types[consumer] = doc.consumer_type


async def _bounded(calls: list[Callable[[], Awaitable[None]]]) -> None:
    """Run `calls`, at most CONCURRENCY at a time, all to the end; then raise the first failure.
    What succeeded is kept by the calls themselves, so a failed poll's reads are not lost."""
    if not calls:
        return
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    results = await asyncio.gather(*(run(c) for c in calls), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
