"""One console session: a TUI process of its own on a PTY, pumped to and from the SSH channel.

The process is ``python -m sovereign_tui.console.session_entry --attach SOCKET``, which makes the
PTY its controlling terminal (so the kernel sends it SIGWINCH on a resize) and then runs
``sovereign-tui --attach SOCKET``; its environment carries the session's capability token, the
client's terminal type and locale, and nothing else of the client's. The pump is manual: bytes
from the client go to the PTY (a window change becomes ``TIOCSWINSZ`` on it), bytes from the PTY
go to the client with the channel's flow control, and every keystroke resets the idle timer.

A session ends when the TUI exits (its status becomes the SSH exit status), when the client goes
away (the TUI gets SIGHUP, then SIGKILL after a grace period), after the idle timeout, or when the
daemon shuts down; in the last two cases the client's terminal is reset and told why.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import sys
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.misc import SoftEOFReceived

import sovereign_tui
from sovereign_tui.clock import Clock
from sovereign_tui.daemon.deadline import within
from sovereign_tui.daemon.protocol import TOKEN_ENV

log = logging.getLogger("sovereign_tui.console.sessions")

RESET_TERMINAL = (
    b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"  # mouse reporting off
    b"\x1b[?2004l\x1b[?1004l\x1b[<u"  # bracketed paste, focus events, keyboard protocol
    b"\x1b[?1049l\x1b[?25h\x1b[0m"  # main screen, cursor shown, attributes reset
)
"""What a killed Textual app would have undone itself; sent before telling the client why."""
CLIENT_ENV = ("LANG", "LANGUAGE", "COLORTERM", "NO_COLOR")
MAX_PENDING_INPUT = 1 << 20


def session_command(socket_path: Path) -> list[str]:
    return [sys.executable, "-m", "sovereign_tui.console.session_entry", "--attach", str(socket_path)]


def session_env(term: str, token: str, client_env: Mapping[str, str]) -> dict[str, str]:
    root = str(Path(sovereign_tui.__file__).resolve().parent.parent)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "TERM": term,
        "PYTHONPATH": root,
        TOKEN_ENV: token,
    }
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "SOVEREIGN_TUI_CONFIG"):
        if name in os.environ:
            env[name] = os.environ[name]
    for name, value in client_env.items():
        if (name in CLIENT_ENV or name.startswith("LC_")) and len(value) < 256:
            env[name] = value
    return env


def set_window_size(fd: int, width: int, height: int, pixwidth: int = 0, pixheight: int = 0) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


class TuiSession:
    def __init__(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        *,
        command: Sequence[str],
        env: Mapping[str, str],
        clock: Clock,
        idle_timeout_s: float,
        grace_s: float,
    ) -> None:
        self._process = process
        self._command = list(command)
        self._env = dict(env)
        self._clock = clock
        self._idle_timeout_s = idle_timeout_s
        self._grace_s = grace_s
        self._last_input = clock.monotonic()
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self.child: asyncio.subprocess.Process | None = None

    def hang_up(self, reason: str) -> None:
        """End the session from outside (shutdown); `run` returns soon after."""
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> tuple[int, str]:
        """Run the session to its end: (exit status for the client, why it ended)."""
        master, slave = os.openpty()
        try:
            width, height, pixwidth, pixheight = self._process.get_terminal_size()
            set_window_size(master, width or 80, height or 24, pixwidth, pixheight)
            self.child = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self._env,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        try:
            return await self._pump(master, self.child)
        finally:
            await self._reap(self.child)
            os.close(master)

    async def _pump(self, master: int, child: asyncio.subprocess.Process) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        output = asyncio.StreamReader()
        out_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(output), os.fdopen(os.dup(master), "rb", buffering=0)
        )
        keyboard = _PtyWriter(master, loop)
        tasks: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(self._to_client(output), name="pty-to-client"): "output",
            asyncio.create_task(self._from_client(master, keyboard), name="client-to-pty"): "input",
            asyncio.create_task(child.wait(), name="tui-exit"): "exit",
            asyncio.create_task(self._idle(), name="idle"): "idle",
            asyncio.create_task(self._stop.wait(), name="stop"): "stop",
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = tasks[next(iter(done))]
            if first in ("output", "exit"):
                # The TUI is done: let the rest of its output (its terminal restore) reach the client.
                with contextlib.suppress(TimeoutError):
                    await within(self._clock, self._grace_s, child.wait())
                flusher = next(t for t, kind in tasks.items() if kind == "output")
                with contextlib.suppress(TimeoutError, Exception):
                    await within(self._clock, self._grace_s, asyncio.shield(flusher))
                status = child.returncode if child.returncode is not None else 1
                return (status if status >= 0 else 128 - status), "the console exited"
            if first == "input":
                ended = next(iter(done))
                failed = not ended.cancelled() and ended.exception() is not None
                return (1 if failed else 0), _describe_input_end(ended)
            reason = (
                f"no keystroke for {self._idle_timeout_s / 60:g} min"
                if first == "idle"
                else self._stop_reason
            )
            await self._reap(child)
            self._process.stdout.write(
                RESET_TERMINAL + f"\r\nsovereign-tui: session closed: {reason}\r\n".encode()
            )
            return 1, reason
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            out_transport.close()
            keyboard.close()

    async def _to_client(self, output: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await output.read(65536)
            except OSError:  # EIO: every holder of the PTY's other side has closed it
                return
            if not data:
                return
            self._process.stdout.write(data)
            await self._process.stdout.drain()

    async def _from_client(self, master: int, keyboard: _PtyWriter) -> None:
        stdin = self._process.stdin
        while True:
            try:
                data = await stdin.read(4096)
            except asyncssh.TerminalSizeChanged as change:
                set_window_size(master, change.width, change.height, change.pixwidth, change.pixheight)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived, SoftEOFReceived):
                continue
            if not data:
                return
            self._last_input = self._clock.monotonic()
            keyboard.write(data)
            if keyboard.pending > MAX_PENDING_INPUT:
                raise RuntimeError("the console stopped reading its input")

    async def _idle(self) -> None:
        if self._idle_timeout_s <= 0:
            await asyncio.Event().wait()
        while True:
            deadline = self._last_input + self._idle_timeout_s
            if self._clock.monotonic() >= deadline:
                return
            await self._clock.sleep_until(deadline)

    async def _reap(self, child: asyncio.subprocess.Process) -> None:
        """SIGHUP the TUI's process group, then SIGKILL it after the grace period."""
        if child.returncode is not None:
            return
        for sig in (signal.SIGHUP, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            try:
                await within(self._clock, self._grace_s, child.wait())
                return
            except TimeoutError:
                log.warning("session process %d ignored %s", child.pid, sig.name)


class _PtyWriter:
    """Writes to the PTY's master side without blocking, keeping what it cannot take yet.

    Not a write-pipe transport: some event loops read from a write pipe to notice it closing,
    which on a PTY master would swallow the TUI's output."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop
        self._buf = bytearray()
        self._waiting = False
        os.set_blocking(fd, False)

    @property
    def pending(self) -> int:
        return len(self._buf)

    def write(self, data: bytes) -> None:
        self._buf += data
        self._flush()

    def _flush(self) -> None:
        while self._buf:
            try:
                written = os.write(self._fd, self._buf)
            except BlockingIOError:
                if not self._waiting:
                    self._loop.add_writer(self._fd, self._flush)
                    self._waiting = True
                return
            except OSError:  # the TUI is gone; its exit ends the session
                self._buf.clear()
                break
            del self._buf[:written]
        self.close()

    def close(self) -> None:
        if self._waiting:
            self._loop.remove_writer(self._fd)
            self._waiting = False


def _describe_input_end(task: asyncio.Task[Any]) -> str:
    if not task.cancelled() and (exc := task.exception()) is not None:
        return str(exc)
    return "the client closed the session"
