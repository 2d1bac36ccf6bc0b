"""Keystone of the lab: discovery, token issue and validation, expiry, and real openstacksdk use."""

from __future__ import annotations

import asyncio
import datetime as dt
import tomllib
from pathlib import Path

import openstack.config
import openstack.connection
import pytest
import yaml

from sovereign_tui.clock import FakeClock
from sovereign_tui.config import parse_settings
from sovereign_tui.lab.server import CLOUD, Lab

from .conftest import Api, password_auth


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_discovery_documents(api: Api, lab: Lab) -> None:
    base = lab.urls["identity"].removesuffix("/v3")
    root = await api.call("GET", base + "/")
    assert root.status == 300
    (version,) = root.body["versions"]["values"]
    assert version["id"].startswith("v3.")
    assert version["status"] == "stable"
    assert version["links"][0]["href"] == lab.urls["identity"] + "/"
    v3 = await api.call("GET", lab.urls["identity"])
    assert v3.status == 200
    assert v3.body["version"]["id"] == version["id"]


async def test_password_token_carries_project_roles_and_catalog(api: Api, lab: Lab) -> None:
    creds = lab.credentials
    reply = await api.call(
        "POST",
        lab.urls["identity"] + "/auth/tokens",
        body=password_auth(creds.username, creds.password, "admin"),
    )
    assert reply.status == 201
    assert reply.headers["X-Subject-Token"]
    token = reply.body["token"]
    assert token["project"]["name"] == "admin"
    assert {r["name"] for r in token["roles"]} >= {"admin"}
    lifetime = _ts(token["expires_at"]) - _ts(token["issued_at"])
    assert lifetime == dt.timedelta(hours=1)
    catalog = {svc["type"]: svc for svc in token["catalog"]}
    assert set(catalog) >= {"identity", "compute", "baremetal"}
    for kind, url in (("identity", "identity"), ("compute", "compute"), ("baremetal", "baremetal")):
        endpoints = catalog[kind]["endpoints"]
        assert {e["interface"] for e in endpoints} == {"public", "internal", "admin"}
        assert {e["url"] for e in endpoints} == {lab.urls[url]}


@pytest.mark.parametrize(
    ("user", "password", "project"),
    [("admin", "wrong", "admin"), ("nobody", "x", "admin"), ("demo", "sovereign-lab-demo", "admin")],
    ids=["bad-password", "unknown-user", "project-without-role"],
)
async def test_bad_credentials_are_401(api: Api, lab: Lab, user: str, password: str, project: str) -> None:
    reply = await api.call(
        "POST", lab.urls["identity"] + "/auth/tokens", body=password_auth(user, password, project)
    )
    assert reply.status == 401
    assert reply.body["error"]["code"] == 401
    assert "X-Subject-Token" not in reply.headers


async def test_malformed_auth_body_is_400(api: Api, lab: Lab) -> None:
    reply = await api.call("POST", lab.urls["identity"] + "/auth/tokens", body={"auth": {}})
    assert reply.status == 400


async def test_no_scope_takes_the_default_project(api: Api, lab: Lab) -> None:
    creds = lab.credentials
    reply = await api.call(
        "POST", lab.urls["identity"] + "/auth/tokens", body=password_auth("demo", creds.demo_password, None)
    )
    assert reply.status == 201
    assert reply.body["token"]["project"]["name"] == creds.demo_project_name


async def test_application_credential(api: Api, lab: Lab) -> None:
    creds = lab.credentials
    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": creds.app_credential_id,
                    "secret": creds.app_credential_secret,
                },
            }
        }
    }
    ok = await api.call("POST", lab.urls["identity"] + "/auth/tokens", body=body)
    assert ok.status == 201
    assert ok.body["token"]["application_credential"]["id"] == creds.app_credential_id
    assert ok.body["token"]["project"]["name"] == creds.project_name
    body["auth"]["identity"]["application_credential"]["secret"] = "not-it"
    bad = await api.call("POST", lab.urls["identity"] + "/auth/tokens", body=body)
    assert bad.status == 401


async def test_validate_and_revoke(api: Api, lab: Lab, admin: str, demo: str) -> None:
    url = lab.urls["identity"] + "/auth/tokens"
    seen = await api.call("GET", url, admin, **{"X-Subject-Token": demo})
    assert seen.status == 200
    assert seen.body["token"]["user"]["name"] == "demo"
    assert (await api.nova("GET", "/servers", demo)).status == 200
    assert (await api.call("DELETE", url, admin, **{"X-Subject-Token": demo})).status == 204
    assert (await api.call("GET", url, admin, **{"X-Subject-Token": demo})).status == 404
    refused = await api.nova("GET", "/servers", demo)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == f'Keystone uri="{lab.urls["identity"]}"'


