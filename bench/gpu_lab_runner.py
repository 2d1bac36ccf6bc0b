"""One GPU lab in a process of its own, for `bench.gpu_bench`.

    python -m bench.gpu_lab_runner --kind ssh|dcgm --n N --dir DIR [--seed 0]

``ssh``: N simulated GPU hosts (8 H100s each), each its own SSH server on loopback; writes a client
key and a known_hosts file into DIR. ``dcgm``: N dcgm-exporter endpoints of 8 GPUs each.

Writes ``DIR/<kind>.json`` (the endpoints, and for ``ssh`` the user, key and known_hosts paths),
then prints one JSON line ``{"ready": PATH, ...}`` and serves until its stdin closes or it is
terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import GPUS_PER_HOST, host_name, install_uvloop, raise_nofile_limit
from sovereign_tui.clock import SystemClock
from sovereign_tui.lab.dcgm_exporter import DcgmLab, start_dcgm_lab
from sovereign_tui.lab.ssh_targets import SimGpuHost, SshTargets


async def _until_done() -> None:
    """Return when stdin reaches its end or a SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def drain() -> None:
        while await reader.read(4096):
            pass
        done.set()

    drainer = asyncio.create_task(drain())
    try:
        await done.wait()
    finally:
        drainer.cancel()


async def _start_ssh(n: int, workdir: Path, seed: int) -> tuple[SshTargets, dict[str, Any]]:
    lab = SshTargets([SimGpuHost(host_name(i), gpus=GPUS_PER_HOST) for i in range(n)], seed=seed)
    await lab.start()
    key = workdir / "client_key"
    known_hosts = workdir / "known_hosts"
    lab.create_client_key(key)
    lab.write_known_hosts(known_hosts)
    hosts = []
    for name in lab.names:
        address, port = lab.endpoint(name)
        hosts.append({"name": name, "address": address, "port": port})
    doc: dict[str, Any] = {
        "kind": "ssh",
        "user": lab.user,
        "client_key": str(key),
        "known_hosts": str(known_hosts),
        "hosts": hosts,
    }
    return lab, doc


async def _start_dcgm(n: int, seed: int) -> tuple[DcgmLab, dict[str, Any]]:
    names = [host_name(i) for i in range(n)]
    lab = await start_dcgm_lab([(name, GPUS_PER_HOST) for name in names], SystemClock(), seed)
    doc: dict[str, Any] = {
        "kind": "dcgm",
        "endpoints": [{"name": name, "url": lab.url(name)} for name in lab.names],
    }
    return lab, doc


async def serve(args: argparse.Namespace) -> None:
    workdir = Path(args.dir)
    started = time.perf_counter()
    lab: SshTargets | DcgmLab
    if args.kind == "ssh":
        lab, doc = await _start_ssh(args.n, workdir, args.seed)
    else:
        lab, doc = await _start_dcgm(args.n, args.seed)
    path = workdir / f"{args.kind}.json"
    await asyncio.to_thread(path.write_text, json.dumps(doc))
    sys.stdout.write(
        json.dumps({"ready": str(path), "n": args.n, "build_s": round(time.perf_counter() - started, 2)})
        + "\n"
    )
    sys.stdout.flush()
    try:
        await _until_done()
    finally:
        if isinstance(lab, SshTargets):
            await lab.close()
        else:
            await lab.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--kind", choices=("ssh", "dcgm"), required=True)
    p.add_argument("--n", type=int, required=True, help="hosts (ssh) or endpoints (dcgm)")
    p.add_argument("--dir", required=True, help="where to write the endpoints file (and keys)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    raise_nofile_limit()
    install_uvloop()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
