"""The last rehearsal of each kind of change per org, so the real operation's card can say
"rehearsed <when>: ok" (or what went wrong) when it is started afterwards.

Kept apart from the operation documents on purpose: a rehearsal is not an operation of the
org (it ran on a replica, under a replica's own name), and a card only needs one line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from workers import redis_keys

RECORD_TTL = 7 * 24 * 3600  # a week-old rehearsal says little about today's org


def save(conn: redis.Redis, org: str, kind: str, *, at: datetime, ok: bool, line: str) -> None:
    """Remember one rehearsal: when (our clock), whether it went as planned, one line why."""
    conn.set(redis_keys.rehearsal(org, kind),
             json.dumps({"at": at.isoformat(), "ok": ok, "line": line[:300]}), ex=RECORD_TTL)


def latest(conn: redis.Redis, org: str, kind: str) -> dict[str, Any] | None:
    """{"at", "ok", "line"} of the last rehearsal of `kind` on `org`, or None."""
    raw = conn.get(redis_keys.rehearsal(org, kind))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "at" in data else None


def for_operation(conn: redis.Redis, org: str, kind: str) -> str | None:
    """The card's line about the last rehearsal of `kind` on `org`; None when there was
    none, or when Redis cannot say (a card is never held up by it)."""
    try:
        return card_line(latest(conn, org, kind))
    except redis.RedisError:
        return None


def card_line(record: dict[str, Any] | None) -> str | None:
    """"rehearsed 2026-11-30 13:05 UTC: ok" or "rehearsed ...: <what went wrong>"."""
    if not record:
        return None
    try:
        when = datetime.fromisoformat(str(record["at"])).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        when = str(record["at"])
    return f"rehearsed {when}: {'ok' if record.get('ok') else record.get('line') or 'failed'}"
