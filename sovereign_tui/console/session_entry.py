"""Entry point of a console session's TUI process: ``python -m sovereign_tui.console.session_entry
--attach SOCKET``.

The daemon starts it in a new session with the PTY as stdin, stdout and stderr; claiming the PTY
as the controlling terminal makes the kernel send SIGWINCH when the client's window changes.
Then it is ``sovereign-tui`` with the same arguments.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import termios


def main() -> int:
    with contextlib.suppress(OSError):  # already ours, or not a terminal: run all the same
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    from sovereign_tui.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
