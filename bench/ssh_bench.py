"""Many SSH console sessions against one daemon: the lab sees the same API load as with one.

The lab (OpenStack only) and `sovereign-tui serve` each run in a process of their own; the
sessions are asyncssh clients in this process, each with a PTY (xterm-256color, 100x30). The
lab's `GET /stats` counts the requests its Keystone, Nova and Ironic serve: they are counted over
the same number of poll cycles with one session open and with all of them open. Nova and Ironic
poll every 2 s here (a copy of the lab's settings) to keep the run short.

    python -m bench.ssh_bench [--sessions 20] [--cycles 3] [--out bench-results/ssh.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import psutil

from sovereign_tui.lab.process import LabProcess

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(rb"ready: feed (\S+), ssh port (\d+)")
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
INTERVAL_S = 2.0
KEYS = (("3", "GPUs"), ("4", "Workloads"), ("2", "Hosts"))
GUARD_S = 60.0
MAX_RSS_MB = 400.0
JITTER_PER_CYCLE = 1.0


@dataclass
class Session:
    conn: asyncssh.SSHClientConnection
    proc: asyncssh.SSHClientProcess[str]
    raw: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while chunk := await self.proc.stdout.read(65536):
            self.raw.append(chunk)
            self.changed.set()

    def mark(self) -> int:
        return len(self.raw)

    async def shows(self, text: str, since: int = 0) -> None:
        """Wait until the output written after chunk `since` shows `text` (escapes removed)."""
        async with asyncio.timeout(GUARD_S):
            while text not in ANSI.sub("", "".join(self.raw[since:])):
                self.changed.clear()
                await self.changed.wait()


async def open_session(port: int, key: asyncssh.SSHKey) -> tuple[Session, float]:
    """A logged-in session and its login time (connect to the first frame), in ms."""
    t0 = time.perf_counter()
    conn = await asyncssh.connect(
        "127.0.0.1", port, username="ops", client_keys=[key], known_hosts=None, agent_path=None
    )
    proc = await conn.create_process(term_type="xterm-256color", term_size=(100, 30))
    s = Session(conn, proc)
    s.reader = asyncio.create_task(s._read())
    await s.shows("sovereign-tui")
    return s, (time.perf_counter() - t0) * 1000


async def keystrokes(s: Session, rounds: int) -> list[float]:
    """Time from writing a screen's key to output naming that screen, in ms."""
    out = []
    for i in range(rounds):
        key, name = KEYS[i % len(KEYS)]
        mark = s.mark()
        t0 = time.perf_counter()
        s.proc.stdin.write(key)
        await s.shows(name, mark)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def close(s: Session) -> None:
    s.conn.close()
    await s.conn.wait_closed()
    if s.reader is not None:
        s.reader.cancel()


def lab_requests(lab_url: str) -> int:
    with urllib.request.urlopen(f"{lab_url}/stats", timeout=10) as resp:
        return sum(json.loads(resp.read())["requests"].values())


async def quiet_count(lab_url: str, quiet_s: float = 0.3) -> int:
    """The request count once no request has come for `quiet_s` (between two poll bursts)."""
    last, since = await asyncio.to_thread(lab_requests, lab_url), time.monotonic()
    async with asyncio.timeout(GUARD_S):
        while time.monotonic() - since < quiet_s:
            await asyncio.sleep(0.05)  # sampling a counter in another process
            now = await asyncio.to_thread(lab_requests, lab_url)
            if now != last:
                last, since = now, time.monotonic()
    return last


async def requests_per_cycle(lab_url: str, cycles: int) -> float:
    """Requests over `cycles` poll intervals, from one quiet moment to the first after them."""
    start = await quiet_count(lab_url)
    await asyncio.sleep(cycles * INTERVAL_S - 0.15)  # the measuring window itself
    end = await quiet_count(lab_url)
    return (end - start) / cycles


def rss_mb(pid: int) -> tuple[float, float]:
    """(the daemon's own RSS, its session children's RSS together), in MB."""
    daemon = psutil.Process(pid)
    kids = 0
    for child in daemon.children(recursive=True):
        try:
            kids += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return daemon.memory_info().rss / 1e6, kids / 1e6


