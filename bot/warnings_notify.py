"""Warnings in Slack: post the sweep's notices, and the "Fix" / "Snooze 7 days" buttons.

`sweep_done` is the RQ on_success callback of workers.sweep (named by dotted path there).
Per notice: "new" posts a message with the two buttons; "repeat" (daily reminder) and
"thread" (news) reply in that message's thread, the reminder also broadcast to the
channel, and refresh the message itself; "resolved" rewrites the message without buttons.
A notice is recorded as said (workers.warning_state.commit) only after Slack took it, and
its claim is dropped when Slack refused it, so the next sweep tries again. Nothing here
raises into RQ: a raising success callback would mark the sweep failed.

`register(app, settings, handlers)` adds the button handlers to the bolt app. Snooze:
approvers only (user ID or member of a listed user group, looked up fresh through
GroupCache), audited in both outcomes, 7 days, lifted early by the sweep when the warning
gets worse. Fix: starts the recommended operation exactly as `/exauth fix` does (operators
only, one operation per org); its approval card follows in the channel. A user group Slack
cannot list fails closed for that group only, and the answer names it; when Redis does not
answer, the clicker hears that in one line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import approvals as op_commands
from bot import views
from bot.after_ack import AfterAck
from bot.approvals import Approvals
from bot.slack import callback_client
from bot.views import escape
from config.errors import ConfigError
from config.load import load_settings
from config.schema import OrgSettings, Settings
from workers import audit, jobs, warning_state
from workers.approval import GroupCache
from workers.clock import SYSTEM_CLOCK, Clock
from workers.queues import ANSWER_TIMEOUT, connect
from workers.warnings import EMOJI, Notice

log = logging.getLogger(__name__)

FIX_ACTION = "exauth_warning_fix"
SNOOZE_ACTION = "exauth_warning_snooze"
REPOST_ERRORS = frozenset({"message_not_found", "thread_not_found", "cant_update_message",
                           "edit_window_closed"})
MAX_TEXT = 2900


# --- RQ callbacks -----------------------------------------------------------------------------


def sweep_done(job: Job, connection: Redis, result: Any) -> None:
    try:
        client = callback_client()
    except Exception as exc:
        log.warning("sweep %s: cannot reach Slack: %s", job.id, _line(exc))
        _release_all(connection, result)
        return
    deliver(client, connection, result)


def sweep_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
                 exc_value: BaseException | None, tb: TracebackType | None) -> None:
    """The sweep job itself failed (config, Redis, its time limit, its worker died).

    Nobody asked for it, but the org's channel relies on it for its warnings: one line
    there (and in the log), so a sweep that keeps failing is not mistaken for "all well".
    """
    org = str((job.meta or {}).get("org") or "?")
    reason = jobs.failure_reason(exc_type, exc_value, job.timeout)
    log.warning("warnings sweep of %s failed: %s", org, reason)
    try:
        channel = load_settings().org(org).channel
        if channel:
            callback_client().chat_postMessage(channel=channel,
                                               text=views.sweep_failure_text(org, reason))
    except Exception as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else _line(exc)
        log.warning("sweep %s: the failure was not posted: %s", org, error)


# --- posting ---------------------------------------------------------------------------------


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
        client.chat_postMessage(channel=where, thread_ts=ts, text=_clip(escape(notice.text)),
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


def warning_message(org: str, notice: Notice, *, fresh: bool = False) -> dict[str, Any]:
    """A warning with its two buttons (values carry org + warning key, nothing secret).

    A notice's text is mrkdwn emphasis (`*`, backticks) around outside values (names,
    Exchange's words) and never carries a Slack `<...>` token (workers.warnings writes
    none), so it enters the message escaped as one piece."""
    text = notice.text
    if fresh:
        text = f"{EMOJI.get(notice.severity, '')} {_strip_prefix(notice.text)}"
    text = escape(text)
    value = json.dumps({"org": org, "key": notice.key}, separators=(",", ":"))
    band = "expired / last band" if notice.band == 0 else (
        f"{notice.band}-day warning" if notice.band is not None else "condition")
    return {
        "text": _clip(_plain(text)),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}},
            {"type": "actions", "block_id": "exauth_warning", "elements": [
                {"type": "button", "action_id": FIX_ACTION, "style": "primary",
                 "text": {"type": "plain_text", "text": "Fix"}, "value": value},
                {"type": "button", "action_id": SNOOZE_ACTION,
                 "text": {"type": "plain_text", "text": "Snooze 7 days"}, "value": value},
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
                f"exauth warning · {escape(org)} · {band} · reminders and news in the thread")}]},
        ],
    }


def resolved_message(notice: Notice) -> dict[str, Any]:
    text = escape(notice.text)  # as in warning_message
    return {"text": _clip(_plain(text)),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}]}


# --- buttons ---------------------------------------------------------------------------------


def register(app: App, settings: Settings, handlers: Approvals, after_ack: AfterAck, *,
             redis_url: str | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Add the Fix / Snooze handlers to the bot's App. They ack at once; the Redis and
    Slack work runs on the app's `after_ack` (its one error path answers what raises), so
    Slack gets its answer inside 3 s."""
    conn = connect(redis_url or settings.redis.url, timeout=ANSWER_TIMEOUT)
    caches: dict[int, GroupCache] = {}
    now = clock.now

    def groups(client: WebClient) -> GroupCache:
        cache = caches.get(id(client))
        if cache is None:
            cache = caches[id(client)] = GroupCache(
                lambda group: client.usergroups_users_list(usergroup=group)["users"])
        return cache

    @app.action(SNOOZE_ACTION)
    def _snooze(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        after_ack.submit(partial(handle_snooze, settings, conn, client, groups(client), body,
                                 now()), partial(_tell, client, body), "warning snooze")

    @app.action(FIX_ACTION)
    def _fix(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        after_ack.submit(partial(handle_fix, settings, conn, client, body, handlers),
                         partial(_tell, client, body), "warning fix")


def handle_snooze(settings: Settings, conn: Redis, client: WebClient, groups: GroupCache,
                  body: dict[str, Any], now: datetime) -> str:
    """Snooze one warning for an approver; returns the outcome code (for tests and logs)."""
    click = _click(settings, body)
    if isinstance(click, str):
        _tell(client, body, click)
        return "invalid"
    org, key, user, channel, ts = click
    found = groups.membership(user, org.approvers)
    if not found.allows(user, org.approvers) and found.unchecked:
        _tell(client, body, f"Only approvers of {escape(org.name)} can snooze its warnings, "
                            f"and Slack user group(s) {', '.join(found.unchecked)} could not be "
                            "checked just now; try again in a minute.")
        return "lookup_failed"
    if not found.allows(user, org.approvers):
        audit.record(conn, org=org.name, actor=user, action="warning.snooze", target=key,
                     outcome="refused: not an approver", now=now)
        _tell(client, body, f"Only approvers of {escape(org.name)} can snooze its warnings.")
        return "not_approver"
    # Seven days on the org's clock, which the sweeps that lift snoozes count by.
    state = warning_state.snooze(conn, org.name, key, user,
                                 now=warning_state.on_org_clock(conn, org.name, now))
    if state is None:
        _tell(client, body, "This warning is no longer active; nothing to snooze.")
        return "gone"
    until = state.snooze_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") \
        if state.snooze_until else "?"
    audit.record(conn, org=org.name, actor=user, action="warning.snooze", target=key,
                 outcome="snoozed", now=now,
                 detail={"until": until, "band": state.band, "severity": state.severity})
    blocks = _without_snooze(body.get("message", {}).get("blocks") or [])
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f":zzz: Snoozed by <@{user}> until {until}; it comes back sooner if it gets worse.")}]})
    text = str(body.get("message", {}).get("text") or "exauth warning")
    try:
        client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.info("snooze %s/%s: message not updated: %s", org.name, key,
                 exc.response.get("error"))
    return "snoozed"


