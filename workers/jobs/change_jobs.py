"""RQ job functions of operations, and how they are enqueued.

Job arguments are ids only (org name, operation id, step index, approval request id): no
parameters, no thumbprints from chat, no secrets. A worker loads its own settings and
re-reads Exchange. Every change job goes on the change queue under `approval.job_id` of the
approval it carries out, so a double click, a Slack retry or an RQ redelivery cannot
enqueue or run it twice (and `approval.claim_for_run` refuses a second run anyway).

Callbacks are dotted paths into `bot/` (bot.callbacks.operation_progress), passed as strings so
`workers/`
never imports `bot/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
from rq.job import Job

from config.errors import ConfigError
from config.load import load_settings
from config.schema import OrgSettings
from workers.changes import approval, execute, lifecycle, operation
from workers.changes.change_states import StepState
from workers.changes.operation import Operation
from workers.clock import SYSTEM_CLOCK, Clock
from workers.exchange.client import ExchangeClient
from workers.jobs.queues import (
    connect,
    enqueue_change,
)
from workers.status.decide import actions

ON_SUCCESS = "bot.callbacks.operation_progress.operation_updated"
ON_FAILURE = "bot.callbacks.operation_progress.operation_job_failed"
ON_SWEEP = "bot.callbacks.operation_progress.sweep_done"


def _op_org(op_id: str) -> tuple[OrgSettings, redis.Redis, Operation]:
    """The operation (loaded once for the whole job, which changes it as an object), the
    settings of its org (the job carries only the id) and a connection."""
    settings = load_settings()
    conn = connect(settings.redis.url)
    op = Operation.require(conn, op_id)
    return settings.org(op.org), conn, op


# --- jobs -----------------------------------------------------------------------------------


def start_operation_job(
    org_name: str, kind: str | None, requester: str, servers: list[str] | None = None,
    override: bool = False, *, clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Read the org, choose the action (`kind`, or the first the status recommends), create
    the operation and carry it to its first approval. (`clock` is ours, for the books;
    rq passes only the ids, so a worker keeps the system clock.)"""
    settings = load_settings()
    org, conn = settings.org(org_name), connect(settings.redis.url)
    client = ExchangeClient(org)
    obs, status = execute.observe(org, client, clock=clock)
    if override:
        status = status.model_copy(update={"actions": actions(obs, override_unreachable=True)})
    action = lifecycle.choose_action(status, kind, servers or None)
    op = lifecycle.start(conn, org, obs, status, action, requester, override=override,
                          clock=clock)
    return lifecycle.advance(conn, org, op, client=client, clock=clock)


def run_step_job(op_id: str, step_index: int, request_id: str, *,
                 clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Run one approved step (exactly once), then carry the operation on."""
    org, conn, op = _op_org(op_id)
    client = ExchangeClient(org)
    result = execute.run_step(conn, org, op, step_index, request_id, client=client,
                              clock=clock)
    followed = lifecycle.advance(conn, org, op, client=client, clock=clock)
    followed["events"] = [{"step": step_index, "state": result["state"],
                           "detail": result["detail"]}, *followed["events"]]
    return followed


def advance_job(op_id: str, *, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    org, conn, op = _op_org(op_id)
    return lifecycle.advance(conn, org, op, clock=clock)


def resume_job(op_id: str, actor: str, *, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    org, conn, op = _op_org(op_id)
    return lifecycle.resume(conn, org, op, actor=actor, clock=clock)


def resume_due_job(*, clock: Clock = SYSTEM_CLOCK) -> list[dict[str, Any]]:
    """The sweep: every waiting operation whose time has come, and every step left running
    by a worker that died (older than the job timeout), is carried on."""
    settings = load_settings()
    conn = connect(settings.redis.url)

    def org_now(name: str) -> datetime:
        try:
            return execute.org_now(settings.org(name), clock=clock)
        except ConfigError:  # no longer configured: its operations wait on our clock
            return clock.now()

    out = []
    ids = {op.id for op in lifecycle.due(conn, org_now)}
    for op in operation.open_operations(conn):
        index = op.next_index()
        if index is not None and op.step(index).state == StepState.RUNNING and \
                lifecycle.is_stale(op.step(index), clock):
            ids.add(op.id)
    for op_id in sorted(ids):
        fresh = Operation.fetch(conn, op_id)  # as it is now: an earlier resume took time
        if fresh is None:
            continue
        org = settings.org(fresh.org)
        try:
            out.append(lifecycle.resume(conn, org, fresh, actor="exauth", clock=clock))
        except Exception as exc:  # one operation's trouble must not stop the sweep
            out.append({"op_id": op_id, "org": fresh.org, "state": "error",
                        "events": [{"step": None, "state": "failed",
                                    "detail": execute.error_line(exc)}]})
    return out


# --- enqueueing ---------------------------------------------------------------------------


def enqueue_step(
    conn: redis.Redis, record: Mapping[str, Any], *, meta: Mapping[str, Any] | None = None,
    on_success: str = ON_SUCCESS, on_failure: str = ON_FAILURE,
) -> Job:
    """Enqueue the approved step under its approval's job id (one job per approval round)."""
    op_id, step = str(record["op_id"]), int(record["step"])
    job = enqueue_change(conn, "workers.jobs.change_jobs.run_step_job",
                         (op_id, step, str(record["request_id"])),
                         meta={"op_id": op_id, **(meta or {})}, on_success=on_success,
                         on_failure=on_failure, job_id=approval.job_id(dict(record)))
    approval.mark_enqueued(conn, op_id, step, job.id)
    return job


def enqueue(
    conn: redis.Redis, func: str, args: tuple[Any, ...], *, meta: Mapping[str, Any],
    on_success: str = ON_SUCCESS, on_failure: str = ON_FAILURE,
) -> Job:
    """Enqueue an operation job (start, advance, resume, sweep) on the change queue."""
    return enqueue_change(conn, f"workers.jobs.change_jobs.{func}", args, meta=meta,
                          on_success=on_success, on_failure=on_failure)
