"""The nvidia-smi collector over real SSH (asyncssh on loopback) against the lab's GPU hosts,
through a real Poller and Store; the poller, the store, the collector's timeouts and the lab's
GPU values all run on one FakeClock. Expected values come from the lab's own model of its GPUs.

The lab's answers are also checked against the real captures (tests/fixtures/nvidia-smi).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import msgspec
import pytest

from collectors.nvidia_smi import NvidiaSmiCollector
from collectors.nvidia_smi_parse import APP_FIELDS, COMMAND, GPU_FIELDS, parse_output
from sovereign_tui.clock import FakeClock
from sovereign_tui.config import ConfigError
from sovereign_tui.config_sources import NvidiaSmiSource, SshHost
from sovereign_tui.config_sources import validate_nvidia_smi as validate
from sovereign_tui.lab.ssh_targets import GPU_MODELS, SimGpuHost, SshTargets
from sovereign_tui.model import Gpu, SourceHealth
from sovereign_tui.poller import Poller
from sovereign_tui.store import Store
from tests.nvidia_smi_captures import (
    CAPTURES,
    app_rows,
    gpu_rows,
    install_fake_nvidia_smi,
    section,
    strip_unit,
)
from tests.sshd_fixture import run_sshd

HOSTS = [
    SimGpuHost("gpu-a", "NVIDIA H100 80GB HBM3", gpus=8),
    SimGpuHost("gpu-b", "NVIDIA H200", gpus=2, mig=True),
    SimGpuHost(
        "gpu-c",
        "NVIDIA L40S",
        gpus=4,
        uuids=tuple(f"GPU-{i}a1b2c3d-0000-4000-8000-00000000000{i}" for i in range(4)),
        bus_ids=tuple(f"00000000:{0x41 + i:02X}:00.0" for i in range(4)),
    ),
]
COMMAND_TIMEOUT = 2.0
LAB_FIELDS = ("index", "uuid", "name", "memory.used", "utilization.gpu", "power.draw", "mig.mode.current")
GPU_ATTRS = ("index", "uuid", "name", "memory_used_mib", "util_gpu_pct", "power_w", "mig_mode")
"""What the lab's GPUs are compared on: the same values, under nvidia-smi's and the model's names."""


@dataclass
class Env:
    clock: FakeClock
    lab: SshTargets
    collector: NvidiaSmiCollector
    store: Store
    poller: Poller
    known_hosts: Path
    key: Path

    async def poll(self) -> None:
        await self.poller.run_once()

    def gpus(self, host: str) -> list[Gpu]:
        return [g for g in self.store.snapshot().gpus if g.host == host]

    def health(self, host: str) -> SourceHealth:
        return self.poller.health(f"nvidia-smi:{host}")

    def expected(self, host: str, at: float | None = None) -> list[tuple[object, ...]]:
        """The lab's GPUs at `at` (default now), from the lab's own value model (no parser)."""
        apps = self.lab.app_values(host, at)
        rows: list[tuple[object, ...]] = []
        for v in self.lab.gpu_values(host, at):
            procs = sorted(
                (a["pid"], a["process_name"], float(a["used_gpu_memory"] or 0))
                for a in apps
                if a["gpu_uuid"] == v["uuid"]
            )
            rows.append((*(v[f] for f in LAB_FIELDS), procs))
        return rows


def observed(gpus: list[Gpu]) -> list[tuple[object, ...]]:
    return [
        (*(getattr(g, a) for a in GPU_ATTRS), [(p.pid, p.name, p.used_memory_mib) for p in g.processes])
        for g in gpus
    ]


