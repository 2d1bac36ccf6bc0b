"""The ``serve`` and ``keys`` subcommands: their options, and how those override the settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from sovereign_tui.config import Settings
from sovereign_tui.daemon.roles import ROLES


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535; 0 picks a free one)")
    return value


def add_serve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="the appliance daemon: one poller, the feed socket, the SSH console",
        description="Poll the configured sources and publish the snapshots on a Unix socket (for "
        "`--attach`), over an SSH console (a TUI per login, roles from the authorized_keys file) "
        "and, with --metrics-port, as Prometheus metrics. Options override the [serve] settings. "
        "Runs until SIGTERM or SIGINT.",
    )
    serve.add_argument("--socket", metavar="PATH", help="feed socket (default <state>/run/feed.sock)")
    serve.add_argument("--ssh-listen", metavar="ADDRESS", help="SSH console address (default 0.0.0.0)")
    serve.add_argument("--ssh-port", type=_port, metavar="PORT", help="SSH console port (default 2222)")
    serve.add_argument("--no-ssh", action="store_true", help="run without the SSH console")
    serve.add_argument("--metrics-port", type=_port, metavar="PORT", help="serve /metrics on this port")
    serve.add_argument("--metrics-listen", metavar="ADDRESS", help="metrics address (default 127.0.0.1)")
    serve.add_argument(
        "--authorized-keys", metavar="PATH", help="operators' keys (default <config>/authorized_keys)"
    )
    serve.add_argument(
        "--host-key", metavar="PATH", help="console host key (default <state>/ssh_host_ed25519_key)"
    )


def add_keys_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="add, list and remove the operators' SSH keys and their roles",
        description="Manage the console's authorized_keys file (default <config>/authorized_keys, "
        "or [serve] authorized_keys). A running daemon picks changes up at the next login.",
    )
    keys.add_argument(
        "--authorized-keys", metavar="PATH", default=argparse.SUPPRESS, help="the file to change"
    )
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", parser_class=type(keys))
    actions.required = True
    add = actions.add_parser("add", help="add a public key (or a CA with --ca) with a name and a role")
    add.add_argument("key_file", metavar="PUBKEY_FILE", type=Path, help="an OpenSSH public key file (.pub)")
    add.add_argument("--name", required=True, help="operator name the key's actions are attributed to")
    add.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    add.add_argument(
        "--ca",
        action="store_true",
        help="trust certificates signed by this CA key (role = the most it may grant)",
    )
    add.add_argument(
        "--authorized-keys", metavar="PATH", default=argparse.SUPPRESS, help="the file to change"
    )
    actions.add_parser("list", help="list names, roles and fingerprints").add_argument(
        "--authorized-keys", metavar="PATH", default=argparse.SUPPRESS, help="the file to read"
    )
    remove = actions.add_parser("remove", help="remove the key with this name")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument(
        "--authorized-keys", metavar="PATH", default=argparse.SUPPRESS, help="the file to change"
    )


def run_serve_command(settings: Settings, args: argparse.Namespace) -> int:
    from sovereign_tui.daemon.serve import run_serve
    from sovereign_tui.daemon.settings import serve_settings

    overrides: dict[str, Any] = {}
    for option, field in (
        ("socket", "socket"),
        ("ssh_listen", "ssh_listen"),
        ("ssh_port", "ssh_port"),
        ("metrics_port", "metrics_port"),
        ("metrics_listen", "metrics_listen"),
        ("authorized_keys", "authorized_keys"),
        ("host_key", "host_key"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[field] = value
    if args.no_ssh:
        overrides["ssh"] = False
    serve = msgspec.structs.replace(serve_settings(settings), **overrides)
    return run_serve(settings, serve)


def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    from sovereign_tui.daemon.settings import resolve_paths, serve_settings
    from sovereign_tui.keys import run_keys

    explicit = getattr(args, "authorized_keys", None)
    path = Path(explicit) if explicit else resolve_paths(serve_settings(settings)).authorized_keys
    return run_keys(
        args.keys_action,
        path,
        key_file=getattr(args, "key_file", None),
        name=getattr(args, "name", None),
        role=getattr(args, "role", None),
        ca=getattr(args, "ca", False),
    )
