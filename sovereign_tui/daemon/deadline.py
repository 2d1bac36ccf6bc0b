"""Timeouts on the injected clock, so tests move time with `FakeClock` instead of waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from sovereign_tui.clock import Clock

T = TypeVar("T")


async def within(clock: Clock, seconds: float, awaitable: Awaitable[T]) -> T:
    """The result of `awaitable`, or TimeoutError once `seconds` have passed on `clock`
    (the awaitable is then cancelled)."""
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep_until(clock.monotonic() + seconds))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        timer.cancel()
        raise
    timer.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work
    raise TimeoutError
