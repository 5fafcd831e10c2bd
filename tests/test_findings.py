"""Findings per DOMAIN.md section 3, one table row per rule and boundary.

The small factories at the top build observations for this file and for the decision,
plan and report tests (they import them from here).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workers.hybrid_app.key_findings import HybridAppRead
from workers.hybrid_app.keys import AppKey
from workers.status.findings import days_left, findings, is_in_scope
from workers.status.observation import AuthConfigObs, BackendObs, CertFacts, OrgObs, ServerObs

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
AUTH = "CN=Microsoft Exchange Server Auth Certificate"
CUR, NXT, PREV, OTHER = "A" * 40, "B" * 40, "C" * 40, "D" * 40
V15 = "Version 15.2 (Build 1544.4)"


def cert(thumbprint: str, days: float = 1000, *, hours: float = 0, age: timedelta | None = None,
         subject: str = AUTH, sig: str = "sha256", key: int = 2048) -> CertFacts:
    """A certificate with `days` + `hours` left at NOW, created `age` ago (default 100 d)."""
    return CertFacts(
        thumbprint=thumbprint,
        subject=subject,
        not_before=NOW - (age if age is not None else timedelta(days=100)),
        not_after=NOW + timedelta(days=days, hours=hours),
        signature_hash=sig,
        key_size=key,
    )


def backend(name: str, days: float = 1500) -> BackendObs:
    thumb = (name.upper().encode().hex().upper() + "F" * 40)[:40]
    return BackendObs(True, thumb, cert(thumb, days, subject=f"CN={name}"))


def server(name: str, *certs: CertFacts, site: str = "Site-A", reachable: bool = True,
           roles: Iterable[str] = ("Mailbox",), version: str = V15, listed: bool = True,
           back: BackendObs | str | None = "healthy", error: str | None = None) -> ServerObs:
    return ServerObs(
        name=name,
        fqdn=f"{name}.contoso.lab",
        site=site,
        version=version,
        roles=tuple(roles),
        reachable=reachable,
        error=error if error is not None else (None if reachable else "WinRM timed out"),
        certificates=tuple(certs) if listed else None,
        backend=backend(name) if back == "healthy" else back,  # type: ignore[arg-type]
    )


def org(*servers: ServerObs, current: str | None = CUR, next: str | None = None,
        effective: datetime | None = None, previous: str | None = None, hybrid: bool = False,
        writer: str | None = "ex1.contoso.lab", now: datetime = NOW,
        app: HybridAppRead | None = None) -> OrgObs:
    return OrgObs(
        org="contoso",
        checked_at=now,
        auth=AuthConfigObs(current=current, next=next, next_effective=effective,
                           previous=previous),
        servers=tuple(servers),
        hybrid=hybrid,
        writer=writer,
        hybrid_app=app,
    )


def app(*thumbprints: str, error: str | None = None) -> HybridAppRead:
    """A read of the dedicated hybrid application holding these certificates' keys."""
    if error is not None:
        return HybridAppRead(app_id="app", keys=None, error=error)
    return HybridAppRead(app_id="app", keys=tuple(
        AppKey(key_id=t[:8], thumbprint=t, display_name="", start=None, end=None,
               type="AsymmetricX509Cert", usage="Verify", der=None) for t in thumbprints))


def healthy(**kwargs: Any) -> OrgObs:
    """Three servers in two sites, all holding a 1000-day current certificate."""
    current = cert(CUR)
    return org(server("ex1", current), server("ex2", current),
               server("ex3", current, site="Site-B"), **kwargs)


def fqdn(name: str) -> str:
    return f"{name}.contoso.lab"


def codes(obs: OrgObs) -> list[tuple[str, str, str | None]]:
    return [(f.code, f.severity, f.server) for f in findings(obs)]


# --- the table ----------------------------------------------------------------------------

E1 = fqdn("ex1")
E2 = fqdn("ex2")

