"""The layers' screens as SVG snapshots at 80x24 and 160x48: Hosts and a host's detail, Workloads
(all, and one kind), Bare metal, Edge and Runtimes, on the `tui_data` cluster."""

from __future__ import annotations

from typing import Any

import pytest
from tui_data import cluster_store

from screens.registry import SCREENS
from sovereign_tui.app import SovereignApp

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
KEY = {e.mode: e.key for e in SCREENS}
Compare = Any


def cluster_app() -> SovereignApp:
    store, clock, history = cluster_store()
    return SovereignApp(store, clock=clock, history=history)


@pytest.mark.parametrize("size", SIZES)
class TestHosts:
    def test_hosts(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["hosts"], *["down"] * 9]  # the cursor on a host known to three layers
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)

    def test_host_detail(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["hosts"], "slash", *"gpu-a02", "enter", "enter"]
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestWorkloads:
    def test_workloads(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["workloads"]], terminal_size=size)

    def test_workloads_of_one_kind(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["workloads"], "t", "t", "t", "t"]  # kata-pod
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestBaremetal:
    def test_baremetal(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        keys = [KEY["baremetal"], "down", "down"]  # the failed node
        assert snap_compare(cluster_app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestEdge:
    def test_edge(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["edge"]], terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
class TestRuntimes:
    def test_runtimes(self, snap_compare: Compare, size: tuple[int, int]) -> None:
        assert snap_compare(cluster_app(), press=[KEY["runtimes"]], terminal_size=size)
