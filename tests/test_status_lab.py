"""status() against every built-in lab scenario, over the real protocol.

Each test starts the scenario, collects through pypsrp exactly as production does, and checks
the findings and actions DOMAIN.md prescribes (sections 3, 4 and 7). Server names and
thumbprints are read from the lab's own state, never hard-coded, so the assertions are
about the rules, not about one scenario file's spelling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.lab_settings import settings_for_lab
from config.load import settings_from_dict
from config.schema import OrgSettings
from workers.exchange.client import ExchangeClient
from workers.exchange.session import SessionCache
from workers.status.collect import collect, status


def lab_org(handle: Any) -> OrgSettings:
    return settings_for_lab(handle.info, handle.password, writer=_writer(handle)).org()


def _writer(handle: Any) -> str:
    for name in handle.org.server_names():
        info = handle.org.server_info(name)
        if info.get("writer"):
            return str(info["fqdn"])
    return str(handle.info["servers"][0]["fqdn"])


def status_json(org: OrgSettings, **kwargs: Any) -> dict[str, Any]:
    """The status JSON of DESIGN.md (what the status job and `--json` give), read fresh."""
    return status(org, **kwargs).to_json()


def run_status(handle: Any) -> dict[str, Any]:
    # The lab has a virtual clock; days left must be counted against it.
    return status_json(lab_org(handle), now=handle.org.now())


def kinds(report: dict[str, Any]) -> list[str]:
    return [a["kind"] for a in report["actions"]]


def codes(report: dict[str, Any], severity: str | None = None) -> set[str]:
    return {f["code"] for f in report["findings"] if severity in (None, f["severity"])}


def in_scope(handle: Any) -> list[dict[str, Any]]:
    infos = [handle.org.server_info(n) for n in handle.org.server_names()]
    return [
        i for i in infos
        if {"Mailbox", "ClientAccess"} & set(i["roles"]) and "Edge" not in i["roles"]
        and str(i["version"]).startswith("Version 15.")
    ]


@pytest.fixture()
def scenario(make_lab: Callable[..., Any]) -> Callable[[str], tuple[Any, dict[str, Any]]]:
    def _run(name: str) -> tuple[Any, dict[str, Any]]:
        handle = make_lab(name)
        return handle, run_status(handle)

    return _run


def test_healthy(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    handle, report = scenario("healthy")
    fqdns = sorted(i["fqdn"].lower() for i in in_scope(handle))
    assert kinds(report) == ["none"]
    assert not codes(report, "critical") and not codes(report, "warning")
    assert all(s["reachable"] and s["error"] is None for s in report["servers"])
    current = report["auth"]["current"]
    assert current is not None
    assert sorted(current["present_on"]) == fqdns
    assert current["missing_on"] == [] and current["unknown_on"] == []
    assert current["signature_hash"] == "sha256" and current["key_size"] >= 2048
    assert current["days_left"] > 60
    assert sorted(b["server"] for b in report["backend"]) == fqdns
    assert all(b["problem"] is None and b["thumbprint"] for b in report["backend"])
    assert len(report["sites"]) == 2


def test_expiring_sha1(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    _, report = scenario("expiring-sha1")
    current = report["auth"]["current"]
    assert current["signature_hash"] == "sha1"
    assert 30 <= current["days_left"] < 60
    assert {"AUTH_CURRENT_EXPIRING", "AUTH_WEAK_SIGNATURE"} <= codes(report)
    assert kinds(report)[0] == "stage_new"
    assert "replace_now" not in kinds(report)


def test_expired(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    _, report = scenario("expired")
    assert report["auth"]["current"]["days_left"] < 0
    # Serialization signing breaks every Exchange endpoint; host + snap-in still answers.
    assert all(s["reachable"] for s in report["servers"])
    assert all("signing" in (s["error"] or "") for s in report["servers"])
    assert all("via its host endpoint" in (s["error"] or "") for s in report["servers"])
    assert report["auth"]["current"]["unknown_on"] == []
    assert "AUTH_CURRENT_EXPIRED" in codes(report, "critical")
    assert kinds(report)[0] == "replace_now"


def test_staged(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    handle, report = scenario("staged")
    nxt = report["auth"]["next"]
    assert nxt is not None and nxt["effective"] is not None
    assert sorted(nxt["present_on"]) == sorted(i["fqdn"].lower() for i in in_scope(handle))
    assert "AUTH_CURRENT_EXPIRING" in codes(report)
    assert kinds(report) == ["wait_for_publish"]


def test_missing_on_server(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    _, report = scenario("missing-on-server")
    current = report["auth"]["current"]
    assert len(current["missing_on"]) == 1
    missing = current["missing_on"][0]
    # Asked through its host endpoint (its Exchange endpoint cannot sign without the cert).
    assert next(s for s in report["servers"] if s["fqdn"] == missing)["reachable"] is True
    assert any(
        f["code"] == "AUTH_CURRENT_MISSING_ON_SERVER" and f["server"] in (missing, None)
        for f in report["findings"]
    )
    first = report["actions"][0]
    assert first["kind"] == "import_current"
    assert first["servers"] == [missing]


def test_backend_deleted(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    handle, report = scenario("backend-deleted")
    broken = [n for n in handle.org.server_names() if handle.org.exchange_endpoint_failure(n)]
    assert len(broken) == 1
    fqdn = handle.org.server_info(broken[0])["fqdn"].lower()
    server = next(s for s in report["servers"] if s["fqdn"] == fqdn)
    # Its Exchange endpoint fails, but the host endpoint + snap-in still listed its store.
    assert server["reachable"] is True
    assert "Cafe-SendFailure" in (server["error"] or "")
    assert fqdn in report["auth"]["current"]["present_on"]
    backend = next(b for b in report["backend"] if b["server"] == fqdn)
    assert backend["problem"] == "no_certificate"
    assert "BACKEND_NO_CERTIFICATE" in codes(report)
    repair = [a for a in report["actions"] if a["kind"] == "repair_backend"]
    assert repair and repair[0]["servers"] == [fqdn]
    others = [b for b in report["backend"] if b["server"] != fqdn]
    assert others and all(b["problem"] is None for b in others)


def test_unreachable(scenario: Callable[[str], tuple[Any, dict[str, Any]]]) -> None:
    handle, report = scenario("unreachable")
    down = [i["fqdn"].lower() for i in in_scope(handle) if not i["reachable"]]
    assert len(down) == 1
    server = next(s for s in report["servers"] if s["fqdn"] == down[0])
    assert server["reachable"] is False
    assert server["error"] and "\n" not in server["error"]
    assert down[0] in report["auth"]["current"]["unknown_on"]
    assert "SERVER_UNREACHABLE" in codes(report)
    assert kinds(report)[0] == "blocked"
    assert down[0] in report["actions"][0]["servers"]


def test_hybrid_ignores_edge_and_2010(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("hybrid")
    report = run_status(handle)
    assert report["hybrid"] is True
    assert "HYBRID_DETECTED" in codes(report)
    assert "blocked" not in kinds(report)
    scoped = {i["name"] for i in in_scope(handle)}
    ignored = [n for n in handle.org.server_names() if n not in scoped]
    assert ignored, "the hybrid scenario has an Edge and an Exchange 2010 server"
    asked = {c["server"] for c in handle.org.calls() if c["command"] == "Get-ExchangeCertificate"}
    assert not asked & set(ignored)
    assert not {b["server"].split(".")[0] for b in report["backend"]} & set(ignored)


def test_second_status_opens_no_new_shells(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("healthy")
    org = lab_org(handle)
    cache = SessionCache()
    first = collect(org, now=handle.org.now(), client=ExchangeClient(org, cache=cache))
    opened = cache.stats.opens
    # One host session per in-scope server and one Exchange session for the org-wide reads
    # and every server's certificate listing (workers.status.listing), nothing more.
    assert opened == 1 + len(in_scope(handle))
    second = collect(org, now=handle.org.now(), client=ExchangeClient(org, cache=cache))
    assert cache.stats.opens == opened
    assert first.auth == second.auth
    assert [s.certificates for s in first.servers] == [s.certificates for s in second.servers]


def test_concurrency_bound(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("healthy")
    org = lab_org(handle)
    cache = SessionCache()
    collect(org, now=handle.org.now(), client=ExchangeClient(org, cache=cache, max_workers=1))
    assert cache.stats.peak_in_flight == 1
    cache2 = SessionCache()
    collect(org, now=handle.org.now(), client=ExchangeClient(org, cache=cache2, max_workers=16))
    assert cache2.stats.peak_in_flight <= 2 * len(in_scope(handle))


class _CannedClient(ExchangeClient):
    """One healthy server whose certificate store also holds an unreadable certificate."""

    GOOD = "AB" * 20
    GARBAGE = "CD" * 20

    def exchange_any(self, servers: Any, cmdlet: str, *args: Any, **kwargs: Any) -> list[Any]:
        return {
            "Get-AuthConfig": [{"CurrentCertificateThumbprint": None}],
            "Get-ExchangeServer": [{
                "Name": "ex1", "Fqdn": "ex1.contoso.lab", "Site": "contoso.lab/Sites/A",
                "ServerRole": "Mailbox", "AdminDisplayVersion": "Version 15.2 (Build 1544.4)",
            }],
        }.get(cmdlet, [])

    def exchange(self, fqdn: str, cmdlet: str, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def host_statements(self, fqdn: str, statements: Any) -> list[Any]:
        return [
            {"protocol": "https", "bindingInformation": "*:444:", "certificateHash": self.GOOD,
             "ItemXPath": "/system.applicationHost/sites/site[@name='Exchange Back End']"},
            {"Thumbprint": self.GARBAGE, "RawData": "not base64 at all"},
            {"Thumbprint": self.GOOD, "Subject": "CN=ex1", "NotBefore": "2024-01-01T00:00:00Z",
             "NotAfter": "2099-01-01T00:00:00Z"},
        ]


def test_unreadable_store_certificate_the_binding_does_not_name_is_ignored() -> None:
    org = settings_from_dict({"org": [{"name": "t", "writer": "ex1.contoso.lab", "exchange": {
        "username": "u", "password_env": "EXAUTH_UNUSED"}}]}).org()
    obs = collect(org, client=_CannedClient(org, cache=SessionCache()))
    backend = obs.servers[0].backend
    assert backend is not None and backend.error is None
    assert backend.cert is not None and backend.cert.thumbprint == _CannedClient.GOOD


# --- whose clock: the org's ---------------------------------------------------------------


def test_status_is_judged_on_the_orgs_own_clock(make_lab: Callable[..., Any]) -> None:
    """A lab whose clock was moved is seen at its time by any process, not at ours."""
    from datetime import UTC, datetime, timedelta

    handle = make_lab("expiring-sha1")
    before = status_json(lab_org(handle))
    assert 30 <= before["auth"]["current"]["days_left"] < 60
    handle.org.advance(timedelta(days=45))
    after = status_json(lab_org(handle))
    checked = datetime.fromisoformat(after["checked_at"])
    assert abs(checked - handle.org.now()) < timedelta(minutes=1)
    assert checked - datetime.now(UTC) > timedelta(days=44)
    assert after["auth"]["current"]["days_left"] < 0
    assert kinds(after) == ["replace_now"]
    writer = _writer(handle).split(".")[0]
    clock_reads = [c for c in handle.org.calls() if c["command"] == "Get-Date"]
    assert {(c["server"], c["endpoint"]) for c in clock_reads} == {(writer, "host")}
    assert len(clock_reads) == 2  # one per status run


def test_without_the_writers_clock_status_uses_this_machines(
        make_lab: Callable[..., Any]) -> None:
    from datetime import UTC, datetime, timedelta

    handle = make_lab("healthy")
    handle.org.advance(timedelta(days=10))
    writer = _writer(handle).split(".")[0]
    handle.org.add_fault({"server": writer, "endpoint": "host", "cmdlet": "Get-Date",
                          "kind": "error", "message": "clock unavailable"})
    report = status_json(lab_org(handle))
    checked = datetime.fromisoformat(report["checked_at"])
    assert abs(checked - datetime.now(UTC)) < timedelta(minutes=1)
    assert kinds(report) == ["none"]  # the failed clock read is no finding


def test_a_time_given_by_the_caller_asks_no_clock(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("healthy")
    from datetime import datetime, timedelta

    report = run_status(handle)
    checked = datetime.fromisoformat(report["checked_at"])
    assert abs(checked - handle.org.now()) < timedelta(minutes=1)
    assert not [c for c in handle.org.calls() if c["command"] == "Get-Date"]
