"""The executor: runs a plan's steps through the adapters, journaling before and after each one.

- Steps run in plan order. Consecutive steps of one `group` (the live migrations off a host, the
  evictions of a node) run concurrently up to the group's cap: ``ops.live_migrations_per_host``
  (2 by default) for migrations, ``ops.evictions_in_parallel`` for evictions.
- Each step has a deadline on the injected clock. At the deadline the step is cancelled and its
  adapter cleans up what it can (a live migration is aborted, a KubeVirt migration deleted).
- A failed or blocked step stops the operation (no new step starts; running ones finish) unless
  ``continue_on_failure``; then every step is tried and the operation still ends failed.
- Cancel stops the operation: running steps are cancelled and cleaned up as at a timeout.
- Progress (Nova's memory copied, KubeVirt's phases, Ironic's states, budget refusals) and every
  state change go out as `OpEvent`s to the listeners, stamped with the clock's wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sovereign_tui.clock import Clock
from sovereign_tui.ops.actions import Adapters, LayerUnavailable, Progress, StepContext, StepFailed
from sovereign_tui.ops.journal import Journal, OperationRecord
from sovereign_tui.ops.plan import Plan, Step
from sovereign_tui.ops.settings import OpsSettings

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT_S = 60.0


class OpEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened to an operation; past-tense kinds, as the screens' messages."""

    op_id: str
    kind: str
    """operation-started | step-started | step-progress | step-finished | operation-finished"""
    at: float
    step: int | None = None
    state: str | None = None
    """The step's state (started, done, failed, blocked, cancelled) or the operation's."""
    message: str | None = None
    fraction: float | None = None
    target: str | None = None


@dataclass
class StepResult:
    index: int
    state: str
    outcome: str | None


@dataclass
class OperationResult:
    op_id: str
    state: str
    """succeeded | failed | cancelled"""
    message: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


Listener = Callable[[OpEvent], None]
StepAudit = Callable[[Step, str, str | None], None]


@dataclass
class RunOptions:
    continue_on_failure: bool = False
    force: bool = False


class Executor:
    def __init__(
        self,
        adapters: Adapters,
        journal: Journal,
        clock: Clock,
        settings: OpsSettings,
        *,
        step_audit: StepAudit | None = None,
    ) -> None:
        self.adapters = adapters
        self.journal = journal
        self.clock = clock
        self.settings = settings
        self.step_audit = step_audit

    def cap(self, group: str) -> int:
        if group.startswith("evict:"):
            return self.settings.evictions_in_parallel
        return self.settings.live_migrations_per_host

    async def run(
        self,
        record: OperationRecord,
        *,
        options: RunOptions,
        cancel: asyncio.Event,
        emit: Listener,
    ) -> OperationResult:
        plan = record.plan
        run = _Run(self, plan, record, options, cancel, emit)
        return await run.go()


