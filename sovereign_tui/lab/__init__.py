"""The embedded lab: a simulated sovereign cloud on loopback that speaks the real APIs.

`Lab` (in `server`) runs Keystone, Nova, Placement and Ironic over one deterministic `Scenario`;
`run_lab` is what ``sovereign-tui lab`` runs. Imports are lazy so that importing one part of the
lab (say the SSH targets) does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sovereign_tui.lab.faults import FaultSpec
    from sovereign_tui.lab.scenario import Scenario
    from sovereign_tui.lab.server import Lab, LabCredentials, LabFiles, run_lab

__all__ = ["FaultSpec", "Lab", "LabCredentials", "LabFiles", "Scenario", "run_lab"]

_WHERE = {
    "FaultSpec": "faults",
    "Scenario": "scenario",
    "Lab": "server",
    "LabCredentials": "server",
    "LabFiles": "server",
    "run_lab": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
