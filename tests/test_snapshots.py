"""What the operator sees, at 80x24 and 160x48, as SVG snapshots (review them like code).

The data is deterministic: the `tui_data` cluster on a FakeClock with 15 minutes of GPU history,
one target down (its GPUs stale), the snapshot 2 s old, so every age on screen is stable. The
layers' screens are in `test_snapshots_layers.py`.
"""

from __future__ import annotations

from typing import Any

import pytest
from tui_data import cluster_store

from screens.registry import SCREENS
from sovereign_tui.app import SovereignApp

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
KEY = {e.mode: e.key for e in SCREENS}


def cluster_app() -> SovereignApp:
    store, clock, history = cluster_store()
    return SovereignApp(store, clock=clock, history=history)


Compare = Any


@pytest.mark.parametrize("size", SIZES)
class TestOverview:
    def test_overview(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestGpus:
    def test_gpus(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["gpus"]], terminal_size=size)

    def test_gpus_filtered_and_sorted(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["gpus"], "slash", *"h200", "enter", "s", "s", "s", "s", "r"]
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)

    def test_gpus_grouped_by_host(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["gpus"], "b", "down"], terminal_size=size)

    def test_gpu_detail(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["gpus"], "slash", *"idle", "enter", "enter"]
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestSources:
    def test_sources(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["sources"], "down", "down", "down"]
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestHelp:
    def test_help(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["gpus"], "question_mark"], terminal_size=size)
