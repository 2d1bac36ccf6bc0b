"""The scenario: deterministic from the seed, any size, and consistent resource accounting."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from sovereign_tui.lab.scenario import GPU_MODELS, Scenario
from sovereign_tui.lab.server import Lab, run_lab

from .conftest import Api

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"


def fingerprint(sc: Scenario) -> list[tuple[object, ...]]:
    return (
        [(h.name, h.model.alias, h.role, tuple(g.uuid for g in h.gpus)) for h in sc.hosts]
        + [(s.id, s.name, s.host, tuple(s.gpus), s.vm_state) for s in sc.servers.values()]
        + [(n.uuid, n.provision_state, n.maintenance) for n in sc.nodes]
    )


def test_same_seed_same_scenario() -> None:
    assert fingerprint(Scenario.generate(40, 11)) == fingerprint(Scenario.generate(40, 11))
    assert fingerprint(Scenario.generate(40, 11)) != fingerprint(Scenario.generate(40, 12))


@pytest.mark.parametrize("hosts", [1, 2, 3, 24, 1000])
def test_sizes(hosts: int) -> None:
    sc = Scenario.generate(hosts, 0)
    roles = Counter(h.role for h in sc.hosts)
    assert len(sc.hosts) == hosts == roles["compute"] + roles["baremetal"]
    assert roles["compute"] >= 1
    assert (roles["baremetal"] >= 1) == (hosts >= 2)
    assert len(sc.nodes) == roles["baremetal"]
    assert len({h.name for h in sc.hosts}) == hosts
    assert len(sc.services) == 6 + roles["compute"]  # scheduler and conductor on three controllers


def test_ten_thousand_hosts() -> None:
    sc = Scenario.generate(10_000, 0)
    assert len(sc.hosts) == 10_000
    assert len(sc.sites) > 1
    assert len(sc.servers) == 4 * len(sc.compute_hosts)


def test_explicit_server_count() -> None:
    assert len(Scenario.generate(100, 0, servers=900).servers) == 900


def test_gpu_models_are_the_real_boards() -> None:
    """Names and memory as the real boards report them (checked against real captures)."""
    captures = {p.name: p.read_text(errors="replace") for p in CAPTURES.glob("*.txt")}
    for model in GPU_MODELS.values():
        for name, text in captures.items():
            if f"Product Name                                       : {model.name}\n" in text:
                assert f": {model.memory_mib} MiB" in text, name
    seen = {h.model.name for h in Scenario.generate(200, 0).hosts}
    assert seen == {m.name for m in GPU_MODELS.values()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resource_accounting_is_consistent(seed: int) -> None:
    sc = Scenario.generate(60, seed)
    for host in sc.compute_hosts:
        mine = [sc.servers[i] for i in host.server_ids]
        assert all(s.host == host.name for s in mine)
        assert host.vcpus_used == sum(s.flavor.vcpus for s in mine)
        assert host.memory_mb_used == sum(s.flavor.ram for s in mine) <= host.memory_mb
        for g in host.gpus:
            if g.holder is not None:
                assert g.index in sc.servers[g.holder].gpus
        assert sum(len(g.vgpu_holders) for g in host.gpus) == sum(s.flavor.vgpus for s in mine)
    for s in sc.servers.values():
        if s.host is None:
            assert s.vm_state == "error"
            assert s.fault is not None
            continue
        host = sc.hosts_by_name[s.host]
        assert len(s.gpus) == s.flavor.gpu_count
        if s.flavor.gpu_alias:
            assert host.model.alias == s.flavor.gpu_alias
            assert not host.vgpu
        if s.flavor.vgpus:
            assert host.vgpu


async def test_run_lab_prints_its_urls_and_stops_when_cancelled(tmp_path: Path) -> None:
    ready: asyncio.Future[Lab] = asyncio.get_running_loop().create_future()
    out = io.StringIO()
    task = asyncio.create_task(run_lab(5, 3, tmp_path, out=out, on_ready=ready.set_result))
    lab = await ready
    (line,) = out.getvalue().splitlines()
    for url in lab.urls.values():
        assert url in line
    assert (tmp_path / "clouds.yaml").exists()
    assert (tmp_path / "sovereign.toml").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(lab.urls["identity"])


async def test_a_thousand_hosts_and_ten_thousand_servers_page_completely() -> None:
    async with Lab(hosts=1000, seed=0, servers=10_000) as lab, aiohttp.ClientSession() as http:
        api = Api(http, lab)
        token = await api.token()
        seen: list[str] = []
        url = "/servers/detail?all_tenants=1"
        while url:
            body = (await api.nova("GET", url, token)).body
            seen += [s["id"] for s in body["servers"]]
            links = body.get("servers_links")
            url = links[0]["href"].removeprefix(lab.urls["compute"]) if links else ""
        assert len(seen) == len(set(seen)) == 10_000 == len(lab.scenario.servers)