def source_for(lab: SshTargets, known_hosts: Path, key: Path, **overrides: object) -> NvidiaSmiSource:
    hosts = tuple(
        SshHost(name=n, address=lab.endpoint(n)[0], port=lab.endpoint(n)[1], user=lab.user) for n in lab.names
    )
    fields: dict[str, object] = {
        "hosts": hosts,
        "known_hosts": str(known_hosts),
        "client_keys": (str(key),),
        "command_timeout_s": COMMAND_TIMEOUT,
        **overrides,
    }
    return NvidiaSmiSource(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = FakeClock()
    lab = SshTargets(HOSTS, clock=clock, seed=7)
    await lab.start()
    key, known_hosts = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    lab.create_client_key(key)
    lab.write_known_hosts(known_hosts)
    collector = NvidiaSmiCollector(source_for(lab, known_hosts, key))
    store = Store(clock)
    poller = Poller(store, clock=clock)
    poller.set_targets(collector.targets())
    yield Env(clock, lab, collector, store, poller, known_hosts, key)
    await poller.close()
    await collector.aclose()
    await lab.close()


def assert_fresh(env: Env, *hosts: str) -> None:
    for host in hosts:
        assert env.health(host).up is True, env.health(host).last_error
        gpus = env.gpus(host)
        assert gpus
        assert not any(g.stale for g in gpus)
        assert observed(gpus) == env.expected(host, gpus[0].observed_at)


def assert_stale(env: Env, host: str, reason: str, *, ours: bool = True) -> None:
    """`host`'s GPUs are stale and its health says why: the collector's line names the host
    (the poller's own timeout names the endpoint instead: `ours=False`)."""
    health = env.health(host)
    assert health.up is False
    assert health.last_error is not None
    assert reason in health.last_error
    assert health.last_error.startswith(f"nvidia-smi: {host}: " if ours else "timed out")
    assert "\n" not in health.last_error
    gpus = env.gpus(host)
    assert gpus
    assert all(g.stale for g in gpus)


# --- targets and happy path ---------------------------------------------------------------------


def test_one_target_per_host(env: Env) -> None:
    targets = env.collector.targets()
    assert [t.id for t in targets] == [f"nvidia-smi:{h.name}" for h in HOSTS]
    assert [t.endpoint for t in targets] == [f"127.0.0.1:{env.lab.endpoint(h.name)[1]}" for h in HOSTS]
    assert {t.interval_s for t in targets} == {NvidiaSmiSource().interval_s}


async def test_gpus_arrive_with_their_processes(env: Env) -> None:
    await env.poll()
    assert_fresh(env, *env.lab.names)
    for spec in HOSTS:
        assert len(env.gpus(spec.name)) == spec.gpus
    assert any(g.processes for g in env.store.snapshot().gpus)
    assert [(g.uuid, g.bus_id) for g in env.gpus("gpu-c")] == list(
        zip(HOSTS[2].uuids, HOSTS[2].bus_ids, strict=True)
    )
    (h200, _) = env.gpus("gpu-b")
    assert (h200.mig_mode, h200.util_gpu_pct) == ("Enabled", None)
    assert h200.memory_total_mib == GPU_MODELS["NVIDIA H200"].memory_mib


async def test_values_follow_the_clock(env: Env) -> None:
    await env.poll()
    before = observed(env.gpus("gpu-a"))
    await env.clock.advance(97.0)
    await env.poll()
    assert_fresh(env, *env.lab.names)
    assert observed(env.gpus("gpu-a")) != before


async def test_the_connection_is_kept_and_reused(env: Env) -> None:
    await env.poll()
    await env.poll()
    await env.poll()
    for name in env.lab.names:
        assert env.lab.accepted(name) == 1
        assert env.lab.commands(name) == 3
        assert env.collector.connections_to(name) == 1
    assert env.collector.connections_opened == len(HOSTS)


async def test_keys_and_known_hosts_are_read_once(env: Env) -> None:
    await env.poll()
    env.key.unlink()
    env.known_hosts.unlink()
    env.lab.drop("gpu-a")
    await env.poll()
    assert_fresh(env, *env.lab.names)
    assert env.lab.accepted("gpu-a") == 2


async def test_a_dropped_connection_is_reopened(env: Env) -> None:
    await env.poll()
    assert env.lab.drop("gpu-c") == 1
    await env.poll()
    assert_fresh(env, *env.lab.names)
    assert (env.lab.accepted("gpu-c"), env.lab.accepted("gpu-a")) == (2, 1)
    assert env.collector.connections_opened == len(HOSTS) + 1


async def test_aclose_closes_every_connection(env: Env) -> None:
    await env.poll()
    assert all(env.lab.open_connections(n) == 1 for n in env.lab.names)
    await env.collector.aclose()
    for name in env.lab.names:
        await env.lab.wait_idle(name)
        assert env.lab.open_connections(name) == 0


# --- faults: one host fails, with its reason; the others stay fresh ------------------------------


async def test_refused_connection(env: Env) -> None:
    await env.poll()
    await env.lab.refuse("gpu-b")
    await env.poll()
    assert_stale(env, "gpu-b", "connection refused")
    assert_fresh(env, "gpu-a", "gpu-c")
    await env.lab.accept("gpu-b")
    await env.poll()
    assert_fresh(env, *env.lab.names)


async def test_changed_host_key_is_refused_until_known_hosts_is_fixed(env: Env) -> None:
    await env.poll()
    env.lab.rotate_host_key("gpu-a")
    await env.poll()
    assert_stale(env, "gpu-a", "host key CHANGED")
    assert "man-in-the-middle" in (env.health("gpu-a").last_error or "")
    assert_fresh(env, "gpu-b", "gpu-c")
    env.lab.write_known_hosts(env.known_hosts)  # the operator checked and recorded the new key
    await env.poll()
    assert_fresh(env, *env.lab.names)


async def test_unknown_host_key(env: Env) -> None:
    env.lab.write_known_hosts(env.known_hosts, names=["gpu-a", "gpu-b"])
    await env.poll()
    assert env.health("gpu-c").last_error == (
        f"nvidia-smi: gpu-c: host key not in {env.known_hosts} "
        "(add it with ssh-keyscan after checking its fingerprint)"
    )
    assert env.gpus("gpu-c") == []
    assert_fresh(env, "gpu-a", "gpu-b")
    env.lab.write_known_hosts(env.known_hosts)
    await env.poll()
    assert_fresh(env, *env.lab.names)


async def test_a_key_removed_from_known_hosts_is_no_longer_trusted(env: Env) -> None:
    await env.poll()
    env.lab.write_known_hosts(env.known_hosts, names=["gpu-a", "gpu-b"])
    await env.poll()
    assert_fresh(env, *env.lab.names)  # the open connection was authenticated before
    env.lab.drop("gpu-c")
    await env.poll()
    assert_stale(env, "gpu-c", f"host key not in {env.known_hosts}")


async def poll_hung(env: Env, host: str, seconds: float) -> None:
    """Poll every host with `host` hanging: once the others have answered and `host`'s command
    hangs, advance the clock by `seconds`."""
    env.lab.faults(host).hang = True
    others = [n for n in env.lab.names if n != host]
    polls = {n: env.health(n).polls for n in others}
    polling = asyncio.create_task(env.poll())
    await env.lab.wait_hung(host)
    while any(env.health(n).polls == polls[n] for n in others):
        await env.store.wait_newer(env.store.generation)
    await env.clock.advance(seconds)
    await polling


async def test_hung_command_times_out_on_the_clock(env: Env) -> None:
    await env.poll()
    await poll_hung(env, "gpu-c", COMMAND_TIMEOUT + 0.1)
    assert_stale(env, "gpu-c", f"no answer from nvidia-smi within {COMMAND_TIMEOUT:g}s")
    assert_fresh(env, "gpu-a", "gpu-b")
    await env.lab.wait_idle("gpu-c")  # a timed-out connection is not trusted again
    env.lab.unhang("gpu-c")
    await env.poll()
    assert_fresh(env, *env.lab.names)
    assert env.lab.accepted("gpu-c") == 2


async def test_the_pollers_timeout_also_applies(env: Env) -> None:
    collector = NvidiaSmiCollector(source_for(env.lab, env.known_hosts, env.key, command_timeout_s=9.5))
    env.poller.set_targets(collector.targets())
    try:
        await env.poll()
        await poll_hung(env, "gpu-a", 8.1)  # past the target's timeout: 80% of the 10 s interval
        assert_stale(
            env, "gpu-a", f"timed out after 8s (endpoint {env.collector.targets()[0].endpoint})", ours=False
        )
        assert_fresh(env, "gpu-b", "gpu-c")
        await env.lab.wait_idle("gpu-a")
    finally:
        await collector.aclose()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("garbage", f"malformed GPU line (3 fields, expected {len(GPU_FIELDS)})"),
        (
            "no_driver",
            "nvidia-smi failed (exit status 9): NVIDIA-SMI has failed because it couldn't communicate",
        ),
        ("drop_on_command", "connection lost during the command"),
    ],
)
async def test_output_faults(env: Env, fault: str, reason: str) -> None:
    await env.poll()
    setattr(env.lab.faults("gpu-b"), fault, True)
    await env.poll()
    assert_stale(env, "gpu-b", reason)
    assert_fresh(env, "gpu-a", "gpu-c")
    if fault == "drop_on_command":  # the command was tried once more, on a new connection
        assert (env.lab.accepted("gpu-b"), env.lab.commands("gpu-b")) == (2, 3)


