"""Microsoft Graph for the dedicated hybrid application: tokens, reads, the one write.

Tokens come from msal's ConfidentialClientApplication (client credentials: a certificate
or a secret, `[org.hybrid_app]`); a national cloud's or the lab's authority is used as
configured, without asking Microsoft's global instance discovery about it. HTTP is
`requests` with TLS checked against the configured CA bundle on every request (requests
lets $REQUESTS_CA_BUNDLE override a session's own `verify`, so it is passed per call).

Graph throttles: a 429 or 503 says how long to wait in Retry-After. Those, other 5xx
answers and dropped connections are retried up to MAX_ATTEMPTS times, waiting what Graph
said (capped at MAX_WAIT; a longer demand ends the call with that figure) or a short
backoff. A PATCH of keyCredentials replaces the collection with the same body each time,
so repeating it is safe. Every other failure is one `GraphError` whose line carries
Graph's own code and message.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import msal
import requests

from config.errors import ExauthError
from config.schema import HybridAppSettings
from workers.hybrid_app.key_findings import HybridAppRead
from workers.hybrid_app.keys import keys_from

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
MAX_WAIT = 60.0  # seconds; Graph's usual Retry-After is a few
BACKOFF = (1.0, 2.0, 4.0)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
SELECT = "id,appId,displayName,keyCredentials"
# Hosts msal knows as Microsoft's; any other authority (the lab) is used as configured.
_MICROSOFT_AUTHORITIES = frozenset({
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net",
    "login.microsoftonline.us", "login.partner.microsoftonline.cn", "login.chinacloudapi.cn",
})


class GraphError(ExauthError):
    """A Graph or sign-in failure; str() is one line with Graph's own reason."""

    kind: ClassVar[str] = "graph"

    def __init__(self, what: str, detail: str, *, status: int | None = None,
                 code: str = "") -> None:
        self.what = what
        self.status = status
        self.code = code
        self.detail = " ".join(detail.split())
        super().__init__(f"Microsoft Graph: {what}: {self.detail}")


class GraphUnavailable(GraphError):
    """No answer, a 5xx, or still throttled after the retries: later may work."""

    kind = "unavailable"
    permanent = False


class GraphDenied(GraphError):
    """403: exauth's application lacks the permission (README "Entra ID")."""

    kind = "denied"
    permanent = True


class GraphNotFound(GraphError):
    """404: no application with that appId in the tenant."""

    kind = "not_found"
    permanent = True


class GraphRejected(GraphError):
    """400: Graph refused what was sent (a malformed key, a tenant policy)."""

    kind = "rejected"
    permanent = True


class GraphSignInFailed(GraphError):
    """The identity platform refused exauth's application (wrong secret, unknown client,
    unknown tenant): the same on every attempt."""

    kind = "sign_in"
    permanent = True


class _VerifyingSession(requests.Session):
    """A session whose TLS check is the configured one even under $REQUESTS_CA_BUNDLE."""

    def __init__(self, verify: bool | str, timeout: float) -> None:
        super().__init__()
        self._verify = verify
        self._timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        if kwargs.get("verify") is None:
            kwargs["verify"] = self._verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


