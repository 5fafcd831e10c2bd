"""The Entra ID tenant behind the Graph stand-in: applications, their keys, sign-in, tokens.

Applications are registrations with a client id (`appId`) and an object id; each holds
keyCredentials (the dedicated Exchange hybrid application holds the Auth Certificate's
public keys), may sign in with a secret or a certificate, and holds Graph application
permissions. Reading an application needs Application.Read.All (or a ReadWrite or
Directory permission); changing it needs Application.ReadWrite.All, or
Application.ReadWrite.OwnedBy when the caller owns it. Anything less is 403, as in Graph.

Tokens are opaque to clients (as Microsoft says they must be) and live an hour. Faults
(`GraphFaultSpec`) answer in place of a request: 403, 429 with Retry-After, a 5xx, or a
dropped connection; one with `times` set is used up after that many requests.

Everything holds the org's lock: a rehearsal's reset rebuilds the tenant with the org.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.certs import CertMaterial
from lab.graph import client_assertion
from lab.graph.errors import GraphError, TokenError
from lab.graph.key_credentials import StoredKey, parse_patch, seeded
from lab.scenario import EntraSpec, GraphFaultSpec, validate_graph_fault

TOKEN_LIFETIME = 3599
GRAPH_RESOURCE = "https://graph.microsoft.com"
READ = frozenset({"Application.Read.All", "Application.ReadWrite.All",
                  "Directory.Read.All", "Directory.ReadWrite.All"})
WRITE = frozenset({"Application.ReadWrite.All", "Directory.ReadWrite.All"})
OWNED_BY = "Application.ReadWrite.OwnedBy"


@dataclass
class Application:
    app_id: str
    object_id: str
    display_name: str
    keys: list[StoredKey]
    secret: str
    permissions: tuple[str, ...]
    owners: tuple[str, ...]


@dataclass(frozen=True)
class Grant:
    """What an access token stands for: the client and its permissions."""

    client_id: str
    permissions: frozenset[str]
    expires_at: float


@dataclass
class Directory:
    spec: EntraSpec
    lock: threading.RLock
    applications: dict[str, Application] = field(default_factory=dict)  # by app_id
    tokens: dict[str, Grant] = field(default_factory=dict)
    faults: list[GraphFaultSpec] = field(default_factory=list)

    @classmethod
    def build(cls, spec: EntraSpec, materials: dict[str, CertMaterial],
              lock: threading.RLock) -> Directory:
        """The tenant as the scenario seeds it; `materials` are the scenario's certificates."""
        directory = cls(spec=spec, lock=lock, faults=list(spec.faults))
        for app in spec.applications:
            directory.applications[app.app_id] = Application(
                app_id=app.app_id, object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, app.app_id)),
                display_name=app.display_name or f"app-{app.app_id[:8]}",
                keys=[seeded(materials[cert_id]) for cert_id in app.keys],
                secret=app.secret, permissions=app.permissions, owners=app.owners)
        return directory

    @property
    def tenant_id(self) -> str:
        return self.spec.tenant_id

    # -- faults ------------------------------------------------------------------------

    def add_fault(self, fault: dict[str, Any]) -> None:
        spec = validate_graph_fault(fault)
        with self.lock:
            self.faults.append(spec)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, operation: str) -> GraphFaultSpec | None:
        """The first fault for this operation ("token", "read", "write"), used up once."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.operation not in (operation, "any"):
                    continue
                if fault.times == 1:
                    del self.faults[index]
                elif fault.times > 1:
                    self.faults[index] = dataclasses.replace(fault, times=fault.times - 1)
                return fault
            return None

    def unreachable(self) -> bool:
        """An "unreachable" fault for every operation: the whole host is down."""
        with self.lock:
            return any(f.kind == "unreachable" and f.operation == "any" for f in self.faults)

    # -- sign-in ---------------------------------------------------------------------------

    def issue_token(self, form: dict[str, str], basic: tuple[str, str] | None, *,
                    token_endpoints: Iterable[str], scopes: Iterable[str]) -> dict[str, Any]:
        """The client-credentials grant (RFC 6749 4.4) as Entra answers it."""
        client_id = form.get("client_id") or (basic[0] if basic else "")
        if not client_id:
            raise TokenError(400, "invalid_request", 900144, "The request body must contain "
                             "the following parameter: 'client_id'.")
        if form.get("grant_type") != "client_credentials":
            raise TokenError(400, "unsupported_grant_type", 70003, "The app requested an "
                             "unsupported grant type "
                             f"'{form.get('grant_type', '')}'.")
        scope = form.get("scope", "")
        if not scope.endswith("/.default") or " " in scope.strip():
            raise TokenError(400, "invalid_scope", 1002012, f"The provided value for scope "
                             f"{scope} is not valid. Client credential flows must have a scope "
                             "value with /.default suffixed to the resource identifier "
                             "(application ID URI).")
        if scope.removesuffix("/.default").rstrip("/") not in {s.rstrip("/") for s in scopes}:
            raise TokenError(400, "invalid_resource", 500011, "The resource principal named "
                             f"{scope.removesuffix('/.default')} was not found in the tenant "
                             f"named {self.tenant_id}.")
        with self.lock:
            app = self.applications.get(client_id.lower())
            if app is None:
                raise TokenError(400, "unauthorized_client", 700016, "Application with "
                                 f"identifier '{client_id}' was not found in the directory "
                                 f"'{self.tenant_id}'.")
            self._authenticate(app, form, basic, list(token_endpoints))
            token = "lab." + secrets.token_urlsafe(32)
            self.tokens[token] = Grant(client_id=app.app_id,
                                       permissions=frozenset(app.permissions),
                                       expires_at=time.time() + TOKEN_LIFETIME)
        return {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME, "access_token": token}

    def _authenticate(self, app: Application, form: dict[str, str],
                      basic: tuple[str, str] | None, token_endpoints: list[str]) -> None:
        secret = form.get("client_secret") or (basic[1] if basic else None)
        assertion = form.get("client_assertion")
        if secret is not None:
            if not app.secret or not hmac.compare_digest(secret.encode(), app.secret.encode()):
                raise TokenError(401, "invalid_client", 7000215, "Invalid client secret "
                                 "provided. Ensure the secret being sent in the request is "
                                 "the client secret value, not the client secret ID, for a "
                                 f"secret added to app '{app.app_id}'.")
            return
        if assertion:
            if form.get("client_assertion_type") != client_assertion.JWT_BEARER:
                raise TokenError(400, "invalid_request", 50027, "The client_assertion_type "
                                 "must be " + client_assertion.JWT_BEARER + ".")
            try:
                client_assertion.verify(assertion, client_id=app.app_id,
                                        audiences=token_endpoints, keys=app.keys)
            except client_assertion.AssertionRejected as exc:
                raise TokenError(401, "invalid_client", 700027, str(exc)) from None
            return
        raise TokenError(401, "invalid_client", 7000218, "The request body must contain the "
                         "following parameter: 'client_assertion' or 'client_secret'.")

    def grant_for(self, authorization: str) -> Grant:
        """The grant behind an `Authorization: Bearer` header, or Graph's 401."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        with self.lock:
            grant = self.tokens.get(token.strip())
        if grant is None:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "IDX14100: JWT is not well formed, there are no dots (.).")
        if grant.expires_at < time.time():
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Lifetime validation failed, the token is expired.")
        return grant

    # -- Graph -----------------------------------------------------------------------------

    def find(self, *, app_id: str | None = None, object_id: str | None = None) -> Application:
        with self.lock:
            for app in self.applications.values():
                if (app_id is not None and app.app_id == app_id.lower()) or \
                        (object_id is not None and app.object_id == object_id.lower()):
                    return app
        wanted = f"appId='{app_id}'" if app_id is not None else str(object_id)
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{wanted}' does not "
                         "exist or one of its queried reference-property objects are not "
                         "present.")

    def read(self, grant: Grant, app: Application, select: list[str]) -> dict[str, Any]:
        if not (grant.permissions & READ or self._owner_writes(grant, app)):
            raise _denied()
        with self.lock:
            whole = {"id": app.object_id, "appId": app.app_id, "displayName": app.display_name,
                     "keyCredentials": [k.as_graph(with_key="keyCredentials" in select)
                                        for k in app.keys]}
        return {k: v for k, v in whole.items() if not select or k in select}

    def replace_keys(self, grant: Grant, app: Application, body: Any) -> None:
        """PATCH: the keyCredentials collection becomes exactly what the body lists."""
        if not (grant.permissions & WRITE or self._owner_writes(grant, app)):
            raise _denied()
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        unknown = [k for k in body if k != "keyCredentials" and not k.startswith("@odata.")]
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"The lab's Graph updates only "
                             f"keyCredentials, not '{unknown[0]}'.")
        if "keyCredentials" not in body:
            return
        with self.lock:
            app.keys = parse_patch(body["keyCredentials"], app.keys,
                                   max_lifetime_days=self.spec.max_key_lifetime_days)

    def _owner_writes(self, grant: Grant, app: Application) -> bool:
        return OWNED_BY in grant.permissions and grant.client_id in app.owners

    # -- the control API ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "tenant_id": self.tenant_id,
                "hybrid_app_id": self.spec.hybrid_app_id,
                "client_id": self.spec.client_id,
                "max_key_lifetime_days": self.spec.max_key_lifetime_days,
                "applications": [{
                    "app_id": app.app_id, "object_id": app.object_id,
                    "display_name": app.display_name, "permissions": list(app.permissions),
                    "owners": list(app.owners),
                    "keys": [dict(k.as_graph(with_key=False), thumbprint=k.thumbprint)
                             for k in app.keys]} for app in self.applications.values()],
                "faults": [f.as_dict() for f in self.faults],
            }


def _denied() -> GraphError:
    return GraphError(403, "Authorization_RequestDenied",
                      "Insufficient privileges to complete the operation.")
