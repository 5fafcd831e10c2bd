"""The Graph stand-in's routes: the identity platform and Microsoft Graph's applications.

- `GET /common/discovery/instance` instance discovery (what msal asks first about an
  authority it does not know), `GET /{tenant}/v2.0/.well-known/openid-configuration`
  tenant discovery, `POST /{tenant}/oauth2/v2.0/token` the client-credentials grant with a
  secret (body or Basic) or a client assertion;
- `GET|PATCH /v1.0/applications(appId='{appId}')` and `/v1.0/applications/{id}`.

Every request meets the tenant's faults first (a dropped connection, 403, 429 with
Retry-After, 5xx), and every answer is recorded in the org's call log (endpoint "graph"),
without secrets, so a test can see what a client asked and what it was told.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from lab.graph import GraphError, TokenError
from lab.graph.directory import GRAPH_RESOURCE, Directory
from lab.scenario import GraphFaultSpec

if TYPE_CHECKING:
    from lab.http.graph_listener import GraphRequestHandler

ODATA_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
SELECTABLE = ("id", "appId", "displayName", "keyCredentials")
_BY_APP_ID = re.compile(r"^/v1\.0/applications\(appId='([^']*)'\)$")
_BY_OBJECT_ID = re.compile(r"^/v1\.0/applications/([^/]+)$")


class Dropped(Exception):
    """Close the connection without answering (an unreachable Graph)."""


def serve_graph(handler: GraphRequestHandler, url: SplitResult, body: bytes) -> None:
    org = handler.server.org
    directory = org.directory
    if directory is None:  # a server is only started for a scenario with [entra]
        handler.reply_json(404, {"error": "this lab has no [entra] tenant"})
        return
    if directory.unreachable():
        raise Dropped
    path = unquote(url.path)
    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    segments = [p for p in path.split("/") if p]
    base = handler.server.base_url
    if segments[:1] == ["v1.0"]:
        _graph(handler, directory, path, query, body)
    elif path.rstrip("/") == "/common/discovery/instance" and handler.command == "GET":
        _instance_discovery(handler, directory, query, base)
    elif segments[1:] == ["v2.0", ".well-known", "openid-configuration"] \
            and handler.command == "GET":
        if _tenant(directory, segments[0], handler):
            handler.reply_json(200, openid_configuration(base, directory.tenant_id))
    elif segments[1:] == ["oauth2", "v2.0", "token"] and handler.command == "POST":
        if _tenant(directory, segments[0], handler):
            _token(handler, directory, body, base)
    else:
        handler.reply_json(404, {"error": {"code": "UnknownError",
                                           "message": f"No route {handler.command} {path}"}})


def openid_configuration(base: str, tenant: str) -> dict[str, Any]:
    """The fields of Entra's v2.0 OpenID configuration a client reads."""
    return {
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "exauth.lab",
        "msgraph_host": base.removeprefix("https://"),
    }


def _tenant(directory: Directory, tenant: str, handler: GraphRequestHandler) -> bool:
    if tenant.lower() == directory.tenant_id:
        return True
    error = TokenError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to "
                       "make sure you have the correct tenant ID and are signing into the "
                       "correct cloud.")
    handler.reply_json(error.status, error.body())
    return False


