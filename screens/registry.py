"""The screens the app offers, in key order. A new screen is one entry here: the app's key
bindings, its modes and the command palette are all made from this list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.screen import Screen

from screens.baremetal import BaremetalScreen
from screens.edge import EdgeScreen
from screens.gpus import GpusScreen
from screens.hosts import HostsScreen
from screens.operations import OperationsScreen
from screens.overview import OverviewScreen
from screens.runtimes import RuntimesScreen
from screens.sources import SourcesScreen
from screens.workloads import WorkloadsScreen


@dataclass(frozen=True, slots=True)
class ScreenEntry:
    mode: str
    """Textual mode name, also the binding id's suffix: `show-<mode>`."""
    key: str
    title: str
    help: str
    screen: Callable[[], Screen[None]]


SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry(
        "overview", "1", "Overview", "Every layer in a line, GPU alerts, what is down", OverviewScreen
    ),
    ScreenEntry("hosts", "2", "Hosts", "Every host across Nova, Ironic, Kubernetes, StarlingX", HostsScreen),
    ScreenEntry("gpus", "3", "GPUs", "Every GPU: utilisation, memory, errors, holder, idle", GpusScreen),
    ScreenEntry(
        "workloads", "4", "Workloads", "VMs, bare metal, pods, Kata pods, KubeVirt VMs", WorkloadsScreen
    ),
    ScreenEntry(
        "baremetal", "5", "Bare metal", "Ironic nodes: provision, power, maintenance", BaremetalScreen
    ),
    ScreenEntry("edge", "6", "Edge", "StarlingX sites, hosts and alarms", EdgeScreen),
    ScreenEntry(
        "runtimes", "7", "Runtimes", "Pods per runtime class, Kata sandboxes per node", RuntimesScreen
    ),
    ScreenEntry(
        "sources", "8", "Sources", "Every poll target: health, last success, last error", SourcesScreen
    ),
    ScreenEntry(
        "operations",
        "9",
        "Operations",
        "Progress, interrupted ones, history, the journal",
        OperationsScreen,
    ),
)
