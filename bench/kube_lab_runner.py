"""The lab Kubernetes API in a process of its own, for `bench.kube_bench`.

    python -m bench.kube_lab_runner --dir DIR [--nodes 1000] [--pods 30000]

Prints one JSON line when serving (``url``, ``kubeconfig``, ``nodes``, ``pods``), then obeys
control lines on stdin, answering each with one JSON line:

- ``churn RATE``: make RATE pod changes a second (label edits, readiness flips, pods replaced)
  until ``stop``;
- ``stop``: stop churning; answers how many changes were made;
- ``state``: send a bookmark on every watch; answers the resourceVersion and the pod count;
- ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from bench.common import install_uvloop
from sovereign_tui.lab.kube_api import KubeApiServer
from sovereign_tui.lab.kube_cluster import KubeCluster
from sovereign_tui.lab.kube_objects import make_nodes

TICK_S = 0.05


class Churner:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.changes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, rate: float) -> None:
        self.stop()
        self._task = asyncio.create_task(self._run(rate))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, rate: float) -> None:
        started = time.perf_counter()
        done = 0
        while True:
            await asyncio.sleep(TICK_S)
            due = int((time.perf_counter() - started) * rate)
            if due > done:
                self.cluster.churn(due - done)
                self.changes += due - done
                done = due


def reply(doc: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    built = time.perf_counter()
    cluster = KubeCluster(
        make_nodes(args.nodes),
        seed=args.seed,
        pods_per_node=max(1, round(args.pods / args.nodes)),
        vms=0,
        history=args.history,
    )
    server = KubeApiServer(cluster)
    await server.start()
    kubeconfig = server.write_kubeconfig(Path(args.dir) / "kubeconfig")
    reply(
        {
            "url": server.url,
            "kubeconfig": str(kubeconfig),
            "nodes": len(cluster.node_names),
            "pods": cluster.store.count("pods"),
            "build_s": round(time.perf_counter() - built, 2),
        }
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    churner = Churner(cluster)
    try:
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                return
            if line[0] == "churn":
                churner.start(float(line[1]))
                reply({"churning": float(line[1])})
            elif line[0] == "stop":
                churner.stop()
                reply({"changes": churner.changes})
            elif line[0] == "state":
                cluster.bookmark()
                reply({"rv": str(cluster.store.rv), "pods": cluster.store.count("pods")})
            else:
                reply({"error": f"unknown command {line[0]!r}"})
    finally:
        churner.stop()
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="where to write the kubeconfig")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=30_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--history", type=int, default=200_000, help="watch history kept (events)")
    args = p.parse_args(argv)
    install_uvloop()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
