"""Redis round trips of one approved step, counted on a real client.

An operation is loaded once per job and saved with a compare-and-set, instead of being
re-read by id at every turn (issue 10). The job of an approved step (the create step of a
staged rotation: run it, then carry the operation on to the next approval) sent, measured
here: before, 23 commands, 15 of them on the operation document (11 GET, 4 saves); now 13,
5 on the document (1 GET, 4 saves: running, the recorded thumbprint, done, the next
approval). The figures are printed (`-s`) and bounded here, so a change that brings the
re-reads back fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.test_operations_lab import Env, approve, env_for, start  # noqa: F401
from workers import redis_keys
from workers.jobs import change_jobs


class Counting(redis.Redis):
    """A real client that remembers every command it sends and the key it names."""

    sent: list[tuple[str, str]]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        key = ""
        if name == "EVALSHA" and len(args) > 3 and int(args[2]) > 0:
            key = str(args[3])
        elif len(args) > 1:
            key = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
        self.sent.append((name, key))
        return super().execute_command(*args, **options)


def _count(env: Env, monkeypatch: pytest.MonkeyPatch, job: Callable[[], Any]
           ) -> tuple[int, Counter[str]]:
    """How many commands `job` sends, and those on the operation document by name."""
    conn = Counting.from_url(_url(env.conn))
    conn.sent = []
    monkeypatch.setattr(change_jobs, "connect", lambda url, **kw: conn)
    job()
    on_op = [c for c in conn.sent if c[1].startswith(redis_keys.OPERATION_PREFIX)]
    print(f"\n{len(conn.sent)} commands, {len(on_op)} on the operation document: "
          f"{Counter(name for name, _ in on_op)}; all: {Counter(n for n, _ in conn.sent)}")
    return len(conn.sent), Counter(name for name, _ in on_op)


def _url(conn: redis.Redis) -> str:
    kw = conn.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def test_round_trips_of_one_approved_step(env_for: Callable[..., Env],  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_for("expiring-sha1")
    op_id = start(env)
    step = approve(env, op_id)  # the create step; its run, then up to the next approval
    total, on_op = _count(env, monkeypatch, lambda: change_jobs.run_step_job(
        op_id, step["index"], step["request_id"], clock=env.clock))
    assert on_op == {"GET": 1, "EVALSHA": 4}  # loaded once; each write a compare-and-set
    assert total <= 13