async def test_a_key_the_host_does_not_accept(tmp_path: Path, env: Env) -> None:
    stranger = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    collector = NvidiaSmiCollector(source_for(env.lab, env.known_hosts, stranger))
    env.poller.set_targets(collector.targets()[:1])
    try:
        await env.poll()
        assert env.health("gpu-a").last_error == (
            f"nvidia-smi: gpu-a: user {env.lab.user} refused with the configured key "
            "(add its public key to that user's authorized_keys there)"
        )
    finally:
        await collector.aclose()


async def test_missing_key_and_known_hosts_files_name_the_file(tmp_path: Path, env: Env) -> None:
    for source, thing in [
        (source_for(env.lab, env.known_hosts, tmp_path / "nokey"), f"client key {tmp_path / 'nokey'}"),
        (
            source_for(env.lab, tmp_path / "nohosts", env.key),
            f"known_hosts {tmp_path / 'nohosts'} does not exist",
        ),
    ]:
        collector = NvidiaSmiCollector(source)
        env.poller.set_targets(collector.targets()[:1])
        await env.poll()
        assert thing in (env.health("gpu-a").last_error or "")
        await collector.aclose()


# --- the lab's targets themselves --------------------------------------------------------------


async def test_the_lab_refuses_shells_and_other_commands(env: Env) -> None:
    address, port = env.lab.endpoint("gpu-a")
    known = asyncssh.import_known_hosts(env.lab.known_hosts_line("gpu-a"))
    key = asyncssh.read_private_key(env.key)
    async with asyncssh.connect(
        address,
        port,
        username=env.lab.user,
        client_keys=[key],
        known_hosts=known,
        config=None,
        agent_path=None,
    ) as conn:
        assert (await conn.run("cat /etc/shadow")).exit_status == 127
        assert (await conn.run("nvidia-smi -L | sh")).exit_status == 127
        shell = await conn.create_process()
        shell.stdin.write_eof()
        assert (await shell.wait()).exit_status == 127
        listed = await conn.run("nvidia-smi -L")
        assert listed.exit_status == 0
        assert str(listed.stdout).count("GPU ") == 8