CASES: list[tuple[str, OrgObs, list[tuple[str, str, str | None]]]] = [
    ("healthy", healthy(), []),
    ("current-not-set", org(server("ex1", cert(OTHER)), current=None),
     [("AUTH_CURRENT_NOT_SET", "critical", None)]),
    ("current-expired", org(server("ex1", cert(CUR, -1))),
     [("AUTH_CURRENT_EXPIRED", "critical", None)]),
    ("current-expired-one-second-ago",
     org(server("ex1", cert(CUR, 0, hours=-1 / 3600))),
     [("AUTH_CURRENT_EXPIRED", "critical", None)]),
    ("current-61-days", org(server("ex1", cert(CUR, 61))), []),
    ("current-60-days", org(server("ex1", cert(CUR, 60))), []),
    ("current-59-days", org(server("ex1", cert(CUR, 59))),
     [("AUTH_CURRENT_EXPIRING", "warning", None)]),
    ("current-59.99-days-floors-to-59", org(server("ex1", cert(CUR, 60, hours=-1))),
     [("AUTH_CURRENT_EXPIRING", "warning", None)]),
    ("current-30-days", org(server("ex1", cert(CUR, 30))),
     [("AUTH_CURRENT_EXPIRING", "warning", None)]),
    ("current-29-days", org(server("ex1", cert(CUR, 29))),
     [("AUTH_CURRENT_EXPIRING", "critical", None)]),
    ("current-missing-on-one", org(server("ex1", cert(CUR)), server("ex2")),
     [("AUTH_CURRENT_MISSING_ON_SERVER", "critical", E2)]),
    ("current-on-no-server", org(server("ex1", cert(OTHER)), server("ex2")),
     [("AUTH_CURRENT_MISSING_ON_SERVER", "critical", E1),
      ("AUTH_CURRENT_MISSING_ON_SERVER", "critical", E2)]),
    ("current-store-not-listed-is-not-missing",
     org(server("ex1", cert(CUR)), server("ex2", listed=False)), []),
    ("current-sha1", org(server("ex1", cert(CUR, sig="sha1"))),
     [("AUTH_WEAK_SIGNATURE", "warning", None)]),
    ("current-1024-bit", org(server("ex1", cert(CUR, key=1024))),
     [("AUTH_WEAK_KEY", "warning", None)]),
    ("next-expired", org(server("ex1", cert(CUR, 40), cert(NXT, -2)), next=NXT,
                         effective=NOW + timedelta(days=5)),
     [("AUTH_NEXT_EXPIRED", "critical", None), ("AUTH_CURRENT_EXPIRING", "warning", None)]),
    ("next-missing-not-yet-due",
     org(server("ex1", cert(CUR), cert(NXT)), server("ex2", cert(CUR)), next=NXT,
         effective=NOW + timedelta(days=3)),
     [("AUTH_NEXT_MISSING_ON_SERVER", "warning", E2)]),
    ("next-missing-and-due",
     org(server("ex1", cert(CUR), cert(NXT)), server("ex2", cert(CUR)), next=NXT,
         effective=NOW - timedelta(hours=1)),
     [("AUTH_NEXT_MISSING_ON_SERVER", "critical", E2)]),
    ("next-sha1", org(server("ex1", cert(CUR), cert(NXT, sig="sha1")), next=NXT,
                      effective=NOW + timedelta(days=3)),
     [("AUTH_WEAK_SIGNATURE", "warning", None)]),
    ("publish-overdue-12h01",
     org(server("ex1", cert(CUR), cert(NXT)), next=NXT,
         effective=NOW - timedelta(hours=12, minutes=1)),
     [("AUTH_NEXT_PUBLISH_OVERDUE", "warning", None)]),
    ("publish-not-overdue-11h59",
     org(server("ex1", cert(CUR), cert(NXT)), next=NXT,
         effective=NOW - timedelta(hours=11, minutes=59)), []),
    ("publish-not-overdue-exactly-12h",
     org(server("ex1", cert(CUR), cert(NXT)), next=NXT, effective=NOW - timedelta(hours=12)),
     []),
    ("duplicate-auth-certs",
     org(server("ex1", cert(CUR), cert(OTHER), cert("E" * 40)), server("ex2", cert(CUR))),
     [("AUTH_DUPLICATE_ON_SERVER", "warning", E1)]),
    ("current-and-next-are-not-duplicates",
     org(server("ex1", cert(CUR), cert(NXT)), next=NXT, effective=NOW + timedelta(days=9)), []),
    ("non-auth-subjects-are-not-duplicates",
     org(server("ex1", cert(CUR), cert(OTHER, subject="CN=ex1"))), []),
    ("previous-not-cleared", org(server("ex1", cert(CUR), cert(PREV)), previous=PREV),
     [("PREVIOUS_NOT_CLEARED", "info", None)]),
    ("unreachable", org(server("ex1", cert(CUR)), server("ex2", reachable=False, listed=False,
                                                         back=None)),
     [("SERVER_UNREACHABLE", "critical", E2)]),
    ("host-endpoint-down-is-a-warning",
     org(server("ex1", cert(CUR), back=BackendObs(False, error="WinRM 5986 refused"))),
     [("SERVER_UNREACHABLE", "warning", E1)]),
    ("edge-unreachable-ignored",
     org(server("ex1", cert(CUR)), server("edge1", roles=("Edge",), reachable=False,
                                          listed=False, back=None)), []),
    ("exchange-2010-ignored",
     org(server("ex1", cert(CUR)), server("old", version="Version 14.3 (Build 123.4)",
                                          roles=("Mailbox", "ClientAccess"), listed=True)), []),
    ("backend-no-binding", org(server("ex1", cert(CUR), back=BackendObs(False))),
     [("BACKEND_NO_BINDING", "critical", E1)]),
    ("backend-no-certificate", org(server("ex1", cert(CUR), back=BackendObs(True, ""))),
     [("BACKEND_NO_CERTIFICATE", "critical", E1)]),
    ("backend-not-in-store", org(server("ex1", cert(CUR), back=BackendObs(True, "F" * 40))),
     [("BACKEND_CERT_NOT_IN_STORE", "critical", E1)]),
    ("backend-expired", org(server("ex1", cert(CUR), back=backend("ex1", -3))),
     [("BACKEND_EXPIRED", "critical", E1)]),
    ("backend-29-days", org(server("ex1", cert(CUR), back=backend("ex1", 29))),
     [("BACKEND_EXPIRING", "warning", E1)]),
    ("backend-30-days", org(server("ex1", cert(CUR), back=backend("ex1", 30))), []),
    ("backend-not-checked", org(server("ex1", cert(CUR), back=None)), []),
    ("hybrid", healthy(hybrid=True, app=app(CUR)), [("HYBRID_DETECTED", "info", None)]),
    ("hybrid-app-not-configured", healthy(hybrid=True),
     [("HYBRID_DETECTED", "info", None), ("HYBRID_APP_NOT_CONFIGURED", "info", None)]),
    ("hybrid-app-current-missing", healthy(hybrid=True, app=app(PREV), previous=PREV),
     [("HYBRID_DETECTED", "info", None), ("PREVIOUS_NOT_CLEARED", "info", None),
      ("HYBRID_APP_CURRENT_MISSING", "critical", None)]),
    ("hybrid-app-next-missing", org(server("ex1", cert(CUR), cert(NXT)), next=NXT,
                                    effective=NOW + timedelta(days=20), hybrid=True,
                                    app=app(CUR)),
     [("HYBRID_DETECTED", "info", None), ("HYBRID_APP_NEXT_MISSING", "warning", None)]),
    ("hybrid-app-stale-key", healthy(hybrid=True, app=app(CUR, OTHER)),
     [("HYBRID_DETECTED", "info", None), ("HYBRID_APP_STALE_KEY", "info", None)]),
    ("hybrid-app-unreadable", healthy(hybrid=True, app=app(error="403 Authorization")),
     [("HYBRID_DETECTED", "info", None), ("HYBRID_APP_UNREADABLE", "unknown", None)]),
    ("hybrid-app-id-mismatch", healthy(hybrid=True, app=HybridAppRead(
        app_id="app", keys=app(CUR).keys, exchange_app_id="other")),
     [("HYBRID_DETECTED", "info", None), ("HYBRID_APP_ID_MISMATCH", "warning", None)]),
    ("not-hybrid-never-judges-the-app", healthy(app=app(PREV)), []),
]


