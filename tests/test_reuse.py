"""Reuse before create (workers.changes.reuse): which certificate a new rotation adopts,
and which unused duplicates it proposes to remove. Pure rules on observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from workers.changes import reuse
from workers.status.findings import AUTH_SUBJECT
from workers.status.observation import AuthConfigObs, CertFacts, OrgObs, ServerObs

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
CURRENT, OURS, OLDER, MANUAL = "C" * 40, "A" * 40, "B" * 40, "D" * 40


def cert(thumbprint: str, made: datetime, *, subject: str = AUTH_SUBJECT,
         years: int = 5) -> CertFacts:
    return CertFacts(thumbprint, subject, made, made + timedelta(days=365 * years), "sha256",
                     2048)


def server(name: str, *certs: CertFacts) -> ServerObs:
    return ServerObs(name, f"{name}.contoso.lab", "Site-A", "Version 15.2 (Build 1544.4)",
                     ("Mailbox",), certificates=certs)


def obs(*writer_certs: CertFacts, other: tuple[CertFacts, ...] = (),
        auth: AuthConfigObs | None = None) -> OrgObs:
    return OrgObs("contoso", NOW, auth or AuthConfigObs(CURRENT),
                  (server("ex1", cert(CURRENT, NOW - timedelta(days=1800)), *writer_certs),
                   server("ex2", *other)), writer="ex1.contoso.lab")


def failed_op(op_id: str, started: datetime, recorded: str | None = None) -> dict[str, Any]:
    return {"id": op_id, "state": "failed", "kind": "replace_now",
            "status_checked_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recorded": {"new_thumbprint": recorded} if recorded else {}}


def test_the_certificate_a_failed_rotation_recorded_is_reused() -> None:
    made = NOW - timedelta(days=2)
    seen = obs(cert(OURS, made))
    assert reuse.worth_asking(seen) and not reuse.worth_asking(obs())
    found = reuse.find(seen, [failed_op("op1", made, recorded=OURS)])
    assert found == reuse.Reusable(OURS, "op1", "recorded")
    assert "no second certificate is created" in found.line()


def test_one_made_in_a_rotation_s_time_window_is_found_unrecorded() -> None:
    """The worker was killed between create and record; the operation failed later."""
    started = NOW - timedelta(days=2)
    found = reuse.find(obs(cert(OURS, started + timedelta(seconds=40))),
                       [failed_op("op1", started)])
    assert found == reuse.Reusable(OURS, "op1", "found")


def test_what_is_never_reused() -> None:
    started = NOW - timedelta(days=2)
    ops = [failed_op("op1", started)]
    made = started + timedelta(minutes=1)
    assert reuse.find(obs(cert(OURS, started - timedelta(days=30))), ops) is None  # before
    assert reuse.find(obs(cert(OURS, made, subject="CN=mail.contoso.com")), ops) is None
    assert reuse.find(obs(cert(OURS, made, years=1)), ops) is None  # not enough life left
    named = AuthConfigObs(CURRENT, next=OURS)
    assert reuse.find(obs(cert(OURS, made), auth=named), ops) is None  # AuthConfig uses it
    assert reuse.find(obs(cert(OURS, made)), []) is None  # no exauth operation made it
    assert reuse.find(obs(other=(cert(OURS, made),)), ops) is None  # not on the writer


def test_the_newest_is_adopted_and_the_others_are_duplicates_on_every_server() -> None:
    first, second = NOW - timedelta(days=9), NOW - timedelta(days=2)
    ops = [failed_op("op2", second, recorded=OURS), failed_op("op1", first, recorded=OLDER)]
    older = cert(OLDER, first + timedelta(minutes=1))
    seen = obs(cert(OURS, second + timedelta(minutes=1)), older, other=(older,))
    assert reuse.find(seen, ops) == reuse.Reusable(OURS, "op2", "recorded")
    pairs = reuse.duplicates(seen, ops)
    assert pairs == [("ex1.contoso.lab", OLDER), ("ex2.contoso.lab", OLDER)]
    steps = reuse.duplicate_steps(pairs)
    assert [s["cmdlet"] for s in steps] == ["Remove-ExchangeCertificate"] * 2
    assert all(s["changes_state"] and s["kind"] == "remove_old_auth_cert" for s in steps)
    assert steps[1]["parameters"] == [["Server", "ex2.contoso.lab"], ["Thumbprint", OLDER],
                                      ["Confirm", False]]
