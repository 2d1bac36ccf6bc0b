"""What every data screen shares: the status line on top, the footer below, and the snapshot
handed down from the app.

The app holds the latest snapshot and the current time as reactives; the screen that is showing
copies them into its own reactives (which its widgets bind to), a hidden screen waits and catches
up when it is shown again, so ten screens do not redraw for one that is visible.

Action keys (drain, migrate, provision...) are bound like any other, and named in
`ACTION_ROLES`: such a key exists (in the footer, the help and the palette, and when pressed) only
where the app has an operations backend and the operator's role allows the action.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer

from screens.plan import PlanScreen, may, operations_of
from screens.widgets.status_line import StatusLine
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops_gateway import OperationsBackend

_NO_HISTORY = GpuHistory()


class SnapshotScreen(Screen[None]):
    AUTO_FOCUS = "SnapshotTable"
    snapshot: reactive[Snapshot] = reactive(EMPTY_SNAPSHOT, always_update=True, init=False)
    now: reactive[float] = reactive(0.0, init=False)
    ACTION_ROLES: ClassVar[dict[str, str]] = {}
    """Action method name -> the role action it needs ("drain_host": "drain")."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        needs = self.ACTION_ROLES.get(action)
        if needs is not None:
            return may(self.app, needs)
        return True

    def compose(self) -> ComposeResult:
        yield StatusLine(self.app.title, self.title or "", id="status").data_bind(
            SnapshotScreen.snapshot, SnapshotScreen.now
        )
        yield from self.compose_body()
        yield Footer(compact=True)

    @property
    def history(self) -> GpuHistory:
        """The GPUs' recent history, which the app keeps (empty when the app keeps none)."""
        history = getattr(self.app, "history", None)
        return history if isinstance(history, GpuHistory) else _NO_HISTORY

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the status line and the footer."""
        yield from ()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._app_changed, init=False)
        self.watch(self.app, "now", self._app_changed, init=False)
        self._pull()

    def on_screen_resume(self) -> None:
        self._pull()

    def _app_changed(self, _value: Any) -> None:
        if self.is_current:
            self._pull()

    def _pull(self) -> None:
        snapshot = getattr(self.app, "snapshot", None)
        if isinstance(snapshot, Snapshot) and snapshot is not self.snapshot:
            self.snapshot = snapshot
        now = getattr(self.app, "now", None)
        if isinstance(now, float) and now != self.now:
            self.now = now

    # --- operations -------------------------------------------------------------------------------

    def open_plan(
        self, heading: str, make: Callable[[OperationsBackend, Snapshot], Awaitable[Sequence[Plan]]]
    ) -> None:
        """Show the plans `make` computes from the snapshot on show (PlanScreen runs them)."""
        ctx = operations_of(self.app)
        if ctx is None:
            return
        backend, snapshot = ctx[0], self.snapshot

        async def planner() -> Sequence[Plan]:
            return await make(backend, snapshot)

        self.app.push_screen(PlanScreen(heading, planner))
