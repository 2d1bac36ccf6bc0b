"""`q` while operations run in this console: what runs, and what quitting does to it.

Operations this console starts run in its own process (the engine behind `LocalOperations`), so
quitting stops them. The modal lists each (operation, host, step reached) and offers three ways
out: cancel them and quit (running steps stopped and cleaned up, a migration in flight aborted;
the journal records them cancelled), quit and leave them interrupted (nothing is aborted; the
journal keeps each as interrupted at the step it reached, to resume or abandon with
``sovereign-tui operations``), or stay. Operations that run elsewhere (a daemon, or an engine this
console does not own) go on after it quits: the app then quits without asking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from sovereign_tui.render import one_line
from sovereign_tui.render_ops import OperationBoard, step_name

QuitChoice = Literal["cancel", "leave", "stay"]
SHOWN = 3
"""Operations listed one by one; more are counted (the modal fits 80x24)."""
WIDTH = 76
"""Longest line of the list: longer ones are cut with an ellipsis."""


@dataclass(frozen=True)
class RunningOp:
    op_id: str
    head: str
    """ "drain gpu-a01 (5e1c0f3a) · host gpu-a01" """
    reached: str
    """ "step 2/6 cold-migrate web-01: nova: resize_migrating (40%)" """


def running_ops(board: OperationBoard) -> list[RunningOp]:
    """The operations on `board` that have not finished, oldest first."""
    out = []
    for run in board.runs.values():
        if run.over:
            continue
        plan = run.plan
        hosts = sorted({s.host for s in plan.steps if s.host})
        where = f" · host {', '.join(hosts)}" if hosts else ""
        n = len(plan.steps)
        if run.current is None:
            reached = f"{run.finished_steps}/{n} steps done, the next starting"
        else:
            step, live = plan.steps[run.current], run.steps[run.current]
            parts = [f"step {run.current + 1}/{n} {step_name(step)} {step.target_name}"]
            if live.fraction is not None:
                parts.append(f"{live.fraction:.0%}")
            if live.message:
                parts.append(one_line(live.message))
            reached = " · ".join(parts)
        out.append(RunningOp(run.op_id, f"{plan.kind} {plan.target} ({run.op_id[:8]}){where}", reached))
    return out


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def quit_text(ops: Sequence[RunningOp]) -> str:
    """The modal's words: the operations, what quitting does to them, the choices."""
    n = len(ops)
    it, its, runs = ("it", "It", "runs") if n == 1 else ("them", "They", "run")
    lines = []
    for op in ops[:SHOWN]:
        lines += [_clip(f"  {op.head}"), _clip(f"    {op.reached}")]
    if n > SHOWN:
        lines.append(f"  ... and {n - SHOWN} more (the Operations screen lists them)")
    resume = ops[0].op_id[:8] if n == 1 else "ID"
    lines += [
        "",
        f"{its} {runs} in this console's process (not in a daemon): quitting stops {it}.",
        "",
        "c    Cancel, then quit: running steps are stopped and cleaned up (a",
        f"     migration in flight is aborted); the journal records {it} cancelled.",
        f"l    Quit, leave {it} interrupted: nothing is aborted; the journal keeps {it}",
        "     interrupted at the step reached, to resume or abandon later:",
        f"     sovereign-tui operations resume {resume}",
        "Esc  Stay",
    ]
    return "\n".join(lines)


def quit_title(ops: Sequence[RunningOp]) -> str:
    n = len(ops)
    return f"Quit sovereign-tui with {n} operation{'s' if n != 1 else ''} running here?"


class QuitConfirmScreen(ModalScreen[QuitChoice]):
    TITLE = "Quit"
    BINDING_GROUP_TITLE = "Quit"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "c",
            "choose('cancel')",
            "Cancel & quit",
            id="quit-cancel-operations",
            tooltip="Cancel the running operations (steps cleaned up), then quit",
        ),
        Binding(
            "l",
            "choose('leave')",
            "Leave & quit",
            id="quit-leave-operations",
            tooltip="Quit; the journal keeps the operations interrupted, to resume or abandon later",
        ),
        Binding("escape,s", "choose('stay')", "Stay", id="quit-stay", tooltip="Do not quit"),
    ]
    DEFAULT_CSS = """
    QuitConfirmScreen {
        align: center middle;
        & > Vertical {
            width: 100%; max-width: 84; height: auto; max-height: 100%;
            background: $surface; border: thick $warning;
        }
        & #quit-title { text-style: bold; background: $panel; padding: 0 1; margin: 0 0 1 0; }
        & #quit-body { padding: 0 1; height: auto; }
    }
    """

    def __init__(self, ops: Sequence[RunningOp]) -> None:
        super().__init__()
        self.ops = list(ops)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(quit_title(self.ops), id="quit-title")
            yield Static(Content(quit_text(self.ops)), id="quit-body")
            yield Footer(compact=True, show_command_palette=False)

    def action_choose(self, choice: QuitChoice) -> None:
        self.dismiss(choice)


__all__ = ["QuitChoice", "QuitConfirmScreen", "RunningOp", "quit_text", "quit_title", "running_ops"]
