"""RQ callbacks that put a job's outcome into Slack.

They run inside the worker process (RQ calls them by dotted path, e.g.
"bot.callbacks.job_results.status_ready", so `workers/` never imports `bot/`). Each one replaces the
placeholder message the bot posted (channel and ts travel in job meta) with the report or
with one clear line saying why it failed.

A callback never raises for a Slack problem: RQ would treat a raising success callback as
a failed job and retry it, re-reading Exchange only because Slack hiccuped. Slack's
rate limits are honoured inside the client (bot.slack); anything else is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job
from slack_sdk.errors import SlackApiError

from bot.callbacks import home_tab
from bot.render import messages
from bot.slack import callback_client
from workers.jobs.read_jobs import failure_reason, is_permanent

log = logging.getLogger(__name__)

# Placeholders that cannot be edited any more (deleted, too old): post a new message.
REPOST_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})

# The read jobs' callbacks by dotted path (RQ resolves them in the worker: workers.jobs.queues).
ON_SUCCESS = {"status": "bot.callbacks.job_results.status_ready",
              "plan": "bot.callbacks.job_results.plan_ready",
              "rehearse": "bot.callbacks.job_results.rehearsal_ready"}
ON_FAILURE = "bot.callbacks.job_results.job_failed"


def status_ready(job: Job, connection: Redis, result: Any) -> None:
    """`result` is the status JSON the job returned (read back into the model here)."""
    from workers.status.report import overall
    from workers.status.report_model import parse_status

    def build() -> messages.Message:
        status = parse_status(result)
        return messages.status_message(status, overall(status))

    delivered = _deliver(job, build)
    if delivered is not None:
        upload_timeline(delivered[0], delivered[1], result)
    home_tab.refresh_if_changed(connection, job.meta or {})


def upload_timeline(channel: str, ts: str, status: Any) -> None:
    """The certificate timeline (bot.render.timeline) as a PNG in the report's thread,
    beside the report. A failure is logged: the report itself is already there."""
    try:
        from bot.render.timeline import alt_text, png_bytes

        org = str(status.get("org") or "org")
        callback_client().files_upload_v2(
            channel=channel, thread_ts=ts, file=png_bytes(status),
            filename=f"exauth-{org}-timeline.png", title=f"{org}: certificate timeline",
            alt_txt=alt_text(status))
    except SlackApiError as exc:
        log.warning("timeline not uploaded: Slack said %s", exc.response.get("error"))
    except Exception as exc:
        log.warning("timeline not uploaded: %s: %s", type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")


def plan_ready(job: Job, connection: Redis, result: Any) -> None:
    _deliver(job, lambda: messages.plan_message(result))
    home_tab.refresh_if_changed(connection, job.meta or {})


def rehearsal_ready(job: Job, connection: Redis, result: Any) -> None:
    """One message (the placeholder, replaced) and the steps in its thread."""
    reply = (job.meta or {}).get("reply") or {}
    _deliver(job, lambda: messages.rehearsal_message(result))
    if not reply.get("channel") or not reply.get("ts") or not result.get("steps"):
        return
    try:
        steps = messages.rehearsal_steps(result)
        callback_client().chat_postMessage(channel=reply["channel"], thread_ts=reply["ts"],
                                           text=steps["text"], blocks=steps["blocks"])
    except Exception as exc:  # the summary is in the channel; the thread is extra
        log.warning("job %s: the rehearsal's steps were not posted: %s", job.id,
                    type(exc).__name__)


def job_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
               exc_value: BaseException | None, tb: TracebackType | None) -> None:
    """Runs after every failed attempt; says "retrying" while RQ still has retries left.

    RQ calls this before it decides about a retry; `job.retries_left` is what it will use
    (workers.jobs.read_jobs zeroes it for permanent errors), so the message matches what happens.
    """
    meta = job.meta or {}
    org = str(meta.get("org") or "?")
    kind = str(meta.get("kind") or "status")
    reason = failure_reason(exc_type, exc_value, job.timeout)
    retrying = bool(job.retries_left) and not (exc_value is not None and is_permanent(exc_value))
    if retrying:
        attempt = (job.number_of_retries or 0) + 1
        delay = job.get_retry_interval()
        _deliver(job, lambda: messages.retrying_message(org, kind, reason, attempt, delay))
    else:
        _deliver(job, lambda: messages.failure_message(org, kind, reason))


def _deliver(job: Job, build: Callable[[], messages.Message]) -> tuple[str, str] | None:
    """Update the placeholder (or post anew); the (channel, ts) of the message, or None."""
    reply = (job.meta or {}).get("reply") or {}
    channel, ts = reply.get("channel"), reply.get("ts")
    if not channel:
        log.warning("job %s has no Slack reply target; nothing to update", job.id)
        return None
    try:
        message = build()
        client = callback_client()
        if ts:
            try:
                client.chat_update(channel=channel, ts=ts, text=message["text"],
                                   blocks=message["blocks"])
                return str(channel), str(ts)
            except SlackApiError as exc:
                if exc.response.get("error") not in REPOST_ERRORS:
                    raise
        posted = client.chat_postMessage(channel=channel, text=message["text"],
                                         blocks=message["blocks"])
        return str(posted.get("channel") or channel), str(posted.get("ts"))
    except SlackApiError as exc:
        log.warning("job %s: Slack refused the update: %s", job.id, exc.response.get("error"))
    except Exception as exc:
        log.warning("job %s: could not update Slack: %s: %s", job.id, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
    return None


