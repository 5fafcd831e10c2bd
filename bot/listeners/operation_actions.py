"""Approve / Deny clicks, the deny modal, and the operation subcommands of `/exauth`.

A click is decided in Redis by one compare-and-set (`approval.decide`): only an allowed
approver (a listed user ID, or a member of a listed user group - asked fresh from Slack,
cached at most 60 s), not the requester unless the org allows it, before the TTL, for the
card's own request. Only the single winning click enqueues the step, under the approval's
job id, so double clicks, Slack retries and RQ redeliveries run it once. Every click,
refused or not, goes to the audit log; a refused one gets an ephemeral line and changes
nothing.

An Approve click is taken only in the org's own channel (a card seen elsewhere is refused
and audited like any refusal). A Slack user group that cannot be listed fails closed for
that group only (approval.GroupCache.membership); the refusal names it. Whenever Redis does
not answer (workers.jobs.queues.ANSWER_TIMEOUT), the clicker gets the one line saying so.

`register(app, settings)` adds the listeners to the bolt app. The subcommand handlers
(`fix`, `rotate`, `backend`, `ops`, `audit_text`, `resume`) return the ephemeral reply text
and enqueue the worker job; bot/app.py (`start_op`) routes the parsed subcommands here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from redis import Redis
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.listeners.after_ack import AfterAck, Answer
from bot.render import operation_card
from bot.render.messages import escape
from config.schema import OrgSettings, Settings
from workers import audit
from workers.changes import approval, lifecycle, operation
from workers.changes.operation import Operation
from workers.jobs import change_jobs
from workers.jobs.queues import ANSWER_TIMEOUT, connect
from workers.rehearsal import rehearsal_record

log = logging.getLogger(__name__)


class Approvals:
    """The click handlers with their Redis connection and group cache."""

    def __init__(self, settings: Settings, conn: Redis, client: WebClient,
                 group_cache: approval.GroupCache | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self.client = client
        self.groups = group_cache or approval.GroupCache(self._members)

    def _members(self, group: str) -> list[str]:
        return list(self.client.usergroups_users_list(usergroup=group)["users"])

    def user_groups(self, user: str, listed: list[str]) -> approval.Membership:
        """Groups of `listed` the user is in, and those Slack could not list (fail closed
        for those only: a user listed by ID does not depend on any lookup)."""
        return self.groups.membership(user, listed)

    def approve(self, user: str, value: str, *, channel: str = "") -> approval.Decision:
        """One Approve click. Enqueues the step only for the click that won."""
        return self._decide(user, value, "approve", "", channel)

    def deny(self, user: str, value: str, reason: str, *, channel: str = "") -> approval.Decision:
        return self._decide(user, value, "deny", reason, channel)

    def _decide(self, user: str, value: str, decision: str, reason: str,
                channel: str) -> approval.Decision:
        """The click's decision; its message is Slack mrkdwn, outside text escaped, ready to
        show the clicker (the org's channel link in a wrong-channel refusal stays a link)."""
        try:
            op_id, index, request_id = operation_card.parse_value(value)
        except (ValueError, TypeError):
            return approval.Decision(False, "invalid", "this button is not an exauth approval",
                                     None)
        op = Operation.fetch(self.conn, op_id)
        if op is None:
            return approval.Decision(False, "not_found",
                                     f"operation {escape(op_id)} does not exist", None)
        org = self.settings.org(op.org)
        if decision == "approve" and channel != org.channel:
            result = approval.Decision(False, "wrong_channel", f"steps of {escape(org.name)} "
                                       f"are approved in its own channel, <#{org.channel}>",
                                       None)
        else:
            groups = self.user_groups(user, org.approvers)
            decided = approval.decide(
                self.conn, op_id, index, user=user, decision=decision, reason=reason,
                approvers=org.approvers, user_groups=groups.groups,
                allow_self_approval=org.allow_self_approval, request_id=request_id,
                unchecked_groups=groups.unchecked)
            result = replace(decided, message=escape(decided.message))
        audit.record(self.conn, org=org.name, actor=user, action=f"approval.{decision}",
                     target=operation.step_ref(op_id, index), outcome=result.code,
                     detail={"reason": reason} if reason else {})
        if result.ok and decision == "approve":
            card = op.card or {}
            change_jobs.enqueue_step(self.conn, result.record or {},
                                  meta={"reply": {"channel": card.get("channel") or channel},
                                        "what": "step"})
            self._note(op, f":large_blue_circle: <@{user}> approved step {index + 1}; "
                           "running it now.")
        elif result.ok:
            denied = lifecycle.deny(self.conn, org, op_id, index, user=user,
                                    reason=result.record.get("reason", reason)
                                    if result.record else reason)
            self._refresh(denied)
            self._note(op, f":no_entry: <@{user}> denied step {index + 1}: {escape(reason)}")
        return result

    def _note(self, op: Operation, text: str) -> None:
        card = op.card or {}
        if card.get("channel"):
            try:
                self.client.chat_postMessage(channel=card["channel"], thread_ts=card["ts"],
                                             text=text)
            except Exception as exc:
                log.warning("could not post to the card thread: %s", type(exc).__name__)

    def _refresh(self, op: Operation) -> None:
        """Show the operation as the deny just saved it."""
        card = op.card or {}
        if not card.get("channel"):
            return
        message = operation_card.operation_card(
            op, rehearsal_record.for_operation(self.conn, op.org, op.kind))
        try:
            self.client.chat_update(channel=card["channel"], ts=card["ts"],
                                    text=message["text"], blocks=message["blocks"])
        except Exception as exc:
            log.warning("could not update the card: %s", type(exc).__name__)


# --- subcommands ----------------------------------------------------------------------------


Lookup = Callable[[str, list[str]], approval.Membership]


def refusal(user: str, listed: list[str], groups: Lookup, why: str) -> str | None:
    """None when `user` is listed (by user ID, or in a listed user group), else `why`,
    naming the listed groups Slack could not list just now (they fail closed)."""
    found = groups(user, listed)
    if found.allows(user, listed):
        return None
    if found.unchecked:
        return (f"{why} (Slack user group(s) {', '.join(found.unchecked)} could not be "
                "checked just now; try again in a minute.)")
    return why


def start(conn: Redis, handlers: Approvals, org: OrgSettings, user: str, channel: str,
          kind: str | None, servers: list[str] | None = None, override: bool = False) -> str:
    """Enqueue the start of an operation; the card appears when the worker has read Exchange.
    Operators start changes; nobody listed means anyone in the org's channel."""
    if org.operators:
        refused = refusal(user, org.operators, handlers.user_groups,
                          f"Only the operators of {escape(org.name)} may start changes.")
        if refused:
            return refused
    busy = operation.open_operations(conn, org.name)
    if busy:
        return (f"{escape(org.name)} already has an open operation (`{busy[0].id}`, "
                f"{busy[0].kind}); see `/exauth ops`.")
    change_jobs.enqueue(conn, "start_operation_job",
                     (org.name, kind, user, list(servers or []), override),
                     meta={"reply": {"channel": channel}, "what": kind or "fix", "user": user})
    what = kind or "the change the status recommends"
    tail = " (override: the org is blocked)" if override else ""
    return f"Reading {escape(org.name)} and preparing {what}{tail}; the card follows here."


def fix(conn: Redis, handlers: Approvals, org: OrgSettings, user: str, channel: str,
        args: list[str]) -> str:
    """`/exauth fix [org] [override]`: the first changing action the status recommends."""
    return start(conn, handlers, org, user, channel, None, override="override" in args)


def rotate(conn: Redis, handlers: Approvals, org: OrgSettings, user: str, channel: str) -> str:
    """`/exauth rotate [org]`: a staged rotation even when nothing is due."""
    return start(conn, handlers, org, user, channel, "stage_new")


def backend(conn: Redis, handlers: Approvals, org: OrgSettings, user: str, channel: str,
            server: str | None) -> str:
    """`/exauth backend [org] [server]`: repair or renew back end certificates."""
    return start(conn, handlers, org, user, channel, "repair_backend",
                 [server] if server else None)


def ops(conn: Redis, org: OrgSettings) -> str:
    """`/exauth ops [org]`: the open operations."""
    found = operation.open_operations(conn, org.name)
    if not found:
        return f"No open operation for {escape(org.name)}."
    lines = []
    for op in found:
        index = op.next_index()
        step = escape(op.step(index).title) if index is not None else "-"
        lines.append(f"`{op.id}` {op.kind} ({op.state}) by "
                     f"{operation_card.mention(op.requester)}, next: {step}"
                     + (f", resumes {op.resume_at}" if op.resume_at else ""))
    return "\n".join(lines)


def audit_text(conn: Redis, org: OrgSettings, limit: int = 15) -> str:
    """`/exauth audit [org]`: the newest audit entries."""
    entries = audit.entries(conn, org.name, limit=limit)
    if not entries:
        return f"No audit entries for {escape(org.name)}."
    return "```" + "\n".join(escape(audit.format_entry(e)[:300]) for e in entries) + "```"


def resume(conn: Redis, handlers: Approvals, settings: Settings, user: str, channel: str,
           op_id: str) -> str:
    """`/exauth resume <op>`: re-validate and continue an interrupted or lapsed operation.

    Only in the org's own channel, and only by whoever may start an operation there (its
    operators; with none listed, anyone in the channel, as for `fix`) or approve one. Decided
    so because a resume can do nothing a start cannot: it re-reads Exchange, adopts what a
    dead step already did, and asks again for an approval that lapsed; every change it leads
    to still waits for an approver, and the cron sweep resumes the same operations on its
    own. Approvers may resume without being operators: a lapsed approval is theirs to ask for
    again. A refusal is audited (`operation.resume`, "refused: ..."). The op id echoed when
    there is no such operation is the user's own text (clipped), the only text echoed here.
    """
    try:
        op = Operation.fetch(conn, op_id)
    except operation.OperationError:
        op = None
    if op is None:
        return f"No operation `{escape(op_id[:40])}`."
    org = settings.org(op.org)
    refused, outcome = None, ""
    if channel != org.channel:
        refused = (f"Operations of {escape(org.name)} are resumed in its own channel, "
                   f"<#{org.channel}>.")
        outcome = "refused: wrong channel"
    elif org.operators:
        listed = [*org.operators, *org.approvers]
        refused = refusal(user, listed, handlers.user_groups, f"Only the operators and "
                          f"approvers of {escape(org.name)} may resume its operations.")
        outcome = "refused: not an operator or approver"
    if refused:
        audit.record(conn, org=org.name, actor=user, action="operation.resume",
                     target=op.id, outcome=outcome)
        return refused
    change_jobs.enqueue(conn, "resume_job", (op.id, user),
                     meta={"reply": {"channel": channel}, "what": "resume", "op_id": op.id,
                           "user": user})
    return f"Re-validating operation `{op.id}`; progress follows in its card's thread."


# --- bolt wiring ----------------------------------------------------------------------------


def register(app: App, settings: Settings, after_ack: AfterAck, *,
             redis_url: str | None = None) -> Approvals:
    """Add the Approve/Deny listeners and the deny modal to `app`; their work after the ack
    runs on the app's `after_ack`, and what it raises is answered there."""
    conn = connect(redis_url or settings.redis.url, timeout=ANSWER_TIMEOUT)
    handlers = Approvals(settings, conn, app.client)

    def reply(client: WebClient, channel: str, user: str, text: str) -> None:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user, text=text)

    def to(client: WebClient, channel: str, user: str) -> Answer:
        return partial(reply, client, channel, user)

    def to_clicker(client: WebClient, body: dict[str, Any], text: str) -> None:
        """Read from the click only when needed: nothing can raise on the ack path."""
        reply(client, (body.get("channel") or {}).get("id", ""), body["user"]["id"], text)

    def approve(body: dict[str, Any], client: WebClient) -> None:
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        result = handlers.approve(user, body["actions"][0].get("value", ""), channel=channel)
        if not result.ok:
            reply(client, channel, user, f"Not approved: {result.message}")

    def open_deny_form(body: dict[str, Any], client: WebClient) -> None:
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id", "")
        try:
            client.views_open(trigger_id=body["trigger_id"], view=operation_card.deny_modal(
                body["actions"][0].get("value", ""), channel,
                str((body.get("message") or {}).get("ts", ""))))
        except SlackApiError as exc:  # e.g. expired_trigger_id: the click came too late
            error = exc.response.get("error") or "error"
            log.warning("deny form not opened: %s", error)
            after_ack.submit(partial(reply, client, channel, user, f"I could not open the "
                                     f"deny form ({error}); click Deny again."), None,
                             "deny form answer")
        except Exception as exc:
            after_ack.failed(exc, to(client, channel, user), "deny click")

    @app.action(operation_card.APPROVE_ACTION)
    def approve_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        after_ack.submit(partial(approve, body, client), partial(to_clicker, client, body),
                         "approve click")

    @app.action(operation_card.DENY_ACTION)
    def deny_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        open_deny_form(body, client)  # views.open needs the fresh trigger_id: not deferred

    @app.view(operation_card.DENY_VIEW)
    def deny_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                       client: WebClient) -> None:
        values = view["state"]["values"]
        reason = (values.get(operation_card.REASON_BLOCK, {}).get(operation_card.REASON_ACTION, {})
                  .get("value") or "").strip()
        if not reason:
            ack(response_action="errors",
                errors={operation_card.REASON_BLOCK: "A reason is required."})
            return
        ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        user = body["user"]["id"]
        channel = meta.get("channel", "")

        def work() -> None:
            result = handlers.deny(user, meta.get("value", ""), reason, channel=channel)
            if not result.ok:
                reply(client, channel, user, f"Not denied: {result.message}")

        after_ack.submit(work, to(client, channel, user), "deny form")

    return handlers
