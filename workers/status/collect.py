"""Status collection: live Exchange -> the observation model (`workers.status.observation.OrgObs`).

Only I/O lives here; what the observations mean (findings, actions) is decided by the pure
code in `workers.status.report`. What could not be asked is recorded as such (reachable False and
one line of why, certificates None), never guessed.

Order of work: the org-wide reads (Get-AuthConfig, Get-ExchangeServer,
Get-HybridConfiguration) go to the writer's Exchange endpoint, falling back to other known
servers, then to host endpoint + snap-in. Then, concurrently (bounded): every in-scope
server's Exchange certificate store, listed in one invocation through that same Exchange
session (`Get-ExchangeCertificate -Server X` is answered from any endpoint:
workers.status.listing), and on each server's host endpoint its "Exchange Back End" binding
with the store certificate it names (one invocation of two statements). A server whose own
Exchange endpoint shows a reason to be broken (back end unclean, current Auth certificate
not in its store) or that the listing did not answer is then asked on its own endpoints
(Exchange endpoint, or host + snap-in when that is broken), exactly as before, so its
status says what is wrong with it. That is one listing of certificates per server: it
answers presence and duplicates, nothing is asked by thumbprint.

A hybrid org with `[org.hybrid_app]` also has its dedicated Entra application's keys read
from Microsoft Graph (workers.hybrid_app), on a thread of its own while the servers are
asked; a Graph failure is recorded as the one line of why, never raised.

Time is the org's own: the writer's host endpoint is asked `Get-Date -Format o` alongside the
per-server reads, and `checked_at` (which every "days left", "overdue" and "effective in"
is measured from) is that time; when the writer cannot say, this machine's clock. Exchange
judges expiry and publishes on its own clock, and a lab's virtual clock is seen the same
way by every exauth process, not only by one that runs the lab.

Every read asks only for the properties the parsers use (`| Select-Object -Property`):
one real ExchangeServer is 100-200 KB of CLIXML, and reading whole objects made a 50-server
org cost seconds of client CPU before a single server was asked anything.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from config.schema import OrgSettings
from workers.clock import SYSTEM_CLOCK, Clock
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError, ExchangeFailed
from workers.exchange.parsing import (
    BACKEND_SITE,
    CERT_STORE,
    auth_config_from,
    backend_binding_from,
    facts_from_exchange_certificate,
    hybrid_app_id_from,
    hybrid_from,
    parse_datetime,
    prop,
    server_from,
    text,
)
from workers.exchange.target import Statement
from workers.hybrid_app.graph_client import read_keys
from workers.status import listing
from workers.status.findings import is_in_scope
from workers.status.observation import AuthConfigObs, BackendObs, CertFacts, OrgObs, ServerObs
from workers.status.report import build_status
from workers.status.report_model import OrgStatus

log = logging.getLogger(__name__)

# What each read needs: the properties `workers.exchange.parsing` reads, nothing else.
AUTH_CONFIG_PROPERTIES = (
    "CurrentCertificateThumbprint",
    "NextCertificateThumbprint",
    "NextCertificateEffectiveDate",
    "PreviousCertificateThumbprint",
)
SERVER_PROPERTIES = (
    "Name",
    "Fqdn",
    "Site",
    "ServerRole",
    "AdminDisplayVersion",
    "IsEdgeServer",
    "IsMailboxServer",
    "IsClientAccessServer",
)
HYBRID_PROPERTIES = ("Name",)  # an object at all is the answer
AUTH_SERVER_PROPERTIES = ("Name", "Type", "Realm", "ApplicationIdentifier", "Enabled")
EXCHANGE_CERTIFICATE_PROPERTIES = ("RawData", "Thumbprint")  # facts come from RawData
BINDING_PROPERTIES = (
    "protocol",
    "bindingInformation",
    "certificateHash",
    "certificateStoreName",
    "ItemXPath",  # Get-WebBinding names the binding's site here
)
STORE_PROPERTIES = ("Thumbprint", "RawData", "PSChildName", "Subject", "NotBefore", "NotAfter")

Part = Literal["clock", "listing", "certificates", "backend"]
CLOCK = Statement.of("Get-Date", Format="o")  # ISO 8601 with offset, in PowerShell 5.1 too


def status(org: OrgSettings, *, now: datetime | None = None, clock: Clock = SYSTEM_CLOCK
           ) -> OrgStatus:
    """The status (DESIGN.md "Status JSON") of one org, collected now."""
    return build_status(collect(org, now=now, clock=clock))


def collect(
    org: OrgSettings, *, now: datetime | None = None, client: ExchangeClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> OrgObs:
    """Observe one org. Raises ExchangeError when no server answers the org-wide reads.

    `now` fixes the time the observation is judged at; None asks the org (see above), and
    `clock` answers when the org cannot say."""
    client = client or ExchangeClient(org)
    known = [org.writer, *org.endpoints]

    auth = _auth_config(
        client.exchange_any(known, "Get-AuthConfig", select=AUTH_CONFIG_PROPERTIES)
    )
    listed = client.exchange_any(known, "Get-ExchangeServer", select=SERVER_PROPERTIES)
    servers = [_server(obj) for obj in listed]
    hybrid = hybrid_from(
        client.exchange_any(known, "Get-HybridConfiguration", select=HYBRID_PROPERTIES)
    )

    # A hybrid org's dedicated application is read from Graph while the servers are asked;
    # an org that is not hybrid, or has no [org.hybrid_app], never calls Graph.
    graph = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exauth-graph")
    app_read = graph.submit(read_keys, org.hybrid_app) if hybrid and org.hybrid_app else None
    graph.shutdown(wait=False)
    # Exchange records the application it uses on its EvoSTS Auth Server: compared with ours.
    exchange_app_id = _exchange_app_id(client, known, org) if app_read is not None else None

    # Only in-scope servers are asked; the report applies the same rule to what it shows.
    in_scope = [s for s in servers if is_in_scope(s.roles, s.version)]
    # The writer's clock is asked with them (no extra wait), unless the caller fixed the time.
    writer_clock: list[tuple[str, Part]] = [] if now else [(org.writer, "clock")]
    # Every store is listed through the writer's Exchange session (workers.status.listing),
    # alongside the per-server IIS reads on the host endpoints.
    fqdns = [server.fqdn for server in in_scope]
    jobs = writer_clock + [(org.writer, "listing")] + [(fqdn, "backend") for fqdn in fqdns]
    asked_at = clock.now()
    results = client.map(lambda job: _ask(client, *job, fqdns=fqdns), jobs)
    told = results.pop(0) if writer_clock else None
    checked_at = (now or (told if isinstance(told, datetime) else asked_at)).astimezone(UTC)
    listed = results.pop(0)
    observed = {s.fqdn.lower(): s for s in servers}
    for fqdn, result in zip(fqdns, results, strict=True):
        observed[fqdn.lower()] = _merge(observed[fqdn.lower()], "backend", result, client)
    # A server is answered by the listing when nothing that breaks its own Exchange endpoint
    # shows: its back end reads clean and its store holds the current Auth certificate
    # (without it, serialization signing fails there). Any other server is asked on its own
    # endpoints as before, so a broken or unreachable one is reported the same way.
    alone: list[str] = []
    for fqdn in fqdns:
        facts = _listed_facts(listed, fqdn)
        if isinstance(facts, tuple) and _endpoint_sound(observed[fqdn.lower()].backend,
                                                        facts, auth.current):
            observed[fqdn.lower()] = _merge(observed[fqdn.lower()], "certificates", facts, client)
        else:
            alone.append(fqdn)
    own = client.map(lambda fqdn: _certificates(client, fqdn), alone)
    for fqdn, result in zip(alone, own, strict=True):
        observed[fqdn.lower()] = _merge(observed[fqdn.lower()], "certificates", result, client)

    return OrgObs(
        org=org.name,
        checked_at=checked_at,
        auth=auth,
        servers=tuple(observed[s.fqdn.lower()] for s in servers),
        hybrid=hybrid,
        writer=org.writer,
        hybrid_app=replace(app_read.result(), exchange_app_id=exchange_app_id)
        if app_read is not None else None,
    )


# --- org-wide reads --------------------------------------------------------------------------


def _exchange_app_id(client: ExchangeClient, known: list[str], org: OrgSettings
                     ) -> str | None:
    """The dedicated hybrid application Exchange's Auth Server names; None when unknown."""
    tenant = org.hybrid_app.tenant_id if org.hybrid_app else ""
    try:
        return hybrid_app_id_from(client.exchange_any(known, "Get-AuthServer",
                                                      select=AUTH_SERVER_PROPERTIES), tenant)
    except ExchangeError:
        return None


