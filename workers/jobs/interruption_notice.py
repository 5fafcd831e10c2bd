"""`exauth cron` tells the channel about a step whose worker died.

workers.changes.interruption decides (lock lapsed, and stayed so); this module writes the
audit entry and updates the card and its thread. It runs the bot's card publisher here, in
cron's process, named by dotted path like every RQ callback (`workers/` never imports
`bot/`): no worker may be alive to run a job - the one that died may have been the only
one - and the channel must hear it anyway.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from rq.utils import import_attribute

from workers import audit
from workers.changes import interruption, lifecycle, operation

log = logging.getLogger(__name__)

PUBLISH = "bot.callbacks.operation_progress.publish"


def interrupted_event(op: dict[str, Any], index: int) -> dict[str, Any]:
    return {"step": index, "state": "interrupted", "detail": (
        f"The worker running step {index + 1} stopped before it finished (killed or cut "
        f"off). `/exauth resume {op['id']}` carries on now: it reads Exchange, adopts what "
        "the step did, and asks for approval again only if it did nothing.")}


def notice_interrupted(conn: redis.Redis, *, now: datetime | None = None) -> list[str]:
    """Declare, audit and announce the dead steps; returns the operation ids."""
    out = []
    for found in interruption.notice(conn, now=now):
        op, index = found.op, found.index
        audit.record(conn, org=op["org"], actor="exauth", action="operation.interrupted",
                     target=operation.step_ref(op["id"], index), outcome="interrupted",
                     detail={"step": index + 1, "title": op["steps"][index]["title"]})
        summary = lifecycle.summary(op, [interrupted_event(op, index)])
        try:
            import_attribute(PUBLISH)(conn, summary)
        except Exception as exc:  # Slack's trouble must not stop the cron loop
            log.warning("could not tell Slack that %s was interrupted: %s", op["id"],
                        type(exc).__name__)
        out.append(op["id"])
    return out
