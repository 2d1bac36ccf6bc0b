"""Authentication shared by the OpenStack collectors.

Clouds come from ``clouds.yaml`` through openstacksdk's own loader; authentication and the
service catalog go through its keystoneauth session (blocking, so run off the event loop).
Polling then goes through the poller's shared aiohttp client with the session's token: no
thread per request, and a 401 re-authenticates once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from collectors.base import SDK_IMPORT_LOCK
from sovereign_tui.model import Observation
from sovereign_tui.poller import PollContext, PollError, Target


@dataclass(frozen=True)
class CloudRef:
    cloud: str
    """Name of the cloud in clouds.yaml."""
    clouds_yaml: str | None = None
    """Path of clouds.yaml; None searches openstacksdk's usual places."""
    region: str | None = None
    interface: str = "public"


class AuthError(PollError):
    pass


class EndpointMissing(PollError):
    """The catalog has no endpoint of the service type (a collector may treat that as "absent")."""


class CloudSession:
    """One authenticated keystoneauth session per cloud, shared by that cloud's collectors."""

    def __init__(self, ref: CloudRef) -> None:
        self.ref = ref
        self._session: Any = None
        self._region: Any = None
        self._token: str | None = None
        self._lock = asyncio.Lock()

    def _load(self) -> Any:
        import openstack.config
        from openstack import exceptions

        files = [self.ref.clouds_yaml] if self.ref.clouds_yaml else None
        try:
            config = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
            region = config.get_one(cloud=self.ref.cloud, region_name=self.ref.region)
        except exceptions.ConfigException as exc:
            where = self.ref.clouds_yaml or "clouds.yaml"
            raise AuthError(f"{where}: {exc} (check the cloud name '{self.ref.cloud}')") from None
        self._region = region
        return region.get_session()

    def _token_and_endpoint(self, service_type: str, refused: str | None) -> tuple[str, str]:
        with SDK_IMPORT_LOCK:
            from keystoneauth1 import exceptions as ks

            if self._session is None:
                self._session = self._load()
        session = self._session
        if refused is not None and refused == self._token:
            session.invalidate()  # only once for the collectors that all saw the same 401
        try:
            token = session.get_token()
            # The cloud's own override (e.g. ``baremetal_endpoint_override`` for a standalone
            # Ironic without Keystone) wins over the catalog, as in openstacksdk.
            endpoint = self._region.get_endpoint(service_type) or session.get_endpoint(
                service_type=service_type, interface=self.ref.interface, region_name=self.ref.region
            )
        except ks.Unauthorized:
            raise AuthError(
                f"cloud '{self.ref.cloud}': Keystone refused the credentials (check clouds.yaml)"
            ) from None
        except ks.EndpointNotFound:
            raise EndpointMissing(
                f"cloud '{self.ref.cloud}': no {self.ref.interface} '{service_type}' endpoint in the catalog"
            ) from None
        except ks.ConnectFailure as exc:
            raise PollError(f"cloud '{self.ref.cloud}': Keystone unreachable ({_short(exc)})") from None
        except ks.ClientException as exc:
            raise PollError(f"cloud '{self.ref.cloud}': authentication failed ({_short(exc)})") from None
        if token and not endpoint:
            raise EndpointMissing(
                f"cloud '{self.ref.cloud}': no {self.ref.interface} '{service_type}' endpoint in the catalog"
            )
        if not token or not endpoint:
            raise PollError(f"cloud '{self.ref.cloud}': no token or no '{service_type}' endpoint")
        self._token = token
        return token, endpoint.rstrip("/")

    async def credentials(self, service_type: str, *, refused: str | None = None) -> tuple[str, str]:
        """(token, endpoint URL) for a service. `refused` is a token a service answered 401 to:
        a new one is obtained unless another collector of this cloud already did."""
        async with self._lock:
            return await asyncio.to_thread(self._token_and_endpoint, service_type, refused)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ServiceClient:
    """GETs against one service with the session's token; a 401 re-authenticates once."""

    def __init__(self, session: CloudSession, service_type: str, name: str) -> None:
        self.session = session
        self.service_type = service_type
        self.name = name

    async def get_json(
        self,
        http: aiohttp.ClientSession,
        url_or_path: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> tuple[Any, Mapping[str, str]]:
        token, endpoint = await self.session.credentials(self.service_type)
        for attempt in (0, 1):
            url = url_or_path if url_or_path.startswith("http") else endpoint + url_or_path
            req_headers = {"X-Auth-Token": token, "Accept": "application/json", **(headers or {})}
            try:
                async with http.get(
                    url, headers=req_headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
                ) as resp:
                    body = await resp.read()
                    if resp.status == 401 and attempt == 0:
                        token, endpoint = await self.session.credentials(self.service_type, refused=token)
                        continue
                    if resp.status >= 400:
                        raise PollError(f"{self.name}: HTTP {resp.status} from {_path(url)}{_fault(body)}")
                    try:
                        return orjson.loads(body), resp.headers
                    except orjson.JSONDecodeError:
                        raise PollError(f"{self.name}: malformed JSON from {_path(url)}") from None
            except aiohttp.ClientConnectionError as exc:
                raise PollError(f"{self.name}: cannot reach {_origin(url)} ({_short(exc)})") from None
        raise PollError(f"{self.name}: token refused twice (HTTP 401); check the credentials")


def _path(url: str) -> str:
    from yarl import URL

    return URL(url).path


def _origin(url: str) -> str:
    from yarl import URL

    u = URL(url)
    return f"{u.host}:{u.port}"


def _fault(body: bytes) -> str:
    """The service's own message, when its error body has one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(doc, dict):
        for value in doc.values():
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return f": {value['message']}"
        if isinstance(doc.get("error_message"), str):
            try:
                inner = orjson.loads(doc["error_message"])
                return f": {inner.get('faultstring', '')}"
            except orjson.JSONDecodeError:
                return f": {doc['error_message']}"
        errors = doc.get("errors")  # Placement (and the API-SIG guideline): errors[].detail
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            detail = errors[0].get("detail") or errors[0].get("title")
            if isinstance(detail, str):
                return f": {' '.join(detail.split())}"
    return ""


class CloudServiceCollector:
    """What the one-target OpenStack collectors share: the cloud, its session, a client for the
    collector's service type, and one poll target keyed by the cloud's name."""

    name: str
    service_type: str

    def __init__(
        self,
        ref: CloudRef,
        *,
        interval_s: float = 15.0,
        session: CloudSession | None = None,
        page_size: int = 1000,
    ) -> None:
        self.ref = ref
        self.page_size = page_size
        self.interval_s = interval_s
        self.session = session or CloudSession(ref)
        self.client = ServiceClient(self.session, self.service_type, self.name)
        self.target_id = f"{self.name}:{ref.cloud}"

    def targets(self) -> list[Target]:
        return [
            Target(
                id=self.target_id,
                source=self.name,
                endpoint=f"cloud:{self.ref.cloud}",
                interval_s=self.interval_s,
                poll=self.poll,
                fingerprint=repr(self.ref),
            )
        ]

    async def poll(self, ctx: PollContext) -> Observation:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
