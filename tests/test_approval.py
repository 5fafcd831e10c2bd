"""Approvals: who may decide, exactly one decision, exactly one run, refusals change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.race import race
from workers.changes import approval

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
APPROVERS = {"UALICE", "UBOB", "SADMINS"}
OP = "a1b2c3d4e5f6"


def raw(conn: redis.Redis, step: int = 0) -> dict[bytes, bytes]:
    return conn.hgetall(approval.approval_key(OP, step))


def open_request(conn: redis.Redis, step: int = 0, requester: str = "UREQ") -> dict[str, Any]:
    return approval.request(conn, OP, step, requester=requester, ttl_minutes=60, now=T0)


def click(conn: redis.Redis, user: str, decision: str = "approve", **kw: Any) -> approval.Decision:
    args: dict[str, Any] = {
        "user": user,
        "decision": decision,
        "reason": "",
        "approvers": APPROVERS,
        "user_groups": set(),
        "allow_self_approval": False,
        "now": T0 + timedelta(minutes=5),
    }
    args.update(kw)
    return approval.decide(conn, OP, 0, **args)


@pytest.mark.parametrize(
    ("user", "groups", "approvers", "allowed"),
    [
        ("UALICE", set(), {"UALICE"}, True),
        ("UEVE", set(), {"UALICE"}, False),
        ("UEVE", {"SADMINS"}, {"UALICE", "SADMINS"}, True),
        ("UEVE", {"SOTHER"}, {"UALICE", "SADMINS"}, False),
        ("UALICE", {"SADMINS"}, set(), False),  # nobody listed: nobody approves
    ],
    ids=["listed-user", "unlisted-user", "member-of-listed-group", "other-group", "empty-list"],
)
def test_is_allowed_approver(
    user: str, groups: set[str], approvers: set[str], allowed: bool
) -> None:
    assert approval.is_allowed_approver(user, groups, approvers) is allowed


def test_request_is_idempotent_while_pending(conn: redis.Redis) -> None:
    first = open_request(conn)
    assert first["state"] == "pending"
    assert first["requester"] == "UREQ"
    assert first["expires_at"] == (T0 + timedelta(minutes=60)).isoformat()
    again = approval.request(
        conn, OP, 0, requester="UREQ", ttl_minutes=60, now=T0 + timedelta(minutes=1)
    )
    assert again == first  # a retried card post does not open a second round


def test_twenty_concurrent_approvals_make_exactly_one(conn: redis.Redis, redis_url: str) -> None:
    open_request(conn)
    results: list[approval.Decision] = []

    def approve(client: redis.Redis, i: int) -> None:
        results.append(click(client, "UALICE" if i % 2 else "UBOB"))

    race(20, redis_url, approve)
    winners = [r for r in results if r.ok]
    assert len(results) == 20
    assert len(winners) == 1
    assert winners[0].code == "approved"
    assert {r.code for r in results if not r.ok} == {"already_decided"}
    stored = approval.get(conn, OP, 0)
    assert stored is not None
    assert stored["state"] == "approved"
    assert stored["decided_by"] == winners[0].record["decided_by"]  # type: ignore[index]


def test_concurrent_approve_and_deny_have_one_winner(conn: redis.Redis, redis_url: str) -> None:
    open_request(conn)
    results: list[approval.Decision] = []

    def decide(client: redis.Redis, i: int) -> None:
        if i % 2:
            results.append(click(client, "UALICE"))
        else:
            results.append(click(client, "UBOB", "deny", reason="not today"))

    race(20, redis_url, decide)
    winners = [r for r in results if r.ok]
    assert len(winners) == 1
    assert approval.get(conn, OP, 0)["state"] == winners[0].code  # type: ignore[index]


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"user": "UEVE"}, "not_approver"),
        ({"user": "UEVE", "user_groups": {"SOTHER"}}, "not_approver"),
        ({"user": "UEVE", "decision": "deny", "reason": "no"}, "not_approver"),
        ({"user": "UREQ", "approvers": APPROVERS | {"UREQ"}}, "self_approval"),
        ({"user": "UALICE", "decision": "deny", "reason": "   "}, "reason_required"),
        ({"user": "UALICE", "decision": "maybe"}, "invalid"),
        ({"user": "UALICE", "request_id": "0123456789abcdef"}, "stale"),
    ],
    ids=[
        "non-approver",
        "wrong-group",
        "non-approver-deny",
        "self-approval",
        "deny-no-reason",
        "bad-decision",
        "stale-card",
    ],
)
def test_refusals_change_nothing(conn: redis.Redis, kw: dict[str, Any], code: str) -> None:
    open_request(conn)
    before = raw(conn)
    user = kw.pop("user")
    result = click(conn, user, **kw)
    assert not result.ok
    assert result.code == code
    assert "\n" not in result.message and result.message
    assert raw(conn) == before


def test_expired_request_is_refused_and_marked_expired(conn: redis.Redis) -> None:
    open_request(conn)
    result = click(conn, "UALICE", now=T0 + timedelta(minutes=60))
    assert (result.ok, result.code) == (False, "expired")
    stored = approval.get(conn, OP, 0)
    assert stored is not None
    assert stored["state"] == "expired"
    assert "decided_by" not in stored
    assert approval.claim_for_run(conn, OP, 0) is False
    # A later click is refused as already decided and changes nothing.
    before = raw(conn)
    assert click(conn, "UBOB", now=T0 + timedelta(minutes=61)).code == "already_decided"
    assert raw(conn) == before


def test_just_before_expiry_still_counts(conn: redis.Redis) -> None:
    open_request(conn)
    result = click(conn, "UALICE", now=T0 + timedelta(minutes=59, seconds=59))
    assert result.ok


def test_group_membership_counts(conn: redis.Redis) -> None:
    open_request(conn)
    result = click(conn, "UEVE", user_groups={"SADMINS"})
    assert (result.ok, result.code) == (True, "approved")
    assert result.record["decided_by"] == "UEVE"  # type: ignore[index]


def test_self_approval_when_the_org_allows_it(conn: redis.Redis) -> None:
    open_request(conn)
    result = click(conn, "UREQ", approvers=APPROVERS | {"UREQ"}, allow_self_approval=True)
    assert (result.ok, result.code) == (True, "approved")


def test_requester_may_withdraw_with_a_deny(conn: redis.Redis) -> None:
    open_request(conn)
    result = click(conn, "UREQ", "deny", reason="wrong org")
    assert (result.ok, result.code) == (True, "denied")
    assert result.record["reason"] == "wrong org"  # type: ignore[index]


def test_decide_on_unknown_step(conn: redis.Redis) -> None:
    result = click(conn, "UALICE")
    assert (result.ok, result.code) == (False, "not_found")
    assert conn.keys("exauth:*") == []


def test_run_exactly_once_despite_redelivery(conn: redis.Redis, redis_url: str) -> None:
    open_request(conn)
    assert approval.claim_for_run(conn, OP, 0) is False  # pending: nothing to run
    decided = click(conn, "UALICE")
    job = approval.job_id(decided.record)  # type: ignore[arg-type]
    assert all(c.isalnum() or c in "-_" for c in job)
    assert approval.mark_enqueued(conn, OP, 0, job) is True
    assert approval.mark_enqueued(conn, OP, 0, job) is False

    claims: list[bool] = []

    def claim(client: redis.Redis, _: int) -> None:
        claims.append(approval.claim_for_run(client, OP, 0))

    race(20, redis_url, claim)
    assert claims.count(True) == 1
    assert approval.get(conn, OP, 0)["state"] == "running"  # type: ignore[index]
    assert approval.finish(conn, OP, 0, "done", detail="ok") is True
    assert approval.finish(conn, OP, 0, "failed") is False
    stored = approval.get(conn, OP, 0)
    assert stored is not None
    assert stored["state"] == "done"
    assert stored["job_id"] == job
    assert approval.claim_for_run(conn, OP, 0) is False


def test_request_again_only_after_a_dead_end(conn: redis.Redis) -> None:
    first = open_request(conn)
    click(conn, "UALICE")
    before = raw(conn)
    with pytest.raises(approval.ApprovalError, match="already approved"):
        open_request(conn)
    assert raw(conn) == before

    approval.claim_for_run(conn, OP, 0)
    approval.finish(conn, OP, 0, "failed")  # e.g. the recovery path after a killed worker
    second = open_request(conn)
    assert second["state"] == "pending"
    assert second["request_id"] != first["request_id"]
    # The old card cannot approve the new round.
    stale = click(conn, "UBOB", request_id=first["request_id"])
    assert stale.code == "stale"
    fresh = click(conn, "UBOB", request_id=second["request_id"])
    assert fresh.ok


def test_an_unanswered_request_can_be_renewed_after_its_ttl(conn: redis.Redis) -> None:
    first = open_request(conn)
    later = T0 + timedelta(minutes=61)
    second = approval.request(conn, OP, 0, requester="UREQ", ttl_minutes=60, now=later)
    assert second["request_id"] != first["request_id"]
    assert second["expires_at"] == (later + timedelta(minutes=60)).isoformat()
    assert click(conn, "UALICE", now=later + timedelta(minutes=1)).ok


def test_request_validates_its_input(conn: redis.Redis) -> None:
    with pytest.raises(approval.ApprovalError):
        approval.request(conn, OP, 0, requester="UREQ", ttl_minutes=0, now=T0)
    with pytest.raises(approval.ApprovalError):
        approval.request(conn, OP, 0, requester="", ttl_minutes=5, now=T0)
    with pytest.raises(ValueError):
        approval.request(conn, "bad:id", 0, requester="UREQ", ttl_minutes=5, now=T0)
    assert conn.keys("exauth:*") == []


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_group_cache_asks_again_after_its_ttl() -> None:
    clock = FakeClock()
    members = {"SADMINS": {"UALICE"}}
    calls: list[str] = []

    def fetch(group: str) -> set[str]:
        calls.append(group)
        return set(members[group])

    cache = approval.GroupCache(fetch, ttl_s=60, clock=clock)
    assert cache.membership("UALICE", APPROVERS - {"UALICE"}).groups == {"SADMINS"}
    members["SADMINS"] = {"UBOB"}  # Alice leaves the group in Slack
    clock.t += 59
    assert cache.membership("UALICE", APPROVERS - {"UALICE"}).groups == {"SADMINS"}  # still cached
    assert calls == ["SADMINS"]  # user IDs in the list are never looked up as groups
    clock.t += 1
    assert cache.membership("UALICE", APPROVERS - {"UALICE"}).groups == set()  # fresh after 60 s
    assert cache.members("SADMINS") == {"UBOB"}
    assert calls == ["SADMINS", "SADMINS"]


def test_group_cache_does_not_cache_failures_and_caps_ttl() -> None:
    attempts: list[str] = []

    def flaky(group: str) -> set[str]:
        attempts.append(group)
        if len(attempts) == 1:
            raise ConnectionError("slack down")
        return {"UALICE"}

    cache = approval.GroupCache(flaky, ttl_s=60, clock=FakeClock())
    with pytest.raises(ConnectionError):
        cache.members("SADMINS")
    assert cache.members("SADMINS") == {"UALICE"}
    assert len(attempts) == 2
    with pytest.raises(ValueError):
        approval.GroupCache(flaky, ttl_s=61)


def test_messages_number_steps_from_one_as_the_card_does(conn: redis.Redis) -> None:
    open_request(conn, step=3)
    approved = approval.decide(conn, OP, 3, user="UALICE", decision="approve",
                               approvers=APPROVERS, now=T0 + timedelta(minutes=5))
    assert approved.ok and f"step 4 of operation {OP} approved by UALICE" == approved.message
    again = approval.decide(conn, OP, 3, user="UBOB", decision="approve", approvers=APPROVERS,
                            now=T0 + timedelta(minutes=6))
    assert again.code == "already_decided" and again.message.startswith("step 4 of")
    with pytest.raises(approval.ApprovalError, match=r"^step 4 of operation"):
        open_request(conn, step=3)