def settings_copy(lab_settings: Path, dest: Path, sessions: int) -> Path:
    text = lab_settings.read_text()
    for name in ("nova", "ironic"):
        text = text.replace(f"[sources.{name}]\n", f"[sources.{name}]\ninterval_s = {INTERVAL_S}\n")
    text += f"\n[serve]\nmax_sessions = {sessions + 4}\n"
    dest.write_text(text)
    return dest


def start_daemon(root: Path, config: Path) -> tuple[subprocess.Popen[bytes], int]:
    log = root / "serve.log"
    env = {**os.environ, "XDG_STATE_HOME": str(root / "state"), "XDG_CONFIG_HOME": str(root / "conf"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sovereign_tui", "--config", str(config), "serve",
             "--ssh-listen", "127.0.0.1", "--ssh-port", "0", "--socket", str(root / "feed.sock"),
             "--authorized-keys", str(root / "authorized_keys"), "--host-key", str(root / "hostkey")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    deadline = time.monotonic() + GUARD_S
    while (found := READY.search(log.read_bytes())) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"ssh bench: the daemon did not start:\n{log.read_text()}")
        time.sleep(0.05)  # waiting for the daemon's ready line, with a deadline
    return proc, int(found.group(2))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    key: asyncssh.SSHKey, port: int, pid: int, lab_url: str, sessions: int, cycles: int
) -> dict[str, float]:
    first, login_one = await open_session(port, key)
    logins = [login_one]
    await asyncio.sleep(INTERVAL_S)  # one full cycle so the first polls are behind us
    one = await requests_per_cycle(lab_url, cycles)
    opened = await asyncio.gather(*(open_session(port, key) for _ in range(sessions - 1)))
    logins += [ms for _, ms in opened]
    every = [first, *(s for s, _ in opened)]
    strokes = [ms for per in await asyncio.gather(*(keystrokes(s, 3) for s in every)) for ms in per]
    rss: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            rss.append(rss_mb(pid))
            await asyncio.sleep(0.5)  # sampling memory while the window runs

    sampler = asyncio.create_task(sample())
    many = await requests_per_cycle(lab_url, cycles)
    sampler.cancel()
    rss.append(rss_mb(pid))
    await asyncio.gather(*(close(s) for s in every))
    return {
        "sessions": sessions,
        "api_requests_per_cycle_one": round(one, 2),
        "api_requests_per_cycle_many": round(many, 2),
        "daemon_rss_mb": round(max(r[0] for r in rss), 1),
        "sessions_rss_mb": round(max(r[1] for r in rss), 1),
        "login_ms_p50": round(statistics.median(logins), 1),
        "login_ms_p95": round(pct(logins, 0.95), 1),
        "keystroke_ms_p50": round(statistics.median(strokes), 1),
        "keystroke_ms_p95": round(pct(strokes, 0.95), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ssh_bench", description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "ssh.json")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ssh-bench-"))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        key = asyncssh.generate_private_key("ssh-ed25519")
        pub = key.export_public_key().decode().strip()
        (root / "authorized_keys").write_text(f'sovereign-role="viewer",sovereign-name="bench" {pub}\n')
        with LabProcess(hosts=24, seed=1, layers="openstack") as lab:
            lab_url = re.search(r"lab=(\S+)", lab.ready_line)
            if lab_url is None:
                raise SystemExit(f"ssh bench: no lab URL in {lab.ready_line!r}")
            config = settings_copy(lab.files.settings, root / "sovereign.toml", args.sessions)
            daemon, port = start_daemon(root, config)
            result = asyncio.run(measure(key, port, daemon.pid, lab_url.group(1), args.sessions, args.cycles))
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:>10}")
    missed = []
    if abs(result["api_requests_per_cycle_many"] - result["api_requests_per_cycle_one"]) > JITTER_PER_CYCLE:
        missed.append(
            f"api_requests_per_cycle_many {result['api_requests_per_cycle_many']} differs from "
            f"api_requests_per_cycle_one {result['api_requests_per_cycle_one']} by more than "
            f"{JITTER_PER_CYCLE:g} per cycle"
        )
    if result["daemon_rss_mb"] >= MAX_RSS_MB:
        missed.append(f"daemon_rss_mb {result['daemon_rss_mb']} is not under {MAX_RSS_MB:g}")
    for line in missed:
        print(f"ssh bench: missed floor: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