def _auth_config(objs: list[Any]) -> AuthConfigObs:
    return auth_config_from(objs[0]) if objs else AuthConfigObs(current=None)


def _server(obj: Any) -> ServerObs:
    name, fqdn, site, version, roles = server_from(obj)
    return ServerObs(name=name, fqdn=fqdn.lower(), site=site, version=version, roles=roles)


def org_clock(client: ExchangeClient, fqdn: str) -> datetime | None:
    """That server's clock (its host endpoint's Get-Date), or None when it cannot say."""
    try:
        output = client.host_statements(fqdn, [CLOCK])
        return parse_datetime(next((o for o in output if o is not None), None))
    except (ExchangeError, ValueError):
        return None


# --- per server ------------------------------------------------------------------------------


def _ask(client: ExchangeClient, fqdn: str, part: Part, *, fqdns: list[str]) -> Any:
    if part == "clock":
        return org_clock(client, fqdn)
    if part == "listing":
        try:
            return listing.list_all(client, fqdn, fqdns, EXCHANGE_CERTIFICATE_PROPERTIES)
        except (ExchangeError, ValueError) as exc:
            log.debug("one-session certificate listing failed (%s); asking each server", exc)
            return None
    if part == "certificates":
        return _certificates(client, fqdn)
    return _backend(client, fqdn)


