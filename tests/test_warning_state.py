"""Warning state in a real Redis (workers.warnings.warning_state): commit, claims, counters, snooze,
expiry of everything under exauth:warn:."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from workers.warnings import warning_state as ws
from workers.warnings.rules import Notice

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
ORG = "contoso"


def new(key: str = "auth:current:AAAA", band: int | None = 30, severity: str = "critical",
        kind: str = "new") -> Notice:
    return Notice(key=key, band=band, kind=kind, text="t", severity=severity, title="Auth AAAA",
                  news="n1")  # type: ignore[arg-type]


def test_commit_then_snapshot_round_trips(conn: redis.Redis) -> None:
    ws.commit(conn, ORG, new(), now=T0, channel="C1", ts="1.000001")
    snap = ws.snapshot(conn, ORG)
    state = snap["auth:current:AAAA"]
    assert (state.band, state.severity, state.posted_on, state.channel, state.ts, state.news,
            state.title) == (30, "critical", "2025-03-01", "C1", "1.000001", "n1", "Auth AAAA")
    # a repeat keeps the band and the message, moves the date
    ws.commit(conn, ORG, new(kind="repeat"), now=T0 + timedelta(days=1))
    state = ws.get(conn, ORG, "auth:current:AAAA")
    assert state is not None and (state.band, state.ts, state.posted_on) == (
        30, "1.000001", "2025-03-02")
    ws.commit(conn, ORG, new(kind="resolved"), now=T0 + timedelta(days=2))
    assert ws.snapshot(conn, ORG) == {}


def test_every_key_is_under_exauth_warn_and_expires(conn: redis.Redis) -> None:
    ws.commit(conn, ORG, new(), now=T0, channel="C1", ts="1.1")
    ws.count_failures(conn, ORG, ["ex3.contoso.lab"], "run-1")
    assert ws.claim(conn, ORG, new("backend:ex1:CCCC"))
    keys = [k.decode() for k in conn.keys("*")]
    assert keys and all(k.startswith("exauth:warn:") for k in keys)
    for key in keys:
        ttl = conn.pttl(key)
        assert ttl > 0, f"{key} has no expiry"
        assert ttl <= ws.STATE_TTL.total_seconds() * 1000


def test_expired_state_drops_out_of_the_index(conn: redis.Redis) -> None:
    ws.commit(conn, ORG, new(), now=T0, channel="C1", ts="1.1")
    conn.delete(ws.state_key(ORG, "auth:current:AAAA"))  # what expiry does
    assert ws.snapshot(conn, ORG) == {}
    assert conn.smembers(ws.index_key(ORG)) == set()


def test_a_claim_is_taken_once_until_committed_or_released(conn: redis.Redis) -> None:
    notice = new()
    assert ws.claim(conn, ORG, notice)
    assert not ws.claim(conn, ORG, notice)  # a second sweep at the same time
    ws.release(conn, ORG, notice.key)
    assert ws.claim(conn, ORG, notice)
    ws.commit(conn, ORG, notice, now=T0, channel="C1", ts="1.1")
    assert ws.claim(conn, ORG, notice)  # commit released it


def test_failures_count_once_per_sweep_run(conn: redis.Redis) -> None:
    assert ws.count_failures(conn, ORG, ["ex3"], "run-1") == {"ex3": 1}
    assert ws.count_failures(conn, ORG, ["ex3"], "run-1") == {"ex3": 1}  # RQ retry
    assert ws.count_failures(conn, ORG, ["ex3"], "run-2") == {"ex3": 2}
    assert ws.snapshot(conn, ORG)["unreachable:ex3"].failures == 2
    ws.forget(conn, ORG, ["unreachable:ex3"])
    assert ws.count_failures(conn, ORG, ["ex3"], "run-3") == {"ex3": 1}


def test_snooze_records_band_and_severity_and_needs_a_posted_warning(
        conn: redis.Redis) -> None:
    assert ws.snooze(conn, ORG, "auth:current:AAAA", "U1", now=T0) is None
    ws.commit(conn, ORG, new(band=7), now=T0, channel="C1", ts="1.1")
    state = ws.snooze(conn, ORG, "auth:current:AAAA", "U1", now=T0)
    assert state is not None
    assert state.snooze_until == T0 + timedelta(days=7)
    assert (state.snooze_band, state.snooze_severity, state.snoozed_by) == (7, "critical", "U1")
    assert state.snoozed(T0 + timedelta(days=6)) and not state.snoozed(T0 + timedelta(days=7))
    # a notice that lifts the snooze clears it
    lifted = Notice(key="auth:current:AAAA", band=3, kind="new", text="t", severity="critical",
                    lifts_snooze=True)
    ws.commit(conn, ORG, lifted, now=T0 + timedelta(days=2), channel="C1", ts="1.2")
    after = ws.get(conn, ORG, "auth:current:AAAA")
    assert after is not None and after.snooze_until is None and after.band == 3


def test_orgs_do_not_see_each_other(conn: redis.Redis) -> None:
    ws.commit(conn, "a", new(), now=T0, channel="C1", ts="1.1")
    assert ws.snapshot(conn, "b") == {}
    assert set(ws.snapshot(conn, "a")) == {"auth:current:AAAA"}
    assert ws.memory_bytes(conn, "a") > 0 and ws.memory_bytes(conn, "b") == 0


def test_on_org_clock_follows_the_last_sweeps_reading(conn: redis.Redis) -> None:
    ours = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert ws.on_org_clock(conn, "contoso", ours) == ours  # nothing read yet
    ws.note_clock(conn, "contoso", timedelta(days=33, seconds=-2))
    assert ws.on_org_clock(conn, "contoso", ours) == ours + timedelta(days=33, seconds=-2)
    assert ws.on_org_clock(conn, "fabrikam", ours) == ours
    assert 0 < conn.pttl(ws.clock_key("contoso")) <= (
        ws.STATE_TTL.total_seconds() * 1000)
