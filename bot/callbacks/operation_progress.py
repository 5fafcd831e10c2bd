"""RQ callbacks of operation jobs: keep the operation card current, narrate in its thread.

They run in the worker (referenced by dotted path from workers.jobs.change_jobs). The first
callback of an operation posts its card in the channel the command came from (job meta)
and remembers the card's channel/ts in the operation; later ones update it in place and
post one thread reply per event (step done, waiting, failed, approval needed). A callback
never raises for a Slack problem: the operation's truth is in Redis, the card follows it.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job
from slack_sdk.errors import SlackApiError

from bot.callbacks import home_tab
from bot.render import messages, operation_card
from bot.slack import callback_client
from workers.changes import operation
from workers.changes.operation import Operation
from workers.jobs.read_jobs import failure_reason
from workers.rehearsal import rehearsal_record

log = logging.getLogger(__name__)


def operation_updated(job: Job, connection: Redis, result: Any) -> None:
    """After start/run/advance/resume jobs: card + thread."""
    summaries = result if isinstance(result, list) else [result]
    for summary in summaries:
        if isinstance(summary, dict) and summary.get("op_id"):
            publish(connection, summary, reply_channel=_reply_channel(job),
                    user=(job.meta or {}).get("user"))
            home_tab.refresh_for_operation(connection, str(summary["op_id"]))


def sweep_done(job: Job, connection: Redis, result: Any) -> None:
    """After the resume sweep (a list of summaries): the same card updates."""
    operation_updated(job, connection, result)


def operation_job_failed(
    job: Job, connection: Redis, exc_type: type[BaseException] | None,
    exc_value: BaseException | None, tb: TracebackType | None,
) -> None:
    """A job that raised (nothing to do, org busy, Exchange down), ran out of time or lost
    its worker (workers.jobs.deadline): one line in the card's thread, or in the channel the
    command came from when there is no card; no traceback."""
    reason = failure_reason(exc_type, exc_value, job.timeout)
    meta = job.meta or {}
    op = Operation.fetch(connection, str(meta["op_id"])) if meta.get("op_id") else None
    card = (op.card if op is not None else None) or {}
    channel = card.get("channel") or _reply_channel(job)
    if not channel:
        log.warning("job %s failed with no Slack target: %s", job.id, reason)
        return
    open_id = op.id if op is not None and op.is_open else None
    text = messages.operation_failure_text(str(meta.get("what") or "operation"), reason, open_id)
    _safe(lambda: callback_client().chat_postMessage(
        channel=channel, thread_ts=card.get("ts"), text=text))


def publish(conn: Redis, summary: dict[str, Any], *, reply_channel: str | None = None,
            user: str | None = None) -> None:
    """Post or update the card of `summary`'s operation and narrate its events.

    A card Slack does not take (rate limited past the client's retries, which wait as
    Slack's Retry-After says; any other refusal) is not silent: the person who asked
    (`user`, else the operation's requester) hears it ephemerally, with the command that
    posts it later. The operation itself is in Redis and waits.
    """
    op = Operation.fetch(conn, summary["op_id"])
    if op is None:
        return
    message = operation_card.operation_card(
        op, rehearsal_record.for_operation(conn, op.org, op.kind))
    card = op.card
    slack = callback_client()
    if card is None:
        channel = reply_channel
        if not channel:
            log.warning("operation %s has no card and no channel to post it in", op.id)
            return
        try:
            posted = slack.chat_postMessage(channel=channel, text=message["text"],
                                            blocks=message["blocks"])
        except Exception as exc:
            error = _error(exc)
            log.warning("the card of %s was not posted: %s", op.id, error)
            who = user or op.requester
            if who:
                _safe(lambda: slack.chat_postEphemeral(
                    channel=channel, user=who,
                    text=messages.card_not_posted_text(op.id, op.org, error)))
            return
        card = {"channel": str(posted["channel"]), "ts": str(posted["ts"])}
        _remember(conn, op, card)
    else:
        _safe(lambda: slack.chat_update(channel=card["channel"], ts=card["ts"],
                                        text=message["text"], blocks=message["blocks"]))
    for event in summary.get("events") or []:
        line = operation_card.progress_line(op, event)
        _safe(lambda line=line: slack.chat_postMessage(
            channel=card["channel"], thread_ts=card["ts"], text=line))


def _remember(conn: Redis, op: Operation, card: dict[str, str]) -> None:
    """Keep the posted card on the operation just loaded (a card another callback posted
    first is kept)."""
    def mutate(draft: Operation) -> None:
        draft.card = draft.card or card

    try:
        op.change(conn, mutate)
    except operation.OperationError as exc:
        log.warning("could not remember the card of %s: %s", op.id, exc)


def _reply_channel(job: Job) -> str | None:
    reply = (job.meta or {}).get("reply") or {}
    return reply.get("channel") or None


def _safe(call: Any) -> Any:
    try:
        return call()
    except SlackApiError as exc:
        log.warning("Slack refused an operation update: %s", exc.response.get("error"))
    except Exception as exc:
        log.warning("could not update Slack: %s", type(exc).__name__)
    return None


def _error(exc: Exception) -> str:
    """Slack's error code (e.g. "ratelimited"), or what kind of failure it was."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "error")
    return type(exc).__name__
