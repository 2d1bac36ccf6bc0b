"""Ironic steps through openstacksdk's baremetal proxy: maintenance on and off, and the provision
verbs an operator uses on a node, each followed through Ironic's provision states:

- deploy    ``available`` -> ``active`` (deploying, wait call-back)
- manage    ``enroll`` (or a failed clean, inspection, adoption) -> ``manageable`` (verifying)
- provide   ``manageable`` -> ``available`` (cleaning, clean wait: when Ironic cleans automatically)
- undeploy  ``active`` -> ``available``, Ironic's target ``deleted`` (deleting, then cleaning)

Ironic refuses a deploy on a node in maintenance (HTTP 400) but would run the other verbs on it
unattended: the adapter refuses those itself, quoting the maintenance reason Ironic holds. A node
whose conductor holds its lock (``reservation``) answers 409 to any verb: the step ends with one
line naming the holder instead of waiting behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, off_loop, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.actions.nova import call, os_error
from sovereign_tui.ops.plan import StepKind

DEPLOYING = frozenset({"deploying", "wait call-back", "deploy wait"})
FAILED = frozenset({"deploy failed", "error"})


@dataclass(frozen=True)
class Verb:
    """One provision verb: the target Ironic is sent, the states it starts from, where it ends."""

    name: str
    target: str
    start: frozenset[str]
    goal: str
    failed: frozenset[str]
    """States the node ends in when Ironic gives up (with ``last_error``)."""


MANAGE = Verb(
    "manage",
    "manage",
    frozenset({"enroll", "clean failed", "inspect failed", "adopt failed"}),
    "manageable",
    frozenset(),
)
PROVIDE = Verb("provide", "provide", frozenset({"manageable"}), "available", frozenset({"clean failed"}))
UNDEPLOY = Verb(
    "undeploy",
    "deleted",
    frozenset({"active", "deploy failed", "error", "rescue", "rescue failed", "unrescue failed"}),
    "available",
    frozenset({"clean failed", "error"}),
)
VERBS = {StepKind.IRONIC_MANAGE: MANAGE, StepKind.IRONIC_PROVIDE: PROVIDE, StepKind.IRONIC_UNDEPLOY: UNDEPLOY}
ABORTABLE = {"wait call-back": ("deploy", "deploy failed"), "clean wait": ("cleaning", "clean failed")}
"""Wait states Ironic can abort: what is aborted there, and the state the node goes to."""


@dataclass(frozen=True)
class NodeFacts:
    """What a planner needs to know of a node now (a live read, fresher than the snapshot)."""

    uuid: str
    name: str | None
    provision_state: str
    target_provision_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    reservation: str | None = None
    instance_uuid: str | None = None
    last_error: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.uuid


def locked_line(name: str, holder: str | None) -> str:
    who = f"conductor {holder}" if holder else "its conductor"
    return f"node {name} is locked by {who} (another action runs on it): try again once that ends"


def maintenance_line(name: str, reason: str | None, verb: str) -> str:
    why = one_line(reason) if reason else "no reason given"
    return f"node {name} is in maintenance ({why}): no {verb} while it is; unset maintenance first"


class IronicActions:
    kinds = frozenset(
        {
            StepKind.IRONIC_MAINTENANCE_ON,
            StepKind.IRONIC_MAINTENANCE_OFF,
            StepKind.IRONIC_DEPLOY,
            *VERBS,
        }
    )

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    async def _baremetal(self) -> Any:
        return await self.connections.proxy("baremetal", "ironic")

    async def node_facts(self, ident: str) -> NodeFacts | None:
        """The node named or numbered `ident` as Ironic has it now; None when there is none."""
        from keystoneauth1 import exceptions as ks
        from openstack import exceptions

        bm = await self._baremetal()
        try:
            node = await off_loop(bm.get_node, ident)
        except exceptions.NotFoundException:
            return None
        except (exceptions.SDKException, ks.ClientException) as exc:
            raise StepFailed(f"ironic: {os_error(exc)}") from None
        return NodeFacts(
            uuid=str(node.id),
            name=node.name,
            provision_state=str(node.provision_state or "unknown"),
            target_provision_state=node.target_provision_state,
            maintenance=bool(node.is_maintenance),
            maintenance_reason=node.maintenance_reason,
            reservation=node.reservation,
            instance_uuid=node.instance_id,
            last_error=node.last_error,
        )

    async def run(self, ctx: StepContext) -> str:
        kind = ctx.step.kind
        if kind in (StepKind.IRONIC_MAINTENANCE_ON, StepKind.IRONIC_MAINTENANCE_OFF):
            return await self._maintenance(ctx, on=kind == StepKind.IRONIC_MAINTENANCE_ON)
        if kind == StepKind.IRONIC_DEPLOY:
            return await self._deploy(ctx)
        if kind in VERBS:
            return await self._verb(ctx, VERBS[kind])
        raise StepFailed(f"ironic: no action for {kind}")

    async def cancel(self, ctx: StepContext) -> str | None:
        if ctx.step.kind not in (StepKind.IRONIC_DEPLOY, StepKind.IRONIC_PROVIDE, StepKind.IRONIC_UNDEPLOY):
            return None
        bm = await self._baremetal()
        node = await call(bm.get_node, ctx.step.target)
        state = node.provision_state
        if state not in ABORTABLE:
            return f"a node {state} cannot be aborted; it goes on in Ironic"
        what, after = ABORTABLE[state]
        await call(bm.set_node_provision_state, node, "abort")
        return f"{what} aborted (the node goes to {after})"

    async def _maintenance(self, ctx: StepContext, *, on: bool) -> str:
        bm = await self._baremetal()
        node = await call(bm.get_node, ctx.step.target)
        name = node.name or node.id
        if bool(node.is_maintenance) == on:
            return f"node {name} already {'in' if on else 'out of'} maintenance"
        if on:
            await call(bm.set_node_maintenance, node, reason=ctx.params.get("reason") or "drained")
        else:
            await call(bm.unset_node_maintenance, node)
        return f"node {name} {'in' if on else 'out of'} maintenance"

    async def _request(self, bm: Any, node: Any, target: str, **kwargs: Any) -> None:
        """Ask Ironic for `target`; its conductor's lock (409) becomes one line naming the holder."""
        try:
            await call(bm.set_node_provision_state, node, target, **kwargs)
        except StepFailed as exc:
            if str(exc).startswith("HTTP 409"):
                holder = getattr(await call(bm.get_node, node.id), "reservation", None)
                raise StepFailed(locked_line(node.name or node.id, holder)) from None
            raise

    async def _deploy(self, ctx: StepContext) -> str:
        bm = await self._baremetal()
        node = await call(bm.get_node, ctx.step.target)
        name = node.name or node.id
        if not ctx.data.get("requested"):
            if node.provision_state == "active":
                return f"node {name} already active"
            if node.provision_state != "available":
                raise StepFailed(f"node {name} is {node.provision_state}; a deploy needs it available")
            image = ctx.params["image_source"]
            if (node.instance_info or {}).get("image_source") != image:
                patch = [{"op": "add", "path": "/instance_info/image_source", "value": image}]
                node = await call(bm.patch_node, node, patch)
            ctx.note(requested=True)
            await self._request(bm, node, "active", config_drive=_drive(ctx))
            node = await call(bm.get_node, ctx.step.target)
        while True:
            state = node.provision_state
            if state == "active":
                return f"node {name} deployed (active)"
            if state in FAILED:
                raise StepFailed(f"deploy of {name} failed: {one_line(node.last_error or state)}")
            if state == "available" and not node.target_provision_state:
                # asked, but Ironic never started (the request was lost before a crash): ask again
                ctx.note(requested=False)
                return await self._deploy(ctx)
            await ctx.pause(f"ironic: {state}")
            node = await call(bm.get_node, ctx.step.target)

    async def _verb(self, ctx: StepContext, verb: Verb) -> str:
        """Manage, provide or undeploy: check, ask once (noted for a resume), follow to the goal."""
        bm = await self._baremetal()
        node = await call(bm.get_node, ctx.step.target)
        name = node.name or node.id
        if not ctx.data.get("requested"):
            state = node.provision_state
            if state == verb.goal and not node.target_provision_state:
                return f"node {name} already {verb.goal}"
            if node.is_maintenance:
                raise StepFailed(maintenance_line(name, node.maintenance_reason, verb.name))
            if node.reservation:
                raise StepFailed(locked_line(name, node.reservation))
            if state not in verb.start or node.target_provision_state:
                heading = f" (to {node.target_provision_state})" if node.target_provision_state else ""
                raise StepFailed(
                    f"node {name} is {state}{heading}; {verb.name} needs it {' or '.join(sorted(verb.start))}"
                )
            ctx.note(requested=True, before=_mark(node))
            await self._request(bm, node, verb.target)
            node = await call(bm.get_node, ctx.step.target)
        while True:
            state, heading = node.provision_state, node.target_provision_state
            if state == verb.goal and not heading:
                return f"node {name} {verb.goal} ({verb.name} done)"
            if state in verb.failed or (state in verb.start and not heading):
                if _mark(node) != ctx.data.get("before"):
                    why = one_line(node.last_error or f"Ironic left it in {state}")
                    raise StepFailed(f"{verb.name} of {name} failed ({state}): {why}")
                # asked, but Ironic never started (the request was lost before a crash): ask again
                ctx.note(requested=False)
                return await self._verb(ctx, verb)
            await ctx.pause(f"ironic: {state}")
            node = await call(bm.get_node, ctx.step.target)


def _mark(node: Any) -> list[str | None]:
    """What changes once Ironic acts on a request for the node: its record's time, its last error."""
    return [str(node.updated_at or ""), node.last_error]


def _drive(ctx: StepContext) -> dict[str, object] | None:
    hostname = ctx.params.get("hostname")
    return {"meta_data": {"hostname": hostname}} if hostname else None
