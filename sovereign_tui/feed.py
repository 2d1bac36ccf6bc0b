"""Where the app gets its snapshots from, whatever produces them.

`Store` (and `Runtime`) satisfy it in-process; a client of the daemon's feed socket will too, so
the app never knows whether it polls itself or watches a poller elsewhere.
"""

from __future__ import annotations

from typing import Protocol

from sovereign_tui.model import Snapshot


class SnapshotFeed(Protocol):
    def snapshot(self) -> Snapshot:
        """The latest snapshot, at once."""
        ...

    async def wait_newer(self, generation: int) -> Snapshot:
        """The latest snapshot once its generation is past `generation`; older ones are skipped."""
        ...