class GraphClient:
    """One org's Graph, signed in as exauth's application (`[org.hybrid_app]`)."""

    def __init__(self, settings: HybridAppSettings, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._http = _VerifyingSession(settings.cert_validation(), float(settings.timeout))
        self._app: msal.ConfidentialClientApplication | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ----------------------------------------------------------------------------

    def _msal(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            host = urlsplit(self.settings.authority).hostname or ""
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.settings.client_id, client_credential=self.settings.credential(),
                    authority=self.settings.authority_url,
                    http_client=_VerifyingSession(self.settings.cert_validation(),
                                                  float(self.settings.timeout)),
                    instance_discovery=None if host in _MICROSOFT_AUTHORITIES else False)
            except ValueError as exc:  # tenant discovery refused: unknown tenant/authority
                raise GraphSignInFailed("sign-in", str(exc).split(". ")[0]) from None
            except requests.RequestException as exc:
                raise GraphUnavailable("sign-in", _network(exc)) from None
        return self._app

    def token(self) -> str:
        try:
            result = self._msal().acquire_token_for_client([self.settings.scope])
        except requests.RequestException as exc:
            raise GraphUnavailable("sign-in", _network(exc)) from None
        except msal.exceptions.MsalServiceError as exc:  # a 5xx from the token endpoint
            raise GraphUnavailable("sign-in", str(exc)) from None
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", "error"))
        description = str(result.get("error_description", "")).split(" Trace ID:")[0]
        cls = GraphUnavailable if error == "temporarily_unavailable" else GraphSignInFailed
        raise cls("sign-in", f"{error}: {description}", code=error)

    # -- Graph -------------------------------------------------------------------------------

    def _app_url(self, app_id: str) -> str:
        return f"{self.settings.graph_url}/v1.0/applications(appId='{quote(app_id)}')"

    def read_application(self, app_id: str | None = None) -> dict[str, Any]:
        """The application's id, appId, displayName and keyCredentials (with each `key`)."""
        app_id = app_id or self.settings.app_id
        response = self._call("GET", self._app_url(app_id), f"read application {app_id}",
                              params={"$select": SELECT})
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("keyCredentials"), list):
            raise GraphUnavailable(f"read application {app_id}", "the answer has no "
                                   "keyCredentials")
        return body

    def replace_key_credentials(self, body: list[dict[str, Any]],
                                app_id: str | None = None) -> None:
        """PATCH: the application's keyCredentials become exactly `body`."""
        app_id = app_id or self.settings.app_id
        self._call("PATCH", self._app_url(app_id), f"update application {app_id}",
                   json={"keyCredentials": body})

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        token = self.token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            last = attempt == MAX_ATTEMPTS
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except requests.RequestException as exc:
                if last:
                    raise GraphUnavailable(what, _network(exc)) from None
                self._wait(BACKOFF[min(attempt, len(BACKOFF)) - 1], what, _network(exc))
                continue
            if response.status_code < 400:
                return response
            code, message = _graph_reason(response)
            if response.status_code in RETRIED_STATUSES and not last:
                wait = _retry_after(response)
                if wait is None:
                    wait = BACKOFF[min(attempt, len(BACKOFF)) - 1]
                if wait > MAX_WAIT:
                    raise GraphUnavailable(what, f"{response.status_code} {code}: {message} "
                                           f"(Graph asks to wait {wait:.0f} s)",
                                           status=response.status_code, code=code)
                self._wait(wait, what, f"{response.status_code} {code}")
                continue
            raise _error_for(response.status_code)(
                what, f"{response.status_code} {code}: {message}",
                status=response.status_code, code=code)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _wait(self, seconds: float, what: str, why: str) -> None:
        log.info("Graph %s: %s; retrying in %.0f s", what, why, seconds)
        self._sleep(seconds)


def _error_for(status: int) -> type[GraphError]:
    if status == 403:
        return GraphDenied
    if status == 404:
        return GraphNotFound
    if status in (400, 409, 422):
        return GraphRejected
    if status == 401:
        return GraphSignInFailed
    return GraphUnavailable


def _graph_reason(response: requests.Response) -> tuple[str, str]:
    """Graph's `{"error": {"code", "message"}}`, or the status text."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))
    return response.reason or "", response.text[:200]


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _network(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS check failed (is ca_bundle the CA of this Graph?)"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "no connection (is Graph reachable from here?)"
    return type(exc).__name__


def read_keys(settings: HybridAppSettings, client: GraphClient | None = None) -> HybridAppRead:
    """The application's keys, or why they could not be read (never raises GraphError)."""
    own = client is None
    client = client or GraphClient(settings)
    try:
        return HybridAppRead(app_id=settings.app_id,
                             keys=tuple(keys_from(client.read_application())))
    except GraphError as exc:
        return HybridAppRead(app_id=settings.app_id, keys=None,
                             error=str(exc).removeprefix("Microsoft Graph: "))
    finally:
        if own:
            client.close()