def test_the_lab_model_table_agrees_with_the_captures() -> None:
    for path in CAPTURES:
        row = gpu_rows(path, "idle")[0]
        model = GPU_MODELS[row["name"]]
        assert model.memory_mib == float(strip_unit(row["memory.total"]))
        assert model.power_limit_w == float(strip_unit(row["power.limit"]))
        assert model.ecc == (not row["ecc.errors.uncorrected.volatile.total"].startswith("["))
        assert model.mig == (not row["mig.mode.current"].startswith("["))


def form(field: str, value: str) -> str:
    """A value's form, so that simulated and captured values compare: ids keep their layout,
    numbers become 9 (their units stay), MIG modes become one word."""
    if value.startswith("[") or field in ("name", "process_name", "gpu_name"):
        return value if field != "process_name" else "name"
    if field in ("uuid", "gpu_uuid", "pci.bus_id", "gpu_bus_id"):
        return re.sub(r"[0-9A-Fa-f]", "h", value)
    if field == "mig.mode.current":
        return "mode" if value in ("Enabled", "Disabled") else value
    return re.sub(r"[0-9]+", "9", value)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem.split("__")[1])
@pytest.mark.parametrize("query", ["--query-gpu", "--query-compute-apps"])
async def test_the_lab_answers_in_the_captures_shapes(env: Env, path: Path, query: str) -> None:
    """Without ``nounits``/``noheader`` the lab prints the header and the unit suffixes the real
    nvidia-smi printed in the captures, and each value has the form of the captured one."""
    fields = GPU_FIELDS if query == "--query-gpu" else APP_FIELDS
    captured = section(path, "load", f"nvidia-smi {query}=")
    header = {re.sub(r" \[.*\]$", "", h): h for h in captured.body[0].split(", ")}
    real = (gpu_rows if query == "--query-gpu" else app_rows)(path, "load")[0]
    spec = SimGpuHost("h", gpu_rows(path, "load")[0]["name"], gpus=1, mig="mig" in path.name)
    labs = (SshTargets([spec], clock=env.clock, seed=seed) for seed in range(100))
    lab = next(lab for lab in labs if lab.app_values("h"))  # a seed whose GPU is busy
    status, out, _ = lab.render("h", f"nvidia-smi {query}={','.join(fields)} --format=csv")
    lines = out.decode().splitlines()
    assert status == 0
    assert lines[0] == ", ".join(header[f] for f in fields)
    assert len(lines) >= 2
    simulated = dict(zip(fields, lines[1].split(", "), strict=True))
    assert {f: form(f, simulated[f]) for f in fields} == {f: form(f, real[f]) for f in fields}


