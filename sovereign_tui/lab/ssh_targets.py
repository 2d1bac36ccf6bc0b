"""Simulated GPU hosts that answer ``nvidia-smi`` over SSH, for the lab, the demo and the tests.

Each simulated host is its own asyncssh server on loopback with its own free port and host key,
as a real fleet has one sshd per host. It accepts public-key logins of one user with the keys it
was given, and answers exec requests for ``nvidia-smi --query-gpu=...``,
``--query-compute-apps=...`` and ``-L`` (alone or chained with ``echo``, ``;``, ``&&``, ``||``)
in nvidia-smi's own CSV shapes (see the real captures in tests/fixtures/nvidia-smi). A shell, or
any other command, is refused with exit status 127.

GPU values are a deterministic function of the injected clock, the seed, the host and the GPU:
load moves slowly along a per-GPU wave, processes come and go in jobs of a few minutes, and memory,
power and temperature follow the load, within each model's real limits.

Fault knobs per host (`HostFaults`, `refuse`, `drop`, `rotate_host_key`): refuse connections,
hang the command, print garbage, fail like a host whose driver is gone, drop the connection on
each command or now, rotate the host key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import shlex
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from sovereign_tui.clock import Clock, SystemClock


@dataclass(frozen=True)
class GpuModel:
    memory_mib: int
    power_limit_w: float
    idle_power_w: float
    idle_temp_c: float
    ecc: bool
    mig: bool


GPU_MODELS: dict[str, GpuModel] = {
    # memory totals and limits as the real boards report them (captures where we have them)
    "NVIDIA H100 80GB HBM3": GpuModel(81559, 700.0, 69.85, 41.0, ecc=True, mig=True),
    "NVIDIA H200": GpuModel(143771, 700.0, 78.28, 28.0, ecc=True, mig=True),
    "NVIDIA L40S": GpuModel(46068, 350.0, 34.12, 30.0, ecc=True, mig=False),
    "NVIDIA A100-SXM4-80GB": GpuModel(81920, 400.0, 61.4, 33.0, ecc=True, mig=True),
    "NVIDIA GeForce RTX 2080 SUPER": GpuModel(8192, 250.0, 39.32, 40.0, ecc=False, mig=False),
}
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_PROCESS_NAMES = ("python3", "./gpu_burn", "/root/tools/memhog", "/usr/bin/python3.11", "vllm-worker")
_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)
_GARBAGE = b"0, GPU-3f1b, NVIDIA H1\x00\xff\n\x1b[?25hSegmentation fault (core dumped)\n#@!\n"


@dataclass(frozen=True)
class SimGpuHost:
    name: str
    model: str = "NVIDIA H100 80GB HBM3"
    gpus: int = 8
    mig: bool = False
    """MIG mode on (only for models that have it): utilization reads [N/A], as on real MIG GPUs."""
    uuids: tuple[str, ...] = ()
    """The GPUs' UUIDs as the rest of the lab knows them (Nova's PCI devices); from the seed if empty."""
    bus_ids: tuple[str, ...] = ()


@dataclass
class HostFaults:
    hang: bool = False
    """nvidia-smi never answers (a hung driver)."""
    garbage: bool = False
    """nvidia-smi prints garbage and exits 0."""
    no_driver: bool = False
    """nvidia-smi fails as it does when the driver is not loaded (exit 9)."""
    drop_on_command: bool = False
    """Every command drops the connection before answering."""


@dataclass
class _Host:
    spec: SimGpuHost
    model: GpuModel
    key: asyncssh.SSHKey
    port: int = 0
    acceptor: asyncssh.SSHAcceptor | None = None
    faults: HostFaults = field(default_factory=HostFaults)
    conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    accepted: int = 0
    commands: int = 0
    hung: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


def _unit(seed: int, *parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for `parts`."""
    digest = hashlib.blake2b(":".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _fmt(value: float | int | str | None, unit: str, units: bool) -> str:
    if value is None:
        return "[N/A]"
    if isinstance(value, float):
        value = f"{value:.2f}"
    return f"{value} {unit}" if unit and units else str(value)


class SshTargets:
    """N simulated GPU hosts, each an SSH server on `address` with its own port and host key."""

    def __init__(
        self,
        hosts: Sequence[SimGpuHost],
        *,
        clock: Clock | None = None,
        seed: int = 0,
        user: str = "gpu-monitor",
        address: str = "127.0.0.1",
        driver_version: str = "590.48.01",
        held: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.held = held
        """Whether something holds GPU `index` of host `name` now (the rest of the lab's state):
        a GPU nothing holds runs nothing. Without it, each GPU's load comes from the seed alone."""
        self.seed = seed
        self.user = user
        self.address = address
        self.driver_version = driver_version
        self._hosts: dict[str, _Host] = {}
        for spec in hosts:
            if spec.model not in GPU_MODELS:
                raise ValueError(
                    f"{spec.name}: unknown GPU model {spec.model!r} (one of {sorted(GPU_MODELS)})"
                )
            self._hosts[spec.name] = _Host(
                spec, GPU_MODELS[spec.model], asyncssh.generate_private_key("ssh-ed25519")
            )
        self._authorized: set[bytes] = set()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(self._listen(h) for h in self._hosts.values()))

    async def _listen(self, host: _Host) -> None:
        host.acceptor = await asyncssh.listen(
            self.address,
            host.port,
            server_factory=lambda: _Server(self, host),
            server_host_keys=[host.key],
            process_factory=lambda process: self._serve(host, process),
            encoding=None,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            line_editor=False,
            login_timeout=30,
        )
        host.port = host.acceptor.get_port()

    async def close(self) -> None:
        for host in self._hosts.values():
            host.release.set()
            if host.acceptor is not None:
                host.acceptor.close()
            for conn in list(host.conns):
                conn.abort()
        await asyncio.gather(
            *(h.acceptor.wait_closed() for h in self._hosts.values() if h.acceptor is not None),
            return_exceptions=True,
        )
        for host in self._hosts.values():
            host.acceptor = None

    async def __aenter__(self) -> SshTargets:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what clients need --------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._hosts)

    def endpoint(self, name: str) -> tuple[str, int]:
        return self.address, self._hosts[name].port

    def host_key(self, name: str) -> asyncssh.SSHKey:
        return self._hosts[name].key

    def authorize(self, key: asyncssh.SSHKey) -> None:
        """Accept logins of `user` with this key (private or public) on every host."""
        self._authorized.add(key.public_data)

    def create_client_key(self, path: str | os.PathLike[str]) -> asyncssh.SSHKey:
        """Generate a client key, write it (mode 0600) to `path` and authorize it."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        key.write_private_key(str(target))
        self.authorize(key)
        return key

    def known_hosts_line(self, name: str) -> str:
        host = self._hosts[name]
        pattern = self.address if host.port == 22 else f"[{self.address}]:{host.port}"
        return f"{pattern} {host.key.export_public_key('openssh').decode().strip()}"

    def write_known_hosts(self, path: str | os.PathLike[str], names: Sequence[str] | None = None) -> None:
        """Write (atomically: a reader never sees half a file) the host keys of `names` (all)."""
        lines = [self.known_hosts_line(n) for n in (names if names is not None else self._hosts)]
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text("".join(f"{line}\n" for line in lines))
        partial.replace(target)

    # --- faults and counters ------------------------------------------------------------------

    def faults(self, name: str) -> HostFaults:
        return self._hosts[name].faults

    def accepted(self, name: str) -> int:
        """Connections accepted by this host so far."""
        return self._hosts[name].accepted

    def commands(self, name: str) -> int:
        return self._hosts[name].commands

    def open_connections(self, name: str) -> int:
        return len(self._hosts[name].conns)

    async def wait_idle(self, name: str) -> None:
        """Return once the host has no open connection."""
        await self._hosts[name].idle.wait()

    async def wait_hung(self, name: str) -> None:
        """Return once a command is hanging on this host (its `hang` fault is on)."""
        await self._hosts[name].hung.wait()

    def unhang(self, name: str) -> None:
        host = self._hosts[name]
        host.faults.hang = False
        host.release.set()
        host.release = asyncio.Event()
        host.hung = asyncio.Event()

    async def refuse(self, name: str) -> None:
        """Stop listening (connections are refused) and drop the open ones, as a host going down."""
        host = self._hosts[name]
        if host.acceptor is not None:
            host.acceptor.close()
            await host.acceptor.wait_closed()
            host.acceptor = None
        self.drop(name)

    async def accept(self, name: str) -> None:
        """Listen again, on the same port."""
        host = self._hosts[name]
        if host.acceptor is None:
            await self._listen(host)

    def drop(self, name: str) -> int:
        """Drop the host's open connections now (no goodbye); returns how many."""
        conns = list(self._hosts[name].conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    def rotate_host_key(self, name: str, *, drop: bool = True) -> asyncssh.SSHKey:
        """A new host key for new connections (a reinstalled host); by default the open
        connections drop too, as they would on the reboot."""
        host = self._hosts[name]
        host.key = asyncssh.generate_private_key("ssh-ed25519")
        if host.acceptor is not None:
            host.acceptor.update(server_host_keys=[host.key])
        if drop:
            self.drop(name)
        return host.key

    # --- the simulated GPUs -------------------------------------------------------------------

    def gpu_values(self, name: str, at: float | None = None) -> list[dict[str, float | int | str | None]]:
        """The host's GPUs now (or at epoch time `at`), keyed by nvidia-smi field (None: [N/A])."""
        host = self._hosts[name]
        spec, model = host.spec, host.model
        t = self.clock.time() if at is None else at
        rows: list[dict[str, float | int | str | None]] = []
        for i in range(spec.gpus):
            mig = spec.mig and model.mig
            load = self._load(name, i, t)
            slow = 0.5 + 0.5 * math.sin(2 * math.pi * (t / 3600.0 + _unit(self.seed, name, i, "mem")))
            used = 0 if load == 0 else round(model.memory_mib * (0.1 + 0.75 * slow))
            bus = _HGX_BUSES[i] if i < len(_HGX_BUSES) else 0x10 + 0x10 * i
            bus_id = spec.bus_ids[i] if i < len(spec.bus_ids) else f"00000000:{bus & 0xFF:02X}:00.0"
            rows.append(
                {
                    "index": i,
                    "uuid": spec.uuids[i] if i < len(spec.uuids) else self._uuid(name, i),
                    "name": spec.model,
                    "pci.bus_id": bus_id,
                    "memory.total": model.memory_mib,
                    "memory.used": used,
                    "memory.free": model.memory_mib - used,
                    "utilization.gpu": None if mig else round(100 * load),
                    "utilization.memory": None if mig else round(100 * load * (0.1 + 0.3 * slow)),
                    "temperature.gpu": round(model.idle_temp_c + 30 * load),
                    "power.draw": round(
                        model.idle_power_w + (model.power_limit_w - model.idle_power_w) * load, 2
                    ),
                    "power.limit": model.power_limit_w,
                    "ecc.errors.uncorrected.volatile.total": 0 if model.ecc else None,
                    "mig.mode.current": ("Enabled" if mig else "Disabled") if model.mig else None,
                    "driver_version": self.driver_version,
                    "count": spec.gpus,
                }
            )
        return rows

    def _load(self, name: str, index: int, t: float) -> float:
        if self.held is not None and not self.held(name, index):
            return 0.0  # free: nothing runs on it
        if _unit(self.seed, name, index, "busy") >= 0.7:
            return 0.0  # idle: nothing scheduled on it (held: allocated but unused)
        period = 300.0 + 600.0 * _unit(self.seed, name, index, "period")
        wave = 0.55 + 0.45 * math.sin(2 * math.pi * (t / period + _unit(self.seed, name, index, "phase")))
        return min(1.0, max(0.01, wave))

    def _uuid(self, name: str, index: int) -> str:
        digest = hashlib.blake2b(f"{self.seed}:{name}:{index}".encode(), digest_size=16).digest()
        return f"GPU-{uuid.UUID(bytes=digest)}"

    def app_values(self, name: str, at: float | None = None) -> list[dict[str, float | int | str | None]]:
        """Compute processes now (or at `at`): 1-3 per busy GPU, stable for a job of 4 minutes."""
        t = self.clock.time() if at is None else at
        apps: list[dict[str, float | int | str | None]] = []
        for gpu in self.gpu_values(name, t):
            used = gpu["memory.used"]
            if not isinstance(used, int) or used == 0:
                continue
            i = gpu["index"]
            job = int(t // 240)
            count = 1 + int(3 * _unit(self.seed, name, i, job, "count"))
            budget = used - 500  # the driver's own share, as in the captures
            for k in range(count):
                share = budget // count if k < count - 1 else budget - (count - 1) * (budget // count)
                apps.append(
                    {
                        "gpu_uuid": gpu["uuid"],
                        "gpu_name": gpu["name"],
                        "gpu_bus_id": gpu["pci.bus_id"],
                        "pid": 1000 + int(60000 * _unit(self.seed, name, i, job, k, "pid")),
                        "process_name": _PROCESS_NAMES[
                            int(len(_PROCESS_NAMES) * _unit(self.seed, name, i, job, k))
                        ],
                        "used_gpu_memory": max(1, share),
                    }
                )
        return apps

    # --- the command ------------------------------------------------------------------------

    def render(self, name: str, command: str) -> tuple[int, bytes, bytes]:
        """Exit status, stdout and stderr of `command` on host `name` now (faults included,
        except hang and drop, which need the connection)."""
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            return 2, b"", b"sh: 1: Syntax error: Unterminated quoted string\n"
        out: list[bytes] = []
        err: list[bytes] = []
        status, argv, run = 0, [], True
        for token in [*tokens, ";"]:
            if token not in (";", "&&", "||"):
                argv.append(token)
                continue
            if not argv:
                return 2, b"", f"sh: 1: Syntax error: {token!r} unexpected\n".encode()
            if run:
                status, o, e = self._simple(name, argv)
                out.append(o)
                err.append(e)
            argv = []
            run = token == ";" or (token == "&&") == (status == 0)
        return status, b"".join(out), b"".join(err)

    def _simple(self, name: str, argv: list[str]) -> tuple[int, bytes, bytes]:
        program = argv[0].rsplit("/", 1)[-1]
        if program == "echo":
            return 0, (" ".join(argv[1:]) + "\n").encode(), b""
        if program != "nvidia-smi" or any(t in ("|", ">", "<", "&", "(", ")") for t in argv):
            return 127, b"", f"sh: 1: {argv[0]}: not found\n".encode()
        faults = self._hosts[name].faults
        if faults.no_driver:
            return 9, _NO_DRIVER.encode(), b""
        if faults.garbage:
            return 0, _GARBAGE, b""
        return self._nvidia_smi(name, argv[1:])

    def _nvidia_smi(self, name: str, args: list[str]) -> tuple[int, bytes, bytes]:
        if args in (["-L"], ["--list-gpus"]):
            lines = []
            for g in self.gpu_values(name):
                lines.append(f"GPU {g['index']}: {g['name']} (UUID: {g['uuid']})")
                if g["mig.mode.current"] == "Enabled":  # two half-GPU instances, as `-L` lists them
                    profile = f"3g.{int(g['memory.total'] or 0) // 2048}gb"
                    for d in range(2):
                        mig_uuid = str(g["uuid"]).replace("GPU-", "MIG-")[:-1] + str(d)
                        lines.append(f"  MIG {profile:<11} Device  {d}: (UUID: {mig_uuid})")
            return 0, "".join(f"{line}\n" for line in lines).encode(), b""
        opts = dict(a.split("=", 1) for a in args if "=" in a)
        fmt = opts.get("--format", "").split(",")
        if len(opts) != len(args) or len(opts) != 2 or fmt[0] != "csv":
            return 2, b"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n", b""
        if "--query-gpu" in opts:
            rows, fields = self.gpu_values(name), opts["--query-gpu"].split(",")
        elif "--query-compute-apps" in opts:
            rows, fields = self.app_values(name), opts["--query-compute-apps"].split(",")
            fields = [_APP_ALIASES.get(f, f) for f in fields]
        else:
            return 2, b"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n", b""
        for f in fields:
            if f not in _UNITS:
                return 2, f'Field "{f}" is not a valid field to query.\n\n'.encode(), b""
        units = "nounits" not in fmt
        lines = []
        if "noheader" not in fmt:
            lines.append(", ".join(f"{f} [{_UNITS[f]}]" if _UNITS[f] and units else f for f in fields))
        for row in rows:
            lines.append(", ".join(_fmt(row.get(f), _UNITS[f], units) for f in fields))
        return 0, "".join(f"{line}\n" for line in lines).encode(), b""

    async def _serve(self, host: _Host, process: asyncssh.SSHServerProcess[bytes]) -> None:
        host.commands += 1
        if host.faults.drop_on_command:
            process.channel.get_connection().abort()
            return
        if process.command is None:
            process.stderr.write(b"This account can only run nvidia-smi queries.\n")
            process.exit(127)
            return
        if host.faults.hang and "nvidia-smi" in process.command:
            host.hung.set()
            released = asyncio.ensure_future(host.release.wait())
            closed = asyncio.ensure_future(process.channel.wait_closed())
            await asyncio.wait({released, closed}, return_when=asyncio.FIRST_COMPLETED)
            released.cancel()
            closed.cancel()
            if closed.done():
                return
        status, out, err = self.render(host.spec.name, process.command)
        with contextlib.suppress(BrokenPipeError, asyncssh.Error):
            process.stdout.write(out)
            process.stderr.write(err)
            process.exit(status)


_TEXT_FIELDS = (
    "index uuid name pci.bus_id temperature.gpu ecc.errors.uncorrected.volatile.total mig.mode.current"
)
_UNITS: dict[str, str] = {
    **dict.fromkeys(
        f"{_TEXT_FIELDS} driver_version count gpu_uuid gpu_name gpu_bus_id pid process_name".split(), ""
    ),
    **dict.fromkeys(["memory.total", "memory.used", "memory.free", "used_gpu_memory"], "MiB"),
    **dict.fromkeys(["utilization.gpu", "utilization.memory"], "%"),
    **dict.fromkeys(["power.draw", "power.limit"], "W"),
}
"""Every field the simulated nvidia-smi knows, with the unit it prints without ``nounits``."""
_APP_ALIASES = {"name": "process_name", "used_memory": "used_gpu_memory"}


class _Server(asyncssh.SSHServer):
    """One connection to a simulated host: public-key login of the lab's user only."""

    def __init__(self, lab: SshTargets, host: _Host) -> None:
        self._lab = lab
        self._host = host
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._host.conns.add(conn)
        self._host.accepted += 1
        self._host.idle.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._host.conns.discard(self._conn)
        if not self._host.conns:
            self._host.idle.set()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self._lab.user and key.public_data in self._lab._authorized
