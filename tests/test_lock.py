"""The per-org writer lock: exclusive, released only by its holder, and it expires."""

from __future__ import annotations

import time

import pytest
import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from tests.race import race
from workers.changes import writer_lock


def test_one_holder_at_a_time_per_org(conn: redis.Redis) -> None:
    token = writer_lock.acquire(conn, "contoso", "worker-1", 30)
    assert token
    assert writer_lock.acquire(conn, "contoso", "worker-2", 30) is None
    assert writer_lock.acquire(conn, "fabrikam", "worker-2", 30)  # other orgs are independent
    held = writer_lock.holder(conn, "contoso")
    assert held is not None
    assert held["owner"] == "worker-1"
    assert 0 < held["expires_in_s"] <= 30
    assert token not in repr(held)  # the token is the capability; nobody else sees it


def test_concurrent_acquire_has_exactly_one_winner(conn: redis.Redis, redis_url: str) -> None:
    tokens: list[str | None] = []

    def contend(client: redis.Redis, n: int) -> None:
        tokens.append(writer_lock.acquire(client, "contoso", f"w{n}", 30))

    race(20, redis_url, contend)
    assert len(tokens) == 20
    assert len([t for t in tokens if t]) == 1


def test_only_the_holder_releases_or_extends(conn: redis.Redis) -> None:
    token = writer_lock.acquire(conn, "contoso", "worker-1", 30)
    assert token
    before = conn.get(writer_lock.lock_key("contoso"))

    assert writer_lock.release(conn, "contoso", "not-the-token") is False
    assert writer_lock.extend(conn, "contoso", "not-the-token", 600) is False
    assert conn.get(writer_lock.lock_key("contoso")) == before
    assert conn.pttl(writer_lock.lock_key("contoso")) <= 30_000

    assert writer_lock.extend(conn, "contoso", token, 600) is True
    assert conn.pttl(writer_lock.lock_key("contoso")) > 30_000
    assert writer_lock.release(conn, "contoso", token) is True
    assert writer_lock.holder(conn, "contoso") is None
    assert writer_lock.release(conn, "contoso", token) is False  # twice is harmless


def test_expired_lock_is_free_and_old_token_cannot_touch_the_new_one(conn: redis.Redis) -> None:
    old = writer_lock.acquire(conn, "contoso", "crashed-worker", 0.05)
    assert old
    time.sleep(0.15)
    assert writer_lock.holder(conn, "contoso") is None
    new = writer_lock.acquire(conn, "contoso", "worker-2", 30)
    assert new
    assert writer_lock.release(conn, "contoso", old) is False
    assert writer_lock.extend(conn, "contoso", old, 30) is False
    held = writer_lock.holder(conn, "contoso")
    assert held is not None
    assert held["owner"] == "worker-2"


def test_held_context_manager_releases_and_reports_busy(conn: redis.Redis) -> None:
    with writer_lock.held(conn, "contoso", "worker-1", 30):
        with (
            pytest.raises(writer_lock.LockBusy, match="worker-1"),
            writer_lock.held(conn, "contoso", "worker-2", 30),
        ):
            pass  # pragma: no cover - never entered
        held = writer_lock.holder(conn, "contoso")
        assert held is not None
        assert held["owner"] == "worker-1"
    assert writer_lock.holder(conn, "contoso") is None


def test_bad_arguments_are_refused(conn: redis.Redis) -> None:
    with pytest.raises(ValueError):
        writer_lock.acquire(conn, "contoso", "w", 0)
    with pytest.raises(ValueError):
        writer_lock.acquire(conn, "", "w", 10)
    assert conn.keys("exauth:lock:*") == []


def test_the_token_is_a_redis_py_lock_token(conn: redis.Redis) -> None:
    """The lock is redis-py's: the token `acquire` returns is the stored value a
    `redis.lock.Lock` compares, so a step may keep it alive with `Lock.extend`."""
    token = writer_lock.acquire(conn, "contoso", "worker-1", 30)
    assert token
    assert conn.get(writer_lock.lock_key("contoso")) == token.encode()
    held = writer_lock.writer_lock(conn, "contoso", 30, token)
    assert isinstance(held, Lock) and held.owned()
    assert held.extend(600, replace_ttl=True)
    assert conn.pttl(writer_lock.lock_key("contoso")) > 30_000
    other = writer_lock.writer_lock(conn, "contoso", 30, "not-the-token")
    with pytest.raises(LockNotOwnedError):
        other.release()
    held.release()
    assert writer_lock.holder(conn, "contoso") is None
