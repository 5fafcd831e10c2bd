"""`exauth config check`: can every configured endpoint be opened with its credentials?

Opening a session (and running one harmless read) proves URL, TLS, auth and rights in one
go; each outcome is one line a person can act on. Servers are the writer plus every server
named in `[org.endpoints]`, plus whatever Get-ExchangeServer lists when the writer answers.

An org with `[org.hybrid_app]` also gets one row for Microsoft Graph (endpoint "graph"):
exauth's Entra application signs in and reads the dedicated hybrid application's keys,
exactly what status and the upload step do first. Each failure names its fix: the
credential (sign-in refused), the permission or ownership (403), the app_id (404), the
network, authority or CA (no answer).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.errors import ConfigError
from config.schema import HybridAppSettings, OrgSettings, Settings
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError
from workers.exchange.parsing import CERT_STORE, server_from
from workers.exchange.target import Endpoint, Statement
from workers.hybrid_app.graph_client import GraphClient, GraphError
from workers.status.collect import SERVER_PROPERTIES
from workers.status.findings import is_in_scope

# A read each endpoint must be able to run for status to work, so a pass means something.
_PROBES: dict[Endpoint, Statement] = {
    "exchange": Statement("Get-AuthConfig"),
    "host": Statement.of("Get-ChildItem", Path=CERT_STORE),
}


def check(settings: Settings) -> list[dict[str, Any]]:
    """One row per org, server and endpoint:
    {"org", "server", "endpoint", "url", "ok", "kind", "message"}."""
    rows: list[dict[str, Any]] = []
    for org in settings.orgs:
        rows.extend(check_org(org))
    return rows


def check_org(org: OrgSettings) -> list[dict[str, Any]]:
    client = ExchangeClient(org)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="check-graph") as graph:
        # Graph is asked while the servers are (a slow tenant does not add to Exchange).
        graph_row = graph.submit(probe_graph, org.name, org.hybrid_app) \
            if org.hybrid_app is not None else None
        servers = _servers(client, org)
        jobs = [(fqdn, endpoint) for fqdn in servers for endpoint in ("exchange", "host")]
        rows = client.map(lambda job: _probe(client, org, *job), jobs)  # type: ignore[arg-type]
        return rows + ([graph_row.result()] if graph_row is not None else [])


# Per Graph failure kind (workers.hybrid_app.graph_client): what to do about it.
GRAPH_FIXES = {
    "sign_in": "exauth's Entra application could not sign in: check client_id and tenant_id, "
               "and that its secret (secret_env / secret_file) or certificate_file is the "
               "current one registered under Certificates & secrets",
    "denied": "exauth's Entra application may not read the hybrid application: grant it the "
              "Microsoft Graph application permission Application.ReadWrite.OwnedBy with "
              "admin consent and make it an owner of the hybrid application (README "
              "\"Entra ID\")",
    "not_found": "no application with this app_id in the tenant: set [org.hybrid_app] "
                 "app_id to the dedicated Exchange hybrid application's Application (client) "
                 "ID",
    "rejected": "Graph refused the request: check graph_url",
    "unavailable": "Microsoft Graph or the sign-in endpoint did not answer: check authority "
                   "and graph_url, the network and proxy from this host, and ca_bundle",
}


def probe_graph(org_name: str, settings: HybridAppSettings) -> dict[str, Any]:
    """Sign in as exauth's application and read the dedicated application's keys."""
    row: dict[str, Any] = {"org": org_name, "server": "graph", "endpoint": "graph",
                           "url": settings.graph_url, "ok": False, "kind": None,
                           "message": ""}
    try:
        with GraphClient(settings) as client:
            application = client.read_application()
    except ConfigError as exc:  # e.g. the secret variable is not set
        row.update(kind="config", message=str(exc))
        return row
    except GraphError as exc:
        reason = str(exc).removeprefix("Microsoft Graph: ")
        fix = GRAPH_FIXES.get(exc.kind, GRAPH_FIXES["unavailable"])
        row.update(kind=f"graph_{exc.kind}", message=f"graph: {fix} ({reason})")
        return row
    keys = len(application.get("keyCredentials") or [])
    row.update(ok=True, message=f"graph: signed in as {settings.client_id} and read "
               f"application {settings.app_id} ({keys} key{'s' if keys != 1 else ''}) "
               f"({settings.graph_url})")
    return row


def _servers(client: ExchangeClient, org: OrgSettings) -> list[str]:
    known = [org.writer, *(fqdn.lower() for fqdn in org.endpoints)]
    try:
        listed = client.exchange_any(known, "Get-ExchangeServer", select=SERVER_PROPERTIES)
    except (ExchangeError, ConfigError):
        listed = []
    for obj in listed:
        _, fqdn, _, version, roles = server_from(obj)
        if fqdn and is_in_scope(roles, version):
            known.append(fqdn.lower())
    return list(dict.fromkeys(known))


def _probe(client: ExchangeClient, org: OrgSettings, fqdn: str, endpoint: Endpoint) -> dict:
    url = org.exchange_url(fqdn) if endpoint == "exchange" else org.host_url(fqdn)
    row: dict[str, Any] = {
        "org": org.name,
        "server": fqdn,
        "endpoint": endpoint,
        "url": url,
        "ok": False,
        "kind": None,
        "message": "",
    }
    try:
        client.session(fqdn, endpoint).run_statements([_PROBES[endpoint]])
    except ConfigError as exc:  # e.g. the password variable is not set
        row.update(kind="config", message=str(exc))
        return row
    except ExchangeError as exc:
        row.update(kind=exc.kind, message=exc.line())
        return row
    row.update(ok=True, message=f"{fqdn}: {endpoint} endpoint OK ({url})")
    return row
