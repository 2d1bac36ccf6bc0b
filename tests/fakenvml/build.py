"""Build the fake NVML library with the system's C compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
RUNNER = Path(__file__).with_name("runner.py")
SONAME = "libnvidia-ml.so.1"


def find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def build_fake_nvml(compiler: str, out_dir: Path, soname: str = SONAME) -> Path:
    """Compile the fake into ``out_dir/<soname>``. With the driver library's soname, a later
    ``dlopen("libnvidia-ml.so.1")`` resolves to it once it is loaded."""
    out = out_dir / soname
    cmd = [compiler, "-shared", "-fPIC", "-O1", "-Wall", f"-Wl,-soname,{soname}", "-o", str(out), str(SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the fake NVML failed: {' '.join(cmd)}\n{done.stderr}")
    return out
