"""`exauth config check`: can every configured endpoint be opened with its credentials?

Opening a session (and running one harmless read) proves URL, TLS, auth and rights in one
go; each outcome is one line a person can act on. Servers are the writer plus every server
named in `[org.endpoints]`, plus whatever Get-ExchangeServer lists when the writer answers.
"""

from __future__ import annotations

from typing import Any

from config.errors import ConfigError
from config.schema import OrgSettings, Settings
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError
from workers.exchange.parsing import CERT_STORE, server_from
from workers.exchange.target import Endpoint, Statement
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
    servers = _servers(client, org)
    jobs = [(fqdn, endpoint) for fqdn in servers for endpoint in ("exchange", "host")]
    return client.map(lambda job: _probe(client, org, *job), jobs)  # type: ignore[arg-type]


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