@pytest.mark.parametrize(("obs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_findings_table(obs: OrgObs, expected: list[tuple[str, str, str | None]]) -> None:
    assert sorted(codes(obs), key=str) == sorted(expected, key=str)


def test_every_design_code_is_produced_by_some_case() -> None:
    design = {
        "AUTH_CURRENT_NOT_SET", "AUTH_CURRENT_EXPIRED", "AUTH_CURRENT_EXPIRING",
        "AUTH_CURRENT_MISSING_ON_SERVER", "AUTH_NEXT_EXPIRED", "AUTH_NEXT_MISSING_ON_SERVER",
        "AUTH_NEXT_PUBLISH_OVERDUE", "AUTH_WEAK_SIGNATURE", "AUTH_WEAK_KEY",
        "AUTH_DUPLICATE_ON_SERVER", "PREVIOUS_NOT_CLEARED", "SERVER_UNREACHABLE",
        "BACKEND_NO_BINDING", "BACKEND_NO_CERTIFICATE", "BACKEND_CERT_NOT_IN_STORE",
        "BACKEND_EXPIRED", "BACKEND_EXPIRING", "HYBRID_DETECTED",
        # issue 13: the dedicated hybrid application (README "Status findings")
        "HYBRID_APP_CURRENT_MISSING", "HYBRID_APP_NEXT_MISSING", "HYBRID_APP_STALE_KEY",
        "HYBRID_APP_UNREADABLE", "HYBRID_APP_NOT_CONFIGURED", "HYBRID_APP_ID_MISMATCH",
    }
    seen = {code for _, obs, _ in CASES for code, _, _ in codes(obs)}
    assert seen == design


def test_findings_are_sorted_most_severe_first() -> None:
    obs = org(server("ex1", cert(CUR, 45), cert(PREV)), server("ex2", reachable=False,
                                                              listed=False, back=None),
              previous=PREV, hybrid=True, app=app(error="no connection"))
    severities = [f.severity for f in findings(obs)]
    assert severities == ["critical", "warning", "unknown", "info", "info"]


@pytest.mark.parametrize(
    ("obs", "fragments"),
    [
        (org(server("ex1", cert(CUR, 29))), ["AAAAAAAA", "29 days", "2025-02-13"]),
        (org(server("ex1", cert(CUR)), server("ex2")), ["AAAAAAAA", "ex2"]),
        (org(server("ex1", cert(CUR), back=backend("ex1", 12))), ["ex1", "12 days"]),
        (org(server("ex1", cert(CUR), cert(NXT)), next=NXT,
             effective=NOW - timedelta(hours=13)), ["BBBBBBBB", "13 h ago", "stuck"]),
        (org(server("ex1", cert(CUR)), server("ex2", reachable=False, listed=False,
                                              error="Kerberos: no SPN")), ["ex2", "no SPN"]),
    ],
    ids=["expiring", "missing", "backend-expiring", "overdue", "unreachable"],
)
def test_messages_name_thumbprint_days_and_server(obs: OrgObs, fragments: list[str]) -> None:
    message = findings(obs)[0].message
    for fragment in fragments:
        assert fragment in message


def test_finding_shape() -> None:
    for item in findings(org(server("ex1", cert(CUR, 10)), hybrid=True)):
        assert list(item.model_dump()) == ["code", "severity", "server", "message"]
        assert item.severity in {"info", "warning", "critical"}


@pytest.mark.parametrize(
    ("roles", "version", "expected"),
    [
        (("Mailbox",), "Version 15.2 (Build 1544.4)", True),
        (("ClientAccess",), "Version 15.0 (Build 1497.2)", True),
        (("Mailbox", "ClientAccess"), "Version 15.1 (Build 2507.18)", True),
        (("Edge",), "Version 15.2 (Build 1544.4)", False),
        (("Mailbox",), "Version 14.3 (Build 123.4)", False),
        (("HubTransport",), "Version 15.2 (Build 1544.4)", False),
        (("Mailbox",), "", False),
    ],
    ids=["2019-mailbox", "2013-cas", "2016-multirole", "edge", "2010", "hub-only", "no-version"],
)
def test_in_scope(roles: tuple[str, ...], version: str, expected: bool) -> None:
    assert is_in_scope(roles, version) is expected


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(days=60), 60),
        (timedelta(days=60) - timedelta(seconds=1), 59),
        (timedelta(seconds=1), 0),
        (timedelta(seconds=-1), -1),
        (timedelta(days=-3, hours=-1), -4),
    ],
    ids=["exact", "just-under", "seconds-left", "just-expired", "expired-3d1h"],
)
def test_days_left_is_floored(delta: timedelta, expected: int) -> None:
    assert days_left(NOW + delta, NOW) == expected
