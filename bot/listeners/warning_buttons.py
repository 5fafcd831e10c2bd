"""The Fix and Snooze buttons of a warning message (bolt listeners).

Snooze: approvers only (user ID or member of a listed user group, looked up fresh through
GroupCache), audited in both outcomes, 7 days, lifted early by the sweep when the warning
gets worse. Fix: starts the recommended operation exactly as `/exauth fix` does (operators
only, one operation per org), or for a warning about the hybrid application its upload
(`upload_hybrid_key`, workers.warnings.rules.fix_kind); its approval card follows in the
channel. A user group Slack cannot list fails closed for that group only, and the answer
names it; when Redis does not answer, the clicker hears that in one line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

from redis import Redis
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.listeners import operation_actions
from bot.listeners.after_ack import AfterAck
from bot.listeners.operation_actions import Approvals
from bot.render.messages import escape
from bot.render.warning_notice import (
    FIX_ACTION,
    SNOOZE_ACTION,
    without_snooze,
)
from config.errors import ConfigError
from config.schema import OrgSettings, Settings
from workers import audit
from workers.changes.approval import GroupCache
from workers.clock import SYSTEM_CLOCK, Clock
from workers.jobs.queues import ANSWER_TIMEOUT, connect
from workers.warnings import warning_state
from workers.warnings.rules import fix_kind

log = logging.getLogger(__name__)


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
    blocks = without_snooze(body.get("message", {}).get("blocks") or [])
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
    org, key, user, channel, _ts = click
    kind = fix_kind(key)
    if kind is None:
        _tell(client, body, operation_actions.fix(conn, handlers, org, user, channel, []))
    else:  # a warning about one thing (the hybrid application) fixes that thing
        _tell(client, body, operation_actions.start(conn, handlers, org, user, channel, kind))
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


def _tell(client: WebClient, body: dict[str, Any], text: str) -> None:
    """An ephemeral answer to the person who clicked (only they see it)."""
    try:
        client.chat_postEphemeral(channel=str(body["channel"]["id"]),
                                  user=str(body["user"]["id"]), text=text)
    except (SlackApiError, KeyError, TypeError) as exc:
        log.info("could not answer a warning button: %s", _line(exc))


def _line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