async def test_the_lab_output_parses_with_the_collectors_parser(env: Env) -> None:
    for name in env.lab.names:
        status, out, err = env.lab.render(name, COMMAND)
        assert (status, err) == (0, b"")
        gpus = parse_output(out.decode(), name, "t", env.clock.time())
        assert observed(list(gpus)) == env.expected(name)


# --- settings ----------------------------------------------------------------------------------


def test_settings_from_toml_and_their_checks() -> None:
    text = """
    interval_s = 15
    known_hosts = "/etc/sovereign-tui/known_hosts"
    client_keys = ["/etc/sovereign-tui/id_ed25519"]
    hosts = [
        {name = "gpu-01", address = "10.0.0.11"},
        {name = "gpu-02", address = "10.0.0.12", port = 2222, user = "mon"},
    ]
    """
    source = msgspec.toml.decode(text, type=NvidiaSmiSource)
    validate(source)
    assert [(h.name, h.port, h.user) for h in source.hosts] == [("gpu-01", 22, None), ("gpu-02", 2222, "mon")]
    with pytest.raises(msgspec.ValidationError):
        msgspec.toml.decode('hosts = [{name = "a", address = "b", pasword = "x"}]', type=NvidiaSmiSource)
    bad = [
        msgspec.structs.replace(source, hosts=(*source.hosts, source.hosts[0])),
        msgspec.structs.replace(source, connect_timeout_s=10.0, command_timeout_s=5.0),
        msgspec.structs.replace(source, concurrency=0),
        msgspec.structs.replace(source, hosts=(SshHost(name="x", address="y", port=0),)),
    ]
    for settings in bad:
        with pytest.raises(ConfigError, match=r"^sovereign.toml: sources\.nvidia_smi"):
            validate(settings)


# --- a real OpenSSH server ---------------------------------------------------------------------


@pytest.mark.real_service
async def test_against_a_real_openssh_server(tmp_path: Path) -> None:
    capture, phase = next(p for p in CAPTURES if "h100" in p.name), "load"
    rows, apps = gpu_rows(capture, phase), app_rows(capture, phase)
    async with run_sshd(tmp_path / "sshd") as sshd:
        install_fake_nvidia_smi(sshd.bin_dir, capture, phase)
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line() + "\n")
        host = SshHost(name="gpu-real", address=sshd.address, port=sshd.port, user=sshd.user)
        source = NvidiaSmiSource(
            hosts=(host,), known_hosts=str(known_hosts), client_keys=(str(sshd.client_key),)
        )
        clock = FakeClock()
        store = Store(clock)
        poller = Poller(store, clock=clock)
        collector = NvidiaSmiCollector(source)
        poller.set_targets(collector.targets())
        try:
            await poller.run_once()
            await poller.run_once()
            health = poller.health("nvidia-smi:gpu-real")
            assert (health.up, health.last_error) == (True, None)
            gpus = store.snapshot().gpus
            assert [(g.host, g.uuid, g.name) for g in gpus] == [
                ("gpu-real", r["uuid"], r["name"]) for r in rows
            ]
            assert [g.memory_used_mib for g in gpus] == [float(strip_unit(r["memory.used"])) for r in rows]
            assert [p.pid for p in gpus[0].processes] == sorted(int(a["pid"]) for a in apps)
            assert collector.connections_opened == 1

            (sshd.bin_dir / "nvidia-smi").unlink()
            await poller.run_once()
            assert "nvidia-smi not found" in (poller.health("nvidia-smi:gpu-real").last_error or "")
            assert all(g.stale for g in store.snapshot().gpus)
        finally:
            await poller.close()
            await collector.aclose()

        known_hosts.write_text(sshd.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519")) + "\n")
        collector = NvidiaSmiCollector(source)
        poller = Poller(Store(clock), clock=clock)
        poller.set_targets(collector.targets())
        try:
            await poller.run_once()
            assert "host key CHANGED" in (poller.health("nvidia-smi:gpu-real").last_error or "")
        finally:
            await poller.close()
            await collector.aclose()
