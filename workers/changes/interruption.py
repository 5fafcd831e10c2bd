"""Noticing, within about two minutes, a step whose worker died.

How a dead step is noticed - the choice, and why:
- rq's abandoned-job handling (workers.jobs.deadline.reap_abandoned) finds a dead job only
  once its StartedJobRegistry entry expires: the job time limit + 60 s, 31 minutes for a
  change job. Shortening the time limit would cut off a legitimately long step (IIS
  resets, service restarts), so it stays as the backstop that fails the job in rq.
- A separate heartbeat key would be a second thing to keep alive, failing exactly when the
  lock fails.
- The writer lock is already the one thing a live step must hold and renew
  (workers.changes.lock_keeper: 60 s, extended every 20 s). A step is `running` only inside
  its lock (workers.changes.execute.run_step sets it after taking the lock and finishes it
  before letting go), so **a running step whose org has no writer lock has lost its
  worker**. That is what is used here.

One exception: a worker cut off from Redis (an outage longer than the lock) finds its lock
lapsed when Redis returns and takes it back within a second or two. So a lockless
sighting is only noted (`redis_keys.lockless`, first-seen time) and the step is declared
interrupted once it stayed lockless for SEEN_GRACE_S. `exauth cron` looks every 10 s, so
a killed worker's step is declared at most about 60 + 15 + 10 s after the kill.

Declaring marks the operation `interrupted` ({step, at}), which the card shows as
"interrupted at step N" until `/exauth resume` (workers.changes.lifecycle.resume) clears
it; the caller (workers.jobs.interruption_notice) writes the audit entry and tells Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from workers import redis_keys
from workers.changes import operation, writer_lock

SEEN_GRACE_S = 15.0  # lockless this long: dead (a worker back from an outage re-locks in ~1 s)
SIGHTING_TTL_S = 600  # a sighting nobody follows up (the step finished) goes by itself


@dataclass(frozen=True)
class Interrupted:
    """A step declared interrupted: the operation after marking, and the step's index."""

    op: dict[str, Any]
    index: int


def running_step(op: dict[str, Any]) -> int | None:
    """The index of the operation's step left `running`, if its next step is one."""
    for step in op["steps"]:
        if step["state"] in ("done", "skipped"):
            continue
        return int(step["index"]) if step["state"] == "running" else None
    return None


def notice(conn: redis.Redis, *, now: datetime | None = None) -> list[Interrupted]:
    """Look at every open operation once; returns the steps declared interrupted now."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    out = []
    for op in operation.open_ops(conn):
        index = running_step(op)
        if index is None or op.get("interrupted"):
            continue
        key = redis_keys.lockless(op["id"], index)
        if writer_lock.holder(conn, op["org"]) is not None:
            conn.delete(key)  # alive (or being resumed)
            continue
        conn.set(key, repr(moment.timestamp()), nx=True, ex=SIGHTING_TTL_S)
        first = conn.get(key)
        if first is None or moment.timestamp() - float(first) < SEEN_GRACE_S:
            continue
        marked = mark(conn, op["id"], index, now=moment)
        conn.delete(key)
        if marked is not None:
            out.append(Interrupted(marked, index))
    return out


def mark(conn: redis.Redis, op_id: str, index: int, *, now: datetime | None = None
         ) -> dict[str, Any] | None:
    """Mark step `index` interrupted, unless it moved on meanwhile; the saved document."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    changed = False

    def mutate(doc: dict[str, Any]) -> None:
        nonlocal changed
        changed = (doc["state"] in operation.OPEN_STATES and running_step(doc) == index
                   and not doc.get("interrupted"))
        if changed:
            doc["interrupted"] = {"step": index, "at": moment.isoformat()}

    saved = operation.update(conn, op_id, mutate, now=moment)
    return saved if changed else None


def clear(op: Any) -> None:
    """Forget the mark (in a mutate of operation.update, or of Operation.change): the step
    is being taken care of."""
    if isinstance(op, dict):
        op.pop("interrupted", None)
    elif getattr(op, "interrupted", None) is not None:
        op.interrupted = None


def describe(op: Any) -> str | None:
    """"interrupted at step N" for a marked open operation (a document or an Operation),
    else None."""
    get = op.get if isinstance(op, dict) else lambda name: getattr(op, name, None)
    mark_ = get("interrupted")
    if not isinstance(mark_, dict) or get("state") not in operation.OPEN_STATES:
        return None
    return f"interrupted at step {int(mark_['step']) + 1}"