async def test_tokens_expire_with_time(api: Api, clock: FakeClock, admin: str) -> None:
    assert (await api.nova("GET", "/servers", admin)).status == 200
    await clock.advance(3599)
    assert (await api.ironic("GET", "/v1/nodes", admin)).status == 200
    await clock.advance(2)
    assert (await api.nova("GET", "/servers", admin)).status == 401
    assert (await api.ironic("GET", "/v1/nodes", admin)).status == 401


async def test_tokens_that_die_early(api: Api, lab: Lab, clock: FakeClock) -> None:
    lab.faults.set("keystone", token_lifetime_s=5)
    reply = await api.call(
        "POST",
        lab.urls["identity"] + "/auth/tokens",
        body=password_auth("admin", lab.credentials.password, "admin"),
    )
    token = reply.headers["X-Subject-Token"]
    promised = _ts(reply.body["token"]["expires_at"]) - _ts(reply.body["token"]["issued_at"])
    assert promised == dt.timedelta(hours=1)  # the token claims a full hour...
    assert (await api.nova("GET", "/servers", token)).status == 200
    await clock.advance(6)
    assert (await api.nova("GET", "/servers", token)).status == 401  # ...but dies after 5 s


async def test_expire_all_from_the_admin_endpoint(api: Api, lab: Lab, admin: str) -> None:
    reply = await api.call("POST", lab.urls["lab"] + "/tokens/expire")
    assert reply.status == 200
    assert reply.body["expired"] >= 1
    assert (await api.nova("GET", "/servers", admin)).status == 401


async def test_projects(api: Api, lab: Lab, admin: str, demo: str) -> None:
    listed = await api.call("GET", lab.urls["identity"] + "/projects", admin)
    assert {p["name"] for p in listed.body["projects"]} == {p.name for p in lab.scenario.projects}
    assert (await api.call("GET", lab.urls["identity"] + "/projects", demo)).status == 403
    mine = await api.call("GET", lab.urls["identity"] + "/auth/projects", demo)
    assert [p["name"] for p in mine.body["projects"]] == [lab.credentials.demo_project_name]


def test_write_config_needs_a_started_lab(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="start the lab"):
        Lab(hosts=2).write_config(tmp_path)


async def test_written_config_is_valid(lab: Lab, tmp_path: Path) -> None:
    files = lab.write_config(tmp_path / "cfg")
    clouds = yaml.safe_load(files.clouds_yaml.read_text())["clouds"]
    assert set(clouds) == {CLOUD, f"{CLOUD}-appcred", f"{CLOUD}-demo"}
    assert clouds[CLOUD]["auth"]["auth_url"] == lab.urls["identity"]
    assert clouds[f"{CLOUD}-appcred"]["auth_type"] == "v3applicationcredential"
    kube = yaml.safe_load(files.kubeconfig.read_text())
    assert kube["kind"] == "Config"
    text = files.settings.read_text()
    assert text.startswith("# lab")
    settings = parse_settings(text, files.settings)  # only keys the settings model knows
    raw = tomllib.loads(text)
    for name in ("nova", "ironic"):
        if name in raw.get("sources", {}):
            source = getattr(settings.sources, name)
            assert source.enabled
            assert source.cloud == CLOUD
            assert Path(source.clouds_yaml) == files.clouds_yaml.resolve()


async def test_openstacksdk_through_keystoneauth(lab: Lab, tmp_path: Path) -> None:
    """The real SDK authenticates (discovery, token, catalog) and lists servers and nodes."""
    files = lab.write_config(tmp_path)
    config = openstack.config.OpenStackConfig(config_files=[str(files.clouds_yaml)])
    scenario = lab.scenario
    demo_project = next(p for p in scenario.projects if p.name == lab.credentials.demo_project_name)

    def use_sdk() -> tuple[set[str], set[str], set[str], set[str], int]:
        admin = openstack.connection.Connection(config=config.get_one(cloud=CLOUD))
        servers = {s.id for s in admin.compute.servers(details=True, all_projects=True)}
        nodes = {n.id for n in admin.baremetal.nodes(details=True)}
        hypervisors = {h.name for h in admin.compute.hypervisors(details=True)}
        appcred = openstack.connection.Connection(config=config.get_one(cloud=f"{CLOUD}-appcred"))
        via_appcred = {s.id for s in appcred.compute.servers(all_projects=True)}
        demo = openstack.connection.Connection(config=config.get_one(cloud=f"{CLOUD}-demo"))
        return servers, nodes, hypervisors, via_appcred, len(list(demo.compute.servers()))

    servers, nodes, hypervisors, via_appcred, demo_count = await asyncio.to_thread(use_sdk)
    assert servers == set(scenario.servers) == via_appcred
    assert nodes == {n.uuid for n in scenario.nodes}
    assert hypervisors == {h.fqdn for h in scenario.compute_hosts}
    assert demo_count == sum(1 for s in scenario.servers.values() if s.project_id == demo_project.id)
