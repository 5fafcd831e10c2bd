"""The status JSON of DESIGN.md: exact keys, presence lists, days, overall and exit code."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.test_findings import CUR, NOW, NXT, PREV, backend, cert, fqdn, healthy, org, server
from workers.status.observation import BackendObs, OrgObs
from workers.status.report import build_status, exit_code, overall

E1, E2, E3 = fqdn("ex1"), fqdn("ex2"), fqdn("ex3")
CERT_KEYS = {"thumbprint", "subject", "not_before", "not_after", "days_left", "signature_hash",
             "key_size", "present_on", "missing_on", "unknown_on"}


def status_json(obs: OrgObs) -> dict[str, Any]:
    """The status as `exauth status --json` and the status job give it (the contract)."""
    return build_status(obs).to_json()


def test_exact_top_level_and_nested_keys() -> None:
    status = status_json(org(
        server("ex1", cert(CUR), cert(NXT), cert(PREV)), server("ex2", cert(CUR)),
        next=NXT, effective=NOW + timedelta(days=3), previous=PREV, hybrid=True,
    ))
    assert list(status) == ["org", "checked_at", "hybrid", "sites", "servers", "auth",
                            "backend", "hybrid_app", "findings", "actions"]
    assert set(status["hybrid_app"]) == {"configured", "app_id", "read", "error",
                                         "exchange_app_id", "keys", "current_on_app",
                                         "next_on_app"}
    assert set(status["servers"][0]) == {"name", "fqdn", "site", "version", "roles",
                                         "reachable", "error"}
    assert set(status["auth"]) == {"current", "next", "previous"}
    assert set(status["auth"]["current"]) == CERT_KEYS
    assert set(status["auth"]["previous"]) == CERT_KEYS
    assert set(status["auth"]["next"]) == CERT_KEYS | {"effective"}
    assert status["auth"]["next"]["effective"] == "2025-01-18T12:00:00Z"
    assert set(status["backend"][0]) == {"server", "thumbprint", "not_after", "days_left",
                                         "problem"}
    json.dumps(status)  # JSON-able as is


def test_values_of_a_healthy_org() -> None:
    status = status_json(healthy())
    assert status["org"] == "contoso"
    assert status["checked_at"] == "2025-01-15T12:00:00Z"
    assert status["hybrid"] is False
    assert status["sites"] == ["Site-A", "Site-B"]
    current = status["auth"]["current"]
    assert current == {
        "thumbprint": CUR,
        "subject": "CN=Microsoft Exchange Server Auth Certificate",
        "not_before": "2024-10-07T12:00:00Z",
        "not_after": "2027-10-12T12:00:00Z",
        "days_left": 1000,
        "signature_hash": "sha256",
        "key_size": 2048,
        "present_on": [E1, E2, E3],
        "missing_on": [],
        "unknown_on": [],
    }
    assert status["auth"]["next"] is None and status["auth"]["previous"] is None
    assert [b["problem"] for b in status["backend"]] == [None, None, None]
    assert status["findings"] == []
    assert [a["kind"] for a in status["actions"]] == ["none"]
    model = build_status(healthy())
    assert (overall(model), exit_code(model)) == ("ok", 0)


def test_present_missing_unknown() -> None:
    status = status_json(org(
        server("ex1", cert(CUR)),
        server("ex2"),  # reachable, store listed, not there -> missing
        server("ex3", reachable=False, listed=False),  # unreachable -> unknown
        server("ex4", listed=False),  # reachable but store not listed -> unknown
        server("edge", roles=("Edge",)),  # out of scope: in no list
    ))
    current = status["auth"]["current"]
    assert current["present_on"] == [E1]
    assert current["missing_on"] == [E2]
    assert current["unknown_on"] == [E3, fqdn("ex4")]


def test_thumbprint_nobody_has_is_thumbprint_only() -> None:
    status = status_json(org(server("ex1", cert(CUR)), previous=PREV))
    previous = status["auth"]["previous"]
    assert previous["thumbprint"] == PREV
    assert all(previous[k] is None for k in ("subject", "not_before", "not_after", "days_left",
                                             "signature_hash", "key_size"))
    assert previous["missing_on"] == [E1]


@pytest.mark.parametrize(
    ("delta", "days"),
    [(timedelta(days=59, hours=23), 59), (timedelta(hours=1), 0), (timedelta(hours=-1), -1),
     (timedelta(days=-10), -10)],
    ids=["59d23h", "1h", "expired-1h", "expired-10d"],
)
def test_days_left_whole_days_floored(delta: timedelta, days: int) -> None:
    status = status_json(org(server("ex1", cert(CUR, delta / timedelta(days=1)))))
    assert status["auth"]["current"]["days_left"] == days


@pytest.mark.parametrize(
    ("back", "problem", "thumbprint", "days"),
    [
        (BackendObs(False), "no_binding", None, None),
        (BackendObs(True, ""), "no_certificate", None, None),
        (BackendObs(True, "F" * 40), "not_in_store", "F" * 40, None),
        (backend("ex1", -2), "expired", backend("ex1").thumbprint, -2),
        (backend("ex1", 20), "expiring", backend("ex1").thumbprint, 20),
        (backend("ex1", 400), None, backend("ex1").thumbprint, 400),
        (None, "unknown", None, None),
        (BackendObs(False, error="access denied"), "unknown", None, None),
    ],
    ids=["no-binding", "no-certificate", "not-in-store", "expired", "expiring", "healthy",
         "not-checked", "host-error"],
)
def test_backend_entries(back: BackendObs | None, problem: str | None, thumbprint: str | None,
                         days: int | None) -> None:
    (entry,) = status_json(org(server("ex1", cert(CUR), back=back)))["backend"]
    assert entry["server"] == E1
    assert (entry["problem"], entry["thumbprint"], entry["days_left"]) == (problem, thumbprint,
                                                                           days)


def test_servers_list_all_but_sites_and_backend_only_in_scope() -> None:
    status = status_json(org(
        server("ex1", cert(CUR)),
        server("edge", site="Perimeter", roles=("Edge",), back=None),
        server("old", site="Legacy", version="Version 14.3 (Build 123.4)"),
    ))
    assert [s["name"] for s in status["servers"]] == ["ex1", "edge", "old"]
    assert status["sites"] == ["Site-A"]
    assert [b["server"] for b in status["backend"]] == [E1]


@pytest.mark.parametrize(
    ("obs", "state", "code"),
    [
        (healthy(), "ok", 0),
        (healthy(hybrid=True), "ok", 0),
        (org(server("ex1", cert(CUR, 45))), "warning", 1),
        (org(server("ex1", cert(CUR, 10))), "critical", 2),
        (org(server("ex1", cert(CUR)), server("ex2", reachable=False, listed=False)),
         "critical", 2),
        (org(server("ex1", reachable=False, listed=False)), "unknown", 3),
        (org(), "unknown", 3),
    ],
    ids=["ok", "info-only", "warning", "critical", "one-unreachable", "none-reachable",
         "no-servers"],
)
def test_overall_and_exit_code(obs: OrgObs, state: str, code: int) -> None:
    status = build_status(obs)
    assert overall(status) == state
    assert exit_code(status) == code


def test_sites_are_sorted_and_unique() -> None:
    status = status_json(org(
        server("ex1", cert(CUR), site="Site-Z"), server("ex2", cert(CUR), site="Site-A"),
        server("ex3", cert(CUR), site="Site-Z"), server("ex4", cert(CUR), site="Site-M"),
    ))
    assert status["sites"] == ["Site-A", "Site-M", "Site-Z"]
