"""A Kubernetes API connection for the kubernetes, kubevirt and kata collectors.

The kubeconfig is read by the kubernetes client's own loader (``load_kube_config`` into a private
`Configuration`, never the client's global default; the in-cluster service account when there is
no kubeconfig at all): server, bearer token (exec and OIDC plugins included), CA, client
certificate and key. Requests then go through the poller's shared aiohttp session with that
token and an SSL context built from the same files, so no thread is spent per request.

A 401 reloads the kubeconfig once (a renewed token, a refreshed plugin credential) and retries;
a second 401 is one line naming the kubeconfig and the context. One `KubeSession` per cluster is
shared by the collectors that read it, and so are its informers (one watch per resource).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from collectors.base import SDK_IMPORT_LOCK
from sovereign_tui.poller import PollError

IN_CLUSTER = "in-cluster service account"


@dataclass(frozen=True)
class KubeRef:
    kubeconfig: str | None = None
    """kubeconfig path; None: the client's default ($KUBECONFIG, ~/.kube/config, in-cluster)."""
    context: str | None = None
    """Context name; None: the kubeconfig's current-context."""

    @property
    def label(self) -> str:
        return self.context or "current-context"


@dataclass(frozen=True)
class KubeOptions:
    watch: bool = True
    page_size: int = 500
    watch_timeout_s: float = 300.0
    request_timeout_s: float = 30.0
    """Longest wait to connect, and for one page of a list."""


@dataclass(frozen=True)
class KubeConn:
    """What one load of the kubeconfig gave: where the API is and how to authenticate."""

    server: str
    headers: Mapping[str, str]
    ssl: ssl.SSLContext | None
    server_hostname: str | None
    context: str
    source: str
    """The kubeconfig file (or the in-cluster account) it came from, for messages."""


class KubeAuthError(PollError):
    pass


def _short(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def short(exc: BaseException) -> str:
    """The first line of an exception's own words."""
    return _short(exc)


def _ssl_context(cfg: Any) -> ssl.SSLContext | None:
    if not str(cfg.host).startswith("https"):
        return None
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


def load_conn(ref: KubeRef) -> KubeConn:
    """Read the kubeconfig with the kubernetes client's loader (blocking: run it off the loop)."""
    with SDK_IMPORT_LOCK:
        from kubernetes import client
        from kubernetes import config as kube_config
        from kubernetes.config.config_exception import ConfigException

    config: Any = kube_config  # untyped
    cfg: Any = client.Configuration()
    default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    in_cluster = (
        ref.kubeconfig is None and not os.path.exists(default) and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    source = IN_CLUSTER if in_cluster else (ref.kubeconfig or default)
    if not in_cluster and not os.path.exists(source):
        raise PollError(f"kubeconfig {source}: no such file (set sources.kubernetes.kubeconfig)")
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
            context = "in-cluster"
        else:
            config.load_kube_config(
                config_file=ref.kubeconfig,
                context=ref.context,
                client_configuration=cfg,
                persist_config=False,
            )
            context = ref.context or config.list_kube_config_contexts(ref.kubeconfig)[1]["name"]
        headers = {"Accept": "application/json"}
        for setting in cfg.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers["Authorization" if setting["key"] == "authorization" else setting["key"]] = setting[
                    "value"
                ]
        context_ssl = _ssl_context(cfg)
    except ConfigException as exc:
        raise PollError(f"kubeconfig {source}: {_short(exc)} (fix the file or the context name)") from None
    except (OSError, ssl.SSLError) as exc:
        raise PollError(f"kubeconfig {source}: {_short(exc)} (check the paths it names)") from None
    except Exception as exc:  # a malformed file: YAML errors, missing keys, bad base64
        raise PollError(
            f"kubeconfig {source}: cannot be read ({type(exc).__name__}: {_short(exc)})"
        ) from None
    return KubeConn(
        server=str(cfg.host).rstrip("/"),
        headers=headers,
        ssl=context_ssl,
        server_hostname=getattr(cfg, "tls_server_name", None) or None,
        context=str(context),
        source=source,
    )


def status_message(body: bytes) -> str:
    """The message of a Kubernetes `Status` error body ("" when it is not one)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return " ".join(doc["message"].split())
    return ""


@dataclass
class _Users:
    count: int = 0
    informers: dict[str, Any] = field(default_factory=dict)


class KubeSession:
    """One cluster's connection and informers, shared by the collectors that read it."""

    def __init__(self, ref: KubeRef, options: KubeOptions | None = None) -> None:
        self.ref = ref
        self.options = options or KubeOptions()
        self._conn: KubeConn | None = None
        self._lock = asyncio.Lock()
        self._users = _Users()

    @property
    def where(self) -> str:
        """How messages name the cluster: ``kubernetes <context>``."""
        return f"kubernetes {self._conn.context if self._conn else self.ref.label}"

    async def conn(self) -> KubeConn:
        if self._conn is None:
            async with self._lock:
                if self._conn is None:
                    self._conn = await asyncio.to_thread(load_conn, self.ref)
        return self._conn

    async def reload(self, refused: KubeConn) -> KubeConn:
        """Load the kubeconfig again after `refused` got a 401 (once, for every request that saw it)."""
        async with self._lock:
            if self._conn is refused or self._conn is None:
                self._conn = await asyncio.to_thread(load_conn, self.ref)
            return self._conn

    @contextlib.asynccontextmanager
    async def get(
        self,
        http: aiohttp.ClientSession,
        path: str,
        params: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET `path`; the response is the caller's to read. A 401 reloads the kubeconfig and
        tries once more; then it is a `KubeAuthError`. Unreachable servers are `PollError`s."""
        conn = await self.conn()
        for attempt in (0, 1):
            try:
                resp = await http.get(
                    conn.server + path,
                    params=params,
                    headers=conn.headers,
                    ssl=conn.ssl if conn.ssl is not None else True,
                    server_hostname=conn.server_hostname,
                    timeout=client_timeout,
                )
            except TimeoutError:
                raise PollError(f"{self.where}: {conn.server} did not answer in time") from None
            except aiohttp.ClientConnectionError as exc:
                raise PollError(f"{self.where}: cannot reach {conn.server} ({_short(exc)})") from None
            if resp.status == 401:
                resp.release()
                if attempt == 0:
                    conn = await self.reload(conn)
                    continue
                raise KubeAuthError(
                    f"{self.where}: the API refused the credentials (HTTP 401 Unauthorized); "
                    f"renew the user's token in {conn.source}"
                )
            try:
                yield resp
            finally:
                resp.release()
            return

    def http_error(self, status: int, body: bytes, doing: str) -> PollError:
        message = status_message(body)
        hint = ""
        if status == 403:
            hint = "; grant the user list and watch on it"
        elif status == 404:
            hint = "; is that API installed in the cluster?"
        text = f"{self.where}: HTTP {status} {doing}" + (f": {message}" if message else "") + hint
        return PollError(text if len(text) <= 300 else text[:297] + "...")

    # --- shared informers and their users ---------------------------------------------------------

    def informer_slot(self, key: str) -> Any:
        return self._users.informers.get(key)

    def set_informer(self, key: str, informer: Any) -> None:
        self._users.informers[key] = informer

    def acquire(self) -> None:
        self._users.count += 1

    async def release(self) -> None:
        """One user is done; the last one stops every watch."""
        self._users.count -= 1
        if self._users.count > 0:
            return
        informers = list(self._users.informers.values())
        self._users.informers.clear()
        for inf in informers:
            await inf.stop()
