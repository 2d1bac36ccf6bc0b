"""The Textual app driven by a Pilot, fed by a real Store (and, once, a real Runtime) on a FakeClock.

Data goes in the way the poller puts it in (`store.apply`, `store.set_health`); the tests wait for
the app to reach the store's generation (a condition, never a sleep).
"""

from __future__ import annotations

import contextlib
from typing import Any

from textual import events
from textual.binding import Binding
from textual.command import CommandList, CommandPalette
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input
from textual.worker import WorkerCancelled
from tui_data import HOSTS, INTERVAL_S, HostSpec, fail, fill, gpus_for, health, target_of

from collectors.base import Capability
from screens.gpus import GpusScreen
from screens.help import HelpScreen
from screens.overview import OverviewScreen
from screens.registry import SCREENS
from screens.sources import SourcesScreen
from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.status_line import StatusLine
from screens.widgets.table_pane import TablePane
from sovereign_tui.app import ClockTicked, SnapshotUpdated, SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import Settings
from sovereign_tui.model import Gpu, Observation
from sovereign_tui.poller import PollContext, Target
from sovereign_tui.render import fmt_age
from sovereign_tui.render_gpus import gpu_erroring
from sovereign_tui.runtime import Runtime
from sovereign_tui.store import Store

SIZE = (100, 30)
KEY = {e.mode: e.key for e in SCREENS}


def make(hosts: tuple[HostSpec, ...] = HOSTS) -> tuple[SovereignApp, Store, FakeClock]:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock, hosts)
    return SovereignApp(store, clock=clock), store, clock


async def caught_up(pilot: Pilot[Any], store: Store) -> None:
    """Wait until the app shows the store's latest generation."""
    for _ in range(200):
        if pilot.app.snapshot.generation == store.generation:  # type: ignore[attr-defined]
            break
        await pilot.pause()
    assert pilot.app.snapshot.generation == store.generation  # type: ignore[attr-defined]
    await pilot.pause()


async def searched(pilot: Pilot[Any], palette: CommandPalette) -> None:
    """Wait until the palette's searches (its workers) have finished."""
    await pilot.pause()
    for worker in [w for w in pilot.app.workers if w.node is palette]:
        with contextlib.suppress(WorkerCancelled):  # superseded by the next key press
            await worker.wait()
    await pilot.pause()


def table(app: SovereignApp) -> SnapshotTable[Any]:
    return app.screen.query_one(SnapshotTable)


def lines(t: SnapshotTable[Any]) -> list[str]:
    return [t.render_line(y).text for y in range(t.scrollable_content_region.height)]


async def test_keys_switch_screens() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, OverviewScreen)
        for entry in (*SCREENS[1:], SCREENS[0], *reversed(SCREENS)):
            await pilot.press(entry.key)
            assert type(app.screen) is type(entry.screen())
            assert isinstance(app.focused, SnapshotTable)
        assert [e.key for e in SCREENS] == [str(n) for n in range(1, len(SCREENS) + 1)]


async def test_screens_show_the_store() -> None:
    app, store, _ = make()
    snap = store.snapshot()
    async with app.run_test(size=SIZE) as pilot:
        status = app.screen.query_one(StatusLine)
        assert f"gen {snap.generation}" in status.text()
        await pilot.press(KEY["gpus"])
        gpus = table(app)
        assert [g.key for g in gpus.model.view] == [g.key for g in snap.gpus]
        assert str(gpus.border_title) == f"GPUs {len(snap.gpus)} of {len(snap.gpus)}"
        await pilot.press(KEY["sources"])
        sources = table(app)
        assert [h.target for h in sources.model.view] == sorted(target_of(h.name) for h in HOSTS)
        shown = "\n".join(lines(sources))
        assert all(target_of(h.name) in shown for h in HOSTS)


async def test_filter_with_slash_and_clear_with_escape() -> None:
    app, store, _ = make()
    host = HOSTS[2]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        await pilot.press("slash")
        assert isinstance(app.screen.focused, Input)
        await pilot.press(*host.name.upper())
        assert [g.host for g in t.model.view] == [host.name] * host.gpus
        total = len(store.snapshot().gpus)
        assert str(t.border_title) == f"GPUs {host.gpus} of {total}"
        await pilot.press("enter")
        assert app.focused is t
        assert t.model.filter == host.name.upper()
        await pilot.press("escape")
        assert len(t.model.view) == total
        assert t.model.filter == ""
        assert not app.screen.query_one(TablePane).has_class("-filtering")


