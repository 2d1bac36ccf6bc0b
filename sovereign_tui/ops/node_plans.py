"""Plans for a bare-metal node's provision verbs, beside the deploy of `provisioning`:

- provide: ``manageable`` -> ``available`` (through cleaning when Ironic cleans automatically); a
  node in ``enroll``, or left in ``clean failed``/``inspect failed``/``adopt failed``, is managed
  first (its own step).
- undeploy: ``active`` -> ``available`` through ``deleting`` and cleaning: the instance on it is
  gone and its disks wiped, so the plan is confirmed by typing the node's name.

The node is read live from Ironic (the snapshot may be a poll old) and the snapshot is the
fallback. What stands in the way is a blocker on the step, never an error: a node in maintenance
(with the reason Ironic holds), a node in a state the verb does not start from, a node whose
conductor holds its lock now (a soft blocker: the lock is usually brief).
"""

from __future__ import annotations

from typing import Literal

from sovereign_tui.model import IronicFacet, Snapshot
from sovereign_tui.ops.actions.base import LayerUnavailable, StepFailed
from sovereign_tui.ops.actions.ironic import MANAGE, PROVIDE, UNDEPLOY, NodeFacts, Verb, locked_line
from sovereign_tui.ops.plan import Blocker, Plan, Step, StepKind
from sovereign_tui.ops.plan_context import PlanContext, PlanError

NodeVerb = Literal["provide", "undeploy"]
NODE_VERBS: tuple[NodeVerb, ...] = ("provide", "undeploy")


def find_node(snapshot: Snapshot, node: str) -> tuple[str, IronicFacet] | None:
    """(host name, facet) of the Ironic node named `node` (its host's name, its name or uuid)."""
    for h in snapshot.hosts:
        ir = h.ironic
        if ir is not None and node in (h.name, ir.name, ir.node_uuid):
            return h.name, ir
    return None


def _facts(ir: IronicFacet) -> NodeFacts:
    return NodeFacts(
        uuid=ir.node_uuid,
        name=ir.name,
        provision_state=ir.provision_state,
        target_provision_state=ir.target_provision_state,
        maintenance=ir.maintenance,
        maintenance_reason=ir.maintenance_reason,
        instance_uuid=ir.instance_uuid,
        last_error=ir.last_error,
    )


async def _node(ctx: PlanContext, node: str) -> tuple[str, NodeFacts]:
    """(host name, facts): read live from Ironic, else (with a note) from the snapshot."""
    if not ctx.layer_on("ironic"):
        raise PlanError("ironic: left out of ops.layers in the settings")
    known = find_node(ctx.snapshot, node)
    try:
        facts = await ctx.inventory.adapters.ironic.node_facts(known[1].node_uuid if known else node)
    except (LayerUnavailable, StepFailed) as exc:
        if known is None:
            raise PlanError(str(exc)) from None
        ctx.notes.append(f"{exc}: planned from the last snapshot")
        return known[0], _facts(known[1])
    if facts is None:
        raise PlanError(f"no Ironic node {node!r} (the Bare metal screen lists the nodes)")
    return (known[0] if known else facts.label), facts


def _blocker(facts: NodeFacts, verb: Verb) -> Blocker | None:
    name, state = facts.label, facts.provision_state
    if facts.maintenance:
        why = facts.maintenance_reason or "no reason given"
        return Blocker(
            reason=f"node is in maintenance ({why}): no {verb.name} while it is; unset maintenance first "
            "(an undrain of its host does)",
            kind="state",
            detail="maintenance",
        )
    if facts.target_provision_state:
        return Blocker(
            reason=f"node is {state}, on its way to {facts.target_provision_state}: wait until it gets there",
            kind="state",
            detail=state,
        )
    if state not in verb.start:
        already = f"node is {state} already: nothing to {verb.name}" if state == verb.goal else None
        return Blocker(
            reason=already or f"node is {state}; {verb.name} needs it {' or '.join(sorted(verb.start))}",
            kind="state",
            detail=state,
        )
    if facts.reservation:
        return Blocker(
            reason=locked_line(name, facts.reservation) + " (the step fails if it still is)",
            kind="locked",
            hard=False,
            detail=facts.reservation,
        )
    return None


async def plan_node(ctx: PlanContext, verb: NodeVerb, node: str) -> Plan:
    host, facts = await _node(ctx, node)
    name = facts.label
    touches = (f"ironic:node:{facts.uuid}",)
    steps: list[Step] = []
    warnings: list[str] = []
    if verb == "provide":
        state = facts.provision_state
        if state in MANAGE.start:
            steps.append(
                ctx.step(
                    StepKind.IRONIC_MANAGE,
                    facts.uuid,
                    name,
                    f"manage node {name} ({state} -> manageable"
                    + (": Ironic verifies its driver)" if state == "enroll" else ")"),
                    host=host,
                    touches=touches,
                    blocker=_blocker(facts, MANAGE),
                )
            )
        steps.append(
            ctx.step(
                StepKind.IRONIC_PROVIDE,
                facts.uuid,
                name,
                f"provide node {name} (manageable -> available, through cleaning)",
                host=host,
                touches=touches,
                # after a manage step the node will be manageable: that step carries any blocker
                blocker=None if steps else _blocker(facts, PROVIDE),
            )
        )
    else:
        instance: tuple[str, ...] = ()
        if facts.instance_uuid:
            instance = (f"ironic:instance:{facts.instance_uuid}",)
            warnings.append(_instance_warning(ctx.snapshot, facts.instance_uuid))
        steps.append(
            ctx.step(
                StepKind.IRONIC_UNDEPLOY,
                facts.uuid,
                name,
                f"undeploy node {name} ({facts.provision_state} -> deleting -> cleaning -> available)",
                host=host,
                touches=touches + instance,
                blocker=_blocker(facts, UNDEPLOY),
                warning="the instance is destroyed and the node's disks are wiped by cleaning",
            )
        )
    return ctx.plan(verb, name, steps, leases=[host], warnings=warnings)


def _instance_warning(snapshot: Snapshot, instance: str) -> str:
    server = next((w for w in snapshot.workloads if w.id == instance and w.kind == "nova-vm"), None)
    if server is not None:
        return (
            f"instance {instance} is Nova's server {server.name}: delete the server in Nova instead, or Nova "
            "keeps a server whose machine is gone"
        )
    return f"instance {instance} on the node is destroyed"
