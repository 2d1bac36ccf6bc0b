"""Ironic steps through openstacksdk's baremetal proxy: maintenance on and off, and a deploy
(``available`` -> ``active``) followed through Ironic's provision states.

Ironic refuses a deploy on a node in maintenance (HTTP 400) and answers 409 while its conductor
holds the node's lock: both end the step with Ironic's own message.
"""

from __future__ import annotations

from typing import Any

from sovereign_tui.ops.actions.base import StepContext, StepFailed, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.actions.nova import call
from sovereign_tui.ops.plan import StepKind

DEPLOYING = frozenset({"deploying", "wait call-back", "deploy wait"})
FAILED = frozenset({"deploy failed", "error"})


class IronicActions:
    kinds = frozenset(
        {StepKind.IRONIC_MAINTENANCE_ON, StepKind.IRONIC_MAINTENANCE_OFF, StepKind.IRONIC_DEPLOY}
    )

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    async def _baremetal(self) -> Any:
        return await self.connections.proxy("baremetal", "ironic")

    async def run(self, ctx: StepContext) -> str:
        kind = ctx.step.kind
        if kind in (StepKind.IRONIC_MAINTENANCE_ON, StepKind.IRONIC_MAINTENANCE_OFF):
            return await self._maintenance(ctx, on=kind == StepKind.IRONIC_MAINTENANCE_ON)
        if kind == StepKind.IRONIC_DEPLOY:
            return await self._deploy(ctx)
        raise StepFailed(f"ironic: no action for {kind}")

    async def cancel(self, ctx: StepContext) -> str | None:
        if ctx.step.kind != StepKind.IRONIC_DEPLOY:
            return None
        bm = await self._baremetal()
        node = await call(bm.get_node, ctx.step.target)
        if node.provision_state != "wait call-back":
            return f"a deploy in state {node.provision_state!r} cannot be aborted; it goes on in Ironic"
        await call(bm.set_node_provision_state, node, "abort")
        return "deploy aborted (the node goes to deploy failed)"

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
            await call(bm.set_node_provision_state, node, "active", config_drive=_drive(ctx))
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


def _drive(ctx: StepContext) -> dict[str, object] | None:
    hostname = ctx.params.get("hostname")
    return {"meta_data": {"hostname": hostname}} if hostname else None
