"""RQ callbacks for the Home tab: publish it again after a check, fill the plan modal.

They run in the worker (by dotted path, registered in workers.jobs.registry) and never raise:
a Slack problem is logged, and the job's own outcome stands. `refresh_if_changed` is what
the status report and sweep callbacks call so every recent viewer's Home tab follows an
org whose stored status changed (workers.status.last_check says when it did), and
`refresh_for_operation` what the operation card's callback calls when an operation moved.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job

from bot import home
from bot.render import messages
from bot.render.home_view import plan_modal
from bot.slack import callback_client
from config.load import load_settings
from workers.changes import operation
from workers.jobs.read_jobs import failure_reason, is_permanent

log = logging.getLogger(__name__)

ON_CHECKED = "bot.callbacks.home_tab.status_checked"
ON_CHECK_FAILED = "bot.callbacks.home_tab.check_failed"
ON_PLAN = "bot.callbacks.home_tab.plan_ready"
ON_PLAN_FAILED = "bot.callbacks.home_tab.plan_failed"


def status_checked(job: Job, connection: Redis, result: Any) -> None:
    """"Check now" is done: the clicker's Home tab, then everyone's if the status changed."""
    meta = job.meta or {}
    user = str(meta.get("home_user") or "")
    _guarded(lambda: _publish(connection, user), f"Home tab of {user}")
    refresh_if_changed(connection, meta, skip=(user,))


def check_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
                 exc_value: BaseException | None, tb: TracebackType | None) -> None:
    """The check failed (the job stored the outcome): show it, or "checking" while RQ
    retries."""
    meta = job.meta or {}
    user = str(meta.get("home_user") or "")
    retrying = bool(job.retries_left) and not (exc_value is not None
                                               and is_permanent(exc_value))
    checking = (str(meta.get("org")),) if retrying else ()
    _guarded(lambda: _publish(connection, user, checking), f"Home tab of {user}")


def plan_ready(job: Job, connection: Redis, result: Any) -> None:
    meta = job.meta or {}
    plan = messages.plan_message(result)
    _guarded(lambda: callback_client().views_update(
        view_id=str(meta.get("view_id")),
        view=plan_modal(str(meta.get("org")), plan["blocks"])), "plan modal")
    refresh_if_changed(connection, meta)


def plan_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
                exc_value: BaseException | None, tb: TracebackType | None) -> None:
    meta = job.meta or {}
    org = str(meta.get("org") or "?")
    reason = failure_reason(exc_type, exc_value, job.timeout)
    retrying = bool(job.retries_left) and not (exc_value is not None
                                               and is_permanent(exc_value))
    text = (f":hourglass_flowing_sand: Reading {messages.escape(org)} failed "
            f"({messages.escape(reason)}); trying again..." if retrying else
            f":x: Could not plan for {messages.escape(org)}: {messages.escape(reason)}")
    _guarded(lambda: callback_client().views_update(view_id=str(meta.get("view_id")),
                                                    view=plan_modal(org, text=text)),
             "plan modal")


def refresh_if_changed(connection: Redis, meta: dict[str, Any], *, changed: bool | None = None,
                       skip: tuple[str, ...] = ()) -> None:
    """Publish the Home tab of recent viewers of the org again when its status changed
    (`changed`, else the job's meta `status_changed`)."""
    if not (meta.get("status_changed") if changed is None else changed):
        return
    org = str(meta.get("org") or "")

    def refresh() -> None:
        client = callback_client()
        home.refresh_org(client, connection, home.visibility_for(load_settings(), client),
                         org, skip=skip)

    _guarded(refresh, f"Home tabs of {org}")


def refresh_for_operation(connection: Redis, op_id: str) -> None:
    """An operation moved (its open operations line on Home): refresh its org's viewers."""
    try:
        op = operation.load(connection, op_id)
    except Exception as exc:
        log.warning("Home tabs not refreshed for %s: %s", op_id, type(exc).__name__)
        return
    if op is not None:
        refresh_if_changed(connection, {"org": op["org"]}, changed=True)


def _publish(connection: Redis, user: str, checking: tuple[str, ...] = ()) -> None:
    if not user:
        return
    client = callback_client()
    home.publish(client, connection, home.visibility_for(load_settings(), client), user,
                 checking=checking)


def _guarded(work: Any, what: str) -> None:
    try:
        work()
    except Exception as exc:
        log.warning("%s not updated: %s: %s", what, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
