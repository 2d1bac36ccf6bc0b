"""The fan-out poller: the performance core (DESIGN section 5)."""

from sovereign_tui.poller.limits import Limiter
from sovereign_tui.poller.scheduler import Backoff, Poller
from sovereign_tui.poller.target import PollContext, PollError, PollFn, Target

__all__ = ["Backoff", "Limiter", "PollContext", "PollError", "PollFn", "Poller", "Target"]
