"""The real OpenStack Ironic and Keystone (tests/services), driven with the real client libraries.

The `real_service` tests pin down the behaviour the collectors rely on: Ironic's version
negotiation and node fields, provision-state transitions on fake hardware, Keystone's token and
catalog. The others check the launcher's own rules (skip or fail, errors with the log) with
stand-in executables, so they run everywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import openstack
import pytest
from ironicclient import client as ironic_client
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from tests.services import fixtures, realsvc
from tests.services.fixtures import RealCloud
from tests.services.realsvc import IronicService, KeystoneService

# openstacksdk warns about its own internals (influxdb, `service_type`), not about these calls.
SDK_INTERNALS = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack")
VERSION = "X-OpenStack-Ironic-API-Version"
MIN_VERSION = "X-OpenStack-Ironic-API-Minimum-Version"
MAX_VERSION = "X-OpenStack-Ironic-API-Maximum-Version"
NODE_FIELDS = (
    "uuid",
    "name",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "maintenance",
    "maintenance_reason",
    "fault",
    "last_error",
    "reservation",
    "resource_class",
    "instance_uuid",
    "driver",
    "conductor_group",
    "owner",
    "lessee",
    "protected",
    "retired",
)


def _names(count: int) -> list[str]:
    """Node names no other test uses: the session's Ironic is shared."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return [f"{prefix}-{i}" for i in range(count)]


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _password(keystone: KeystoneService, password: str) -> v3.Password:
    return v3.Password(
        auth_url=keystone.auth_url,
        username=keystone.username,
        password=password,
        project_name=keystone.project_name,
        user_domain_id=keystone.user_domain_id,
        project_domain_id=keystone.project_domain_id,
    )


def _enroll_provide_and_flag(url: str, names: list[str], reason: str) -> dict[str, str]:
    """With python-ironicclient: enroll `names`, provide the first, put the second in maintenance."""
    client = ironic_client.get_client("1", endpoint=url, os_ironic_api_version="latest")
    enrolled = {}
    for name in names:
        node = client.node.create(name=name, driver="fake-hardware")
        assert node is not None
        enrolled[name] = node.provision_state
    first, second = names[0], names[1]
    for target, reached in (("manage", "manageable"), ("provide", "available")):
        client.node.set_provision_state(first, target)
        client.node.wait_for_provision_state(first, reached, timeout=60, poll_interval=0.1)
    client.node.set_maintenance(second, True, maint_reason=reason)
    return enrolled


@pytest.mark.real_service
@SDK_INTERNALS
async def test_ironic_enrolls_provides_and_reports_maintenance(real_ironic: IronicService) -> None:
    names = _names(3)
    reason = f"fan failure on {names[1]}"
    enrolled = await asyncio.to_thread(_enroll_provide_and_flag, real_ironic.url, names, reason)
    assert set(enrolled.values()) == {"enroll"}  # a negotiated version: new nodes start in enroll

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{real_ironic.url}/v1") as response:
            assert response.status == 200
            minimum, maximum = response.headers[MIN_VERSION], response.headers[MAX_VERSION]
        async with http.get(f"{real_ironic.url}/v1/nodes/detail", headers={VERSION: maximum}) as response:
            assert response.status == 200
            assert response.headers[VERSION] == maximum
            body = await response.json()
        flagged_url = f"{real_ironic.url}/v1/nodes?maintenance=true&fields=name"
        async with http.get(flagged_url, headers={VERSION: maximum}) as response:
            flagged = {node["name"] for node in (await response.json())["nodes"]}

    assert _version(minimum) <= _version(maximum)
    assert (minimum, maximum) == (real_ironic.min_version, real_ironic.max_version)
    nodes = {node["name"]: node for node in body["nodes"] if node["name"] in names}
    assert sorted(nodes) == names
    for node in nodes.values():
        assert set(NODE_FIELDS) <= set(node), f"{node['name']} lacks {set(NODE_FIELDS) - set(node)}"
        assert node["driver"] == "fake-hardware"
    provided, in_maintenance, untouched = (nodes[name] for name in names)
    assert provided["provision_state"] == "available"
    assert provided["target_provision_state"] is None
    assert provided["maintenance"] is False
    assert in_maintenance["maintenance"] is True
    assert in_maintenance["maintenance_reason"] == reason
    assert in_maintenance["provision_state"] == untouched["provision_state"] == "enroll"
    assert untouched["maintenance"] is False
    assert flagged & set(names) == {names[1]}


