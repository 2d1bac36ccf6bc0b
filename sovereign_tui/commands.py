"""What each subcommand does, once its arguments are parsed (kept apart from argparse)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, TextIO

from sovereign_tui.cli import run_async
from sovereign_tui.config import Settings
from sovereign_tui.export import to_json
from sovereign_tui.model import Snapshot
from sovereign_tui.runtime import Runtime

if TYPE_CHECKING:
    from sovereign_tui.app import SovereignApp
    from sovereign_tui.clock import Clock
    from sovereign_tui.daemon.protocol import Welcome


def _report_unhealthy(snapshot: Snapshot, err: TextIO) -> None:
    for health in snapshot.sources:
        if health.up is not True:
            reason = health.last_error or "no answer yet"
            print(f"export: source {health.target} is down: {reason}", file=err)


def run_export(
    settings: Settings,
    *,
    fmt: str,
    watch: bool,
    timeout_s: float | None,
    attach: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """One snapshot after the first complete poll (or the timeout), or a stream with --watch.
    Stdout carries only data; every diagnostic goes to stderr."""
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    timeout = timeout_s or settings.export.first_poll_timeout_s
    if attach is not None:
        from sovereign_tui.daemon.attach import run_export_attached

        return run_export_attached(attach, fmt=fmt, watch=watch, timeout_s=timeout, out=stdout, err=stderr)

    async def main() -> int:
        runtime = Runtime(settings)
        try:
            snapshot = await runtime.first_poll(timeout)
            _report_unhealthy(snapshot, stderr)
            _write(stdout, snapshot, fmt)
            if not watch:
                return 0
            await runtime.start()
            generation = snapshot.generation
            while True:
                snapshot = await runtime.wait_newer(generation)
                generation = snapshot.generation
                _write(stdout, snapshot, fmt)
        finally:
            await runtime.close()

    try:
        return run_async(main)
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        return 0


def _write(stdout: TextIO, snapshot: Snapshot, fmt: str = "json") -> None:
    if fmt == "prometheus":
        from sovereign_tui.export_prometheus import to_text

        stdout.write(to_text(snapshot))
    else:
        # json and ndjson differ only in intent: both are one compact document per line.
        stdout.write(to_json(snapshot).decode() + "\n")
    stdout.flush()


def attached_app(
    socket: str | os.PathLike[str], *, token: str | None = None, clock: Clock | None = None
) -> SovereignApp:
    """The console on a daemon's feed (``--attach``). Its operations run in the daemon, as this
    session (`RemoteOperations`); its action keys follow the role the daemon's welcome gives it,
    none until the daemon has answered. `token`: a console session's (else from the environment)."""
    from sovereign_tui.app import SovereignApp
    from sovereign_tui.daemon.feed_client import FeedClient
    from sovereign_tui.daemon.remote_ops import RemoteOperations, actor_of
    from sovereign_tui.gpu_analytics import GpuHistory

    history = GpuHistory()  # seeded by the daemon's: sparklines and idle flags from the start
    client = FeedClient(socket, token=token, clock=clock, history=history)
    app = SovereignApp(client, clock=clock, history=history, operations=RemoteOperations(client))

    def welcomed(welcome: Welcome) -> None:
        app.actor = actor_of(welcome)
        app.refresh_bindings()

    client.on_welcome = welcomed
    return app


def run_tui(settings: Settings, attach: str | None = None) -> int:
    from sovereign_tui.app import SovereignApp

    if attach is not None:
        attached = attached_app(attach)
        attached.run()
        return attached.return_code or 0
    from sovereign_tui.ops_gateway import OperationError, local_backend

    runtime = Runtime(settings)
    try:
        operations, actor = local_backend(settings)  # acting as the OS user, with ops.role
    except OperationError as exc:
        print(f"operations unavailable, the console only looks: {exc}", file=sys.stderr)
        app = SovereignApp(runtime.store, runtime=runtime)
    else:
        app = SovereignApp(runtime.store, runtime=runtime, operations=operations, actor=actor)
    app.run()
    return app.return_code or 0


def run_demo(*, hosts: int, seed: int) -> int:
    """The lab in a background process (its own CPU, real HTTP and SSH between the two), the
    console in this one on the config the lab wrote; the lab stops when the console exits."""
    from sovereign_tui.config import load_settings
    from sovereign_tui.lab.process import LabProcess

    with LabProcess(hosts=hosts, seed=seed) as lab:
        settings, _ = load_settings(lab.files.settings)
        return run_tui(settings)


def run_lab_command(args: argparse.Namespace) -> int:
    from sovereign_tui.lab.server import run_lab

    async def main() -> int:
        await run_lab(args.hosts, args.seed, args.write_config, servers=args.servers, layers=args.layers)
        return 0

    return run_async(main)
