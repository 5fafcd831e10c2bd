"""A step's short writer lock is kept alive while it runs and lapses when it dies; a
running step whose lock lapsed is declared interrupted, once, after a grace (real Redis)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from tests.test_operation import T0, new_op
from workers.changes import interruption, lock_keeper, operation, writer_lock


def test_the_keeper_keeps_a_short_lock_past_its_ttl_and_frees_it(conn: redis.Redis) -> None:
    with lock_keeper.KeptLock(conn, "contoso", "op/1", ttl_s=0.6) as kept:
        time.sleep(1.5)  # more than twice the TTL: only the keep-alive explains it held
        held = writer_lock.holder(conn, "contoso")
        assert held is not None and held["owner"] == "op/1"
        assert kept.still_held() and not kept.outage_seen
        with (pytest.raises(writer_lock.LockBusy, match="op/1 holds its writer lock"),
              lock_keeper.KeptLock(conn, "contoso", "resume")):
            pass
    assert writer_lock.holder(conn, "contoso") is None


def test_a_lapsed_lock_is_taken_back_unless_someone_else_took_it(conn: redis.Redis) -> None:
    with lock_keeper.KeptLock(conn, "contoso", "op/1") as kept:
        conn.delete(writer_lock.lock_key("contoso"))  # lapsed (e.g. Redis was away)
        assert kept.beat() and writer_lock.holder(conn, "contoso")["owner"] == "op/1"
        conn.delete(writer_lock.lock_key("contoso"))
        assert writer_lock.acquire(conn, "contoso", "resume", 60)  # someone else has it now
        assert not kept.beat() and kept.lost and not kept.still_held()
    assert writer_lock.holder(conn, "contoso")["owner"] == "resume"  # not released by us


def test_an_unreachable_redis_is_an_outage_seen_not_an_error(conn: redis.Redis) -> None:
    with lock_keeper.KeptLock(conn, "contoso", "op/1") as kept:
        kept._quick = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
        assert not kept.beat() and kept.outage_seen and not kept.lost


def running_op(conn: redis.Redis) -> dict:
    op = new_op(conn)
    operation.set_step(conn, op["id"], 0, "done", now=T0)
    return operation.set_step(conn, op["id"], 1, "running", now=T0)


def test_a_running_step_without_its_lock_is_declared_once_after_the_grace(
        conn: redis.Redis) -> None:
    op = running_op(conn)
    assert interruption.notice(conn, now=T0) == []  # first sighting only
    assert interruption.notice(conn, now=T0 + timedelta(seconds=5)) == []
    [found] = interruption.notice(conn, now=T0 + timedelta(seconds=interruption.SEEN_GRACE_S))
    assert (found.op["id"], found.index) == (op["id"], 1)
    assert interruption.describe(found.op) == "interrupted at step 2"
    assert interruption.notice(conn, now=T0 + timedelta(minutes=5)) == []  # said once
    operation.update(conn, op["id"], interruption.clear)
    assert interruption.describe(operation.require(conn, op["id"])) is None


def test_a_step_whose_lock_is_held_is_alive(conn: redis.Redis) -> None:
    running_op(conn)
    assert interruption.notice(conn, now=T0) == []
    assert writer_lock.acquire(conn, "contoso", "op/2", 60)  # renewed (or being resumed)
    assert interruption.notice(conn, now=T0 + timedelta(minutes=5)) == []
    conn.delete(writer_lock.lock_key("contoso"))
    # the lockless time counts again from the next sighting, not from the first one
    assert interruption.notice(conn, now=T0 + timedelta(minutes=6)) == []


def test_steps_not_running_are_never_declared(conn: redis.Redis) -> None:
    op = new_op(conn)
    operation.set_step(conn, op["id"], 0, "awaiting_approval", now=T0)
    for seconds in (0, 60, 600):
        assert interruption.notice(conn, now=T0 + timedelta(seconds=seconds)) == []
