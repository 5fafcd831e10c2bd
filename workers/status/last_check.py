"""The last check of each org, kept in Redis: what `/metrics` and the Home tab show.

A scrape or a Home tab opening must never cost an Exchange read (a 60-server org takes
tens of seconds, and Prometheus scrapes every 15 s), so every status read by a worker
(the status and plan jobs, the warnings sweep) leaves its result here, and a failed read
leaves its outcome beside the last good status instead of replacing it:

    exauth:status:<org>  (hash)
      status        the status JSON of DESIGN.md, as the job returned it
      succeeded_at  when it was stored (this machine's clock, ISO 8601)
      attempted_at  when the last read ended, good or not
      outcome       "ok" | "failed"
      error         one line of why the last read failed ("" after a good one)
      digest        SHA-256 of the status without `checked_at`: a change of it is what
                    "the org's status changed" means (the Home tab is published again)

The status is read as the dict contract through the accessor functions below, so the
typed status models (branch status-model) can replace the dict without touching callers.
The CLI's `exauth status` stores nothing: it runs without Redis.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from workers import redis_keys

log = logging.getLogger(__name__)

SLOTS = ("current", "next", "previous")


@dataclass(frozen=True)
class LastCheck:
    """One org's stored check: the last good status (None before the first) and the last
    attempt's outcome."""

    org: str
    status: dict[str, Any] | None
    succeeded_at: datetime | None
    attempted_at: datetime | None
    outcome: str  # "ok" | "failed" | "never"
    error: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def record_success(conn: redis.Redis, status: Any, now: datetime | None = None) -> bool:
    """Store a status just read (the JSON document, or the OrgStatus model); True when it
    differs from the one stored before (apart from its `checked_at`)."""
    status = as_document(status)
    org = str(status["org"])
    when = _iso(now)
    digest = status_digest(status)
    key = redis_keys.last_status(org)
    pipe = conn.pipeline()
    pipe.hget(key, "digest")
    pipe.hset(key, mapping={"status": json.dumps(status, default=str), "succeeded_at": when,
                            "attempted_at": when, "outcome": "ok", "error": "",
                            "digest": digest})
    before = pipe.execute()[0]
    return (before.decode() if isinstance(before, bytes) else before) != digest


def record_failure(conn: redis.Redis, org: str, error: str,
                   now: datetime | None = None) -> None:
    """A read of the org failed: note it; the last good status stays."""
    conn.hset(redis_keys.last_status(org), mapping={
        "attempted_at": _iso(now), "outcome": "failed", "error": error[:500]})


def load(conn: redis.Redis, org: str) -> LastCheck:
    """The stored check of one org (outcome "never" when it was never checked here)."""
    return _parse(org, conn.hgetall(redis_keys.last_status(org)))


def load_many(conn: redis.Redis, orgs: list[str]) -> list[LastCheck]:
    """The stored checks of several orgs in one round trip."""
    pipe = conn.pipeline(transaction=False)
    for org in orgs:
        pipe.hgetall(redis_keys.last_status(org))
    return [_parse(org, raw) for org, raw in zip(orgs, pipe.execute(), strict=True)]


def status_digest(status: dict[str, Any]) -> str:
    stable = {k: v for k, v in status.items() if k != "checked_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def store_quietly(conn: redis.Redis | None, status: Any = None, *,
                  org: str = "", error: str | None = None) -> bool:
    """record_success / record_failure for a job: a Redis problem here is logged, never
    raised (the job's own result matters more than this copy of it). True: changed."""
    if conn is None:
        return False
    try:
        if status is not None:
            return record_success(conn, status)
        record_failure(conn, org, error or "unknown error")
    except Exception as exc:
        log.warning("last check of %s not stored: %s", org, type(exc).__name__)
    return False


# --- accessors of the status JSON (DESIGN.md "Status JSON") -----------------------------


def as_document(status: Any) -> dict[str, Any]:
    """The status JSON of a status model (workers.status.report_model.OrgStatus) or of a
    document already."""
    to_json = getattr(status, "to_json", None)
    document = to_json() if callable(to_json) else status
    if not isinstance(document, dict):
        raise TypeError("a status is a dict or an OrgStatus")
    return document


def overall_state(status: dict[str, Any]) -> tuple[str, int]:
    """(ok | warning | critical | unknown, its exit code) of a stored status JSON, judged
    by workers.status.report.overall; a document that no longer reads as a status (an older
    release's) is ("unknown", 3)."""
    from workers.status.report import overall
    from workers.status.report_model import parse_status

    try:
        state = overall(parse_status(status))
    except Exception as exc:
        log.warning("stored status of %s not readable: %s", status.get("org"),
                    type(exc).__name__)
        return "unknown", 3
    return state.value, state.exit_code


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time of the status ("Z" or an offset) as an aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def checked_time(status: dict[str, Any]) -> datetime | None:
    return parse_time(status.get("checked_at"))


def auth_cert(status: dict[str, Any], slot: str) -> dict[str, Any] | None:
    """The Auth Certificate in `slot` (current, next, previous), or None."""
    cert = (status.get("auth") or {}).get(slot)
    return cert if isinstance(cert, dict) else None


def cert_window(cert: dict[str, Any] | None) -> tuple[datetime | None, datetime | None]:
    """(not_before, not_after) of a certificate entry."""
    if cert is None:
        return None, None
    return parse_time(cert.get("not_before")), parse_time(cert.get("not_after"))


def next_effective(status: dict[str, Any]) -> datetime | None:
    cert = auth_cert(status, "next")
    return parse_time(cert.get("effective")) if cert else None


def backends(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The back end entries: server, thumbprint, not_after, days_left, problem."""
    return [b for b in status.get("backend") or [] if isinstance(b, dict)]


def servers(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in status.get("servers") or [] if isinstance(s, dict)]


def findings_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in status.get("findings") or [] if isinstance(f, dict)]


def _parse(org: str, raw: dict[Any, Any]) -> LastCheck:
    fields = {(k.decode() if isinstance(k, bytes) else k):
              (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
    status = None
    if fields.get("status"):
        try:
            status = json.loads(fields["status"])
        except ValueError:
            log.warning("stored status of %s is not JSON; ignored", org)
    return LastCheck(org=org, status=status if isinstance(status, dict) else None,
                     succeeded_at=parse_time(fields.get("succeeded_at")),
                     attempted_at=parse_time(fields.get("attempted_at")),
                     outcome=fields.get("outcome") or "never", error=fields.get("error") or "")


def _iso(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat()
