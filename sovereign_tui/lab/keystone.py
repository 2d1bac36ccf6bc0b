"""Keystone v3 of the lab: password and application-credential tokens, a catalog, validation.

Tokens live in one in-process `TokenStore` that the lab's other services validate against, as
keystonemiddleware would against Keystone. What keystoneauth (and so openstacksdk) needs is here:
``GET /`` (300, every version), ``GET /v3`` (the version document), ``POST /v3/auth/tokens``
(201, the token in ``X-Subject-Token``), plus token validation and revocation, the catalog and the
project list.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sovereign_tui.clock import Clock
from sovereign_tui.lab.faults import FaultBoard
from sovereign_tui.lab.httpkit import ApiError, iso_us_z, json_response, read_json
from sovereign_tui.lab.scenario import ROLE_IDS, Project, Scenario, User
from sovereign_tui.lab.timeline import Timeline

TOKEN_LIFETIME_S = 3600.0
REGION = "RegionOne"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
_UNAUTHORIZED = "The request you have made requires authentication."


def error_body(status: int, message: str) -> bytes:
    """Keystone's (and keystonemiddleware's) error format."""
    title = _TITLES.get(status, "Error")
    return orjson.dumps({"error": {"code": status, "title": title, "message": message}})


@dataclass(frozen=True)
class Endpoint:
    service_type: str
    name: str
    url: str
    service_id: str


@dataclass
class Token:
    id: str
    user: User
    project: Project | None
    roles: list[str]
    methods: list[str]
    issued_at: float
    expires_at: float
    """Wall time the token claims to expire at."""
    dies_at: float
    """Monotonic time it actually stops working (earlier than `expires_at` under a fault)."""
    app_credential: str | None = None
    audit_id: str = field(default_factory=lambda: secrets.token_urlsafe(16)[:22])

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


TOKEN: web.RequestKey[Token] = web.RequestKey("token", Token)
"""The request's validated token (set by the service's middleware)."""


class TokenStore:
    """Issued tokens, shared by every service of the lab."""

    def __init__(self, scenario: Scenario, clock: Clock, faults: FaultBoard) -> None:
        self.scenario = scenario
        self.clock = clock
        self.faults = faults
        self.endpoints: list[Endpoint] = []
        self.issued = 0
        """Tokens issued so far (tests count re-authentications)."""
        self._tokens: dict[str, Token] = {}
        self._users = {u.name: u for u in scenario.users}
        self._users_by_id = {u.id: u for u in scenario.users}

    def register(self, service_type: str, name: str, url: str) -> None:
        """Add a service to the catalog handed out with every new token."""
        self.endpoints = [e for e in self.endpoints if e.service_type != service_type]
        sid = hashlib.md5(f"{service_type}:{self.scenario.seed}".encode(), usedforsecurity=False).hexdigest()
        self.endpoints.append(Endpoint(service_type, name, url.rstrip("/"), sid))

    def issue(
        self, user: User, project: Project | None, methods: list[str], app_cred: str | None = None
    ) -> Token:
        now, mono = self.clock.time(), self.clock.monotonic()
        lifetime = self.faults.get("keystone").token_lifetime_s
        roles = list(user.roles.get(project.id, [])) if project is not None else []
        if app_cred is not None:
            cred = next(c for c in self.scenario.app_credentials if c.id == app_cred)
            roles = list(cred.roles)
        token = Token(
            id="gAAAAA" + secrets.token_urlsafe(96),
            user=user,
            project=project,
            roles=roles,
            methods=methods,
            issued_at=now,
            expires_at=now + TOKEN_LIFETIME_S,
            dies_at=mono + (lifetime if lifetime is not None else TOKEN_LIFETIME_S),
            app_credential=app_cred,
        )
        self._tokens[token.id] = token
        self.issued += 1
        return token

    def validate(self, token_id: str | None) -> Token | None:
        """The live token with this id, None when unknown, revoked or expired."""
        if not token_id:
            return None
        token = self._tokens.get(token_id)
        if token is None:
            return None
        if self.clock.monotonic() >= token.dies_at:
            del self._tokens[token_id]
            return None
        return token

    def revoke(self, token_id: str) -> bool:
        return self._tokens.pop(token_id, None) is not None

    def expire_all(self) -> int:
        """Make every issued token invalid now; returns how many there were."""
        n = len(self._tokens)
        self._tokens.clear()
        return n

    def require(self, request: web.Request, identity_url: str) -> Token:
        """The request's valid token, or keystonemiddleware's 401."""
        token = self.validate(request.headers.get("X-Auth-Token"))
        if token is None:
            headers = {"WWW-Authenticate": f'Keystone uri="{identity_url}"'}
            raise ApiError(401, _UNAUTHORIZED, headers, body=error_body(401, _UNAUTHORIZED))
        return token

    # --- authentication --------------------------------------------------------------------

    def authenticate(self, body: Any) -> Token:
        try:
            identity = body["auth"]["identity"]
            methods = list(identity["methods"])
        except (TypeError, KeyError):
            raise ApiError(400, "Expecting to find auth.identity.methods in the request body") from None
        scope = body["auth"].get("scope")
        if "application_credential" in methods:
            return self._app_credential(identity.get("application_credential") or {})
        if "password" in methods:
            user = self._password_user(identity.get("password") or {})
        elif "token" in methods:
            old = self.validate((identity.get("token") or {}).get("id"))
            if old is None:
                raise ApiError(401, _UNAUTHORIZED)
            user = old.user
        else:
            raise ApiError(401, f"Unsupported authentication methods {methods}")
        project = self._scope(user, scope)
        return self.issue(user, project, methods)

    def _password_user(self, password: Any) -> User:
        spec = password.get("user") if isinstance(password, dict) else None
        if not isinstance(spec, dict) or "password" not in spec:
            raise ApiError(400, "Expecting to find user.password in the request body")
        user = self._users_by_id.get(spec.get("id", "")) or self._users.get(spec.get("name", ""))
        domain = spec.get("domain") or {}
        if user is not None and "id" not in spec and not _in_domain(domain, user.domain_id):
            user = None
        if user is None or not secrets.compare_digest(user.password, str(spec["password"])):
            raise ApiError(401, _UNAUTHORIZED)
        return user

    def _app_credential(self, spec: Any) -> Token:
        creds = self.scenario.app_credentials
        cred = next((c for c in creds if c.id == spec.get("id") or c.name == spec.get("name")), None)
        if cred is None or not secrets.compare_digest(cred.secret, str(spec.get("secret", ""))):
            raise ApiError(401, _UNAUTHORIZED)
        user = self._users_by_id[cred.user_id]
        return self.issue(
            user, self.scenario.projects_by_id[cred.project_id], ["application_credential"], cred.id
        )

    def _scope(self, user: User, scope: Any) -> Project | None:
        if scope is None:
            pid = user.default_project_id
            return self.scenario.projects_by_id.get(pid) if pid else None
        spec = scope.get("project") if isinstance(scope, dict) else None
        if spec is None:
            return None  # domain or system scope: no project, no project roles
        project = self.scenario.projects_by_id.get(spec.get("id", ""))
        if project is None:
            project = next(
                (
                    p
                    for p in self.scenario.projects
                    if p.name == spec.get("name") and _in_domain(spec.get("domain") or {}, p.domain_id)
                ),
                None,
            )
        if project is None or project.id not in user.roles:
            raise ApiError(
                401, f"User {user.id} has no access to project {spec.get('id') or spec.get('name')}"
            )
        return project

    # --- views -------------------------------------------------------------------------------

    def catalog(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoints": [
                    {
                        "id": f"{e.service_id[:24]}{i:08x}",
                        "interface": iface,
                        "region": REGION,
                        "region_id": REGION,
                        "url": e.url,
                    }
                    for i, iface in enumerate(("public", "internal", "admin"))
                ],
                "id": e.service_id,
                "type": e.service_type,
                "name": e.name,
            }
            for e in self.endpoints
        ]

    def token_body(self, token: Token) -> dict[str, Any]:
        domain = {"id": "default", "name": "Default"}
        body: dict[str, Any] = {
            "methods": token.methods,
            "user": {
                "domain": domain,
                "id": token.user.id,
                "name": token.user.name,
                "password_expires_at": None,
            },
            "audit_ids": [token.audit_id],
            "expires_at": iso_us_z(token.expires_at),
            "issued_at": iso_us_z(token.issued_at),
        }
        if token.project is not None:
            p = token.project
            body["project"] = {"domain": domain, "id": p.id, "name": p.name}
            body["is_domain"] = False
            body["roles"] = [{"id": ROLE_IDS[r], "name": r} for r in token.roles]
            body["catalog"] = self.catalog()
        if token.app_credential is not None:
            body["application_credential"] = {
                "id": token.app_credential,
                "name": "sovereign-tui",
                "restricted": True,
            }
        return {"token": body}


def _in_domain(spec: Any, domain_id: str) -> bool:
    if not isinstance(spec, dict) or not spec:
        return domain_id == "default"
    return bool(spec.get("id") == domain_id or (spec.get("name") == "Default" and domain_id == "default"))


def _version(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


def make_app(store: TokenStore, faults: FaultBoard, timeline: Timeline, base_url: str) -> web.Application:
    """The Keystone app; `base_url` is where it is served (``http://127.0.0.1:PORT``)."""
    identity = f"{base_url}/v3"

    async def root(request: web.Request) -> web.Response:
        return json_response({"versions": {"values": [_version(base_url)]}}, status=300)

    async def v3(request: web.Request) -> web.Response:
        return json_response({"version": _version(base_url)})

    async def create_token(request: web.Request) -> web.Response:
        token = store.authenticate(await read_json(request))
        return json_response(store.token_body(token), status=201, headers={"X-Subject-Token": token.id})

    def subject(request: web.Request) -> Token:
        store.require(request, identity)
        token = store.validate(request.headers.get("X-Subject-Token"))
        if token is None:
            raise ApiError(404, f"Could not find token: {request.headers.get('X-Subject-Token', '')}")
        return token

    async def get_token(request: web.Request) -> web.Response:
        token = subject(request)
        return json_response(store.token_body(token), headers={"X-Subject-Token": token.id})

    async def head_token(request: web.Request) -> web.Response:
        subject(request)
        return web.Response(status=200)

    async def delete_token(request: web.Request) -> web.Response:
        store.revoke(subject(request).id)
        return web.Response(status=204)

    async def auth_catalog(request: web.Request) -> web.Response:
        store.require(request, identity)
        return json_response({"catalog": store.catalog(), "links": {"self": f"{identity}/auth/catalog"}})

    def project_view(p: Project) -> dict[str, Any]:
        return {
            "id": p.id,
            "name": p.name,
            "domain_id": p.domain_id,
            "description": p.description,
            "enabled": True,
            "is_domain": False,
            "parent_id": p.domain_id,
            "tags": [],
            "options": {},
            "links": {"self": f"{identity}/projects/{p.id}"},
        }

    async def auth_projects(request: web.Request) -> web.Response:
        token = store.require(request, identity)
        mine = [project_view(p) for p in store.scenario.projects if p.id in token.user.roles]
        return json_response(
            {"projects": mine, "links": {"self": f"{identity}/auth/projects", "previous": None, "next": None}}
        )

    async def projects(request: web.Request) -> web.Response:
        token = store.require(request, identity)
        if not token.is_admin:
            raise ApiError(
                403, "You are not authorized to perform the requested action: identity:list_projects."
            )
        name = request.query.get("name")
        found = [project_view(p) for p in store.scenario.projects if name is None or p.name == name]
        return json_response(
            {"projects": found, "links": {"self": f"{identity}/projects", "previous": None, "next": None}}
        )

    async def project(request: web.Request) -> web.Response:
        token = store.require(request, identity)
        pid = request.match_info["id"]
        p = store.scenario.projects_by_id.get(pid)
        if p is None or not (token.is_admin or pid in token.user.roles):
            raise ApiError(404, f"Could not find project: {pid}.")
        return json_response({"project": project_view(p)})

    app = web.Application(middlewares=[faults.middleware("keystone", timeline, error_body)])
    app.router.add_get("/", root)
    app.router.add_get("/v3", v3)
    app.router.add_get("/v3/", v3)
    app.router.add_post("/v3/auth/tokens", create_token)
    app.router.add_get("/v3/auth/tokens", get_token, allow_head=False)
    app.router.add_route("HEAD", "/v3/auth/tokens", head_token)
    app.router.add_delete("/v3/auth/tokens", delete_token)
    app.router.add_get("/v3/auth/catalog", auth_catalog)
    app.router.add_get("/v3/auth/projects", auth_projects)
    app.router.add_get("/v3/projects", projects)
    app.router.add_get("/v3/projects/{id}", project)
    return app
