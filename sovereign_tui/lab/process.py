"""The lab in a child process, for `sovereign-tui demo`: started, waited for, and stopped.

A separate process keeps the simulated cloud's CPU off the console's event loop and puts real
HTTP and SSH between them, as on a real management node.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sovereign_tui.errors import CommandError
from sovereign_tui.lab.server import LabFiles

READY = "sovereign-lab up:"


class LabProcess:
    def __init__(
        self,
        *,
        hosts: int,
        seed: int,
        servers: int | None = None,
        layers: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.layers = layers
        self.hosts = hosts
        self.seed = seed
        self.servers = servers
        self.ready_timeout_s = ready_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="sovereign-lab-"))
        self.log = self.dir / "lab.log"
        self.files = LabFiles(
            clouds_yaml=self.dir / "clouds.yaml",
            kubeconfig=self.dir / "kubeconfig",
            settings=self.dir / "sovereign.toml",
        )
        self.ready_line = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LabProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "sovereign_tui", "lab",
            "--hosts", str(self.hosts), "--seed", str(self.seed), "--write-config", str(self.dir),
        ]  # fmt: skip
        if self.servers is not None:
            cmd += ["--servers", str(self.servers)]
        if self.layers is not None:
            cmd += ["--layers", self.layers]
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.ready_timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise CommandError(f"the embedded lab did not start within {self.ready_timeout_s:g}s")
                if sel.select(timeout=left):
                    line = proc.stdout.readline()
                    if line.startswith(READY):
                        self.ready_line = line.strip()
                        return
                    if line:
                        continue
                if proc.poll() is not None:
                    reason = self._last_log_line() or f"exit status {proc.returncode}"
                    self.stop()
                    raise CommandError(f"the embedded lab failed to start: {reason}")

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text().splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)