def handle_fix(settings: Settings, conn: Redis, client: WebClient, body: dict[str, Any],
               handlers: Approvals) -> str:
    """Start the operation the status recommends, exactly as `/exauth fix` does (same
    operator check, same one-operation-per-org rule); its card follows in the channel."""
    click = _click(settings, body)
    if isinstance(click, str):
        _tell(client, body, click)
        return "invalid"
    org, _key, user, channel, _ts = click
    _tell(client, body, op_commands.fix(conn, handlers, org, user, channel, []))
    return "started"


def _click(settings: Settings, body: dict[str, Any]) -> tuple[
        OrgSettings, str, str, str, str] | str:
    """org, key, user, channel, message ts from an action payload, or why it is unusable."""
    try:
        value = json.loads(body["actions"][0]["value"])
        org_name, key = str(value["org"]), str(value["key"])
        user = str(body["user"]["id"])
        channel = str(body["channel"]["id"])
        ts = str((body.get("message") or {}).get("ts") or body["container"]["message_ts"])
    except (KeyError, IndexError, TypeError, ValueError):
        return "That button is from a message I cannot read any more."
    try:
        org = settings.org(org_name)
    except ConfigError:
        return f"The org {escape(org_name)} is not configured any more."
    if org.channel and org.channel != channel:
        return f"Warnings of {escape(org.name)} are handled in its own channel."
    return org, key, user, channel, ts


def _without_snooze(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        if block.get("type") == "actions":
            kept = [e for e in block.get("elements") or [] if e.get("action_id") != SNOOZE_ACTION]
            if kept:
                out.append({**block, "elements": kept})
        elif block.get("type") == "context" and ":zzz:" in json.dumps(block):
            continue  # an older snooze line
        else:
            out.append(block)
    return out


def _tell(client: WebClient, body: dict[str, Any], text: str) -> None:
    """An ephemeral answer to the person who clicked (only they see it)."""
    try:
        client.chat_postEphemeral(channel=str(body["channel"]["id"]),
                                  user=str(body["user"]["id"]), text=text)
    except (SlackApiError, KeyError, TypeError) as exc:
        log.info("could not answer a warning button: %s", _line(exc))


def _release_all(conn: Redis, result: Any) -> None:
    for item in (result or {}).get("notices") or []:
        warning_state.release(conn, str(result.get("org")), str(item.get("key")))


def _strip_prefix(text: str) -> str:
    for emoji in EMOJI.values():
        text = text.removeprefix(emoji).lstrip()
    for prefix in ("Daily reminder: ", "Update: "):
        text = text.removeprefix(prefix)
    return text


def _plain(text: str) -> str:
    return text.replace("*", "").replace("`", "")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
