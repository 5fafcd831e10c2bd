"""Warnings in Slack: post the sweep's notices (RQ callbacks that run in the worker).

`sweep_done` is the RQ on_success callback of workers.warnings.sweep (named by dotted path
there). Per notice: "new" posts a message with the Fix / Snooze buttons
(bot.render.warning_notice; bot.listeners.warning_buttons handles the clicks); "repeat"
(daily reminder) and "thread" (news) reply in that message's thread, the reminder also
broadcast to the channel, and refresh the message itself; "resolved" rewrites the message
without buttons. A notice is recorded as said (workers.warnings.warning_state.commit) only
after Slack took it, and its claim is dropped when Slack refused it, so the next sweep tries
again. Nothing here raises into RQ: a raising success callback would mark the sweep failed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.callbacks import home_tab
from bot.render import messages
from bot.render.messages import escape
from bot.render.warning_notice import (
    clip,
    resolved_message,
    warning_message,
)
from bot.slack import callback_client
from config.load import load_settings
from workers.jobs import read_jobs
from workers.warnings import warning_state
from workers.warnings.rules import Notice

log = logging.getLogger(__name__)
REPOST_ERRORS = frozenset({"message_not_found", "thread_not_found", "cant_update_message",
                           "edit_window_closed"})


def sweep_done(job: Job, connection: Redis, result: Any) -> None:
    try:
        client = callback_client()
    except Exception as exc:
        log.warning("sweep %s: cannot reach Slack: %s", job.id, _line(exc))
        _release_all(connection, result)
        return
    deliver(client, connection, result)
    home_tab.refresh_if_changed(connection, {"org": (result or {}).get("org")},
                                changed=bool((result or {}).get("status_changed")))


def sweep_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
                 exc_value: BaseException | None, tb: TracebackType | None) -> None:
    """The sweep job itself failed (config, Redis, its time limit, its worker died).

    Nobody asked for it, but the org's channel relies on it for its warnings: one line
    there (and in the log), so a sweep that keeps failing is not mistaken for "all well".
    """
    org = str((job.meta or {}).get("org") or "?")
    reason = read_jobs.failure_reason(exc_type, exc_value, job.timeout)
    log.warning("warnings sweep of %s failed: %s", org, reason)
    try:
        channel = load_settings().org(org).channel
        if channel:
            callback_client().chat_postMessage(channel=channel,
                                               text=messages.sweep_failure_text(org, reason))
    except Exception as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else _line(exc)
        log.warning("sweep %s: the failure was not posted: %s", org, error)


def deliver(client: WebClient, conn: Redis, result: dict[str, Any]) -> int:
    """Post a sweep's notices; returns how many Slack took. Never raises for Slack."""
    org = str(result.get("org") or "")
    channel = str(result.get("channel") or "")
    now = datetime.fromisoformat(str(result.get("swept_at")))
    posted = 0
    for item in result.get("notices") or []:
        notice = Notice.from_dict(item)
        try:
            _post(client, conn, org, channel, notice, now)
            posted += 1
        except Exception as exc:
            warning_state.release(conn, org, notice.key)
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else _line(exc)
            log.warning("warning %s/%s not posted: %s", org, notice.key, error)
    for follow_up in result.get("follow_ups") or []:  # their cards update when the job ends
        log.info("sweep %s: operation %s followed up (%s)", org, follow_up["operation"],
                 follow_up["offer"])
    return posted


def _post(client: WebClient, conn: Redis, org: str, channel: str, notice: Notice,
          now: datetime) -> None:
    state = warning_state.get(conn, org, notice.key)
    where = state.channel if state and state.channel else channel
    ts = state.ts if state else None
    if notice.kind == "new" or not ts:
        message = warning_message(org, notice)
        answer = client.chat_postMessage(channel=channel, **message)
        warning_state.commit(conn, org, notice, now=now, channel=answer["channel"],
                             ts=answer["ts"])
        return
    if notice.kind == "resolved":
        message = resolved_message(notice)
        try:
            client.chat_update(channel=where, ts=ts, **message)
        except SlackApiError as exc:
            if exc.response.get("error") not in REPOST_ERRORS:
                raise
            client.chat_postMessage(channel=where, **message)
        warning_state.commit(conn, org, notice, now=now)
        return
    try:
        client.chat_postMessage(channel=where, thread_ts=ts, text=clip(escape(notice.text)),
                                reply_broadcast=notice.kind == "repeat")
    except SlackApiError as exc:
        if exc.response.get("error") not in REPOST_ERRORS:
            raise
        answer = client.chat_postMessage(channel=where, **warning_message(org, notice))
        warning_state.commit(conn, org, notice, now=now, channel=answer["channel"],
                             ts=answer["ts"])
        return
    warning_state.commit(conn, org, notice, now=now)
    _refresh(client, where, ts, org, notice)


def _refresh(client: WebClient, channel: str, ts: str, org: str, notice: Notice) -> None:
    """Keep the message itself current (days left); a failure here loses nothing."""
    try:
        client.chat_update(channel=channel, ts=ts, **warning_message(org, notice, fresh=True))
    except SlackApiError as exc:
        log.info("warning %s/%s: message not refreshed: %s", org, notice.key,
                 exc.response.get("error"))


def _release_all(conn: Redis, result: Any) -> None:
    for item in (result or {}).get("notices") or []:
        warning_state.release(conn, str(result.get("org")), str(item.get("key")))


def _line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
