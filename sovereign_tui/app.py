"""The Textual app: wiring only. Screens live in `screens/`, what they show in `render`.

One worker follows the feed and posts `SnapshotUpdated`; such messages replace each other in the
queue, so a burst of snapshots costs one redraw. Another posts `ClockTicked` once a second so
ages stay true. The app keeps the latest of both as reactives; the screen on show copies them.
The app also owns the GPUs' recent history (`GpuHistory`), fed with every snapshot it takes, so
the sparklines and idle flags survive switching screens.

With an operations backend and an actor, the app runs what the plan screens confirm: a worker per
batch starts each plan, follows its events and posts them (`OperationStarted`,
`OperationProgressed`, `OperationRefused`); the app folds them into `board` and bumps
`operations_version`, which the operations screens watch. Action keys show only where
`may(action)`: a backend exists and the actor's role allows it. Quitting while operations run in
this process asks first (`screens.quit_confirm`): cancel them, leave them interrupted, or stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen

from screens.commands import ScreenCommands
from screens.help import HelpScreen, help_rows
from screens.ops_commands import OperationCommands
from screens.provision import ProvisionScreen
from screens.quit_confirm import QuitChoice, QuitConfirmScreen, running_ops
from screens.registry import SCREENS
from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.feed import SnapshotFeed
from sovereign_tui.gpu_analytics import GpuHistory
from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops.roles import allowed
from sovereign_tui.ops_gateway import (
    Actor,
    LocalOperations,
    OperationRun,
    OperationsBackend,
    confirmation_for,
    error_line,
)
from sovereign_tui.render_ops import OperationBoard
from sovereign_tui.runtime import Runtime

ABOUT = (
    "Every key that works here. / filters this list, Esc or ? closes it.\n"
    "In tables: > the cursor · ! needs attention · ~ stale row: last known values\n"
    "x~ a stale cell (one layer) · ── a group's header · IDLE a GPU held, unused"
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


class OperationStarted(Message):
    """An operation was journaled and runs; its events follow."""

    def __init__(self, op_id: str, plan: Plan) -> None:
        super().__init__()
        self.op_id = op_id
        self.plan = plan


class OperationProgressed(Message):
    """An event of a running operation. Progress of one step gives way to the next report."""

    def __init__(self, event: OpEvent) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        e = self.event
        return (
            isinstance(message, OperationProgressed)
            and e.kind == message.event.kind == "step-progress"
            and (e.op_id, e.step) == (message.event.op_id, message.event.step)
        )


class OperationRefused(Message):
    """A plan (or an operation to resume) was not started: one line saying why."""

    def __init__(self, op_id: str, reason: str) -> None:
        super().__init__()
        self.op_id = op_id
        self.reason = reason


_SCREENS = Binding.Group("Screens", compact=True)
"""The screen keys share one footer entry: "12345678 Screens"."""


class SovereignApp(App[None]):
    TITLE = "sovereign-tui"
    BINDING_GROUP_TITLE = "Anywhere"
    CSS = """
    Footer.-compact FooterLabel { margin: 0 1 0 0; }
    """
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {e.mode: e.screen for e in SCREENS}
    DEFAULT_MODE = "overview"
    COMMANDS = App.COMMANDS | {ScreenCommands, OperationCommands}
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
        Binding(
            "n",
            "new_provision",
            "Provision",
            id="new-provision",
            tooltip="Create a GPU workload: a Nova server, a bare-metal deploy, a Kata pod or a KubeVirt VM",
        ),
        Binding("question_mark", "show_help", "Help", id="show-help", tooltip="Every key that works here"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave sovereign-tui"),
    ]

    snapshot: reactive[Snapshot] = reactive(EMPTY_SNAPSHOT, always_update=True, init=False)
    """The latest snapshot from the feed."""
    now: reactive[float] = reactive(0.0, init=False)
    """The clock's wall time, refreshed once a second, for ages."""
    operations_version: reactive[int] = reactive(0, init=False)
    """Grows with every change of `board` (operations started, progressing, refused)."""

    def __init__(
        self,
        feed: SnapshotFeed,
        *,
        clock: Clock | None = None,
        runtime: Runtime | None = None,
        history: GpuHistory | None = None,
        title: str = "sovereign-tui",
        operations: OperationsBackend | None = None,
        actor: Actor | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.runtime = runtime
        self.history = history if history is not None else GpuHistory()
        """Recent samples of every GPU, for sparklines, idle flags and alerts (headless)."""
        self.clock: Clock = clock or (runtime.clock if runtime is not None else SystemClock())
        self.title = title
        self.operations = operations
        """Plans and runs operations; None: this session only looks."""
        self.actor = actor
        """Who acts, with the role that decides which action keys exist."""
        self.board = OperationBoard()
        self._leave_operations = False
        """Quit without cancelling the operations running here (the journal keeps them interrupted)."""

    async def on_mount(self) -> None:
        if self.runtime is not None:
            await self.runtime.start()
        self.now = self.clock.time()
        self._take(self.feed.snapshot())
        self._follow_feed()
        self._tick()

    async def on_unmount(self) -> None:
        if self.runtime is not None:
            await self.runtime.close()
        if self.operations is not None and not self._leave_operations:
            await self.operations.close()  # an engine it owns cancels what still runs

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

    def _take(self, snapshot: Snapshot) -> None:
        self.history.observe(snapshot)
        self.snapshot = snapshot

    def on_snapshot_updated(self, message: SnapshotUpdated) -> None:
        self._take(message.snapshot)

    def on_clock_ticked(self, message: ClockTicked) -> None:
        self.now = message.now

    async def action_quit(self) -> None:
        """q and ctrl+q: quit, asking first if that would stop operations running here."""
        if isinstance(self.screen, QuitConfirmScreen):
            return
        running = running_ops(self.board) if self._quitting_stops_operations() else []
        if not running:
            self.exit()
            return
        self.push_screen(QuitConfirmScreen(running), self._quit_chosen)

    def _quitting_stops_operations(self) -> bool:
        """Operations run in this process when the backend is a local engine it owns; a daemon's
        (or a shared engine's) go on after this console quits."""
        ops = self.operations
        return isinstance(ops, LocalOperations) and ops.owns

    def _quit_chosen(self, choice: QuitChoice | None) -> None:
        if choice == "leave":
            self._leave_operations = True
        if choice in ("cancel", "leave"):
            self.exit()

    def action_show_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        self.push_screen(HelpScreen(help_rows(self.screen), ABOUT))

    # --- operations -----------------------------------------------------------------------------

    def may(self, action: str) -> bool:
        """Whether this session may `action` (drain, migrate, provision, resume...)."""
        return self.operations is not None and self.actor is not None and allowed(self.actor.role, action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "new_provision":
            return self.may("provision")
        return True

    def action_new_provision(self) -> None:
        self.push_screen(ProvisionScreen())

    def start_plans(self, plans: Sequence[Plan], typed: str = "") -> None:
        """Run `plans` one after another, each once the one before succeeded (a batch drain must
        not send VMs to a host it drains next). `typed`: what the operator typed to confirm."""
        self.board.forget_refusals(p.id for p in plans)
        self.operations_version = self.board.version
        self._run_plans(tuple(plans), typed)

    def follow_run(self, run: OperationRun) -> None:
        """Follow an operation started elsewhere (a resume)."""
        self._follow_run(run)

    @work(group="operations", name="run-plans")
    async def _run_plans(self, plans: tuple[Plan, ...], typed: str) -> None:
        backend, actor = self.operations, self.actor
        for i, plan in enumerate(plans):
            if backend is None or actor is None:
                self.post_message(OperationRefused(plan.id, "this session only looks: no operations backend"))
                return
            try:
                run = await backend.start(plan, actor, confirmation=confirmation_for(plan, typed))
            except Exception as exc:  # one line on screen, never a traceback
                self.post_message(OperationRefused(plan.id, error_line(exc)))
                ok, why = False, "was refused"
            else:
                ok, why = await self._follow(run), "did not succeed"
            if not ok:
                for rest in plans[i + 1 :]:
                    self.post_message(OperationRefused(rest.id, f"not started: {plan.target} {why}"))
                return

    @work(group="operations", name="follow-run")
    async def _follow_run(self, run: OperationRun) -> None:
        await self._follow(run)

    async def _follow(self, run: OperationRun) -> bool:
        self.post_message(OperationStarted(run.op_id, run.plan))
        async for event in run.events():
            self.post_message(OperationProgressed(event))
        try:
            return (await run.wait()).ok
        except Exception as exc:
            self.post_message(OperationRefused(run.op_id, f"ended with an error: {error_line(exc)}"))
            return False

    def on_operation_started(self, message: OperationStarted) -> None:
        self.board.started(message.op_id, message.plan)
        self.operations_version = self.board.version

    def on_operation_progressed(self, message: OperationProgressed) -> None:
        self.board.apply(message.event)
        self.operations_version = self.board.version

    def on_operation_refused(self, message: OperationRefused) -> None:
        self.board.refused(message.op_id, message.reason)
        self.operations_version = self.board.version
