"""The `hybrid_app` status section and its findings, from what was read (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.hybrid_app.key_findings import NEXT_NEAR, HybridAppRead, hybrid_app_status
from workers.hybrid_app.keys import AppKey
from workers.status.report_model import Finding, HybridAppStatus

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CUR, NXT, PRE, OLD = "A" * 40, "B" * 40, "C" * 40, "D" * 40


def key(thumbprint: str, name: str = "") -> AppKey:
    return AppKey(key_id=thumbprint[:8].lower(), thumbprint=thumbprint, display_name=name,
                  start=NOW - timedelta(days=10), end=NOW + timedelta(days=300),
                  type="AsymmetricX509Cert", usage="Verify", der=None)


def judge(keys: list[AppKey] | None, *, next_: str | None = None,
          effective: datetime | None = None, error: str | None = None,
          hybrid: bool = True, configured: bool = True
          ) -> tuple[HybridAppStatus | None, list[Finding]]:
    read = HybridAppRead(app_id="app", keys=None if keys is None else tuple(keys), error=error)
    return hybrid_app_status(read, hybrid=hybrid, configured=configured, current=CUR,
                             next_=next_, previous=PRE, next_effective=effective, now=NOW)


def codes(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.code.value, f.severity.value) for f in findings]


def test_a_non_hybrid_org_has_no_section_and_no_findings() -> None:
    assert judge(None, hybrid=False) == (None, [])


def test_current_and_next_on_the_app_is_clean() -> None:
    section, findings = judge([key(CUR), key(NXT)], next_=NXT, effective=NOW + timedelta(days=30))
    assert findings == []
    assert section is not None
    assert (section.current_on_app, section.next_on_app) == (True, True)
    assert [k.role.value for k in section.keys] == ["current", "next"]


def test_current_missing_is_critical() -> None:
    _, findings = judge([key(PRE)])
    assert codes(findings) == [("HYBRID_APP_CURRENT_MISSING", "critical")]


def test_next_missing_is_a_warning_until_its_effective_date_is_near() -> None:
    far = NOW + NEXT_NEAR + timedelta(hours=1)
    assert codes(judge([key(CUR)], next_=NXT, effective=far)[1]) == [
        ("HYBRID_APP_NEXT_MISSING", "warning")]
    for effective in (NOW + NEXT_NEAR, NOW - timedelta(hours=2)):
        assert codes(judge([key(CUR)], next_=NXT, effective=effective)[1]) == [
            ("HYBRID_APP_NEXT_MISSING", "critical")]


def test_stale_keys_are_info_and_previous_is_not_stale() -> None:
    section, findings = judge([key(CUR), key(PRE), key(OLD, "old one")])
    assert codes(findings) == [("HYBRID_APP_STALE_KEY", "info")]
    assert "old one" in findings[0].message
    assert section is not None
    assert [k.role.value for k in section.keys] == ["current", "previous", "stale"]


def test_unreadable_is_unknown_with_graphs_reason() -> None:
    reason = "read application app: 403 Authorization_RequestDenied: Insufficient privileges"
    section, findings = judge(None, error=reason)
    assert codes(findings) == [("HYBRID_APP_UNREADABLE", "unknown")]
    assert reason in findings[0].message
    assert section is not None and section.error == reason and section.read is False


def test_a_hybrid_org_without_the_table_is_told_once() -> None:
    section, findings = judge(None, configured=False)
    assert codes(findings) == [("HYBRID_APP_NOT_CONFIGURED", "info")]
    assert section is not None and section.configured is False
