"""What every data screen shares: the status line on top, the footer below, and the snapshot
handed down from the app.

The app holds the latest snapshot and the current time as reactives; the screen that is showing
copies them into its own reactives (which its widgets bind to), a hidden screen waits and catches
up when it is shown again, so ten screens do not redraw for one that is visible.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer

from screens.widgets.status_line import StatusLine
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot

_NO_HISTORY = GpuHistory()


class SnapshotScreen(Screen[None]):
    AUTO_FOCUS = "SnapshotTable"
    snapshot: reactive[Snapshot] = reactive(EMPTY_SNAPSHOT, always_update=True, init=False)
    now: reactive[float] = reactive(0.0, init=False)

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
