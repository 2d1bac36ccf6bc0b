"""The screens the app offers, in key order. A new screen is one entry here: the app's key
bindings, its modes and the command palette are all made from this list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.screen import Screen

from screens.gpus import GpusScreen
from screens.overview import OverviewScreen
from screens.sources import SourcesScreen


@dataclass(frozen=True, slots=True)
class ScreenEntry:
    mode: str
    """Textual mode name, also the binding id's suffix: `show-<mode>`."""
    key: str
    title: str
    help: str
    screen: Callable[[], Screen[None]]


SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("overview", "1", "Overview", "Sources up and down, GPU counts, what is down", OverviewScreen),
    ScreenEntry("gpus", "2", "GPUs", "Every GPU: utilisation, memory, errors, holder", GpusScreen),
    ScreenEntry(
        "sources", "3", "Sources", "Every poll target: health, last success, last error", SourcesScreen
    ),
)
