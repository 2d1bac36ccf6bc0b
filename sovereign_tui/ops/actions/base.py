"""What every action adapter offers the executor, and what the executor gives a running step.

An adapter performs one kind of step against one layer's real API, through that layer's SDK.
`run` is written to be run again after a crash: it first reads the object's state (and what an
earlier attempt recorded with `StepContext.note`) and then finishes, follows or starts the
action. It returns a one-line outcome, or raises `StepFailed` with a one-line reason. `cancel`
undoes what can be undone of a step in flight (aborts a live migration, deletes a KubeVirt
migration) and says what it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sovereign_tui.clock import Clock
from sovereign_tui.ops.plan import Step, StepKind

T = TypeVar("T")


class StepFailed(Exception):
    """The step did not reach its goal; the message is one line naming what and why."""


class LayerUnavailable(Exception):
    """A layer is not configured or cannot be reached; the message says which and how to fix it."""


@dataclass
class Progress:
    message: str
    fraction: float | None = None
    """0..1 when the API reports how far it is (a migration's memory copied), else None."""


@dataclass
class StepContext:
    clock: Clock
    op_id: str
    step: Step
    attempt: int
    data: dict[str, Any] = field(default_factory=dict)
    """What earlier attempts recorded (for a resume) merged with what this one records."""
    poll_interval_s: float = 2.0
    eviction_retry_s: float = 5.0
    force: bool = False
    on_progress: Callable[[Progress], None] | None = None
    on_note: Callable[[dict[str, Any]], None] | None = None

    @property
    def params(self) -> dict[str, str]:
        return self.step.params

    def note(self, **data: Any) -> None:
        """Record facts a resume needs (journaled at once)."""
        self.data.update(data)
        if self.on_note is not None:
            self.on_note(dict(data))

    def progress(self, message: str, fraction: float | None = None) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(message, fraction))

    async def pause(self, message: str, fraction: float | None = None, seconds: float | None = None) -> None:
        """Report progress, then wait on the injected clock (the poll interval by default).
        Every wait of an adapter goes through here, so a watcher knows when a step is waiting."""
        self.progress(message, fraction)
        delay = self.poll_interval_s if seconds is None else seconds
        await self.clock.sleep_until(self.clock.monotonic() + delay)


class Adapter(Protocol):
    kinds: frozenset[StepKind]

    async def run(self, ctx: StepContext) -> str: ...

    async def cancel(self, ctx: StepContext) -> str | None: ...


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking SDK call in a worker thread so the event loop keeps serving."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def one_line(text: object, limit: int = 300) -> str:
    first = " ".join(str(text).split())
    return first if len(first) <= limit else first[: limit - 3] + "..."