@pytest.mark.real_service
async def test_ironic_without_a_version_header_answers_as_1_1(real_ironic: IronicService) -> None:
    """Why every request must name a version: at 1.1 a new node skips enroll, `available` reads as
    null, and nodes cannot have names."""
    (name,) = _names(1)
    headers = {VERSION: real_ironic.max_version}
    async with aiohttp.ClientSession(base_url=real_ironic.url) as http:
        async with http.post("/v1/nodes", json={"driver": "fake-hardware"}) as response:
            assert response.status == 201
            assert response.headers[VERSION] == "1.1"
            unnamed = await response.json()
        assert unnamed["provision_state"] is None
        async with http.get(f"/v1/nodes/{unnamed['uuid']}", headers=headers) as response:
            assert (await response.json())["provision_state"] == "available"
        async with http.post("/v1/nodes", json={"name": name, "driver": "fake-hardware"}) as response:
            assert response.status == 406  # names came with 1.5
        async with http.post(
            "/v1/nodes", json={"name": name, "driver": "fake-hardware"}, headers=headers
        ) as response:
            assert response.status == 201
            assert response.headers[VERSION] == real_ironic.max_version
            assert (await response.json())["provision_state"] == "enroll"


@pytest.mark.real_service
def test_keystoneauth_password_auth_gets_a_scoped_token(real_keystone: KeystoneService) -> None:
    auth = _password(real_keystone, real_keystone.password)
    session = ksa_session.Session(auth=auth)
    access = auth.get_access(session)
    assert access.auth_token
    assert access.username == real_keystone.username
    assert access.project_name == real_keystone.project_name
    assert "admin" in (access.role_names or [])
    catalog_url = access.service_catalog.url_for(
        service_type="identity", interface="public", region_name=real_keystone.region_name
    )
    assert catalog_url == real_keystone.auth_url

    # Keystone validates the token it issued.
    validated = session.get(
        f"{real_keystone.auth_url}/auth/tokens", headers={"X-Subject-Token": access.auth_token}
    )
    assert validated.status_code == 200
    assert validated.json()["token"]["user"]["name"] == real_keystone.username

    wrong = _password(real_keystone, real_keystone.password + "x")
    with pytest.raises(ksa_exceptions.Unauthorized):
        wrong.get_access(ksa_session.Session(auth=wrong))


