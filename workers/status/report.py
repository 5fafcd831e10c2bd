"""The status JSON of one org (DESIGN.md "Status JSON"), and what it means for monitoring.

`build_status` is the single place the observation becomes the contract every consumer
reads (Slack card, CLI table, `--json`, the warnings sweep, `exauth plan`). Times are UTC
ISO 8601 with "Z"; days left are whole days, floored, negative once expired.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workers.status.decide import actions
from workers.status.findings import (
    backend_problem,
    cert_view,
    days_left,
    findings,
    hybrid_app_part,
    in_scope_servers,
    is_in_scope,
    iso,
)
from workers.status.observation import OrgObs, ServerObs

OVERALL_EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


def checked_at(status: dict[str, Any]) -> datetime:
    """When a status was judged: the org's own clock at the read (workers.status.collect). Plans,
    steps and sweeps count from it so their dates agree with the status they came from."""
    return datetime.fromisoformat(str(status["checked_at"]).replace("Z", "+00:00"))


def build_status(obs: OrgObs) -> dict[str, Any]:
    """One observation -> the status JSON, exactly the keys of DESIGN.md."""
    scope = in_scope_servers(obs)
    next_cert = _cert(obs, obs.auth.next)
    if next_cert is not None:
        effective = obs.auth.next_effective
        next_cert["effective"] = iso(effective) if effective is not None else None
    return {
        "org": obs.org,
        "checked_at": iso(obs.checked_at),
        "hybrid": obs.hybrid,
        "sites": sorted({server.site for server in scope if server.site}),
        "servers": [
            {
                "name": server.name,
                "fqdn": server.fqdn,
                "site": server.site,
                "version": server.version,
                "roles": list(server.roles),
                "reachable": server.reachable,
                "error": server.error,
            }
            for server in obs.servers
        ],
        "auth": {
            "current": _cert(obs, obs.auth.current),
            "next": next_cert,
            "previous": _cert(obs, obs.auth.previous),
        },
        "backend": [_backend(obs, server) for server in scope],
        "hybrid_app": hybrid_app_part(obs)[0],
        "findings": findings(obs),
        "actions": actions(obs),
    }


def _cert(obs: OrgObs, thumbprint: str | None) -> dict[str, Any] | None:
    view = cert_view(obs, thumbprint)
    if view is None:
        return None
    facts = view.facts
    return {
        "thumbprint": view.thumbprint,
        "subject": facts.subject if facts else None,
        "not_before": iso(facts.not_before) if facts else None,
        "not_after": iso(facts.not_after) if facts else None,
        "days_left": days_left(facts.not_after, obs.checked_at) if facts else None,
        "signature_hash": facts.signature_hash if facts else None,
        "key_size": facts.key_size if facts else None,
        "present_on": list(view.present_on),
        "missing_on": list(view.missing_on),
        "unknown_on": list(view.unknown_on),
    }


def _backend(obs: OrgObs, server: ServerObs) -> dict[str, Any]:
    backend = server.backend
    cert = backend.cert if backend is not None and not backend.error else None
    return {
        "server": server.fqdn,
        "thumbprint": (backend.thumbprint or None) if backend is not None else None,
        "not_after": iso(cert.not_after) if cert else None,
        "days_left": days_left(cert.not_after, obs.checked_at) if cert else None,
        "problem": backend_problem(server, obs.checked_at),
    }


def overall(status: dict[str, Any]) -> str:
    """ok | warning | critical, or unknown when no in-scope server could be asked at all."""
    servers = status.get("servers") or []
    in_scope = [s for s in servers if is_in_scope(s.get("roles") or [], s.get("version") or "")]
    if not in_scope or not any(s.get("reachable") for s in in_scope):
        return "unknown"
    severities = {item.get("severity") for item in status.get("findings") or []}
    if "critical" in severities:
        return "critical"
    if "warning" in severities:
        return "warning"
    return "ok"


def exit_code(status: dict[str, Any]) -> int:
    """Monitoring-plugin convention: 0 ok, 1 warning, 2 critical, 3 could not check."""
    return OVERALL_EXIT_CODES[overall(status)]

