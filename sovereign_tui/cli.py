"""The one command, ``sovereign-tui``, and its subcommands.

Every failure a user can cause (a bad option, a missing or invalid file) ends in one line on
stderr naming the thing and the problem, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sovereign_tui import __version__
from sovereign_tui.config import ConfigError, load_settings, state_home
from sovereign_tui.errors import CommandError

PROG = "sovereign-tui"
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,  # so a subcommand does not reset a --config given before it
        help="settings file (default: $XDG_CONFIG_HOME/sovereign-tui/sovereign.toml)",
    )
    parser = _Parser(
        prog=PROG,
        description="A terminal console for a sovereign AI stack: GPUs, OpenStack, StarlingX, "
        "Kubernetes, Kata and KubeVirt in one keyboard-driven view.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--attach", metavar="SOCKET", help="watch a running daemon's feed instead of polling")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    tui = sub.add_parser(
        "tui",
        parents=[common],
        help="the console against the configured sources (the default)",
        description="Open the console against the sources in the settings file.",
    )
    tui.add_argument(
        "--attach",
        metavar="SOCKET",
        default=argparse.SUPPRESS,
        help="watch a running daemon's feed (its socket)",
    )
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="the console on the embedded lab: the first thing to run",
        description="Start the embedded lab (a simulated sovereign cloud on loopback) and open "
        "the console on it; the lab stops when the console exits.",
    )
    demo.add_argument("--hosts", type=_positive_int, default=24, help="lab size in hosts (default 24)")
    demo.add_argument("--seed", type=int, default=1, help="lab scenario seed (default 1)")

    export = sub.add_parser(
        "export",
        parents=[common],
        help="print the snapshot as data (JSON) for scripts",
        description="Poll every source once and print one snapshot on stdout (diagnostics go "
        "to stderr). With --watch, keep polling and print one line per new snapshot.",
    )
    export.add_argument(
        "--format", choices=("json", "ndjson", "prometheus"), default="json", help="output format"
    )
    export.add_argument("--attach", metavar="SOCKET", help="read the snapshot from a running daemon's feed")
    export.add_argument("--watch", action="store_true", help="stream a line per new snapshot (ndjson)")
    export.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="longest wait for the first complete poll (default: export.first_poll_timeout_s)",
    )
    export.add_argument("--schema", action="store_true", help="print the export's JSON Schema and exit")

    lab = sub.add_parser(
        "lab",
        parents=[common],
        help="run only the embedded lab and write config that points at it",
        description="Run the embedded lab on loopback until interrupted; with --write-config, "
        "write clouds.yaml, a kubeconfig and sovereign.toml for it into DIR.",
    )
    lab.add_argument("--hosts", type=_positive_int, default=24, help="lab size in hosts (default 24)")
    lab.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    lab.add_argument(
        "--servers", type=_positive_int, help="Nova servers to create (default: about 4 per hypervisor)"
    )
    lab.add_argument(
        "--layers",
        type=_layers,
        default="openstack,kubernetes,gpus,starlingx",
        help="parts of the lab to run, comma-separated (default: all of "
        "openstack,kubernetes,gpus,starlingx; openstack is always on)",
    )
    lab.add_argument("--write-config", metavar="DIR", type=Path, help="directory to write config into")

    from sovereign_tui.daemon.cli_args import add_keys_parser, add_serve_parser

    add_serve_parser(sub, common)
    add_keys_parser(sub, common)
    from sovereign_tui.ops_cli import add_parsers as add_ops_parsers

    add_ops_parsers(sub, common)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _layers(text: str) -> tuple[str, ...]:
    from sovereign_tui.lab.fleet import LAYERS

    chosen = tuple(dict.fromkeys(["openstack", *(p.strip() for p in text.split(",") if p.strip())]))
    unknown = [p for p in chosen if p not in LAYERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown layer {unknown[0]!r}; choose from {', '.join(LAYERS)}")
    return chosen


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop where it is installed (a third of the CPU per request of the stock loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _log_to_file() -> Path:
    """Library logging goes to a file: nothing but the app may write on the operator's screen."""
    log_dir = state_home()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "sovereign-tui.log"
        handler: logging.Handler = logging.FileHandler(path)
    except OSError:
        path = Path("/dev/null")
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.captureWarnings(True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except (UsageError, ConfigError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "tui"
    if command == "export" and args.schema:
        from sovereign_tui.export import schema_text

        sys.stdout.write(schema_text())
        return 0
    if command == "lab":
        from sovereign_tui.commands import run_lab_command

        return run_lab_command(args)
    if command == "demo":
        _log_to_file()
        from sovereign_tui.commands import run_demo

        return run_demo(hosts=args.hosts, seed=args.seed)
    settings, _ = load_settings(getattr(args, "config", None))
    from sovereign_tui.ops_cli import COMMANDS as OPS_COMMANDS

    if command in OPS_COMMANDS:
        from sovereign_tui.ops_cli import run as run_ops

        _log_to_file()
        return run_ops(args, settings)
    if command in ("serve", "keys"):
        from sovereign_tui.daemon.cli_args import run_keys_command, run_serve_command

        return run_serve_command(settings, args) if command == "serve" else run_keys_command(settings, args)
    if command == "export":
        from sovereign_tui.commands import run_export

        if args.watch and args.format == "prometheus":
            raise UsageError(
                f"{PROG} export: --watch streams ndjson; --format prometheus prints one snapshot"
            )
        return run_export(
            settings, fmt=args.format, watch=args.watch, timeout_s=args.timeout, attach=args.attach
        )
    _log_to_file()
    from sovereign_tui.commands import run_tui

    return run_tui(settings, attach=args.attach)
