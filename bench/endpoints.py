"""The benchmark's endpoints, in a process of their own: N loopback servers (each its own
host:port, as N exporters would be), each answering ``GET /metrics`` after L ms with a
dcgm-exporter-like payload.

    python -m bench.endpoints --n 2000 --latency-ms 50

Prints the ports as one JSON list on stdout once every socket listens, then serves until its
standard input reaches its end (so it never outlives the benchmark; Ctrl-D by hand) or it is
terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

from bench.common import dcgm_payload, install_uvloop, raise_nofile_limit

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def listen(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        socks.append(sock)
    return socks


async def serve(n: int, latency_s: float) -> None:
    loop = asyncio.get_running_loop()
    socks = listen(n)
    ports = [s.getsockname()[1] for s in socks]

    def handler(body: bytes) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def metrics(request: web.BaseRequest) -> web.StreamResponse:
            if request.path != "/metrics":
                return web.Response(status=404, text="only /metrics here\n")
            if latency_s > 0:
                await asyncio.sleep(latency_s)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        return metrics

    servers = []
    for index, sock in enumerate(socks):
        # Each endpoint answers for its own host, as one exporter per machine would.
        handlers = web.Server(handler(dcgm_payload(index)), access_log=None)
        servers.append((handlers, await loop.create_server(handlers, sock=sock, backlog=128)))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Ready: the ports, as one line.
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    await _stdin_closed(stop)
    for handlers, srv in servers:
        srv.close()
        await handlers.shutdown(timeout=0.1)


async def _stdin_closed(stop: asyncio.Event) -> None:
    """Return once stdin reaches its end or `stop` is set."""
    loop = asyncio.get_running_loop()

    def drain() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=drain, name="stdin-watch", daemon=True).start()
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="number of endpoints (listening sockets)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="delay before each answer")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    raise_nofile_limit()
    install_uvloop()
    asyncio.run(serve(args.n, args.latency_ms / 1000.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