async def test_keys_that_arrive_together_after_slash_are_the_filters_text() -> None:
    """A paste, or keys read in one go from an SSH session's PTY: all are on their way to the
    table before `/` moves the focus; none may act as the screen's keys (`g` groups the GPUs)."""
    app, _, _ = make()
    host = HOSTS[2]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        grouped = t.model.grouping
        for key in ["slash", *host.name]:
            app.post_message(events.Key(key, "/" if key == "slash" else key))  # queued at once
        await pilot.pause()
        assert t.model.filter == host.name
        assert app.screen.query_one("#filter", Input).value == host.name
        assert t.model.grouping is grouped
        await pilot.press("slash")  # in the box, `/` is text
        assert t.model.filter == f"{host.name}/"
        await pilot.press("backspace", "enter", "end")
        assert app.focused is t and t.model.cursor_key == t.model.view[-1].key


async def test_sort_keys() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        util = t.spec.index_of("util")
        await pilot.press(*["s"] * (util + 1))
        assert t.model.sort_column == util
        values = [g.util_gpu_pct or 0.0 for g in t.model.view]
        assert values == sorted(values)
        await pilot.press("r")
        values = [g.util_gpu_pct or 0.0 for g in t.model.view]
        assert values == sorted(values, reverse=True)
        assert "▼" in lines(t)[0]  # the header marks the sort column and direction


async def test_mouse_sorts_by_header_and_picks_rows() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        temp = t.spec.index_of("temp")
        header = lines(t)[0]
        x = header.index(t.spec.columns[temp].label)
        # one cell of border before the content on both axes
        await pilot.click(SnapshotTable, offset=(1 + x, 1))
        assert t.model.sort_column == temp
        await pilot.click(SnapshotTable, offset=(1 + x, 1))
        assert t.model.reverse
        await pilot.click(SnapshotTable, offset=(5, 1 + 4))
        assert t.model.cursor == 3


async def test_cursor_stays_on_its_row_across_updates() -> None:
    app, store, clock = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        await pilot.press(*["down"] * 5)
        key = t.model.cursor_key
        assert key == store.snapshot().gpus[5].key
        row_host = store.snapshot().gpus[5].host
        # the row's own host reports new values, and a new host that sorts first appears
        spec = next(h for h in HOSTS if h.name == row_host)
        store.apply(health(spec.name, clock), Observation(gpus=gpus_for(spec, clock.time(), tick=1)))
        newcomer = HostSpec("gpu-0000", "NVIDIA H200", 143771, 700, 2)
        store.apply(health(newcomer.name, clock), Observation(gpus=gpus_for(newcomer, clock.time())))
        await caught_up(pilot, store)
        assert t.model.cursor_key == key
        assert t.model.cursor == 5 + newcomer.gpus
        assert lines(t)[1 + t.model.cursor - int(t.scroll_y)].startswith(">")


async def test_snapshot_bursts_are_coalesced() -> None:
    app, store, clock = make()
    handled: list[int] = []

    def hook(message: Message) -> None:
        if isinstance(message, SnapshotUpdated):
            handled.append(message.snapshot.generation)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await caught_up(pilot, store)
        handled.clear()
        # a feed faster than the screen: 20 snapshots queued before the app gets a turn
        burst = []
        for tick in range(20):
            fill(store, clock, tick=tick + 1)
            burst.append(store.snapshot())
        for snapshot in burst:
            app.post_message(SnapshotUpdated(snapshot))
        await caught_up(pilot, store)
        assert app.snapshot is burst[-1]
    assert handled[-1] == burst[-1].generation
    assert len(handled) < len(burst) // 2
    assert not SnapshotUpdated(burst[0]).can_replace(ClockTicked(1.0))


async def test_stale_rows_are_marked_and_down_source_is_named() -> None:
    app, store, clock = make()
    down = HOSTS[3]
    error = f"ssh: connect to {down.name}:22: connection refused; check that the host is up"
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        banner = app.screen.query_one(SourceBanner)
        assert not banner.display
        await clock.advance(1)
        fail(store, clock, down.name, error)
        await caught_up(pilot, store)
        assert banner.display
        assert f"{target_of(down.name)} down: {error}" in str(banner.render())
        assert f"{down.gpus} stale (~)" in str(t.border_title)
        rows = lines(t)[1:]
        stale = [line for line in rows if down.name in line]
        assert len(stale) == down.gpus
        assert all(line[1] == "~" for line in stale)
        fresh = [line for line in rows if line.strip() and down.name not in line]
        assert all(line[1] != "~" for line in fresh)
        # erroring GPUs are marked too, in text
        erroring = [g for g in store.snapshot().gpus if gpu_erroring(g) and not g.stale]
        assert erroring
        for g in erroring:
            assert any(line[1] == "!" and g.host in line for line in rows)
        await pilot.press(KEY["overview"])
        overview = app.screen.query_one("#down-sources", SnapshotTable)
        assert [h.target for h in overview.model.view] == [target_of(down.name)]
        assert error[:30] in "\n".join(lines(overview))


