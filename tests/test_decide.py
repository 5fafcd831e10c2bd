"""The decision of DOMAIN.md section 4, first match wins, with every boundary."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.test_findings import (
    CUR,
    NOW,
    NXT,
    OTHER,
    PREV,
    backend,
    cert,
    fqdn,
    healthy,
    org,
    server,
)
from workers.status.decide import actions
from workers.status.observation import BackendObs, OrgObs

E1, E2, E3 = fqdn("ex1"), fqdn("ex2"), fqdn("ex3")
ALL = [E1, E2, E3]


def staged(cur_days: float = 1000, next_days: float = 1800, *, missing: tuple[str, ...] = (),
           age: timedelta = timedelta(days=2), effective: timedelta | None = timedelta(days=20),
           **kwargs: object) -> OrgObs:
    """ex1+ex2 in Site-A (ex1 writer), ex3 in Site-B; next staged except on `missing`."""
    current = cert(CUR, cur_days)
    nxt = cert(NXT, next_days, age=age)

    def store(name: str) -> tuple:
        return (current,) if name in missing else (current, nxt)

    return org(
        server("ex1", *store("ex1")), server("ex2", *store("ex2")),
        server("ex3", *store("ex3"), site="Site-B"),
        next=NXT, effective=None if effective is None else NOW + effective, **kwargs,  # type: ignore[arg-type]
    )


def three(cur_days: float, **kwargs: object) -> OrgObs:
    current = cert(CUR, cur_days)
    return org(server("ex1", current), server("ex2", current),
               server("ex3", current, site="Site-B"), **kwargs)  # type: ignore[arg-type]


CASES: list[tuple[str, OrgObs, list[tuple[str, list[str]]]]] = [
    ("healthy", healthy(), [("none", [])]),
    # rule 0
    ("unreachable-blocks", org(server("ex1", cert(CUR, 10)),
                               server("ex2", reachable=False, listed=False, back=None)),
     [("blocked", [E2])]),
    ("edge-unreachable-does-not-block",
     org(server("ex1", cert(CUR)), server("edge", roles=("Edge",), reachable=False,
                                          listed=False, back=None)),
     [("none", [])]),
    ("exchange-2010-ignored",
     org(server("ex1", cert(CUR)), server("old", version="Version 14.3 (Build 123.4)",
                                          roles=("Mailbox",))),
     [("none", [])]),
    ("no-in-scope-server", org(server("edge", roles=("Edge",))), [("blocked", [])]),
    # rules 1 and 2
    ("current-not-set-no-next", org(server("ex1", cert(OTHER)), server("ex2"), current=None),
     [("replace_now", [E1, E2])]),
    ("current-expired-no-next", three(-1), [("replace_now", ALL)]),
    ("current-on-no-server", org(server("ex1"), server("ex2")), [("replace_now", [E1, E2])]),
    ("current-expired-next-usable", staged(cur_days=-1, effective=timedelta(days=3)),
     [("publish_next", ALL)]),
    ("current-expired-next-missing-somewhere", staged(cur_days=-1, missing=("ex3",)),
     [("replace_now", ALL)]),
    ("current-expired-next-expired", staged(cur_days=-1, next_days=-1),
     [("replace_now", ALL)]),
    # rule 3 (+ continuation)
    ("current-missing-on-one", org(server("ex1", cert(CUR)), server("ex2")),
     [("import_current", [E2])]),
    ("current-missing-and-expiring",
     org(server("ex1", cert(CUR, 50)), server("ex2")),
     [("import_current", [E2]), ("stage_new", [E1])]),
    ("current-missing-next-staged-waits",
     org(server("ex1", cert(CUR), cert(NXT)), server("ex2", cert(NXT)), next=NXT,
         effective=NOW + timedelta(days=5)),
     [("import_current", [E2]), ("wait_for_publish", [])]),
    # rule 4 boundaries: current 61/60/59 days, next 121/120/119 days
    ("current-61-days", three(61), [("none", [])]),
    ("current-60-days", three(60), [("stage_new", [E1])]),
    ("current-59-days", three(59), [("stage_new", [E1])]),
    ("current-60.5-days-is-60-whole", three(60.5),
     [("stage_new", [E1])]),
    ("next-121-days", staged(cur_days=50, next_days=121), [("wait_for_publish", [])]),
    ("next-120-days", staged(cur_days=50, next_days=120), [("stage_new", [E1])]),
    ("next-119-days", staged(cur_days=50, next_days=119), [("stage_new", [E1])]),
    ("stage-new-without-writer-targets-all", three(50, writer=None), [("stage_new", ALL)]),
    ("staged-next-expired-is-replaced", staged(next_days=-1), [("stage_new", [E1])]),
    ("staged-next-on-no-server-is-replaced",
     org(server("ex1", cert(CUR)), next=NXT, effective=NOW + timedelta(days=3)),
     [("stage_new", [E1])]),
    # rule 5
    ("next-missing-cross-site-23h59-waits",
     staged(missing=("ex3",), age=timedelta(hours=23, minutes=59)),
     [("wait_replication", [E3])]),
    ("next-missing-cross-site-24h01-imports",
     staged(missing=("ex3",), age=timedelta(hours=24, minutes=1)),
     [("import_next", [E3])]),
    ("next-missing-same-site-imports-at-once",
     staged(missing=("ex2",), age=timedelta(hours=1)), [("import_next", [E2])]),
    ("next-missing-both-sites-imports",
     staged(missing=("ex2", "ex3"), age=timedelta(hours=1)), [("import_next", [E2, E3])]),
    ("next-missing-no-writer-imports",
     staged(missing=("ex3",), age=timedelta(hours=1), writer=None), [("import_next", [E3])]),
    ("writer-given-by-short-name",
     staged(missing=("ex3",), age=timedelta(hours=1), writer="EX1"),
     [("wait_replication", [E3])]),
    # rule 6
    ("next-effective-in-future", staged(), [("wait_for_publish", [])]),
    ("next-due-11h59-ago", staged(effective=-timedelta(hours=11, minutes=59)),
     [("wait_for_publish", [])]),
    ("next-due-12h01-ago", staged(effective=-timedelta(hours=12, minutes=1)),
     [("publish_next", ALL)]),
    ("next-effective-after-current-expiry", staged(cur_days=70, effective=timedelta(days=80)),
     [("publish_next", ALL)]),
    ("next-without-effective-date", staged(effective=None), [("publish_next", ALL)]),
    # back end
    ("backend-broken-first",
     org(server("ex1", cert(CUR, 50)), server("ex2", cert(CUR, 50), back=BackendObs(False))),
     [("repair_backend", [E2]), ("stage_new", [E1])]),
    ("backend-expiring-after-auth",
     org(server("ex1", cert(CUR, 50), back=backend("ex1", 10)), server("ex2", cert(CUR, 50))),
     [("stage_new", [E1]), ("repair_backend", [E1])]),
    ("backend-not-checked-is-no-action", org(server("ex1", cert(CUR), back=None)),
     [("none", [])]),
    ("blocked-offers-no-backend-repair-either",
     org(server("ex1", cert(CUR), back=BackendObs(True, "")),
         server("ex2", reachable=False, listed=False)),
     [("blocked", [E2])]),
    # rule 7
    ("previous-left-after-rotation",
     org(server("ex1", cert(CUR), cert(PREV)), server("ex2", cert(CUR)), previous=PREV),
     [("cleanup", [E1])]),
    ("no-cleanup-while-next-staged", staged(previous=PREV), [("wait_for_publish", [])]),
    ("no-cleanup-while-blocked",
     org(server("ex1", cert(CUR), cert(PREV)), server("ex2", reachable=False, listed=False),
         previous=PREV),
     [("blocked", [E2])]),
    # hybrid never blocks
    ("hybrid-healthy", healthy(hybrid=True), [("none", [])]),
    ("hybrid-expiring", three(50, hybrid=True), [("stage_new", [E1])]),
]


@pytest.mark.parametrize(("obs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(obs: OrgObs, expected: list[tuple[str, list[str]]]) -> None:
    assert [(a.kind, a.servers) for a in actions(obs)] == expected


def test_override_unreachable_gives_the_underlying_decision() -> None:
    obs = org(server("ex1", cert(CUR, 10)), server("ex2", reachable=False, listed=False))
    assert [a.kind for a in actions(obs)] == ["blocked"]
    assert "stage_new" in actions(obs)[0].reason
    overridden = actions(obs, override_unreachable=True)
    assert [(a.kind, a.servers) for a in overridden] == [("stage_new", [E1])]


def test_wait_replication_reason_says_when_to_import() -> None:
    obs = staged(missing=("ex3",), age=timedelta(hours=5))
    (item,) = actions(obs)
    assert "2025-01-16T07:00:00Z" in item.reason


def test_wait_for_publish_reason_says_when() -> None:
    (item,) = actions(staged(effective=timedelta(days=20)))
    assert "2025-02-04T12:00:00Z" in item.reason


def test_action_shape() -> None:
    for obs in (healthy(), three(10), staged(missing=("ex3",))):
        for item in actions(obs):
            assert list(item.model_dump()) == ["kind", "servers", "reason"]
            assert item.reason
