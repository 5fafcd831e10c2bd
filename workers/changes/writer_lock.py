"""The per-org writer lock: at most one worker changes an org at a time.

Creating auth certificates on two servers at once makes two certificates of which only the
last wins (DOMAIN.md 5.2), so every state-changing step runs under this lock. It is
redis-py's `redis.lock.Lock` on the key workers.redis_keys.writer_lock (never blocking): set
with NX and an expiry (a crashed worker cannot hold it forever), and only the holder of its
token may extend or release it, checked inside one Lua call so an expired-and-retaken lock is
never released by its previous owner.

The token of a redis-py Lock is the stored value itself; here that is the JSON
{token (random), owner, acquired_at} exauth always stored, so `holder` can name the owner
(and never shows the token) and locks taken by earlier releases read the same. `acquire`
returns that value as the token, and `release`/`extend`/`writer_lock` rebuild a Lock around
it, so a token can pass between calls and threads (the cron scheduler renews from its loop),
and a running step can keep its lock alive with `Lock.extend`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from config.errors import ExauthError
from workers import redis_keys


class LockBusy(ExauthError):
    """Another owner holds the org's writer lock; the message names it."""


def lock_key(org: str) -> str:
    if not isinstance(org, str) or not org:
        raise ValueError("lock: org must be a non-empty name")
    return redis_keys.writer_lock(org)


def writer_lock(conn: redis.Redis, org: str, ttl_s: float | None, token: str | None = None
                ) -> Lock:
    """redis-py's Lock on the org's key, never waiting; with `token`, one already held.

    The token is kept per Lock object, not per thread: whoever has it may act on it."""
    held_lock = Lock(conn, lock_key(org), timeout=ttl_s, blocking=False, thread_local=False)
    if token is not None:
        held_lock.local.token = conn.get_encoder().encode(token)
    return held_lock


def acquire(
    conn: redis.Redis, org: str, owner: str, ttl_s: float, *, now: datetime | None = None
) -> str | None:
    """Take the lock for `ttl_s` seconds; returns the token, or None when it is held."""
    value = json.dumps(
        {
            "token": secrets.token_hex(16),
            "owner": owner,
            "acquired_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        }
    )
    _ms(ttl_s)  # refuses a TTL under 1 ms (redis-py would take it as "no expiry")
    if writer_lock(conn, org, ttl_s).acquire(token=value):
        return value
    return None


def release(conn: redis.Redis, org: str, token: str) -> bool:
    """Free the lock if `token` still holds it; False when it expired or someone else has it."""
    try:
        writer_lock(conn, org, None, token).release()
    except LockNotOwnedError:
        return False
    return True


def extend(conn: redis.Redis, org: str, token: str, ttl_s: float) -> bool:
    """Reset the expiry to `ttl_s` from now, only for the current holder (long steps)."""
    _ms(ttl_s)  # refuses a TTL under 1 ms
    try:
        return writer_lock(conn, org, ttl_s, token).extend(ttl_s, replace_ttl=True)
    except LockNotOwnedError:
        return False


def holder(conn: redis.Redis, org: str) -> dict[str, Any] | None:
    """Who holds the lock and for how much longer; never the token (it is the capability)."""
    key = lock_key(org)
    with conn.pipeline(transaction=True) as pipe:
        pipe.get(key)
        pipe.pttl(key)
        raw, pttl = pipe.execute()
    if raw is None:
        return None
    try:
        held = json.loads(raw)
    except ValueError:
        held = {}
    return {
        "owner": held.get("owner", "?"),
        "acquired_at": held.get("acquired_at"),
        "expires_in_s": max(int(pttl), 0) / 1000 if pttl is not None else None,
    }


@contextmanager
def held(conn: redis.Redis, org: str, owner: str, ttl_s: float) -> Iterator[str]:
    """Run a block under the lock (yields the token); LockBusy when someone else has it."""
    token = acquire(conn, org, owner, ttl_s)
    if token is None:
        current = holder(conn, org)
        who = current["owner"] if current else "someone"
        raise LockBusy(f"org {org} is busy: {who} holds its writer lock")
    try:
        yield token
    finally:
        release(conn, org, token)


def _ms(ttl_s: float) -> int:
    ms = int(ttl_s * 1000)
    if ms < 1:
        raise ValueError("lock: ttl_s must be positive")
    return ms
