"""The pure warning rules (workers.warnings.rules): subjects, bands, and what to post when.

State between sweeps is applied here by a tiny stand-in for warning_state.commit, so each
test reads as a sequence of daily sweeps; tests/test_warning_state.py and
tests/test_sweep.py cover the real Redis state and Slack.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from workers.status.report_model import BackendProblem, OrgStatus, parse_status
from workers.warnings.rules import (
    Notice,
    WarnState,
    band_for,
    decide,
    key_server,
    org_unreachable,
    stale_keys,
    subjects,
    unknown_servers,
    utc_date,
)

BANDS = (60, 30, 14, 7, 3, 1, 0)
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CUR = "A" * 40
NXT = "B" * 40
BE1 = "C" * 40
SERVERS = ["ex1.contoso.lab", "ex2.contoso.lab", "ex3.contoso.lab"]


def cert(thumb: str, days: int, now: datetime = T0, **extra: Any) -> dict[str, Any]:
    not_after = now + timedelta(days=days, hours=1)
    return {"thumbprint": thumb, "subject": "CN=Microsoft Exchange Server Auth Certificate",
            "not_before": "2020-01-01T00:00:00Z",
            "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), "days_left": days,
            "signature_hash": "sha256", "key_size": 2048, "present_on": list(SERVERS),
            "missing_on": [], "unknown_on": [], **extra}


def status(current_days: int | None = 1000, *, nxt: dict[str, Any] | None = None,
           backend_days: int = 1500, findings: list[dict[str, Any]] | None = None,
           unreachable: tuple[str, ...] = (), actions: list[dict[str, Any]] | None = None,
           current: dict[str, Any] | None = None) -> OrgStatus:
    """A status document as the status job returns it, read by the model as consumers get it."""
    servers = [{"name": fqdn.split(".")[0], "fqdn": fqdn, "site": "Site-A",
                "version": "Version 15.2 (Build 1544.4)", "roles": ["Mailbox"],
                "reachable": fqdn not in unreachable, "error": None} for fqdn in SERVERS]
    return parse_status({
        "org": "contoso", "checked_at": "2025-03-01T08:00:00Z", "hybrid": False,
        "sites": ["Site-A"], "servers": servers,
        "auth": {"current": current or (cert(CUR, current_days) if current_days is not None
                                        else None),
                 "next": {"effective": None, **nxt} if nxt else None, "previous": None},
        "backend": [{"server": SERVERS[0], "thumbprint": BE1, "not_after": "2029-01-01T00:00:00Z",
                     "days_left": backend_days, "problem": None}],
        "findings": findings or [], "actions": actions or [],
    })


def apply(snapshot: dict[str, WarnState], notices: list[Notice],
          now: datetime) -> dict[str, WarnState]:
    """What warning_state.commit does, in memory."""
    out = dict(snapshot)
    for n in notices:
        if n.kind == "resolved":
            out.pop(n.key, None)
            continue
        old = out.get(n.key) or WarnState()
        new = replace(old, severity=n.severity, news=n.news, posted_on=utc_date(now),
                      ts=old.ts or f"ts-{n.key}")
        if n.kind == "new":
            new = replace(new, band=n.band, title=n.title, ts=f"ts-{n.key}-{n.band}")
        if n.lifts_snooze:
            new = replace(new, snooze_until=None, snooze_band=None, snooze_severity=None)
        out[n.key] = new
    return out


def sweep(state: dict[str, WarnState], st: OrgStatus, now: datetime
          ) -> tuple[list[Notice], dict[str, WarnState]]:
    notices = decide(subjects(st), state, now, BANDS, unknown=unknown_servers(st))
    return notices, apply(state, notices, now)


def test_band_for_picks_the_smallest_band_still_covering_days_left() -> None:
    assert band_for(61, BANDS) is None
    assert band_for(60, BANDS) == 60
    assert band_for(59, BANDS) == 60
    assert band_for(30, BANDS) == 30
    assert band_for(29, BANDS) == 30
    assert band_for(7, BANDS) == 7
    assert band_for(2, BANDS) == 3
    assert band_for(0, BANDS) == 0
    assert band_for(-40, BANDS) == 0
    assert band_for(-1, (90, 45)) == 45
    assert band_for(100, (90, 45)) is None


def test_subject_keys_name_the_certificate_and_server() -> None:
    st = status(current_days=50, nxt=cert(NXT, 1800, missing_on=[SERVERS[2]],
                                          present_on=SERVERS[:2], effective=None),
                findings=[
                    {"code": "AUTH_NEXT_PUBLISH_OVERDUE", "severity": "warning", "server": None,
                     "message": "Staged next was due 20 h ago."},
                    {"code": "SERVER_UNREACHABLE", "severity": "critical",
                     "server": SERVERS[1], "message": "ex2 could not be asked."},
                ])
    keys = [s.key for s in subjects(st)]
    assert keys == [
        f"auth:current:{CUR}", f"auth:next:{NXT}", f"backend:{SERVERS[0]}:{BE1}",
        f"overdue:{NXT}", f"missing:{NXT}:{SERVERS[2]}", f"unreachable:{SERVERS[1]}",
    ]
    assert key_server(f"backend:{SERVERS[0]}:{BE1}") == SERVERS[0]
    assert key_server(f"missing:{NXT}:{SERVERS[2]}") == SERVERS[2]
    assert key_server(f"auth:current:{CUR}") is None


def test_waiting_for_cross_site_replication_is_not_a_missing_warning() -> None:
    st = status(nxt=cert(NXT, 1800, missing_on=[SERVERS[2]], effective=None),
                actions=[{"kind": "wait_replication", "servers": [SERVERS[2]], "reason": ""}])
    assert not [s for s in subjects(st) if s.kind == "missing"]


def test_61_then_59_then_29_days_posts_exactly_two_warnings() -> None:
    state: dict[str, WarnState] = {}
    posted: list[Notice] = []
    for day, left in ((0, 61), (2, 59), (32, 29)):
        notices, state = sweep(state, status(left), T0 + timedelta(days=day))
        posted += notices
    assert [(n.kind, n.band) for n in posted] == [("new", 60), ("new", 30)]
    assert posted[1].severity == "critical" and "29 days" in posted[1].text


def test_repeated_sweeps_post_nothing_new() -> None:
    notices, state = sweep({}, status(45), T0)
    assert [n.kind for n in notices] == ["new"]
    for hours in (1, 5, 24, 48, 24 * 10):
        again, state = sweep(state, status(45), T0 + timedelta(hours=hours))
        assert again == []


def test_daily_reminders_from_seven_days_once_per_day() -> None:
    state: dict[str, WarnState] = {}
    kinds: list[tuple[str, int | None]] = []
    for day in range(0, 6):  # 8 days left down to 3
        now = T0 + timedelta(days=day)
        for hour in (0, 6):  # two sweeps a day: the second one is silent
            notices, state = sweep(state, status(8 - day), now + timedelta(hours=hour))
            kinds += [(n.kind, n.band) for n in notices]
    assert kinds == [("new", 14), ("new", 7), ("repeat", 7), ("repeat", 7), ("repeat", 7),
                     ("new", 3)]


def test_expired_keeps_reminding_daily() -> None:
    notices, state = sweep({}, status(-1), T0)
    assert [(n.kind, n.band) for n in notices] == [("new", 0)]
    assert "expired 1 day ago" in notices[0].text
    again, state = sweep(state, status(-2), T0 + timedelta(days=1))
    assert [n.kind for n in again] == ["repeat"]


def test_snooze_holds_until_it_ends_or_the_band_gets_worse() -> None:
    _, state = sweep({}, status(7), T0)
    key = f"auth:current:{CUR}"
    state[key] = replace(state[key], snooze_until=T0 + timedelta(days=7), snooze_band=7,
                         snooze_severity="critical")
    for day in (1, 2, 3):  # 6, 5, 4 days left: band 7, no reminder while snoozed
        notices, state = sweep(state, status(7 - day), T0 + timedelta(days=day))
        assert notices == []
    notices, state = sweep(state, status(3), T0 + timedelta(days=4))
    assert [(n.kind, n.band, n.lifts_snooze) for n in notices] == [("new", 3, True)]
    assert "snooze lifted" in notices[0].text
    assert state[key].snooze_until is None


def test_snooze_ends_by_itself() -> None:
    bands = (60, 30)  # 29 days down to expiry are all one band here
    notices = decide(subjects(status(6)), {}, T0, bands)
    state = apply({}, notices, T0)
    key = f"auth:current:{CUR}"
    state[key] = replace(state[key], snooze_until=T0 + timedelta(days=7), snooze_band=30,
                         snooze_severity="critical")
    quiet = [decide(subjects(status(6 - d)), state, T0 + timedelta(days=d), bands)
             for d in range(1, 7)]
    assert quiet == [[]] * 6
    back = decide(subjects(status(-1)), state, T0 + timedelta(days=7), bands)
    assert [n.kind for n in back] == ["repeat"]


def test_unreachable_only_after_two_failed_sweeps() -> None:
    st = status(findings=[{"code": "SERVER_UNREACHABLE", "severity": "critical",
                           "server": SERVERS[2], "message": "ex3 could not be asked."}],
                unreachable=(SERVERS[2],))
    key = f"unreachable:{SERVERS[2]}"
    first = decide(subjects(st), {key: WarnState(failures=1)}, T0, BANDS)
    assert first == []
    second = decide(subjects(st), {key: WarnState(failures=2)}, T0, BANDS)
    assert [(n.key, n.kind) for n in second] == [(key, "new")]
    # it answers again: the posted warning is resolved; an unposted counter is forgotten
    healthy = subjects(status())
    done = decide(healthy, {key: WarnState(failures=3, posted_on="2025-03-01", title="ex3")},
                  T0, BANDS)
    assert [(n.key, n.kind) for n in done] == [(key, "resolved")]
    assert stale_keys(healthy, {key: WarnState(failures=1)}) == [key]


def test_renewed_certificate_resolves_its_warning_but_unknown_is_not_gone() -> None:
    _, state = sweep({}, status(20, backend_days=20), T0)
    assert set(state) == {f"auth:current:{CUR}", f"backend:{SERVERS[0]}:{BE1}"}
    # ex1 cannot be asked: its back end subject disappears but is not resolved
    st = status(current=cert("D" * 40, 1800), unreachable=(SERVERS[0],))
    st.backend[0] = st.backend[0].model_copy(
        update={"thumbprint": None, "days_left": None, "problem": BackendProblem.UNKNOWN})
    notices = decide(subjects(st), state, T0 + timedelta(days=1), BANDS,
                     unknown=unknown_servers(st))
    assert [(n.key, n.kind) for n in notices] == [(f"auth:current:{CUR}", "resolved")]
    assert "no longer the current" in notices[0].text


def test_failed_status_resolves_nothing() -> None:
    _, state = sweep({}, status(20), T0)
    found = [org_unreachable("contoso", "timed out")]
    state["unreachable:org"] = WarnState(failures=2)
    notices = decide(found, state, T0 + timedelta(days=1), BANDS, complete=False)
    assert [(n.key, n.kind) for n in notices] == [("unreachable:org", "new")]


def test_successor_on_track_is_info_and_not_repeated() -> None:
    nxt = cert(NXT, 1800, effective=(T0 + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    notices, state = sweep({}, status(5, nxt=nxt), T0)
    assert [(n.kind, n.severity) for n in notices] == [("new", "info")]
    assert "publishes on 2025-03-03" in notices[0].text
    again, _ = sweep(state, status(4, nxt=nxt), T0 + timedelta(days=1))
    assert again == []


def test_news_within_a_band_goes_to_the_thread() -> None:
    _, state = sweep({}, status(40), T0)
    nxt = cert(NXT, 1800, missing_on=[SERVERS[2]], present_on=SERVERS[:2], effective=None)
    notices, state = sweep(state, status(39, nxt=nxt), T0 + timedelta(days=1))
    kinds = {(n.key.split(":")[0], n.kind) for n in notices}
    assert ("auth", "thread") in kinds  # successor staged: news for the current cert
    assert ("missing", "new") in kinds


def test_notice_round_trips_through_json_dict() -> None:
    notice = Notice(key="k", band=7, kind="repeat", text="t", severity="critical", title="x")
    assert Notice.from_dict(notice.to_dict()) == notice
