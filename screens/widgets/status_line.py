"""The top line: where the operator is and how old the data is."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot
from sovereign_tui.render import status_text


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $foreground;
    }
    """

    snapshot: reactive[Snapshot] = reactive(EMPTY_SNAPSHOT, always_update=True)
    now: reactive[float] = reactive(0.0)

    def __init__(self, app_title: str, screen_title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.app_title = app_title
        self.screen_title = screen_title

    def text(self) -> str:
        snap = self.snapshot
        parts = [self.app_title, self.screen_title, status_text(snap, self.now)]
        if snap.sources:
            up = sum(1 for h in snap.sources if h.up)
            down = sum(1 for h in snap.sources if h.up is False)
            parts.append(f"sources {up}/{len(snap.sources)} up" + (f", {down} DOWN" if down else ""))
        return " │ ".join(parts)

    def watch_snapshot(self) -> None:
        self.update(Content(self.text()))

    def watch_now(self) -> None:
        self.update(Content(self.text()))
