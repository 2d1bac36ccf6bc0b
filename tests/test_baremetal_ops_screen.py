"""The Bare metal screen's provide and undeploy keys, driven by a Pilot against the real lab (the
rig of test_ops_screens: the real collectors, the real `Operations` engine behind
`LocalOperations`, a FakeClock): shown in the footer, the help and the palette where the role
allows, absent for a viewer, and an undeploy run from the key through the typed name to the
node back in ``available``, journaled and audited."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette
from textual.widgets import Button, Footer, Static
from textual.widgets._footer import FooterKey

from screens.baremetal import BaremetalScreen
from screens.help import help_rows
from screens.plan import PlanScreen
from screens.widgets.snapshot_table import SnapshotTable
from sovereign_tui.app import SovereignApp
from tests.test_ops_screens import (
    KEY,
    OPERATOR,
    SIZE,
    VIEWER,
    Rig,
    action_ids,
    audit_records,
    cursor_on,
    palette_searched,
    rig,
    run_to_end,
    settled,
    until,
)

__all__ = ["rig"]  # the fixture, shared with test_ops_screens
NODE_KEYS = {"provide-node", "undeploy-node"}


def footer_descriptions(app: SovereignApp) -> set[str]:
    footer = app.screen.query_one(Footer)
    return {k.description for k in footer.query(FooterKey)}


async def test_undeploy_a_node_from_the_bare_metal_screen(rig: Rig) -> None:
    node = next(n for n in rig.lab.lab.scenario.nodes if n.provision_state == "active" and not n.maintenance)
    app = rig.app(OPERATOR)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["baremetal"])
        screen = app.screen
        assert isinstance(screen, BaremetalScreen)
        assert action_ids(app) >= NODE_KEYS
        assert {"Provide", "Undeploy"} <= footer_descriptions(app)
        assert {r.id for r in help_rows(screen)} >= NODE_KEYS
        await cursor_on(pilot, screen.query_one("#nodes", SnapshotTable), node.uuid)
        await pilot.press("U")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        assert plan_screen.state == "ready", plan_screen.error
        (plan,) = plan_screen.plans
        assert plan.kind == "undeploy" and plan.target == node.name and plan.destructive
        assert plan.steps[0].target == node.uuid and plan.steps[0].blocker is None
        summary = str(plan_screen.query_one("#plan-summary", Static).render())
        assert f"type {node.name} to run it" in summary and "DESTRUCTIVE" in summary
        run = plan_screen.query_one("#run", Button)
        assert run.disabled and plan_screen.check_action("run_plan", ()) is None  # shown, not enabled
        await pilot.press(*node.name[:-1])
        assert run.disabled  # not the whole name yet
        await pilot.press(node.name[-1])
        assert not run.disabled
        await pilot.press("enter")
        result = await run_to_end(pilot, rig, plan.id)
        assert result.ok, result.message
        shown = str(plan_screen.query_one("#plan-progress", Static).render())
        assert f"undeploy {node.name}: succeeded" in shown
    assert node.provision_state == "available" and node.instance_uuid is None
    assert rig.lab.counts[f"ironic.provision:{node.name}:deleted"] == 1
    records = [r for r in audit_records(rig.ops) if r.operation == plan.id]
    assert [(r.action, r.result) for r in records] == [
        ("undeploy", "started"),
        ("ironic.undeploy", "done"),
        ("undeploy", "succeeded"),
    ]
    assert {r.who for r in records} == {OPERATOR.name}


async def test_the_node_keys_follow_the_role_in_footer_help_and_palette(rig: Rig) -> None:
    node = next(n for n in rig.lab.lab.scenario.nodes if n.provision_state == "active")
    viewer = rig.app(VIEWER)
    async with viewer.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["baremetal"])
        assert not action_ids(viewer) & NODE_KEYS
        assert not {"Provide", "Undeploy"} & footer_descriptions(viewer)
        assert not {r.id for r in help_rows(viewer.screen)} & NODE_KEYS
        await cursor_on(pilot, viewer.screen.query_one("#nodes", SnapshotTable), node.uuid)
        await pilot.press("U", "a")
        assert isinstance(viewer.screen, BaremetalScreen)  # nothing planned
    operator = rig.app(OPERATOR)
    async with operator.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["baremetal"])
        await cursor_on(pilot, operator.screen.query_one("#nodes", SnapshotTable), node.uuid)
        await pilot.press("ctrl+p")
        palette = operator.screen
        assert isinstance(palette, CommandPalette)
        await pilot.press(*"provide")
        await palette_searched(pilot, palette)
        options = palette.query_one(CommandList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(p.startswith("Provide (a)") for p in prompts), prompts
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(operator.screen, PlanScreen), "the palette opened the plan")
        plan_screen = operator.screen
        assert isinstance(plan_screen, PlanScreen)
        await settled(pilot, plan_screen)
        (plan,) = plan_screen.plans
        blocker = plan.steps[0].blocker
        assert plan.kind == "provide" and blocker is not None  # an active node: a blocker, no error
        assert blocker.reason.startswith("node is active; provide needs it manageable")
    assert rig.ops.recent() == []
