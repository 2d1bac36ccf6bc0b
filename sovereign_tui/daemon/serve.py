"""``sovereign-tui serve``: the appliance daemon, one process.

It runs one `Runtime` (collectors, poller, store) and publishes its snapshots three ways: the
feed socket (local clients and the console's TUI sessions), the SSH console, and optionally a
Prometheus ``/metrics`` endpoint. It also runs the operations engine (`EngineGateway`): what the
console's sessions ask for runs here, as their operator and role, and outlives the session. If
the journal or the audit log cannot be opened, operations are refused as unavailable and the
rest runs. SIGTERM or SIGINT shuts it down cleanly: console sessions are closed (their clients
told why), feed clients get a goodbye, the socket file is removed, operations still running are
cancelled (each step cleaned up and journaled), then the poller stops. Diagnostics go to stderr
(the journal under systemd), one line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from aiohttp import web

from sovereign_tui.audit_sink import AuditSink, open_audit_sink
from sovereign_tui.clock import Clock, SystemClock
from sovereign_tui.config import Settings
from sovereign_tui.console.authkeys import AuthorizedKeysFile
from sovereign_tui.console.ssh_server import ConsoleServer, HostKeyError, load_host_key
from sovereign_tui.daemon.engine_gateway import EngineGateway
from sovereign_tui.daemon.feed_server import FeedServer, FeedSetupError
from sovereign_tui.daemon.gateway import OperationsGateway, UnavailableGateway
from sovereign_tui.daemon.settings import ServePaths, ServeSettings, resolve_paths, validate
from sovereign_tui.daemon.tokens import SessionTokens
from sovereign_tui.export_prometheus import CONTENT_TYPE, to_text
from sovereign_tui.feed import SnapshotFeed
from sovereign_tui.ops_gateway import OperationError

if TYPE_CHECKING:
    from sovereign_tui.store import Store

log = logging.getLogger("sovereign_tui.serve")


class ServeError(Exception):
    """The daemon cannot start: one line naming the thing and the fix."""


class Daemon:
    """The feed, the console and the metrics endpoint around one snapshot feed."""

    def __init__(
        self,
        feed: SnapshotFeed,
        settings: ServeSettings,
        *,
        audit: AuditSink,
        paths: ServePaths | None = None,
        clock: Clock | None = None,
        gateway: OperationsGateway | None = None,
    ) -> None:
        self.feed = feed
        self.settings = settings
        self.paths = paths or resolve_paths(settings)
        self.clock = clock or SystemClock()
        self.tokens = SessionTokens()
        self.audit = audit
        self.feed_server = FeedServer(
            feed,
            settings=settings,
            clock=self.clock,
            tokens=self.tokens,
            gateway=gateway or UnavailableGateway(),
            audit=self.audit,
        )
        self.console: ConsoleServer | None = None
        self.ssh_port: int | None = None
        self.metrics_port: int | None = None
        self._metrics: web.AppRunner | None = None

    async def start(self) -> None:
        try:
            await self.feed_server.start(self.paths.socket)
        except (FeedSetupError, OSError) as exc:
            raise ServeError(f"feed socket: {exc}") from None
        try:
            if self.settings.ssh:
                await self._start_console()
            if self.settings.metrics_port is not None:
                await self._start_metrics()
        except BaseException:
            await self.stop()
            raise

    async def _start_console(self) -> None:
        try:
            host_key = load_host_key(self.paths.host_key)
        except (HostKeyError, OSError) as exc:
            raise ServeError(f"host key: {exc}") from None
        console = ConsoleServer(
            settings=self.settings,
            keys=AuthorizedKeysFile(self.paths.authorized_keys),
            host_key=host_key,
            tokens=self.tokens,
            audit=self.audit,
            socket_path=self.paths.socket,
            clock=self.clock,
        )
        self.console = console
        try:
            self.ssh_port = await console.start(self.settings.ssh_listen, self.settings.ssh_port)
        except OSError as exc:
            where = f"{self.settings.ssh_listen}:{self.settings.ssh_port}"
            raise ServeError(f"SSH console: cannot listen on {where} ({exc.strerror or exc})") from None
        console.keys.current()  # report problems in the keys file at start, not at the first login

    async def _start_metrics(self) -> None:
        host, port = self.settings.metrics_listen, self.settings.metrics_port
        try:
            sock = socket.create_server((host, port or 0))
        except OSError as exc:
            raise ServeError(f"metrics: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._metrics = runner
        await web.SockSite(runner, sock).start()
        self.metrics_port = int(sock.getsockname()[1])
        log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        body = to_text(self.feed.snapshot(), self.feed_server.history.idle_allocated).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def stop(self) -> None:
        if self.console is not None:
            await self.console.close()
            self.console = None
        if self._metrics is not None:
            await self._metrics.cleanup()
            self._metrics = None
        await self.feed_server.close()


def _log_to_stderr(stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("sovereign-tui serve: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for name in ("sovereign_tui.serve", "sovereign_tui.console", "sovereign_tui.feed"):
        logging.getLogger(name).setLevel(logging.INFO)


def open_engine(settings: Settings, store: Store, clock: Clock) -> EngineGateway | None:
    """The operations engine on the daemon's store, publishing its operations there; None (and
    one line in the log) when its journal or audit log cannot be opened."""
    try:
        return EngineGateway.from_settings(settings, store, clock=clock, publish=store.set_operations)
    except OperationError as exc:
        log.error("operations unavailable (requests are refused): %s", exc)
        return None


def run_serve(settings: Settings, serve: ServeSettings, *, err: TextIO | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; 0 after a clean shutdown, 1 when it cannot start."""
    stderr = err or sys.stderr
    _log_to_stderr(stderr)
    # Sessions' TUI processes are reaped on SIGCHLD by some event loops: a mask inherited from
    # whatever started the daemon must not hold it back.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    try:
        validate(serve)
    except ValueError as exc:
        print(f"serve: {exc}", file=stderr)
        return 2

    async def main() -> int:
        from sovereign_tui.runtime import Runtime

        runtime = Runtime(settings)
        engine = open_engine(settings, runtime.store, runtime.clock)
        daemon = Daemon(
            runtime.store,
            serve,
            audit=open_audit_sink(settings, runtime.clock),
            clock=runtime.clock,
            gateway=engine,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await daemon.start()
        except ServeError as exc:
            print(f"serve: {exc}", file=stderr)
            if engine is not None:
                await engine.close()
            await runtime.close()
            return 1
        await runtime.start()
        where = f"ssh port {daemon.ssh_port}" if daemon.ssh_port is not None else "no SSH console"
        log.info("ready: feed %s, %s", daemon.paths.socket, where)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await daemon.stop()
            if engine is not None:
                await engine.close()
            await runtime.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return 0

    from sovereign_tui.cli import run_async

    return run_async(main)