async def test_age_follows_the_clock() -> None:
    app, store, clock = make()
    taken = store.snapshot().taken_at
    async with app.run_test(size=SIZE) as pilot:
        status = app.screen.query_one(StatusLine)
        await clock.advance(7)
        await pilot.pause()
        assert f"updated {fmt_age(clock.time() - taken)} ago" in status.text()
        assert fmt_age(clock.time() - taken) == "7s"
        await pilot.press(KEY["sources"])
        t = table(app)
        last_ok = t.spec.index_of("last-ok")
        sources = store.snapshot().sources
        assert t.spec.columns[last_ok].cell(sources[0], t.now) == "7s"
        assert any(" 7s " in line for line in lines(t)[1:])


async def test_help_lists_every_binding() -> None:
    app, _, _ = make()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(KEY["gpus"], "question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {row.id for row in app.screen.rows}
        expected = {b.id for b in SovereignApp.BINDINGS if isinstance(b, Binding) and b.id}
        expected |= {b.id for b in SnapshotTable.BINDINGS if isinstance(b, Binding) and b.id}
        expected.add("filter")
        assert "new-provision" not in listed  # an action: only with an operations backend
        expected.discard("new-provision")
        assert expected <= listed
        assert {f"show-{e.mode}" for e in SCREENS} <= listed
        assert "clear-filter" not in listed  # nothing to clear yet
        assert table(app).model.total == len(app.screen.rows)
        await pilot.press("escape")
        assert isinstance(app.screen, GpusScreen)
        await pilot.press("slash", "x", "enter", "question_mark")
        assert "clear-filter" in {row.id for row in app.screen.rows}
        await pilot.press("question_mark")
        assert isinstance(app.screen, GpusScreen)


async def test_command_palette_offers_every_screen() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await pilot.press(*"show")
        await searched(pilot, palette)
        options = palette.query_one(CommandList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        for entry in SCREENS:
            assert any(p.startswith(f"Show {entry.title}") for p in prompts), prompts
        await pilot.press(*" sources")
        await searched(pilot, palette)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SourcesScreen)


async def test_readable_at_80x24() -> None:
    app, store, _ = make()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        assert t.virtual_size.width <= t.scrollable_content_region.width  # no sideways scrolling
        header = lines(t)[0]
        for col in t.spec.columns:
            assert col.optional or col.label in header  # optional ones give way (the detail line has them)
        first = store.snapshot().gpus[0]
        assert first.host in lines(t)[1]


class OneHostCollector:
    """A source at the lowest level: one target whose poll returns a fixed host's GPUs."""

    name = "nvidia_smi"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.closed = False

    def targets(self) -> list[Target]:
        return [Target(target_of(self.spec.name), self.name, f"{self.spec.name}:22", INTERVAL_S, self.poll)]

    async def poll(self, ctx: PollContext) -> Observation:
        return Observation(gpus=gpus_for(self.spec, ctx.clock.time()))

    async def aclose(self) -> None:
        self.closed = True


async def test_runtime_is_started_and_closed_with_the_app() -> None:
    clock = FakeClock()
    collector = OneHostCollector(HOSTS[0])
    runtime = Runtime(Settings(), clock=clock, collectors=[collector])
    app = SovereignApp(runtime.store, runtime=runtime)
    assert app.clock is clock
    started = clock.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY["gpus"])
        # The runtime polls every source once as it starts: data with no time passed.
        for _ in range(200):
            if runtime.store.snapshot().gpus:
                break
            await pilot.pause()
        assert clock.monotonic() == started
        await caught_up(pilot, runtime.store)
        shown: list[Gpu] = list(table(app).model.view)
        assert [g.key for g in shown] == [g.key for g in gpus_for(HOSTS[0], 0.0)]
        assert not collector.closed
    assert collector.closed


async def test_a_hundred_thousand_gpus() -> None:
    count, per_host = 100_000, 8
    hosts = tuple(
        HostSpec(f"node-{i:05d}", "NVIDIA H100 80GB HBM3", 81559, 700, per_host)
        for i in range(count // per_host)
    )
    app, store, _ = make(hosts)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(KEY["gpus"])
        t = table(app)
        assert str(t.border_title) == f"GPUs {count} of {count}"
        await pilot.press("end")
        last = store.snapshot().gpus[-1]
        assert t.model.cursor_key == last.key
        assert any(line.startswith(">") and last.host in line for line in lines(t))
        await pilot.press("slash", *hosts[1234].name)
        assert [g.host for g in t.model.view] == [hosts[1234].name] * per_host
