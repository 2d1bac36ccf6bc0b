"""Before a migration's plan: live or cold (a Nova server), and where to (a host, or the scheduler's
choice). Enter or ctrl+s shows the plan; the plan screen runs it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Select, Static

from screens.plan import PlanScreen, operations_of
from sovereign_tui.model import Snapshot, Workload
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_targets import migrate_destinations, workload_name, workload_ref

SCHEDULER = ""
"""The destination value meaning "where the scheduler puts it"."""
_STUCK_KINDS = frozenset({"passthrough", "vgpu"})


class MigrateScreen(ModalScreen[None]):
    TITLE = "Migrate"
    BINDING_GROUP_TITLE = "Migrate"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "plan_migration", "Plan", id="plan-migration", tooltip="Show the migration's plan"),
        Binding("escape", "dismiss", "Close", id="close-migrate"),
    ]
    DEFAULT_CSS = """
    MigrateScreen {
        align: center middle;
        & > Vertical { width: 100%; max-width: 90; height: auto; background: $surface; padding: 0 1; }
        & #migrate-title { text-style: bold; background: $panel; margin: 0 -1 1 -1; padding: 0 1; }
        & .field { height: 1; margin: 0 0 1 0; }
        & .field > Label { width: 14; }
        & .field > Select { width: 1fr; }
        & #migrate-note { color: $text-muted; height: auto; }
        & #migrate-buttons { height: 1; margin: 1 0; }
    }
    """

    def __init__(self, workload: Workload, snapshot: Snapshot) -> None:
        super().__init__()
        self.workload = workload
        self.snapshot = snapshot
        self.destinations = migrate_destinations(snapshot, workload)

    def compose(self) -> ComposeResult:
        w = self.workload
        cold_first = w.kind == "nova-vm" and (w.gpu_kind in _STUCK_KINDS)
        with Vertical():
            where = f" on {w.host}" if w.host else ""
            yield Static(Content(f"Migrate {w.kind} {workload_name(w)}{where}"), id="migrate-title")
            if w.kind == "nova-vm":
                with Horizontal(classes="field"):
                    yield Label("How")
                    yield Select(
                        [("live: the guest keeps running", "live"), ("cold: the guest restarts", "cold")],
                        value="cold" if cold_first else "live",
                        allow_blank=False,
                        compact=True,
                        id="how",
                    )
            with Horizontal(classes="field"):
                yield Label("To")
                yield Select(
                    [("where the scheduler puts it", SCHEDULER), *((h, h) for h in self.destinations)],
                    value=SCHEDULER,
                    allow_blank=False,
                    compact=True,
                    id="to",
                    disabled=not self.destinations,
                )
            yield Static(Content(self._note()), id="migrate-note")
            with Horizontal(id="migrate-buttons"):
                yield Button("Plan", id="plan", compact=True)
            yield Footer(compact=True, show_command_palette=False)

    def _note(self) -> str:
        w = self.workload
        if w.kind in ("pod", "kata-pod"):
            return "A pod moves by eviction: its controller makes a new one where the scheduler puts it."
        if w.kind == "nova-vm" and w.gpu_kind in _STUCK_KINDS:
            return f"A server with a {w.gpu_kind} GPU cannot live-migrate: cold migration restarts it."
        return ""

    def on_mount(self) -> None:
        self.query_one(Select).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_plan_migration()

    def action_plan_migration(self) -> None:
        ctx = operations_of(self.app)
        if ctx is None:
            return
        backend, w, snapshot = ctx[0], self.workload, self.snapshot
        to_value = self.query_one("#to", Select).value
        to = to_value if isinstance(to_value, str) and to_value != SCHEDULER else None
        cold = bool(self.query("#how")) and self.query_one("#how", Select).value == "cold"
        ref = workload_ref(w)

        async def planner() -> list[Plan]:
            return [await backend.plan_migrate(snapshot, ref, to=to, cold=cold)]

        how = "cold-migrate" if cold else "migrate"
        heading = f"{how.capitalize()} {w.kind} {workload_name(w)} to {to or 'where the scheduler puts it'}"
        self.dismiss()
        self.app.push_screen(PlanScreen(heading, planner))
