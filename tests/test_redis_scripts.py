"""Lua runs through redis-py's Script: by SHA (EVALSHA), the body sent again only when the
server does not know it, never as EVAL with the whole text on every call."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from workers import audit
from workers.changes import approval, operation, writer_lock
from workers.redis_scripts import LuaScript
from workers.warnings import warning_state
from workers.warnings.rules import Notice

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Recording(redis.Redis):
    """A real client that remembers the name of every command it sends."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)


@pytest.fixture()
def rec(redis_url: str) -> Iterator[Recording]:
    client = Recording.from_url(redis_url)
    client.sent = []
    yield client
    client.close()


def test_every_script_goes_by_sha(rec: Recording) -> None:
    op = operation.create(rec, "contoso", "cleanup", "UREQ", [], now=T0)
    operation.save(rec, op, now=T0)
    approval.request(rec, op["id"], 0, requester="UREQ", ttl_minutes=60, now=T0)
    approval.decide(rec, op["id"], 0, user="UBOB", decision="approve", reason="",
                    approvers={"UBOB"}, user_groups=set(), allow_self_approval=False, now=T0)
    assert approval.claim_for_run(rec, op["id"], 0, now=T0)
    warning_state.count_failures(rec, "contoso", ["ex1.contoso.lab"], "run-1")
    warning_state.commit(rec, "contoso", Notice(key="auth:current:AB", band=30, kind="new",
                                                text="t", severity="critical", title="t",
                                                news="n"),  # type: ignore[arg-type]
                         now=T0, channel="C1", ts="1.1")
    assert warning_state.snooze(rec, "contoso", "auth:current:AB", "UBOB", now=T0)
    audit.record(rec, org="contoso", actor="UBOB", action="fix", target="t", outcome="ok", now=T0)
    token = writer_lock.acquire(rec, "contoso", "w1", 30)
    assert token and writer_lock.extend(rec, "contoso", token, 60)
    assert writer_lock.release(rec, "contoso", token)

    assert "EVAL" not in rec.sent
    assert rec.sent.count("EVALSHA") >= 10


def test_a_script_the_server_does_not_know_is_loaded_once(rec: Recording) -> None:
    nonce = secrets.token_hex(8)  # a body no server has seen yet
    script = LuaScript(f"return {{KEYS[1], ARGV[1], '{nonce}'}}")
    assert script(rec, ["k"], ["a"]) == [b"k", b"a", nonce.encode()]
    assert script(rec, ["k"], ["b"]) == [b"k", b"b", nonce.encode()]
    # first call: NOSCRIPT, SCRIPT LOAD, again; second: by SHA only
    assert rec.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA", "EVALSHA"]
