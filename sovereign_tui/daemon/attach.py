"""``sovereign-tui export --attach SOCKET``: the export read from a running daemon's feed.

The JSON printed is the daemon's own export of its latest snapshot, byte for byte; with
``--watch``, one line per snapshot the feed sends (a slow reader skips generations).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TextIO

import msgspec

from sovereign_tui.cli import run_async
from sovereign_tui.daemon.feed_client import FeedError, snapshot_frames
from sovereign_tui.export_prometheus import to_text
from sovereign_tui.model import Snapshot

EXIT_FAILED = 1


def run_export_attached(
    socket: str | Path, *, fmt: str, watch: bool, timeout_s: float, out: TextIO, err: TextIO
) -> int:
    path = Path(socket)

    async def main() -> int:
        frames = snapshot_frames(path)
        try:
            raw = await asyncio.wait_for(frames.__anext__(), timeout_s)
            while True:
                if fmt == "prometheus":
                    out.write(to_text(msgspec.json.decode(raw, type=Snapshot)))
                else:
                    out.write(raw.decode() + "\n")
                out.flush()
                if not watch:
                    return 0
                raw = await frames.__anext__()
        finally:
            await frames.aclose()

    try:
        return run_async(main)
    except FeedError as exc:
        print(f"export: {exc}", file=err)
    except TimeoutError:
        print(f"export: {path}: no snapshot within {timeout_s:g} s (is the daemon stuck?)", file=err)
    except BrokenPipeError:
        return 0
    return EXIT_FAILED
