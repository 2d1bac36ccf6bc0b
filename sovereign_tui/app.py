"""The Textual app: wiring only. Screens live in `screens/`, what they show in `render`.

One worker follows the feed and posts `SnapshotUpdated`; such messages replace each other in the
queue, so a burst of snapshots costs one redraw. Another posts `ClockTicked` once a second so
ages stay true. The app keeps the latest of both as reactives; the screen on show copies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen

from screens.commands import ScreenCommands
from screens.help import HelpScreen, help_rows
from screens.registry import SCREENS
from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.feed import SnapshotFeed
from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot
from sovereign_tui.runtime import Runtime

ABOUT = (
    "Every key that works here. / filters this list, Esc or ? closes it.\n"
    "In tables, > marks the cursor, ~ a stale row (last known values), ! a row needing attention."
)


class SnapshotUpdated(Message):
    """A newer snapshot arrived. Only the newest waits in the queue."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotUpdated)


class ClockTicked(Message):
    """A second passed on the app's clock."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now = now

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClockTicked)


_SCREENS = Binding.Group("Screens")
"""The screen keys share one footer entry: "1 2 3 Screens"."""


class SovereignApp(App[None]):
    TITLE = "sovereign-tui"
    BINDING_GROUP_TITLE = "Anywhere"
    CSS = """
    Footer.-compact FooterLabel { margin: 0 1 0 0; }
    """
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {e.mode: e.screen for e in SCREENS}
    DEFAULT_MODE = "overview"
    COMMANDS = App.COMMANDS | {ScreenCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(
                e.key,
                f"switch_mode('{e.mode}')",
                e.title,
                id=f"show-{e.mode}",
                tooltip=e.help,
                group=_SCREENS,
            )
            for e in SCREENS
        ),
        Binding("question_mark", "show_help", "Help", id="show-help", tooltip="Every key that works here"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave sovereign-tui"),
    ]

    snapshot: reactive[Snapshot] = reactive(EMPTY_SNAPSHOT, always_update=True, init=False)
    """The latest snapshot from the feed."""
    now: reactive[float] = reactive(0.0, init=False)
    """The clock's wall time, refreshed once a second, for ages."""

    def __init__(
        self,
        feed: SnapshotFeed,
        *,
        clock: Clock | None = None,
        runtime: Runtime | None = None,
        title: str = "sovereign-tui",
    ) -> None:
        super().__init__()
        self.feed = feed
        self.runtime = runtime
        self.clock: Clock = clock or (runtime.clock if runtime is not None else SystemClock())
        self.title = title

    async def on_mount(self) -> None:
        if self.runtime is not None:
            await self.runtime.start()
        self.now = self.clock.time()
        self.snapshot = self.feed.snapshot()
        self._follow_feed()
        self._tick()

    async def on_unmount(self) -> None:
        if self.runtime is not None:
            await self.runtime.close()

    @work(exclusive=True, group="feed", name="follow-feed")
    async def _follow_feed(self) -> None:
        generation = self.snapshot.generation
        while True:
            snapshot = await self.feed.wait_newer(generation)
            generation = snapshot.generation
            self.post_message(SnapshotUpdated(snapshot))

    @work(exclusive=True, group="clock", name="clock-tick")
    async def _tick(self) -> None:
        clock = self.clock
        while True:
            await clock.sleep_until(clock.monotonic() + 1.0)
            self.post_message(ClockTicked(clock.time()))

    def on_snapshot_updated(self, message: SnapshotUpdated) -> None:
        self.snapshot = message.snapshot

    def on_clock_ticked(self, message: ClockTicked) -> None:
        self.now = message.now

    def action_show_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        self.push_screen(HelpScreen(help_rows(self.screen), ABOUT))
