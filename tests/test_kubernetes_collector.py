"""The kubernetes collector against the lab Kubernetes API over real HTTP, its kubeconfig read by
the kubernetes client's loader: a paged list equal to the lab's objects, then a watch that follows
churn and bookmarks, resumes after a dropped stream, re-lists after an expired resourceVersion or
continue token, and turns a refused token or injected errors into one line and a stale source."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collectors.kata import KataCollector
from collectors.kube_client import KubeOptions, KubeRef, KubeSession
from collectors.kubernetes import KubernetesCollector
from sovereign_tui.config_sources import KataSource
from sovereign_tui.lab.kata_monitor import KataMonitorLab
from sovereign_tui.lab.kube_api import write_kubeconfig
from sovereign_tui.model import Snapshot
from sovereign_tui.poller import PollContext, PollError
from tests.kube_rig import Rig, assert_pods_equal, caught_up, make_rig, until

TARGET = "kubernetes:current-context"
STREAMS = 4
"""Watches the collector keeps: nodes, pods, runtime classes, disruption budgets."""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path)
    r.add(KubernetesCollector(r.session, interval_s=10.0))
    yield r
    await r.close()


def kube(rig: Rig) -> KubernetesCollector:
    c = rig.collectors[0]
    assert isinstance(c, KubernetesCollector)
    return c


async def all_caught_up(rig: Rig) -> None:
    c = kube(rig)
    for inf, plural in (
        (c.nodes, "nodes"),
        (c.pods, "pods"),
        (c.runtime_classes, "runtimeclasses"),
        (c.budgets, "poddisruptionbudgets"),
    ):
        await caught_up(inf, rig.lab, plural)


def assert_equals_lab(rig: Rig, snap: Snapshot) -> None:
    lab = rig.lab
    assert_pods_equal(lab, snap.workloads)
    nodes = {h.name: h.kubernetes for h in snap.hosts if h.kubernetes is not None}
    assert set(nodes) == set(lab.cluster.node_names)
    for e in lab.cluster.store.entries("nodes"):
        f = nodes[e.name]
        assert f is not None
        o = e.obj
        ready = next(c["status"] for c in o["status"]["conditions"] if c["type"] == "Ready") == "True"
        assert (f.ready, f.unschedulable, f.kubelet_version, f.gpu_allocatable, f.labels) == (
            ready,
            bool(o["spec"].get("unschedulable")),
            o["status"]["nodeInfo"]["kubeletVersion"],
            lab.cluster.specs[e.name].gpus,
            o["metadata"]["labels"],
        )
        assert f.internal_ip == next(
            a["address"] for a in o["status"]["addresses"] if a["type"] == "InternalIP"
        )
        assert len(f.taints) == len(o["spec"].get("taints", []))
    classes = {rc.name: rc for rc in snap.runtime_classes}
    want_classes = {e.name: e.obj for e in lab.cluster.store.entries("runtimeclasses")}
    assert set(classes) == set(want_classes)
    for name, obj in want_classes.items():
        fixed = (obj.get("overhead") or {}).get("podFixed") or {}
        rc = classes[name]
        assert (rc.handler, rc.kata, rc.overhead_cpu, rc.overhead_memory) == (
            obj["handler"],
            name.startswith("kata"),
            fixed.get("cpu"),
            fixed.get("memory"),
        )
    budgets = {(b.namespace, b.name): b for b in snap.budgets}
    want_budgets = {(e.namespace, e.name): e.obj for e in lab.cluster.store.entries("poddisruptionbudgets")}
    assert set(budgets) == set(want_budgets)
    for key, obj in want_budgets.items():
        b, st = budgets[key], obj["status"]
        assert (b.disruptions_allowed, b.current_healthy, b.desired_healthy, b.expected_pods) == (
            st["disruptionsAllowed"],
            st["currentHealthy"],
            st["desiredHealthy"],
            st["expectedPods"],
        )
        assert b.selector == obj["spec"]["selector"]["matchLabels"]


async def test_a_paged_list_equals_the_labs_objects(rig: Rig) -> None:
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    assert_equals_lab(rig, snap)
    pods = kube(rig).pods
    count = rig.lab.cluster.store.count("pods")
    assert count > 20  # more than one page
    assert pods.pages == math.ceil(count / 20)
    assert pods.lists == 1 and pods.connected
    kinds = {w.kind for w in snap.workloads}
    assert kinds == {"pod", "kata-pod"}  # the lab runs Kata pods too
    health = next(s for s in snap.sources if s.target == TARGET)
    assert health.detail["watch pods"].startswith("watching;")


async def test_the_watch_follows_churn_and_a_poll_costs_what_changed(rig: Rig) -> None:
    await rig.poll()
    c = kube(rig)
    builds = c.pod_view.builds
    await rig.poll()  # nothing changed: the published tuple is reused
    assert c.pod_view.builds == builds
    events = rig.lab.cluster.churn(40)
    assert any(ev.rtype.plural == "pods" for ev in events)
    await all_caught_up(rig)
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    assert_equals_lab(rig, snap)
    assert c.pod_view.builds == builds + 1
    assert c.pods.lists == 1 and c.pods.relists == 0  # followed by the watch, not listed again
    assert c.pods.events >= sum(1 for ev in events if ev.rtype.plural == "pods")


async def test_bookmarks_move_the_resource_version(rig: Rig) -> None:
    await rig.poll()
    await rig.lab.cluster.store.wait_for_watchers(STREAMS)
    rig.lab.cluster.churn(5)
    rig.lab.cluster.bookmark()
    nodes = kube(rig).nodes
    rv = str(rig.lab.cluster.store.rv)
    await until(nodes, lambda: nodes.bookmarks == 1 and nodes.resource_version == rv)
    assert nodes.events == 0  # no node changed: only the bookmark brought the version forward


@pytest.mark.parametrize("expired_as", ["event", "http"])
async def test_an_expired_resource_version_is_listed_again(rig: Rig, expired_as: str) -> None:
    server = rig.lab.server
    server.watch_faults.expired_as = expired_as
    server.watch_faults.drop_next(after_events=0, streams=STREAMS)
    await rig.poll()
    assert server.watch_faults.drop_streams == 0  # every watch of the collector will be cut
    rig.lab.cluster.churn(10)  # events the collector will never see...
    rig.lab.cluster.store.compact()  # ...and a history that no longer holds them
    pods = kube(rig).pods
    await until(pods, lambda: pods.relists >= 1 and pods.connected)
    await all_caught_up(rig)
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    assert_equals_lab(rig, snap)
    assert pods.drops >= 1
    assert pods.lists == 2


async def test_a_dropped_stream_resumes_from_the_last_version(rig: Rig) -> None:
    server = rig.lab.server
    server.watch_faults.drop_next(after_events=3, streams=STREAMS)
    await rig.poll()
    rig.lab.cluster.churn(30)
    pods = kube(rig).pods
    await until(pods, lambda: pods.drops == 1)
    await all_caught_up(rig)
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    assert_equals_lab(rig, snap)
    assert server.watch_faults.dropped >= 1
    assert pods.reconnects >= 1 and pods.relists == 0 and pods.lists == 1  # resumed, not re-listed


async def test_a_continue_token_that_expires_mid_list_restarts_the_list(rig: Rig) -> None:
    board, clock = rig.lab.server.faults, rig.lab.clock
    board.set("kubernetes", latency_s=1.0, path="/api/v1/pods")  # hold each page until the clock moves
    pods = kube(rig).pods
    polling = asyncio.create_task(rig.poll())
    await board.wait_waiting(1)
    await clock.advance(1.0)  # the first page
    await until(pods, lambda: pods.pages >= 1)
    await board.wait_waiting(1)  # the second page's request, its continue token sent
    rig.lab.cluster.store.compact()  # the token's snapshot is gone: 410
    board.clear("kubernetes")
    await clock.advance(1.0)
    snap = await polling
    assert rig.health(TARGET) == (True, None)
    assert pods.list_restarts == 1
    assert_equals_lab(rig, snap)


async def test_a_rotated_token_is_one_line_until_the_kubeconfig_is_renewed(rig: Rig) -> None:
    server = rig.lab.server
    server.watch_faults.drop_next(after_events=0, streams=STREAMS)
    await rig.poll()
    new_token = server.rotate_token()
    rig.lab.cluster.churn(3)  # the pods watch is cut; reconnecting needs the token
    pods = kube(rig).pods
    await until(pods, lambda: pods.error is not None)
    snap = await rig.poll()
    up, error = rig.health(TARGET)
    assert up is False and error is not None
    assert "401" in error and str(rig.lab.kubeconfig) in error and "\n" not in error
    assert all(w.stale for w in snap.workloads)
    write_kubeconfig(rig.lab.kubeconfig, server.url, new_token)  # the operator renews it
    snap = await rig.poll()
    assert rig.health(TARGET) == (True, None)
    assert not any(w.stale for w in snap.workloads)
    await all_caught_up(rig)
    assert_equals_lab(rig, await rig.poll())


async def test_injected_errors_make_only_this_source_stale(tmp_path: Path) -> None:
    r = await make_rig(tmp_path)
    monitors = KataMonitorLab(r.lab.cluster)
    await monitors.start()
    try:
        r.add(KubernetesCollector(r.session, interval_s=10.0))
        endpoints = {n: f"{monitors.url(n)}/metrics" for n in monitors.nodes}
        r.add(KataCollector(r.session, KataSource(enabled=True, endpoints=endpoints)))
        r.lab.server.watch_faults.drop_next(after_events=0, streams=STREAMS)
        await r.poll()
        r.lab.server.faults.set("kubernetes", error_rate=1.0)
        r.lab.cluster.churn(3)
        pods = kube(r).pods
        await until(pods, lambda: pods.error is not None)
        snap = await r.poll()
        up, error = r.health(TARGET)
        assert up is False and error is not None and "503" in error and "\n" not in error
        assert all(w.stale for w in snap.workloads if w.source == TARGET)
        kata = [h.kata for h in snap.hosts if h.kata is not None]
        assert len(kata) == len(monitors.nodes) and not any(k.stale for k in kata)
        for node in monitors.nodes:
            assert r.health(f"kata-monitor:{node}") == (True, None)
        r.lab.server.faults.clear("kubernetes")
        snap = await r.poll()
        assert r.health(TARGET) == (True, None)
        await all_caught_up(r)
        assert_equals_lab(r, await r.poll())
    finally:
        await monitors.stop()
        await r.close()


async def test_without_watch_every_poll_lists(tmp_path: Path) -> None:
    r = await make_rig(tmp_path, KubeOptions(watch=False, page_size=50))
    try:
        r.add(KubernetesCollector(r.session, interval_s=10.0))
        assert_equals_lab(r, await r.poll())
        r.lab.cluster.churn(20)
        assert_equals_lab(r, await r.poll())
        pods = kube(r).pods
        assert (pods.lists, pods.connects) == (2, 0)
        assert r.lab.cluster.store.watchers == 0
    finally:
        await r.close()


@pytest.mark.parametrize(
    ("content", "context", "expect"),
    [
        (None, None, "no such file"),
        ("apiVersion: v1\nkind: Config\n", "elsewhere", "elsewhere"),
        ("{not yaml", None, "cannot be read"),
    ],
)
async def test_a_bad_kubeconfig_is_one_line(
    rig: Rig, tmp_path: Path, content: str | None, context: str | None, expect: str
) -> None:
    path = tmp_path / "broken" / "kubeconfig"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    session = KubeSession(KubeRef(str(path), context))
    collector = KubernetesCollector(session, interval_s=10.0)
    ctx = PollContext(clock=rig.lab.clock, http=rig.poller.http, timeout_s=5.0)
    with pytest.raises(PollError) as err:
        await collector.poll(ctx)
    text = str(err.value)
    assert str(path) in text and expect in text and "\n" not in text
    await collector.aclose()


# --- TLS: the CA, client certificate and key from the kubeconfig ---------------------------------


def _tls_files(tmp_path: Path) -> dict[str, bytes]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, PEM-encoded."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if name == "127.0.0.1":
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab-ca")])
    ca = cert("lab-ca", ca_key, ca_name, ca_key, True)
    pem = serialization.Encoding.PEM
    return {
        "ca": ca.public_bytes(pem),
        "server": cert("127.0.0.1", server_key, ca_name, ca_key, False).public_bytes(pem),
        "server_key": pem_key(server_key),
        "client": cert("operator", client_key, ca_name, ca_key, False).public_bytes(pem),
        "client_key": pem_key(client_key),
    }


@pytest.mark.parametrize("with_ca", [True, False])
async def test_tls_with_the_kubeconfigs_ca_and_client_certificate(
    rig: Rig, tmp_path: Path, with_ca: bool
) -> None:
    import base64
    import socket
    import ssl

    import yaml
    from aiohttp import web

    from sovereign_tui.lab.kube_api import make_app

    pems = _tls_files(tmp_path)
    for name, data in pems.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server_key.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    runner = web.AppRunner(
        make_app(rig.lab.cluster, "tls-token"),
        handle_signals=False,
        shutdown_timeout=0.5,
        handler_cancellation=True,
    )
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    await web.SockSite(runner, sock, ssl_context=server_ctx).start()
    cluster: dict[str, str] = {"server": f"https://127.0.0.1:{sock.getsockname()[1]}"}
    if with_ca:
        cluster["certificate-authority-data"] = base64.b64encode(pems["ca"]).decode()
    user = {
        "token": "tls-token",
        "client-certificate-data": base64.b64encode(pems["client"]).decode(),
        "client-key-data": base64.b64encode(pems["client_key"]).decode(),
    }
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tls", "cluster": cluster}],
        "users": [{"name": "op", "user": user}],
        "contexts": [{"name": "tls", "context": {"cluster": "tls", "user": "op"}}],
        "current-context": "tls",
    }
    path = tmp_path / "tls-kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    collector = KubernetesCollector(KubeSession(KubeRef(str(path), "tls")), interval_s=10.0)
    ctx = PollContext(clock=rig.lab.clock, http=rig.poller.http, timeout_s=5.0)
    try:
        if with_ca:
            obs = await collector.poll(ctx)
            assert_pods_equal(rig.lab, obs.workloads)
        else:
            with pytest.raises(PollError) as err:
                await collector.poll(ctx)
            assert "certificate verify failed" in str(err.value) and "kubernetes tls" in str(err.value)
    finally:
        await collector.aclose()
        await runner.cleanup()
        sock.close()


def test_the_enabled_sources_share_one_session() -> None:
    from collectors.kubernetes import kube_collectors
    from collectors.kubevirt import KubevirtCollector
    from sovereign_tui.config_sources import KubernetesSource, KubevirtSource

    off = kube_collectors(KubernetesSource(), KubevirtSource(), KataSource())
    assert off == []
    found = kube_collectors(
        KubernetesSource(enabled=True, kubeconfig="/etc/kube/config", context="west"),
        KubevirtSource(enabled=True),
        KataSource(enabled=True),
    )
    assert [type(c) for c in found] == [KubernetesCollector, KubevirtCollector, KataCollector]
    sessions = {id(getattr(c, "session", None)) for c in found}
    assert len(sessions) == 1
    assert [t.id for c in found for t in c.targets()] == ["kubernetes:west", "kubevirt:west", "kata:west"]
    pods = [getattr(c, "pods", None) for c in found if hasattr(c, "pods")]
    assert len(pods) == 2 and pods[0] is pods[1]  # one watch of pods for both readers


def test_the_benchmark_runs_end_to_end_at_a_tiny_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.kube_bench import main

    out = tmp_path / "kubernetes.json"
    argv = ["--nodes", "5", "--pods", "60", "--rate", "20", "--seconds", "0.5", "--poll-every", "0.25"]
    assert main([*argv, "--out", str(out), "--max-cpu-fraction", "0"]) == 1  # a floor no run meets
    assert "watch_cpu_fraction" in capsys.readouterr().err
    record = json.loads(out.read_text())
    assert {"nodes", "pods", "initial_list_s", "watch_cpu_fraction"} <= set(record)
    assert record["nodes"] == 5 and record["pods"] > 0 and record["pod_events_applied"] > 0
