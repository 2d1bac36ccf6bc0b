"""Ironic's provisioning state machine in the lab (after ironic/common/states.py).

An operator's verb moves a node through intermediate states over simulated time: deploy walks
deploying -> wait call-back -> deploying -> active; provide walks cleaning -> clean wait ->
cleaning -> available; undeploy goes deleting -> cleaning ... -> available. Busy states hold the
conductor's lock (``reservation``), so other actions answer 409 meanwhile; wait states do not, so
``abort`` works there. Invalid verbs answer 400 with Ironic's own message. A step can fail (per
node with `fail_next`, or at `failure_rate`): deploys end in ``deploy failed``, cleaning in
``clean failed`` with maintenance set, as Ironic does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sovereign_tui.lab.httpkit import ApiError
from sovereign_tui.lab.scenario import Node, Scenario
from sovereign_tui.lab.timeline import Event, Timeline


@dataclass
class IronicTimings:
    verify_s: float = 3.0
    clean_s: float = 5.0
    clean_wait_s: float = 15.0
    inspect_s: float = 5.0
    inspect_wait_s: float = 20.0
    deploy_s: float = 5.0
    callback_s: float = 25.0
    delete_s: float = 3.0
    adopt_s: float = 3.0
    rescue_s: float = 5.0
    rescue_wait_s: float = 10.0
    unrescue_s: float = 5.0
    service_s: float = 5.0
    service_wait_s: float = 10.0
    power_s: float = 2.0


VERB_MIN = {
    "manage": 4,
    "provide": 4,
    "inspect": 6,
    "abort": 13,
    "clean": 15,
    "adopt": 17,
    "rescue": 38,
    "unrescue": 38,
    "unhold": 85,
    "service": 87,
    "deploy": 73,
    "undeploy": 73,
}
"""Minimum API minor per provision target (the verbs not listed exist since 1.1)."""
TARGETS = {
    "active": "deploy",
    "deploy": "deploy",
    "deleted": "undeploy",
    "undeploy": "undeploy",
    "rebuild": "rebuild",
    "manage": "manage",
    "provide": "provide",
    "inspect": "inspect",
    "abort": "abort",
    "clean": "clean",
    "adopt": "adopt",
    "rescue": "rescue",
    "unrescue": "unrescue",
    "unhold": "unhold",
    "service": "service",
}
BUSY = frozenset(
    {
        "verifying",
        "cleaning",
        "inspecting",
        "deploying",
        "deleting",
        "adopting",
        "rescuing",
        "unrescuing",
        "servicing",
    }
)
POWER_TARGETS = {
    "power on": "power on",
    "power off": "power off",
    "rebooting": "power on",
    "soft power off": "power off",
    "soft rebooting": "power on",
}

_CLEAN = (("cleaning", "clean_s"), ("clean wait", "clean_wait_s"), ("cleaning", "clean_s"))
_DEPLOY = (("deploying", "deploy_s"), ("wait call-back", "callback_s"), ("deploying", "deploy_s"))
_PHASES: dict[str, tuple[tuple[str, str], ...]] = {
    "verify": (("verifying", "verify_s"),),
    "clean": _CLEAN,
    "deploy": _DEPLOY,
    "undeploy": (("deleting", "delete_s"), *_CLEAN),
    "inspect": (("inspecting", "inspect_s"), ("inspect wait", "inspect_wait_s")),
    "adopt": (("adopting", "adopt_s"),),
    "rescue": (("rescuing", "rescue_s"), ("rescue wait", "rescue_wait_s"), ("rescuing", "rescue_s")),
    "unrescue": (("unrescuing", "unrescue_s"),),
    "service": (("servicing", "service_s"), ("service wait", "service_wait_s"), ("servicing", "service_s")),
    "none": (),
}
# (state, verb) -> (phases, final state, target_provision_state, state on failure)
_T = tuple[str, str, str | None, str]
TRANSITIONS: dict[tuple[str, str], _T] = {
    ("enroll", "manage"): ("verify", "manageable", "manageable", "enroll"),
    ("manageable", "provide"): ("clean", "available", "available", "clean failed"),
    ("manageable", "clean"): ("clean", "manageable", "manageable", "clean failed"),
    ("manageable", "inspect"): ("inspect", "manageable", "manageable", "inspect failed"),
    ("inspect failed", "inspect"): ("inspect", "manageable", "manageable", "inspect failed"),
    ("manageable", "adopt"): ("adopt", "active", "active", "adopt failed"),
    ("adopt failed", "adopt"): ("adopt", "active", "active", "adopt failed"),
    ("available", "manage"): ("none", "manageable", None, "available"),
    ("clean failed", "manage"): ("none", "manageable", None, "clean failed"),
    ("inspect failed", "manage"): ("none", "manageable", None, "inspect failed"),
    ("adopt failed", "manage"): ("none", "manageable", None, "adopt failed"),
    ("available", "deploy"): ("deploy", "active", "active", "deploy failed"),
    ("active", "rebuild"): ("deploy", "active", "active", "deploy failed"),
    ("deploy failed", "deploy"): ("deploy", "active", "active", "deploy failed"),
    ("deploy failed", "rebuild"): ("deploy", "active", "active", "deploy failed"),
    ("error", "rebuild"): ("deploy", "active", "active", "deploy failed"),
    ("error", "deploy"): ("deploy", "active", "active", "deploy failed"),
    ("active", "rescue"): ("rescue", "rescue", "rescue", "rescue failed"),
    ("rescue", "rescue"): ("rescue", "rescue", "rescue", "rescue failed"),
    ("rescue failed", "rescue"): ("rescue", "rescue", "rescue", "rescue failed"),
    ("rescue", "unrescue"): ("unrescue", "active", "active", "unrescue failed"),
    ("rescue failed", "unrescue"): ("unrescue", "active", "active", "unrescue failed"),
    ("unrescue failed", "unrescue"): ("unrescue", "active", "active", "unrescue failed"),
    ("unrescue failed", "rescue"): ("rescue", "rescue", "rescue", "rescue failed"),
    ("active", "service"): ("service", "active", "active", "service failed"),
    ("service failed", "service"): ("service", "active", "active", "service failed"),
}
for _state in ("active", "deploy failed", "error", "rescue", "rescue failed", "unrescue failed"):
    TRANSITIONS[(_state, "undeploy")] = ("undeploy", "available", "available", "clean failed")
ABORTS = {
    "wait call-back": "deploy failed",
    "clean wait": "clean failed",
    "inspect wait": "inspect failed",
    "inspecting": "inspect failed",
    "rescue wait": "rescue failed",
    "service wait": "service failed",
}
_FAIL_TEXT = {
    "deploy failed": "Timeout reached while waiting for callback for node {uuid}",
    "clean failed": "Clean step erase_devices failed on node {uuid}: NVMe secure erase timed out",
    "inspect failed": "Inspection failed for node {uuid}: the ramdisk did not call back in time",
    "enroll": "Failed to get power state for node {uuid}: Redfish connection timed out",
}


def invalid(verb: str, node: Node) -> ApiError:
    return ApiError(
        400,
        f'The requested action "{verb}" can not be performed on node "{node.uuid}" while it is '
        f'in state "{node.provision_state}".',
    )


class Baremetal:
    def __init__(self, scenario: Scenario, timeline: Timeline, timings: IronicTimings | None = None) -> None:
        self.sc = scenario
        self.timeline = timeline
        self.timings = timings or IronicTimings()
        self.failure_rate = 0.0
        """Share of provisioning actions that fail (drawn from the scenario's seeded generator)."""
        self._runs: dict[str, Event] = {}

    def touch(self, node: Node) -> None:
        node.updated_at = self.timeline.wall()
        node.cache.clear()

    def _state(self, node: Node, state: str) -> None:
        node.provision_state = state
        node.provision_updated_at = self.timeline.wall()
        node.reservation = node.conductor if state in BUSY else None
        if state in ("deploying", "cleaning", "inspecting", "rescuing", "servicing"):
            node.power_state = "power on"
        elif state == "deleting":
            node.power_state = "power off"
        self.touch(node)

    def _locked(self, node: Node) -> None:
        if node.reservation is not None:
            raise ApiError(
                409,
                f"Node {node.uuid} is locked by host {node.reservation}, please retry after the "
                "current operation is completed.",
            )

    def provision(self, node: Node, target: Any, mv: int, body: dict[str, Any]) -> None:
        """PUT /v1/nodes/{id}/states/provision."""
        verb = TARGETS.get(target) if isinstance(target, str) else None
        if verb is None or mv < VERB_MIN.get(str(target), 1):
            if verb is not None:
                raise ApiError(406, f'The "{target}" provision target is not supported in API version 1.{mv}')
            raise ApiError(400, f"Invalid provision target {target!r}. Valid targets: {sorted(TARGETS)}")
        self._locked(node)
        if verb == "abort":
            return self._abort(node)
        if verb in ("deploy", "rebuild") and node.maintenance:
            raise ApiError(
                400,
                f"The provisioning operation can't be performed on node {node.uuid} because "
                "it's in maintenance mode.",
            )
        plan = TRANSITIONS.get((node.provision_state, verb))
        if plan is None:
            raise invalid(target, node)
        if verb == "clean" and not (body.get("clean_steps") or body.get("runbook")):
            raise ApiError(
                400, "clean_steps or runbook is required when setting target provision state to clean"
            )
        if verb == "rescue" and not body.get("rescue_password"):
            raise ApiError(
                400, "A non-empty 'rescue_password' is required when setting target provision state to rescue"
            )
        if verb in ("deploy", "rebuild") and "image_source" not in node.instance_info:
            raise ApiError(
                400,
                f"Cannot validate image information for node {node.uuid} because one or more "
                "parameters are missing from its instance_info. Missing are: ['image_source']",
            )
        phases_key, final, tgt, fail_state = plan
        fail = bool(_PHASES[phases_key]) and self._fails(node)
        node.target_provision_state = tgt
        node.last_error = None
        self._run(node, list(_PHASES[phases_key]), final, fail_state, fail, verb)

    def _fails(self, node: Node) -> bool:
        if node.fail_next:
            node.fail_next = False
            return True
        return self.failure_rate > 0 and self.sc.rng.random() < self.failure_rate

    def _run(
        self, node: Node, phases: list[tuple[str, str]], final: str, fail_state: str, fail: bool, verb: str
    ) -> None:
        if not phases:
            self._done(node, final, verb)
            return
        (state, timing), rest = phases[0], phases[1:]
        self._state(node, state)
        delay = float(getattr(self.timings, timing))
        if fail and not rest:
            self._runs[node.uuid] = self.timeline.after(delay, lambda: self._failed(node, fail_state))
        else:
            self._runs[node.uuid] = self.timeline.after(
                delay, lambda: self._run(node, rest, final, fail_state, fail, verb)
            )

    def _done(self, node: Node, final: str, verb: str) -> None:
        self._runs.pop(node.uuid, None)
        self._state(node, final)
        node.target_provision_state = None
        if final in ("available", "manageable"):
            node.power_state = "power off"
        if verb == "undeploy":
            node.instance_info, node.instance_uuid = {}, None
        if verb == "inspect":
            node.inspection_started_at = node.provision_updated_at
            node.inspection_finished_at = self.timeline.wall()
        if verb == "manage" and node.power_state is None:
            node.power_state = "power off"
        if node.host is not None:
            holder = (node.instance_uuid or node.uuid) if final in ("active", "rescue") else None
            for g in node.host.gpus:
                g.holder = holder
        self.touch(node)

    def _failed(self, node: Node, fail_state: str, error: str | None = None) -> None:
        self._runs.pop(node.uuid, None)
        self._state(node, fail_state)
        node.target_provision_state = None
        node.last_error = error or _FAIL_TEXT.get(fail_state, "{uuid}: step failed").format(uuid=node.uuid)
        if fail_state == "clean failed":
            node.maintenance, node.fault, node.maintenance_reason = True, "clean failure", node.last_error
        self.touch(node)

    def _abort(self, node: Node) -> None:
        fail_state = ABORTS.get(node.provision_state)
        if fail_state is None:
            raise invalid("abort", node)
        event = self._runs.pop(node.uuid, None)
        if event is not None:
            event.cancel()
        operation = fail_state.split()[0]
        self._failed(node, fail_state, f"{operation.capitalize()} operation aborted for node {node.uuid}")
        if fail_state == "clean failed":
            node.maintenance, node.fault, node.maintenance_reason = False, None, None

    def set_power(self, node: Node, target: Any, mv: int) -> None:
        """PUT /v1/nodes/{id}/states/power."""
        if target not in POWER_TARGETS or (str(target).startswith("soft") and mv < 27):
            raise ApiError(400, f"Invalid power state {target!r}.")
        self._locked(node)
        node.target_power_state = POWER_TARGETS[target]
        node.reservation = node.conductor
        self.touch(node)

        def done() -> None:
            node.power_state, node.target_power_state = POWER_TARGETS[target], None
            if node.provision_state not in BUSY:
                node.reservation = None
            self.touch(node)

        self.timeline.after(self.timings.power_s, done)

    def set_maintenance(self, node: Node, on: bool, reason: str | None = None) -> None:
        node.maintenance = on
        node.maintenance_reason = reason if on else None
        if not on:
            node.fault = None
        self.touch(node)