class _Run:
    def __init__(
        self,
        ex: Executor,
        plan: Plan,
        record: OperationRecord,
        options: RunOptions,
        cancel: asyncio.Event,
        emit: Listener,
    ) -> None:
        self.ex = ex
        self.plan = plan
        self.options = options
        self.cancel = cancel
        self.emit_to = emit
        self.prior = {s.index: s for s in record.steps}
        self.results: dict[int, StepResult] = {}
        self.stop = False

    def emit(self, kind: str, **kw: Any) -> None:
        event = OpEvent(op_id=self.plan.id, kind=kind, at=self.ex.clock.time(), **kw)
        try:
            self.emit_to(event)
        except Exception:  # a listener's bug must not stop the operation
            log.exception("operation listener failed")

    async def go(self) -> OperationResult:
        self.emit("operation-started", state="running", message=f"{self.plan.kind} {self.plan.target}")
        steps = self.plan.steps
        i = 0
        while i < len(steps) and not self.stop and not self.cancel.is_set():
            j = i + 1
            group = steps[i].group
            while group is not None and j < len(steps) and steps[j].group == group:
                j += 1
            await self._batch(list(steps[i:j]), self.ex.cap(group) if group else 1)
            i = j
        return self._finish()

    async def _batch(self, batch: list[Step], cap: int) -> None:
        slots = asyncio.Semaphore(cap)

        async def one(step: Step) -> None:
            async with slots:
                if self.stop or self.cancel.is_set():
                    return
                result = await self._step(step)
                self.results[step.index] = result
                if result.state in ("failed", "blocked") and not self.options.continue_on_failure:
                    self.stop = True

        await asyncio.gather(*(one(s) for s in batch))

    async def _step(self, step: Step) -> StepResult:
        journal, clock = self.ex.journal, self.ex.clock
        prior = self.prior.get(step.index)
        if prior is not None and prior.state == "done":
            self.emit(
                "step-finished",
                step=step.index,
                state="done",
                target=step.target_name,
                message=f"done before: {prior.outcome or ''}".rstrip(": "),
            )
            return StepResult(step.index, "done", prior.outcome)
        if step.blocked:
            assert step.blocker is not None
            return self._end(step, "blocked", step.blocker.reason)
        adapter = self.ex.adapters.for_kind(step.kind)
        if adapter is None:
            return self._end(step, "failed", f"no adapter performs {step.kind.value}")
        attempt = journal.step_started(self.plan.id, step.index, clock.time())
        self.emit(
            "step-started",
            step=step.index,
            state="started",
            target=step.target_name,
            message=step.description if attempt == 1 else f"{step.description} (attempt {attempt})",
        )
        data = dict(prior.data) if prior is not None else {}
        ctx = StepContext(
            clock=clock,
            op_id=self.plan.id,
            step=step,
            attempt=attempt,
            data=data,
            poll_interval_s=self.ex.settings.poll_interval_s,
            eviction_retry_s=self.ex.settings.eviction_retry_s,
            force=self.options.force,
            on_progress=lambda p: self._progress(step, p),
            on_note=lambda d: journal.step_note(self.plan.id, step.index, d),
        )
        timeout = step.timeout_s or self.ex.settings.step_timeout_s
        task = asyncio.ensure_future(adapter.run(ctx))
        timer = asyncio.ensure_future(clock.sleep_until(clock.monotonic() + timeout))
        stopper = asyncio.ensure_future(self.cancel.wait())
        try:
            await asyncio.wait({task, timer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            stopper.cancel()
        if task.done():
            return self._outcome(step, task)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        cleanup = await self._cleanup(adapter, ctx)
        if self.cancel.is_set():
            return self._end(step, "cancelled", "cancelled" + (f"; {cleanup}" if cleanup else ""))
        return self._end(
            step, "failed", f"timed out after {timeout:g}s" + (f"; {cleanup}" if cleanup else "")
        )

    def _outcome(self, step: Step, task: asyncio.Future[str]) -> StepResult:
        exc = task.exception()
        if exc is None:
            return self._end(step, "done", task.result())
        if isinstance(exc, StepFailed | LayerUnavailable):
            return self._end(step, "failed", str(exc))
        log.error("step %s of %s raised", step.index, self.plan.id, exc_info=exc)
        return self._end(step, "failed", f"internal error: {type(exc).__name__}: {exc}")

    async def _cleanup(self, adapter: Any, ctx: StepContext) -> str | None:
        clock = self.ex.clock
        task = asyncio.ensure_future(adapter.cancel(ctx))
        timer = asyncio.ensure_future(clock.sleep_until(clock.monotonic() + CLEANUP_TIMEOUT_S))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not task.done():
            task.cancel()
            return "clean-up did not finish in time"
        exc = task.exception()
        if exc is not None:
            return f"clean-up failed: {exc}"
        result: str | None = task.result()
        return result

    def _progress(self, step: Step, p: Progress) -> None:
        self.emit(
            "step-progress",
            step=step.index,
            state="started",
            target=step.target_name,
            message=p.message,
            fraction=p.fraction,
        )

    def _end(self, step: Step, state: str, outcome: str | None) -> StepResult:
        self.ex.journal.step_finished(self.plan.id, step.index, state, outcome, self.ex.clock.time())
        if self.ex.step_audit is not None:
            self.ex.step_audit(step, state, outcome)
        self.emit("step-finished", step=step.index, state=state, message=outcome, target=step.target_name)
        return StepResult(step.index, state, outcome)

    def _finish(self) -> OperationResult:
        steps = [self.results.get(s.index, StepResult(s.index, "skipped", None)) for s in self.plan.steps]
        bad = [r for r in steps if r.state in ("failed", "blocked")]
        if self.cancel.is_set():
            state, message = "cancelled", "cancelled by request"
        elif bad:
            first = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            state, message = "failed", f"step {first.index + 1} {first.state}: {first.outcome}{more}"
        elif any(r.state != "done" for r in steps):
            state, message = "failed", "not every step ran"
        else:
            state, message = "succeeded", f"{len(steps)} steps done"
        self.ex.journal.finish(self.plan.id, state, message, self.ex.clock.time())
        self.emit("operation-finished", state=state, message=message)
        return OperationResult(self.plan.id, state, message, steps)
