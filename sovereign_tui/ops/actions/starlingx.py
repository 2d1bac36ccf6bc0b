"""StarlingX steps through the cloud's keystoneauth session (service type ``platform``): lock and
unlock a host with sysinv's JSON-patch ``PATCH /v1/ihosts/{uuid}`` of ``/action``, then follow
``administrative`` and ``task`` until the host is locked (or unlocked and enabled).

Locking taints the host's Kubernetes node ``services=disabled:NoExecute``, which evicts whatever
is left *without* honouring disruption budgets: drain plans lock last, after the evictions.
"""

from __future__ import annotations

import json
from typing import Any

from sovereign_tui.ops.actions.base import LayerUnavailable, StepContext, StepFailed, off_loop, one_line
from sovereign_tui.ops.actions.connections import Connections
from sovereign_tui.ops.plan import StepKind


def sysinv_error(body: bytes | str) -> str:
    """sysinv wraps its fault as JSON text inside ``error_message``."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return one_line(body)
    if isinstance(doc, dict) and "error_message" in doc:
        inner = doc["error_message"]
        try:
            inner_doc = json.loads(inner) if isinstance(inner, str) else inner
        except ValueError:
            return one_line(inner)
        if isinstance(inner_doc, dict):
            return one_line(inner_doc.get("faultstring") or inner)
        return one_line(inner)
    return one_line(doc)


class StarlingxActions:
    kinds = frozenset({StepKind.STX_LOCK, StepKind.STX_UNLOCK})

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    async def _sysinv(self) -> tuple[Any, str]:
        conn = await self.connections.openstack("starlingx")
        session = conn.session
        interface = self.connections.targets.interface

        def endpoint() -> str:
            from keystoneauth1 import exceptions as ks

            try:
                url = session.get_endpoint(
                    service_type="platform", interface=interface, region_name=self.connections.targets.region
                )
            except ks.EndpointNotFound:
                url = None
            except ks.ClientException as exc:
                raise LayerUnavailable(f"starlingx: {one_line(exc)}") from None
            if not url:
                raise LayerUnavailable("starlingx: no 'platform' (sysinv) endpoint in the cloud's catalog")
            base = str(url).rstrip("/")
            return base if base.endswith("/v1") else base + "/v1"

        return session, await off_loop(endpoint)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One sysinv request with the session's token; HTTP errors raise `StepFailed`."""
        from keystoneauth1 import exceptions as ks

        session, base = await self._sysinv()
        kwargs: dict[str, Any] = {"raise_exc": False, "headers": {"Accept": "application/json"}}
        if body is not None:
            kwargs["json"] = body
        try:
            resp = await off_loop(session.request, base + path, method, **kwargs)
        except ks.ClientException as exc:
            raise StepFailed(f"starlingx: {one_line(exc)}") from None
        if resp.status_code >= 400:
            raise StepFailed(f"starlingx: HTTP {resp.status_code}: {sysinv_error(resp.content)}")
        return resp.json() if resp.content else None

    async def hosts(self) -> list[dict[str, Any]]:
        doc = await self.request("GET", "/ihosts")
        return list((doc or {}).get("ihosts", []))

    async def run(self, ctx: StepContext) -> str:
        lock = ctx.step.kind == StepKind.STX_LOCK
        uuid, name = ctx.step.target, ctx.step.target_name
        host = await self.request("GET", f"/ihosts/{uuid}")
        if not ctx.data.get("requested"):
            if _done(host, lock):
                return f"host {name} already {'locked' if lock else 'unlocked'}"
            action = (
                ("force-lock" if ctx.force or ctx.params.get("force") == "true" else "lock")
                if lock
                else "unlock"
            )
            ctx.note(requested=True)
            host = await self.request(
                "PATCH", f"/ihosts/{uuid}", [{"op": "replace", "path": "/action", "value": action}]
            )
        idle = 0
        while True:
            if _done(host, lock):
                return f"host {name} {'locked' if lock else 'unlocked and enabled'}"
            task = host.get("task") or ""
            unchanged = host.get("administrative") == ("unlocked" if lock else "locked")
            idle = idle + 1 if not task and unchanged and _settled(host) else 0
            if idle >= 3:  # nothing pending three polls running: sysinv dropped the action
                verb = "lock" if lock else "unlock"
                raise StepFailed(f"host {name}: sysinv did not {verb} it (no task pending)")
            await ctx.pause(f"starlingx: {task or host.get('administrative')} / {host.get('availability')}")
            host = await self.request("GET", f"/ihosts/{uuid}")

    async def cancel(self, ctx: StepContext) -> str | None:
        return "a StarlingX lock or unlock cannot be aborted; it goes on in sysinv"


def _done(host: dict[str, Any], lock: bool) -> bool:
    if lock:
        return host.get("administrative") == "locked" and not host.get("task")
    return (
        host.get("administrative") == "unlocked"
        and host.get("operational") == "enabled"
        and not host.get("task")
    )


def _settled(host: dict[str, Any]) -> bool:
    """No action pending: sysinv clears ``task`` and ``action`` when it gives up."""
    return host.get("action") in (None, "", "none")
