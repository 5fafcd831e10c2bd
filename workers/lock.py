"""The per-org writer lock: at most one worker changes an org at a time.

Creating auth certificates on two servers at once makes two certificates of which only the
last wins (DOMAIN.md 5.2), so every state-changing step runs under this lock. It is a Redis
key `exauth:lock:<org>` set with NX and an expiry (a crashed worker cannot hold it forever),
whose value carries a random token: only the holder of the token may extend or release it,
checked and acted on inside one Lua call so an expired-and-retaken lock is never released
by its previous owner.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis

from workers import redis_keys

_IF_HOLDER = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, held = pcall(cjson.decode, raw)
if not ok or type(held) ~= 'table' or held['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == 'release' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


class LockBusy(Exception):
    """Another owner holds the org's writer lock; the message names it."""


def lock_key(org: str) -> str:
    if not isinstance(org, str) or not org:
        raise ValueError("lock: org must be a non-empty name")
    return redis_keys.writer_lock(org)


def acquire(
    conn: redis.Redis, org: str, owner: str, ttl_s: float, *, now: datetime | None = None
) -> str | None:
    """Take the lock for `ttl_s` seconds; returns the token, or None when it is held."""
    token = secrets.token_hex(16)
    value = json.dumps(
        {
            "token": token,
            "owner": owner,
            "acquired_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        }
    )
    if conn.set(lock_key(org), value, nx=True, px=_ms(ttl_s)):
        return token
    return None


def release(conn: redis.Redis, org: str, token: str) -> bool:
    """Free the lock if `token` still holds it; False when it expired or someone else has it."""
    return bool(conn.eval(_IF_HOLDER, 1, lock_key(org), token, "release", "0"))


def extend(conn: redis.Redis, org: str, token: str, ttl_s: float) -> bool:
    """Reset the expiry to `ttl_s` from now, only for the current holder (long steps)."""
    return bool(conn.eval(_IF_HOLDER, 1, lock_key(org), token, "extend", str(_ms(ttl_s))))


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