def _listed_facts(listed: Any, fqdn: str) -> tuple[CertFacts, ...] | ExchangeError | None:
    """That server's certificates from the listing; None when the listing did not come."""
    if not isinstance(listed, dict) or fqdn.lower() not in listed:
        return None
    try:
        return tuple(_facts(obj, fqdn) for obj in listed[fqdn.lower()] if obj is not None)
    except ExchangeError as exc:
        return exc


def _endpoint_sound(backend: BackendObs | None, facts: tuple[CertFacts, ...],
                    current: str | None) -> bool:
    """Nothing seen that breaks this server's Exchange endpoint: the back end binding names
    a certificate its store holds, and the current Auth certificate is installed there."""
    clean = backend is not None and backend.error is None and backend.has_binding and \
        backend.cert is not None
    return clean and current is not None and any(f.thumbprint == current for f in facts)


def _certificates(client: ExchangeClient, fqdn: str) -> tuple[CertFacts, ...]:
    # One listing answers presence and duplicates for every thumbprint on this server.
    objs = client.exchange(
        fqdn, "Get-ExchangeCertificate", Server=fqdn, select=EXCHANGE_CERTIFICATE_PROPERTIES
    )
    return tuple(_facts(obj, fqdn) for obj in objs if obj is not None)


def _backend(client: ExchangeClient, fqdn: str) -> BackendObs:
    """The https *:444: binding of "Exchange Back End" and the store certificate it names.

    Binding and store are read in one invocation (two statements): one round trip per
    server instead of two, and the store listing is small next to a round trip."""
    store = Statement.of("Get-ChildItem", Path=CERT_STORE, select=STORE_PROPERTIES)
    web = Statement.of(
        "Get-WebBinding",
        Name=BACKEND_SITE,
        Protocol="https",
        Port=444,
        select=BINDING_PROPERTIES,
    )
    try:
        output = client.host_statements(fqdn, [web, store])
    except ExchangeError as exc:
        if "CommandNotFound" not in (exc.error_id or ""):
            raise
        # IIS without the WebAdministration module: the IISAdministration cmdlet.
        iis = Statement.of(
            "Get-IISSiteBinding", Name=BACKEND_SITE, Protocol="https", select=BINDING_PROPERTIES
        )
        output = client.host_statements(fqdn, [iis, store])
    # One output stream: bindings are the objects that carry bindingInformation.
    bindings = [obj for obj in output if prop(obj, "bindingInformation") is not None]
    items = [obj for obj in output if obj is not None and prop(obj, "bindingInformation") is None]
    has_binding, thumbprint = backend_binding_from(bindings)
    if not has_binding or not thumbprint:
        return BackendObs(has_binding=has_binding, thumbprint=thumbprint or None)
    # Only the named certificate is read: another unreadable one in the store is no concern.
    named = next((item for item in items if _shown_thumbprint(item) == thumbprint), None)
    cert = None if named is None else _facts(named, fqdn)
    return BackendObs(has_binding=True, thumbprint=thumbprint, cert=cert)


def _merge(
    server: ServerObs, part: Part, result: Any, client: ExchangeClient
) -> ServerObs:
    fallback = client.fallbacks.get(server.fqdn.lower())
    if part == "certificates":
        if isinstance(result, ExchangeError):
            return replace(server, reachable=False, error=result.line(), certificates=None)
        # Reachable, but its Exchange endpoint is broken: say so even though host worked.
        return replace(server, certificates=result, error=server.error or fallback)
    if isinstance(result, ExchangeError):
        return replace(server, backend=BackendObs(has_binding=False, error=result.line()))
    return replace(server, backend=result)


def _shown_thumbprint(obj: Any) -> str:
    """The thumbprint an object shows; Cert: provider items name themselves by it
    (PSChildName)."""
    return text(prop(obj, "Thumbprint") or prop(obj, "PSChildName")).upper()


def _facts(obj: Any, fqdn: str) -> CertFacts:
    """Facts from RawData; a store item without RawData keeps what it shows (weaker)."""
    try:
        if prop(obj, "RawData") is not None:
            return facts_from_exchange_certificate(obj)
        return CertFacts(
            thumbprint=_shown_thumbprint(obj),
            subject=text(prop(obj, "Subject")),
            not_before=parse_datetime(prop(obj, "NotBefore")) or datetime.min.replace(tzinfo=UTC),
            not_after=parse_datetime(prop(obj, "NotAfter")) or datetime.min.replace(tzinfo=UTC),
            signature_hash="unknown",
            key_size=0,
        )
    except ValueError as exc:
        thumbprint = text(prop(obj, "Thumbprint")) or "?"
        raise ExchangeFailed(
            fqdn, f"reading certificate {thumbprint}", str(exc), error_id="parse"
        ) from None
