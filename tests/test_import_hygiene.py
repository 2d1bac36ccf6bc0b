"""The headless core loads without Textual: export, daemon and benchmarks never pay for the UI.

The import-linter contract in pyproject.toml checks the static imports; this checks what really
gets loaded, in a fresh interpreter per module.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UI_MODULES = {"sovereign_tui.app"}


def headless_modules() -> list[str]:
    found = []
    for package in ("sovereign_tui", "collectors"):
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if info.name not in UI_MODULES and not info.name.endswith(".__main__"):  # runs the app
                found.append(info.name)
    return sorted([*found, "sovereign_tui", "collectors"])


def test_there_are_headless_modules_to_check() -> None:
    mods = headless_modules()
    assert "sovereign_tui.poller.scheduler" in mods and "collectors.host" in mods


@pytest.mark.parametrize("module", headless_modules())
def test_module_loads_without_textual(module: str) -> None:
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'screens', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} pulled in {out.stdout.strip()}"
