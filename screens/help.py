"""`?`: every key that works here, read from the bindings themselves (never written by hand), so
help cannot drift from what the keys do."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.table_pane import TablePane
from sovereign_tui.render import HELP_TABLE, HelpRow


def group_title(node: DOMNode) -> str:
    if node.BINDING_GROUP_TITLE:
        return node.BINDING_GROUP_TITLE
    if isinstance(node, Screen) and node.title:
        return f"{node.title} screen"
    return type(node).__name__


def help_rows(screen: Screen[object]) -> list[HelpRow]:
    """The active bindings of `screen` (its focused widget and the widget's ancestors, the screen
    and the app), each action once with all its keys; the app's first, the focused widget's last."""
    get_key = screen.app.get_key_display
    by_node: dict[int, tuple[DOMNode, dict[str, list[Binding]]]] = {}
    for node, binding, _enabled, _tooltip in screen.active_bindings.values():
        if binding.system or not binding.description:
            continue
        actions = by_node.setdefault(id(node), (node, {}))[1]
        actions.setdefault(binding.action, []).append(binding)
    rows = []
    for node, actions in reversed(by_node.values()):
        for bindings in actions.values():
            first = next((b for b in bindings if b.id), bindings[0])  # ours, over Textual's defaults
            keys = " ".join(dict.fromkeys(get_key(b) for b in bindings))
            text = f"{first.description} – {first.tooltip}" if first.tooltip else first.description
            rows.append(HelpRow(group=group_title(node), keys=keys, description=text, id=first.id or ""))
    return rows


class HelpScreen(ModalScreen[None]):
    TITLE = "Help"
    AUTO_FOCUS = "SnapshotTable"
    BINDING_GROUP_TITLE = "Help"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="close-help"),
    ]
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        & > Vertical {
            width: 100%;
            max-width: 110;
            height: 100%;
            max-height: 40;
            background: $surface;
        }
        & #help-intro { padding: 0 1; height: auto; }
    }
    """

    def __init__(self, rows: list[HelpRow], about: str) -> None:
        super().__init__()
        self.rows = rows
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content(self.about), id="help-intro")
            yield TablePane(SnapshotTable[HelpRow](HELP_TABLE, id="help-keys"))
            yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#help-keys", SnapshotTable).set_rows(self.rows)
