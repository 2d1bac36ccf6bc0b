"""What every collector offers the rest of the app."""

from __future__ import annotations

import threading
from typing import Literal, Protocol

from sovereign_tui.poller import Target

Capability = Literal["read", "drain", "migrate", "provision"]

SDK_IMPORT_LOCK = threading.Lock()
"""Held by a worker thread while it imports (and first loads) an SDK: openstacksdk with
keystoneauth, the kubernetes client. Two threads importing ``requests`` at once can meet it half
initialised ("cannot import name ... from partially initialized module 'requests.utils'"), and
the OpenStack and Kubernetes collectors load their configuration in threads at the same start."""


class Collector(Protocol):
    """One source. It yields poll targets and knows nothing of scheduling or screens."""

    name: str
    capabilities: frozenset[Capability]

    def targets(self) -> list[Target]:
        """The targets to poll for the current configuration."""
        ...

    async def aclose(self) -> None:
        """Release connections and handles."""
        ...
