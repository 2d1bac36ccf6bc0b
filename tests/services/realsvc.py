"""A real OpenStack Ironic and Keystone on loopback, run from the venv that install.sh builds.

Ironic runs API and conductor in one process on fake hardware with no authentication. Keystone
runs on SQLite with Fernet tokens, bootstrapped with an admin, and is served by gunicorn from a
socket bound here first, so its port cannot be taken between choosing and binding it. Both run
in their own process group and log into their work directory; every failure raises
`ServiceError` with one line naming what failed, followed by the end of the log that tells why.

Only the standard library is used here: the services' own packages live in the other venv.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_ENV = "SOVEREIGN_SERVICES_VENV"
REQUIRE_ENV = "SOVEREIGN_REQUIRE_SERVICES"
NOT_INSTALLED = "real Ironic/Keystone not installed: run tests/services/install.sh"
MARKER = ".sovereign-services-installed"
TOOLS = ("ironic", "ironic-dbsync", "keystone-manage", "gunicorn")
READY_WITHIN_S = 90.0  # generous: two busy cores; a quiet machine needs 2-5 s
STEP_WITHIN_S = 120.0
STOP_WITHIN_S = 20.0
LOG_TAIL_LINES = 25
REGION = "RegionOne"


class ServiceError(RuntimeError):
    """A real service could not be prepared or started; the message names it and shows its log."""


class PortTaken(ServiceError):
    """Another process bound the port first (Ironic then retries the bind forever)."""


def services_venv() -> Path:
    default = Path.home() / ".cache" / "sovereign-tui" / "services-venv"
    return Path(os.environ.get(VENV_ENV) or default)


def installed(venv: Path) -> bool:
    """True once install.sh has finished there (an interrupted install leaves no marker)."""
    return (venv / MARKER).is_file() and all(os.access(venv / "bin" / t, os.X_OK) for t in TOOLS)


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


@dataclass(frozen=True)
class IronicService:
    url: str  # root URL, as a catalog lists it: http://127.0.0.1:PORT
    min_version: str  # X-OpenStack-Ironic-API-Minimum-Version, e.g. "1.1"
    max_version: str  # X-OpenStack-Ironic-API-Maximum-Version, e.g. "1.115"
    log: Path


@dataclass(frozen=True)
class KeystoneService:
    url: str  # root URL: http://127.0.0.1:PORT
    auth_url: str  # the v3 URL: http://127.0.0.1:PORT/v3
    username: str
    password: str
    project_name: str
    user_domain_id: str
    project_domain_id: str
    region_name: str
    log: Path


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _failure(what: str, log: Path) -> ServiceError:
    return ServiceError(f"{what} (log: {log})\n{log_tail(log)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _render(template: str, dest: Path, **values: object) -> Path:
    text = string.Template((HERE / template).read_text()).substitute(values)
    dest.write_text(text)
    return dest


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without OpenStack client settings, which mean nothing here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(extra)
    return env


def _run_steps(steps: list[tuple[str, list[str]]], cwd: Path, env: dict[str, str]) -> None:
    """Run independent commands side by side; each logs to cwd/<name>.log."""
    running = []
    for name, argv in steps:
        log = cwd / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        running.append((name, proc, log))
    failed = None
    for name, proc, log in running:
        try:
            rc = proc.wait(timeout=STEP_WITHIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        if rc != 0 and failed is None:
            outcome = f"exited {rc}" if rc is not None else f"ran past {STEP_WITHIN_S:.0f} s"
            failed = _failure(f"{name} {outcome}", log)
    if failed is not None:
        raise failed


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class _Daemon:
    """A long-running service process that leads its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], cwd: Path, env: dict[str, str], pass_fds: tuple[int, ...] = ()
    ) -> _Daemon:
        log = cwd / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
                preexec_fn=_die_with_parent,
            )
        return cls(name, proc, log)

    def wait_ready(self, probe: Callable[[float], bool]) -> None:
        """Call probe(timeout) until it returns True; between tries, wait for the process to exit.

        The wait doubles as the pause between tries, so a service that dies is noticed at once.
        """
        deadline = time.monotonic() + READY_WITHIN_S
        while (left := deadline - time.monotonic()) > 0:
            if probe(min(left, 5.0)):
                return
            if "Address already in use" in self.log.read_text(errors="replace"):
                raise PortTaken(f"{self.name}: its port was taken (log: {self.log})\n{log_tail(self.log)}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = self.proc.wait(timeout=min(0.1, max(left, 0.0)))
                raise _failure(f"{self.name} exited {rc} while starting", self.log)
        raise _failure(f"{self.name} did not answer within {READY_WITHIN_S:.0f} s", self.log)

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL to whatever of it is left."""
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # forked workers that outlived their master


def _get(url: str, timeout: float) -> tuple[int, Any, Any]:
    """GET url -> (status, headers, decoded JSON body); connection failures raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.headers, None


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[Any, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers, json.loads(response.read())


@contextlib.contextmanager
def run_ironic(venv: Path, root: Path) -> Iterator[IronicService]:
    """Create Ironic's schema under `root`, start Ironic on a free port, stop it on exit."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    env = _env()
    bin_dir = venv / "bin"
    config = _render("ironic.conf.in", root / "ironic.conf", root=root, port=0)
    _run_steps(
        [("ironic-dbsync", [str(bin_dir / "ironic-dbsync"), "--config-file", str(config), "create_schema"])],
        root,
        env,
    )
    versions: dict[str, str] = {}

    def answers(url: str) -> Callable[[float], bool]:
        def probe(timeout: float) -> bool:
            try:
                status, headers, body = _get(f"{url}/v1", timeout)
            except OSError:
                return False
            if status != 200 or not isinstance(body, dict) or body.get("id") != "v1":
                return False
            versions["min"] = headers.get("X-OpenStack-Ironic-API-Minimum-Version", "")
            versions["max"] = headers.get("X-OpenStack-Ironic-API-Maximum-Version", "")
            return True

        return probe

    for attempt in range(3):  # Ironic binds the port itself: another process can take it first
        port = _free_port()
        _render("ironic.conf.in", config, root=root, port=port)
        daemon = _Daemon.start("ironic", [str(bin_dir / "ironic"), "--config-file", str(config)], root, env)
        url = f"http://127.0.0.1:{port}"
        try:
            daemon.wait_ready(answers(url))
        except PortTaken:
            daemon.stop()
            if attempt < 2:
                continue
            raise
        except BaseException:
            daemon.stop()
            raise
        break
    try:
        yield IronicService(url=url, min_version=versions["min"], max_version=versions["max"], log=daemon.log)
    finally:
        daemon.stop()


@contextlib.contextmanager
def run_keystone(venv: Path, root: Path) -> Iterator[KeystoneService]:
    """Set Keystone up under `root` (schema, keys, admin), serve it on a free port, stop it on exit."""
    root.mkdir(parents=True, exist_ok=True)
    config = _render("keystone.conf.in", root / "keystone.conf", root=root)
    env = _env(OS_KEYSTONE_CONFIG_FILES=str(config))
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(config)]
    owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    _run_steps(
        [
            ("keystone-db-sync", [*manage, "db_sync"]),
            ("keystone-fernet-setup", [*manage, "fernet_setup", *owner]),
            ("keystone-credential-setup", [*manage, "credential_setup", *owner]),
        ],
        root,
        env,
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # gunicorn loads Keystone while bootstrap runs; requests wait in the listener's backlog.
        gunicorn = [str(venv / "bin" / "gunicorn"), "--bind", f"fd://{listener.fileno()}"]
        gunicorn += ["--workers", "1", "--threads", "4", "--graceful-timeout", "5", "--access-logfile", "-"]
        gunicorn += ["--pythonpath", str(HERE), "keystone_wsgi:application"]
        daemon = _Daemon.start("keystone", gunicorn, root, env, pass_fds=(listener.fileno(),))
    service = KeystoneService(
        url=url,
        auth_url=f"{url}/v3",
        username="admin",
        password=secrets.token_urlsafe(16),
        project_name="admin",
        user_domain_id="default",
        project_domain_id="default",
        region_name=REGION,
        log=daemon.log,
    )
    bootstrap = [*manage, "bootstrap", "--bootstrap-password", service.password]
    bootstrap += ["--bootstrap-username", service.username, "--bootstrap-project-name", service.project_name]
    bootstrap += ["--bootstrap-region-id", REGION]
    for interface in ("public", "internal", "admin"):
        bootstrap += [f"--bootstrap-{interface}-url", service.auth_url]

    def probe(timeout: float) -> bool:
        try:
            status, _, body = _get(service.auth_url, timeout)
        except OSError:
            return False
        version = body.get("version") if isinstance(body, dict) else None
        return status == 200 and isinstance(version, dict) and str(version.get("id")).startswith("v3")

    try:
        _run_steps([("keystone-bootstrap", bootstrap)], root, env)
        daemon.wait_ready(probe)
        yield service
    finally:
        daemon.stop()


def admin_token(keystone: KeystoneService) -> str:
    """A project-scoped token for the bootstrap admin (POST /v3/auth/tokens)."""
    user = {
        "name": keystone.username,
        "domain": {"id": keystone.user_domain_id},
        "password": keystone.password,
    }
    project = {"name": keystone.project_name, "domain": {"id": keystone.project_domain_id}}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": project},
        }
    }
    headers, _ = _post(f"{keystone.auth_url}/auth/tokens", body, {})
    token: str = headers["X-Subject-Token"]
    return token


def register_endpoint(keystone: KeystoneService, service_type: str, name: str, url: str) -> None:
    """Add a service and its public and internal endpoints to Keystone's catalog."""
    try:
        auth = {"X-Auth-Token": admin_token(keystone)}
        _, created = _post(
            f"{keystone.auth_url}/services", {"service": {"type": service_type, "name": name}}, auth
        )
        for interface in ("public", "internal"):
            endpoint = {"service_id": created["service"]["id"], "interface": interface, "url": url}
            _post(
                f"{keystone.auth_url}/endpoints",
                {"endpoint": {**endpoint, "region_id": keystone.region_name}},
                auth,
            )
    except (OSError, KeyError) as err:
        raise _failure(
            f"registering the {service_type} endpoint {url} in Keystone failed: {err}", keystone.log
        ) from err