@pytest.mark.real_service
async def test_token_catalog_leads_to_ironic(real_cloud: RealCloud) -> None:
    """POST /v3/auth/tokens over aiohttp, as a collector does, then follow the catalog to Ironic."""
    keystone = real_cloud.keystone
    user = {
        "name": keystone.username,
        "domain": {"id": keystone.user_domain_id},
        "password": keystone.password,
    }
    project = {"name": keystone.project_name, "domain": {"id": keystone.project_domain_id}}
    identity = {"methods": ["password"], "password": {"user": user}}
    body = {"auth": {"identity": identity, "scope": {"project": project}}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{keystone.auth_url}/auth/tokens", json=body) as response:
            assert response.status == 201
            token = response.headers["X-Subject-Token"]
            issued = (await response.json())["token"]
        by_type = {entry["type"]: entry["endpoints"] for entry in issued["catalog"]}
        public = [e["url"] for e in by_type["baremetal"] if e["interface"] == "public"]
        assert public == [real_cloud.ironic.url]
        assert {e["region_id"] for e in by_type["baremetal"]} == {keystone.region_name}
        assert issued["project"]["name"] == keystone.project_name

        headers = {"X-Auth-Token": token, VERSION: real_cloud.ironic.max_version}
        async with http.get(f"{public[0]}/v1/nodes", headers=headers) as response:
            assert response.status == 200
            assert "nodes" in await response.json()


@pytest.mark.real_service
@SDK_INTERNALS
def test_openstacksdk_connects_and_drives_ironic_via_the_catalog(real_cloud: RealCloud) -> None:
    keystone = real_cloud.keystone
    conn = openstack.connect(
        auth_url=keystone.auth_url,
        username=keystone.username,
        password=keystone.password,
        project_name=keystone.project_name,
        user_domain_id=keystone.user_domain_id,
        project_domain_id=keystone.project_domain_id,
        region_name=keystone.region_name,
        load_yaml_config=False,
        load_envvars=False,
    )
    try:
        assert conn.auth_token
        assert conn.current_project.name == keystone.project_name
        services = {service.type for service in conn.list_services()}
        assert {"identity", "baremetal"} <= services
        endpoint = conn.endpoint_for("baremetal")
        assert endpoint is not None
        assert endpoint.rstrip("/") == real_cloud.ironic.url

        (name,) = _names(1)
        created = conn.baremetal.create_node(name=name, driver="fake-hardware")
        assert created.provision_state == "enroll"
        listed = {node.name: node.id for node in conn.baremetal.nodes()}
        assert listed[name] == created.id
    finally:
        conn.close()


def _stand_in_venv(root: Path, scripts: dict[str, str]) -> Path:
    """A venv-shaped directory whose tools are shell scripts (`true` unless given)."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for tool in realsvc.TOOLS:
        script = bin_dir / tool
        script.write_text("#!/bin/sh\n" + scripts.get(tool, "exit 0") + "\n")
        script.chmod(0o755)
    (root / realsvc.MARKER).touch()
    return root


@pytest.mark.parametrize("require", ["", "1"])
def test_a_missing_services_venv_skips_or_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require: str
) -> None:
    monkeypatch.setenv(realsvc.VENV_ENV, str(tmp_path / "absent"))
    monkeypatch.setenv(realsvc.REQUIRE_ENV, require)
    outcome = pytest.fail.Exception if require == "1" else pytest.skip.Exception
    with pytest.raises(
        outcome, match=r"^real Ironic/Keystone not installed: run tests/services/install\.sh$"
    ):
        fixtures._services_venv()


def test_an_interrupted_install_counts_as_missing(tmp_path: Path) -> None:
    venv = _stand_in_venv(tmp_path / "venv", {})
    assert realsvc.installed(venv)
    (venv / realsvc.MARKER).unlink()  # install.sh writes it last
    assert not realsvc.installed(venv)


def test_a_service_that_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    complaint = "ConfigFileValueError: Value for option port is not valid"
    venv = _stand_in_venv(tmp_path / "venv", {"ironic": f"echo '{complaint}' >&2; exit 3"})
    with pytest.raises(realsvc.ServiceError) as caught, realsvc.run_ironic(venv, tmp_path / "ironic"):
        pytest.fail("a service that exited must not be yielded")
    first, *rest = str(caught.value).splitlines()
    assert first.startswith("ironic exited 3 while starting (log: ")
    assert complaint in rest


def test_a_failing_setup_step_is_named_with_its_log(tmp_path: Path) -> None:
    venv = _stand_in_venv(tmp_path / "venv", {"keystone-manage": 'echo "no such table: $3"; exit 2'})
    with pytest.raises(realsvc.ServiceError) as caught, realsvc.run_keystone(venv, tmp_path / "keystone"):
        pytest.fail("keystone must not start after a failed step")
    first, *rest = str(caught.value).splitlines()
    assert first.startswith("keystone-db-sync exited 2 (log: ")
    assert rest == ["no such table: db_sync"]


def test_ironic_retries_on_a_new_port_when_its_port_is_taken(tmp_path: Path) -> None:
    """Ironic keeps retrying a bind that fails: the launcher must notice it and pick another port."""
    busy = "echo started >> attempts; echo '[Errno 98] Address already in use' >&2; exec sleep 600"
    venv = _stand_in_venv(tmp_path / "venv", {"ironic": busy})
    root = tmp_path / "ironic"
    with pytest.raises(realsvc.PortTaken) as caught, realsvc.run_ironic(venv, root):
        pytest.fail("a service that never bound its port must not be yielded")
    assert str(caught.value).startswith("ironic: its port was taken (log: ")
    assert (root / "attempts").read_text().split() == ["started"] * 3