def _instance_discovery(handler: GraphRequestHandler, directory: Directory,
                        query: dict[str, str], base: str) -> None:
    """msal's first question about an unknown authority: is it a real Entra instance?"""
    endpoint = urlsplit(query.get("authorization_endpoint", ""))
    host = base.removeprefix("https://")
    # msal sends the authority's host name without its port (`Authority.instance`).
    if endpoint.scheme != "https" or endpoint.hostname != urlsplit(base).hostname:
        error = TokenError(400, "invalid_instance", 50049, "Unknown or invalid instance.")
        handler.reply_json(error.status, error.body())
        return
    tenant = endpoint.path.strip("/").split("/", 1)[0] or "common"
    handler.reply_json(200, {
        "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, secret = base64.b64decode(token.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(user.replace("+", " ")), unquote(secret.replace("+", " "))


def _token(handler: GraphRequestHandler, directory: Directory, body: bytes, base: str) -> None:
    org = handler.server.org
    form = _form(body)
    command = f"POST /{directory.tenant_id}/oauth2/v2.0/token"
    parameters = {"client_id": form.get("client_id", ""), "scope": form.get("scope", ""),
                  "credential": "assertion" if form.get("client_assertion") else "secret"}
    fault = directory.take_fault("token")
    try:
        if fault is not None:
            _token_fault(fault)
        endpoint = f"{base}/{directory.tenant_id}/oauth2/v2.0/token"
        answer = directory.issue_token(
            form, _basic(handler.headers.get("Authorization", "")),
            token_endpoints=[endpoint, f"{base}/{directory.tenant_id}/oauth2/token"],
            scopes=[base, GRAPH_RESOURCE])
    except TokenError as exc:
        org.record_call(server="graph", endpoint="graph", command=command,
                        parameters=parameters, outcome=f"{exc.status} {exc.error}: "
                        f"AADSTS{exc.code}")
        handler.reply_json(exc.status, exc.body(), exc.headers)
        return
    org.record_call(server="graph", endpoint="graph", command=command, parameters=parameters,
                    outcome="ok")
    handler.reply_json(200, answer, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def _token_fault(fault: GraphFaultSpec) -> None:
    if fault.kind == "unreachable":
        raise Dropped
    if fault.kind == "throttled":
        raise TokenError(429, "temporarily_unavailable", 50196, fault.message or "The server "
                         "is busy; retry later.", headers={"Retry-After": str(fault.retry_after)})
    if fault.kind == "forbidden":
        raise TokenError(403, "access_denied", 50105, fault.message or "The signed in "
                         "application is not allowed to sign in here.")
    raise TokenError(fault.status, "temporarily_unavailable", 90033, fault.message or
                     "A transient error has occurred. Please try again.")


def _graph_fault(fault: GraphFaultSpec) -> GraphError:
    if fault.kind == "unreachable":
        raise Dropped
    if fault.kind == "throttled":
        return GraphError(429, "TooManyRequests", fault.message or "Too many requests. Retry "
                          f"after {fault.retry_after} seconds.",
                          headers={"Retry-After": str(fault.retry_after)})
    if fault.kind == "forbidden":
        return GraphError(403, "Authorization_RequestDenied",
                          fault.message or "Insufficient privileges to complete the operation.")
    code = "UnknownError" if fault.status == 500 else "serviceNotAvailable"
    return GraphError(fault.status, code, fault.message or "The service is temporarily "
                      "unavailable. Please retry.")


def _graph(handler: GraphRequestHandler, directory: Directory, path: str,
           query: dict[str, str], body: bytes) -> None:
    org = handler.server.org
    method = handler.command
    client_request_id = handler.headers.get("client-request-id", "")
    by_app = _BY_APP_ID.match(path)
    by_object = None if by_app else _BY_OBJECT_ID.match(path)
    command = f"{method} {path.removeprefix('/v1.0/')}"
    parameters: dict[str, Any] = {}
    try:
        if not (by_app or by_object):
            segment = path.removeprefix("/v1.0/").split("/")[0].split("(")[0]
            raise GraphError(400, "BadRequest", f"Resource not found for the segment "
                             f"'{segment}'.")
        if method not in ("GET", "PATCH"):
            raise GraphError(405, "Request_BadRequest",
                             f"The lab's Graph does not support {method} on applications.")
        fault = directory.take_fault("read" if method == "GET" else "write")
        if fault is not None:
            raise _graph_fault(fault)
        grant = directory.grant_for(handler.headers.get("Authorization", ""))
        parameters["client_id"] = grant.client_id
        app = directory.find(app_id=by_app.group(1)) if by_app else \
            directory.find(object_id=by_object.group(1) if by_object else "")
        if method == "GET":
            select = _select(query)
            answer = directory.read(grant, app, select)
            org.record_call(server="graph", endpoint="graph", command=command,
                            parameters=dict(parameters, select=",".join(select)),
                            outcome="ok")
            context = f"{handler.server.base_url}/v1.0/$metadata#applications/$entity"
            handler.reply(200, json.dumps({"@odata.context": context, **answer}).encode(),
                          ODATA_JSON, {"request-id": _request_id(),
                                       "client-request-id": client_request_id})
            return
        payload = _json(body)
        if isinstance(payload, dict) and isinstance(payload.get("keyCredentials"), list):
            parameters["key_count"] = len(payload["keyCredentials"])
        directory.replace_keys(grant, app, payload)
    except GraphError as exc:
        org.record_call(server="graph", endpoint="graph", command=command,
                        parameters=parameters, outcome=f"{exc.status} {exc.code}: {exc.message}")
        handler.reply(exc.status, json.dumps(exc.body(client_request_id)).encode(), ODATA_JSON,
                      dict(exc.headers, **{"request-id": _request_id(),
                                           "client-request-id": client_request_id}))
        return
    org.record_call(server="graph", endpoint="graph", command=command, parameters=parameters,
                    outcome="ok")
    handler.reply(204, b"", ODATA_JSON, {"request-id": _request_id(),
                                         "client-request-id": client_request_id})


def _select(query: dict[str, str]) -> list[str]:
    wanted = [p.strip() for p in query.get("$select", "").split(",") if p.strip()]
    for prop in wanted:
        if prop not in SELECTABLE:
            raise GraphError(400, "BadRequest", f"Could not find a property named '{prop}' on "
                             "type 'microsoft.graph.application'.")
    return wanted


def _json(body: bytes) -> Any:
    if not body.strip():
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please "
                         "ensure Content-Type header is set and payload is of valid JSON "
                         "format.") from None


def _request_id() -> str:
    return str(uuid.uuid4())
