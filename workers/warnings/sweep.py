"""The daily warnings sweep of one org: status -> subjects -> notices -> claimed for Slack.

The sweep reads Exchange (workers.status.collect), updates the failure counters of unreachable
servers, compares what it sees with what was already said (workers.warnings.warning_state) and
returns the notices to post. It never talks to Slack and never imports `bot/`: the job is
enqueued with an RQ on_success callback named by dotted path (`NOTIFY_CALLBACK`, in
bot/callbacks/warning_posts.py) that posts each notice and then records it as said. A notice is
claimed here before it is handed over, so two sweeps of one org at once (cron plus a
manual run, an RQ redelivery) hand over each notice once.

A status that fails as a whole (no server answered) is not an error of the sweep: it is
the subject `unreachable:org`, reported after the second failed sweep in a row like any
unreachable server, and everything else is left as it was (unknown is not resolved).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Callback

from config.load import load_settings
from config.schema import OrgSettings
from workers.changes import lifecycle, operation
from workers.clock import SYSTEM_CLOCK, Clock
from workers.jobs import change_jobs
from workers.jobs.queues import (
    CALLBACK_TIMEOUT,
    FAILURE_TTL,
    READ_TIMEOUT,
    RESULT_TTL,
    SWEEP_QUEUE,
    connect,
    queue,
)
from workers.jobs.read_jobs import failure_reason
from workers.status import last_check
from workers.status.report import checked_at
from workers.status.report_model import OrgStatus
from workers.warnings import warning_state
from workers.warnings.rules import (
    ORG_SERVER,
    Notice,
    decide,
    org_unreachable,
    stale_keys,
    subjects,
    unknown_servers,
)

log = logging.getLogger(__name__)

SWEEP_FUNC = "workers.warnings.sweep.sweep_job"
NOTIFY_CALLBACK = "bot.callbacks.warning_posts.sweep_done"
FAILURE_CALLBACK = "bot.callbacks.warning_posts.sweep_failed"

StatusFunc = Callable[..., OrgStatus]


def sweep_job(org_name: str, run_id: str | None = None) -> dict[str, Any]:
    """RQ entry point: load this worker's settings, sweep one org now."""
    settings = load_settings()
    org = settings.org(org_name)
    conn = connect(settings.redis.url)
    try:
        return sweep(org, conn, now=None, run_id=run_id or _run_id())
    finally:
        conn.close()


def sweep(
    org: OrgSettings,
    conn: redis.Redis,
    *,
    now: datetime | None,
    run_id: str,
    read_status: StatusFunc | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """One sweep; returns the JSON the Slack callback needs (org, channel, notices...).

    `now` None: the org's own clock, as `/exauth status` reads it (this machine's when the
    org cannot be read: `clock`); warnings' bands, daily repeats and snoozes all count on it."""
    collect = read_status or _status
    error: str | None = None
    status: OrgStatus | None = None
    try:
        status = collect(org, now=now, clock=clock)
    except Exception as exc:
        error = failure_reason(type(exc), exc)
        log.warning("sweep %s: status failed: %s", org.name, error)
    # The org's last check, for /metrics and the Home tab (workers.status.last_check).
    changed = last_check.store_quietly(conn, status, org=org.name, error=error)
    if now is None:
        now = clock.now()
        if status is not None:
            org_now = checked_at(status)
            warning_state.note_clock(conn, org.name, org_now - now)
            now = org_now

    if status is not None:
        found = subjects(status)
        unknown = unknown_servers(status)
        complete = True
    else:
        found = [org_unreachable(org.name, error or "unknown error")]
        unknown, complete = set(), False

    failing = [s.server or ORG_SERVER for s in found if s.kind == "unreachable"]
    warning_state.count_failures(conn, org.name, failing, run_id)
    snapshot = warning_state.snapshot(conn, org.name)
    bands = org.warnings.bands_days
    notices = decide(found, snapshot, now, bands, unknown=unknown, complete=complete)
    warning_state.forget(conn, org.name,
                         stale_keys(found, snapshot, unknown=unknown, complete=complete))
    warning_state.touch(conn, org.name, [s.key for s in found if s.key in snapshot])

    handed: list[Notice] = []
    if org.channel:
        handed = [n for n in notices if warning_state.claim(conn, org.name, n)]
    elif notices:
        log.warning("sweep %s: %d warning(s) not posted: the org has no channel configured",
                    org.name, len(notices))
    return {
        "org": org.name,
        "channel": org.channel,
        "swept_at": now.astimezone(UTC).isoformat(),
        "run_id": run_id,
        "error": error,
        "notices": [n.to_dict() for n in handed],
        "follow_ups": follow_up_operations(org, status, conn, now=now),
        "status_changed": changed,
    }


def follow_up_operations(org: OrgSettings, status: OrgStatus | None, conn: redis.Redis,
                         *, now: datetime) -> list[dict[str, Any]]:
    """Open operations move on when the world did, and the sweep has just looked at it.

    An operation not waiting for a person (its next step is not awaiting approval or
    running) gets an advance job: it re-reads Exchange, runs read-only steps and, when a
    staged certificate has become current, puts the post-publish steps (clear previous,
    recycle OWA/ECP pools, HCW reminder) up for approval on its card. The offer says which
    of the two this is, for the log and the callback.
    """
    if status is None:  # Exchange could not be read: nothing to judge by
        return []
    current = status.auth.current.thumbprint if status.auth.current else None
    follow_ups = []
    for op in operation.open_ops(conn, org.name):
        index = lifecycle.next_index(op)
        if index is None or op["steps"][index]["state"] in ("awaiting_approval", "running"):
            continue
        recorded = (op.get("recorded") or {}).get("new_thumbprint")
        offer = "post_publish" if recorded and recorded == current else "resume"
        change_jobs.enqueue(conn, "advance_job", (op["id"],),
                         meta={"org": org.name, "op_id": op["id"], "what": offer})
        follow_ups.append({"operation": op["id"], "offer": offer})
    return follow_ups


def enqueue_sweep(conn: redis.Redis, org_name: str, *, run_id: str | None = None,
                  job_id: str | None = None) -> Any:
    """Put one sweep on the sweep queue (JSON serializer) with the Slack callbacks."""
    run = run_id or _run_id()
    return queue(SWEEP_QUEUE, conn).enqueue_call(
        SWEEP_FUNC,
        args=(org_name, run),
        timeout=READ_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        job_id=job_id,
        meta={"org": org_name, "kind": "sweep", "run_id": run},
        on_success=Callback(NOTIFY_CALLBACK, timeout=CALLBACK_TIMEOUT),
        on_failure=Callback(FAILURE_CALLBACK, timeout=CALLBACK_TIMEOUT),
        description=f"sweep({org_name})",
    )


def _status(org: OrgSettings, *, now: datetime | None, clock: Clock) -> OrgStatus:
    from workers.status.collect import status

    return status(org, now=now, clock=clock)


def _run_id() -> str:
    return uuid.uuid4().hex
