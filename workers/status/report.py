"""The status of one org (DESIGN.md "Status JSON"), and what it means for monitoring.

`build_status` is the single place the observation becomes the status every consumer
reads (an `OrgStatus` of workers.status.report_model: Slack card, CLI table, `--json`, the
warnings sweep, `exauth plan`). Times are UTC ISO 8601 with "Z"; days left are whole days,
floored, negative once expired.
"""

from __future__ import annotations

from datetime import datetime

from workers.status.decide import actions
from workers.status.findings import (
    backend_problem,
    cert_view,
    days_left,
    findings,
    hybrid_app_part,
    in_scope_servers,
    iso,
)
from workers.status.observation import OrgObs, ServerObs
from workers.status.report_model import (
    AuthCert,
    AuthStatus,
    BackendStatus,
    NextAuthCert,
    OrgStatus,
    Overall,
    ServerStatus,
    Severity,
)


def checked_at(status: OrgStatus) -> datetime:
    """When a status was judged: the org's own clock at the read (workers.status.collect). Plans,
    steps and sweeps count from it so their dates agree with the status they came from."""
    return status.checked_time


def build_status(obs: OrgObs) -> OrgStatus:
    """One observation -> the status, exactly the parts of DESIGN.md."""
    scope = in_scope_servers(obs)
    current = _cert(obs, obs.auth.current)
    nxt = _cert(obs, obs.auth.next)
    effective = obs.auth.next_effective
    return OrgStatus(
        org=obs.org,
        checked_at=iso(obs.checked_at),
        hybrid=obs.hybrid,
        sites=sorted({server.site for server in scope if server.site}),
        servers=[
            ServerStatus(
                name=server.name,
                fqdn=server.fqdn,
                site=server.site,
                version=server.version,
                roles=list(server.roles),
                reachable=server.reachable,
                error=server.error,
            )
            for server in obs.servers
        ],
        auth=AuthStatus(
            current=current,
            next=None if nxt is None else NextAuthCert(
                **nxt.model_dump(), effective=iso(effective) if effective is not None else None
            ),
            previous=_cert(obs, obs.auth.previous),
        ),
        backend=[_backend(obs, server) for server in scope],
        hybrid_app=hybrid_app_part(obs)[0],
        findings=findings(obs),
        actions=actions(obs),
    )


def _cert(obs: OrgObs, thumbprint: str | None) -> AuthCert | None:
    view = cert_view(obs, thumbprint)
    if view is None:
        return None
    facts = view.facts
    return AuthCert(
        thumbprint=view.thumbprint,
        subject=facts.subject if facts else None,
        not_before=iso(facts.not_before) if facts else None,
        not_after=iso(facts.not_after) if facts else None,
        days_left=days_left(facts.not_after, obs.checked_at) if facts else None,
        signature_hash=facts.signature_hash if facts else None,
        key_size=facts.key_size if facts else None,
        present_on=list(view.present_on),
        missing_on=list(view.missing_on),
        unknown_on=list(view.unknown_on),
    )


def _backend(obs: OrgObs, server: ServerObs) -> BackendStatus:
    backend = server.backend
    cert = backend.cert if backend is not None and not backend.error else None
    return BackendStatus(
        server=server.fqdn,
        thumbprint=(backend.thumbprint or None) if backend is not None else None,
        not_after=iso(cert.not_after) if cert else None,
        days_left=days_left(cert.not_after, obs.checked_at) if cert else None,
        problem=backend_problem(server, obs.checked_at),
    )


def overall(status: OrgStatus) -> Overall:
    """ok | warning | critical | unknown: the monitoring-plugin states (README "Commands").

    unknown when no in-scope server could be asked at all. Otherwise the worst finding,
    where a finding that could not be judged (severity unknown: the hybrid application
    unreadable) ranks below a known critical or warning and above ok, as monitoring
    plugins combine states (CRITICAL > WARNING > UNKNOWN > OK): part of the org could not
    be checked, so it is not known to be ok, and exit code 3 says exactly that; a known
    problem still speaks louder than an unknown one."""
    in_scope = status.in_scope()
    if not in_scope or not any(server.reachable for server in in_scope):
        return Overall.UNKNOWN
    severities = {item.severity for item in status.findings}
    if Severity.CRITICAL in severities:
        return Overall.CRITICAL
    if Severity.WARNING in severities:
        return Overall.WARNING
    if Severity.UNKNOWN in severities:
        return Overall.UNKNOWN
    return Overall.OK


def exit_code(status: OrgStatus) -> int:
    """Monitoring-plugin convention: 0 ok, 1 warning, 2 critical, 3 could not check."""
    return overall(status).exit_code
