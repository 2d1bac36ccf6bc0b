"""A line per source that feeds the screen and is down, so a half-empty table is never mistaken
for a quiet cluster."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class SourceBanner(Static):
    DEFAULT_CSS = """
    SourceBanner {
        display: none;
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $error-muted;
        color: $text;
        text-style: bold;
        &.-down { display: block; }
    }
    """

    def show_lines(self, lines: list[str]) -> None:
        self.set_class(bool(lines), "-down")
        self.update(Content("\n".join(lines)))
