"""What the operator sees, at 80x24 and 160x48, as SVG snapshots (review them like code).

The data is deterministic: the `tui_data` cluster on a FakeClock, one target down (its GPUs
stale), the snapshot 2 s old, so every age on screen is stable.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tui_data import HOSTS, fail, fill

from sovereign_tui.app import SovereignApp
from sovereign_tui.clock import FakeClock
from sovereign_tui.store import Store

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
DOWN = HOSTS[3].name
ERROR = f"ssh: connect to {DOWN}:22: connection refused; check that the host is up and sshd runs"


def cluster_app() -> SovereignApp:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock)
    asyncio.run(clock.advance(3))
    fail(store, clock, DOWN, ERROR)
    store.snapshot()
    asyncio.run(clock.advance(2))
    return SovereignApp(store, clock=clock)


Compare = Any


@pytest.mark.parametrize("size", SIZES)
class TestOverview:
    def test_overview(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestGpus:
    def test_gpus(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=["2"], terminal_size=size)

    def test_gpus_filtered_and_sorted(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = ["2", "slash", *"h200", "enter", "s", "s", "s", "s", "r"]
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestSources:
    def test_sources(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=["3", "down", "down", "down"], terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestHelp:
    def test_help(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=["2", "question_mark"], terminal_size=size)
