"""Approve / Deny clicks, the deny modal, and the operation subcommands of `/exauth`.

A click is decided in Redis by one compare-and-set (`approval.decide`): only an allowed
approver (a listed user ID, or a member of a listed user group - asked fresh from Slack,
cached at most 60 s), not the requester unless the org allows it, before the TTL, for the
card's own request. Only the single winning click enqueues the step, under the approval's
job id, so double clicks, Slack retries and RQ redeliveries run it once. Every click,
refused or not, goes to the audit log; a refused one gets an ephemeral line and changes
nothing.

`register(app, settings)` adds the listeners to the bolt app. The subcommand handlers
(`fix`, `rotate`, `backend`, `ops`, `audit_text`, `resume`) return the ephemeral reply text
and enqueue the worker job; bot/app.py (`start_op`) routes the parsed subcommands here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis import Redis
from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import cards
from config.settings import OrgSettings, Settings
from workers import approval, audit, operation, operations, ops_jobs
from workers.queues import connect

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

    def user_groups(self, user: str, listed: list[str]) -> set[str] | None:
        """Groups of `listed` the user is in; None when Slack could not say (fail closed)."""
        try:
            return self.groups.groups_of(user, listed)
        except Exception as exc:
            log.warning("user group lookup failed: %s", type(exc).__name__)
            return None

    def approve(self, user: str, value: str, *, channel: str = "") -> approval.Decision:
        """One Approve click. Enqueues the step only for the click that won."""
        return self._decide(user, value, "approve", "", channel)

    def deny(self, user: str, value: str, reason: str, *, channel: str = "") -> approval.Decision:
        return self._decide(user, value, "deny", reason, channel)

    def _decide(self, user: str, value: str, decision: str, reason: str,
                channel: str) -> approval.Decision:
        try:
            op_id, index, request_id = cards.parse_value(value)
        except (ValueError, TypeError):
            return approval.Decision(False, "invalid", "this button is not an exauth approval",
                                     None)
        op = operation.load(self.conn, op_id)
        if op is None:
            return approval.Decision(False, "not_found", f"operation {op_id} does not exist",
                                     None)
        org = self.settings.org(op["org"])
        groups = self.user_groups(user, org.approvers)
        if groups is None:
            result = approval.Decision(False, "not_approver", "could not check your Slack "
                                       "user groups right now; try again in a minute", None)
        else:
            result = approval.decide(
                self.conn, op_id, index, user=user, decision=decision, reason=reason,
                approvers=org.approvers, user_groups=groups,
                allow_self_approval=org.allow_self_approval, request_id=request_id)
        audit.record(self.conn, org=org.name, actor=user, action=f"approval.{decision}",
                     target=operation.step_ref(op_id, index), outcome=result.code,
                     detail={"reason": reason} if reason else {})
        if result.ok and decision == "approve":
            card = op.get("card") or {}
            ops_jobs.enqueue_step(self.conn, result.record or {},
                                  meta={"reply": {"channel": card.get("channel") or channel},
                                        "what": "step"})
            self._note(op, f":large_blue_circle: <@{user}> approved step {index + 1}; "
                           "running it now.")
        elif result.ok:
            operations.deny(self.conn, org, op_id, index, user=user, reason=result.record.get(
                "reason", reason) if result.record else reason)
            self._refresh(op_id)
            self._note(op, f":no_entry: <@{user}> denied step {index + 1}: {reason}")
        return result

    def _note(self, op: dict[str, Any], text: str) -> None:
        card = op.get("card") or {}
        if card.get("channel"):
            try:
                self.client.chat_postMessage(channel=card["channel"], thread_ts=card["ts"],
                                             text=text)
            except Exception as exc:
                log.warning("could not post to the card thread: %s", type(exc).__name__)

    def _refresh(self, op_id: str) -> None:
        op = operation.load(self.conn, op_id)
        card = (op or {}).get("card") or {}
        if op is None or not card.get("channel"):
            return
        message = cards.operation_card(op)
        try:
            self.client.chat_update(channel=card["channel"], ts=card["ts"],
                                    text=message["text"], blocks=message["blocks"])
        except Exception as exc:
            log.warning("could not update the card: %s", type(exc).__name__)


# --- subcommands ----------------------------------------------------------------------------


def may_operate(org: OrgSettings, user: str, groups: Callable[[str, list[str]], set[str] | None]
                ) -> bool:
    """Operators start changes; nobody listed means anyone in the org's channel."""
    if not org.operators:
        return True
    found = groups(user, org.operators)
    return approval.is_allowed_approver(user, found or set(), org.operators)


def start(conn: Redis, handlers: Approvals, org: OrgSettings, user: str, channel: str,
          kind: str | None, servers: list[str] | None = None, override: bool = False) -> str:
    """Enqueue the start of an operation; the card appears when the worker has read Exchange."""
    if not may_operate(org, user, handlers.user_groups):
        return f"Only the operators of {org.name} may start changes."
    busy = operation.open_ops(conn, org.name)
    if busy:
        return (f"{org.name} already has an open operation (`{busy[0]['id']}`, "
                f"{busy[0]['kind']}); see `/exauth ops`.")
    ops_jobs.enqueue(conn, "start_operation_job",
                     (org.name, kind, user, list(servers or []), override),
                     meta={"reply": {"channel": channel}, "what": kind or "fix", "user": user})
    what = kind or "the change the status recommends"
    tail = " (override: the org is blocked)" if override else ""
    return f"Reading {org.name} and preparing {what}{tail}; the card follows here."


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
    found = operation.open_ops(conn, org.name)
    if not found:
        return f"No open operation for {org.name}."
    lines = []
    for op in found:
        index = operations.next_index(op)
        step = op["steps"][index]["title"] if index is not None else "-"
        lines.append(f"`{op['id']}` {op['kind']} ({op['state']}) by <@{op['requester']}>, "
                     f"next: {step}" + (f", resumes {op['resume_at']}" if op.get("resume_at")
                                        else ""))
    return "\n".join(lines)


def audit_text(conn: Redis, org: OrgSettings, limit: int = 15) -> str:
    """`/exauth audit [org]`: the newest audit entries."""
    entries = audit.entries(conn, org.name, limit=limit)
    if not entries:
        return f"No audit entries for {org.name}."
    return "```" + "\n".join(audit.format_entry(e)[:300] for e in entries) + "```"


def resume(conn: Redis, handlers: Approvals, settings: Settings, user: str, channel: str,
           op_id: str) -> str:
    """`/exauth resume <op>`: re-validate and continue an interrupted or lapsed operation."""
    try:
        op = operation.load(conn, op_id)
    except operation.OperationError:
        op = None
    if op is None:
        return f"No operation `{op_id[:40]}`."
    org = settings.org(op["org"])
    if not may_operate(org, user, handlers.user_groups):
        return f"Only the operators of {org.name} may resume operations."
    ops_jobs.enqueue(conn, "resume_job", (op["id"], user),
                     meta={"reply": {"channel": channel}, "what": "resume", "op_id": op["id"],
                           "user": user})
    return f"Re-validating operation `{op['id']}`; progress follows in its card's thread."


# --- bolt wiring ----------------------------------------------------------------------------


def register(app: App, settings: Settings, *, redis_url: str | None = None) -> Approvals:
    """Add the Approve/Deny listeners and the deny modal to `app`."""
    conn = connect(redis_url or settings.redis.url)
    handlers = Approvals(settings, conn, app.client)
    after_ack = ThreadPoolExecutor(max_workers=8, thread_name_prefix="exauth-approvals")

    def reply(client: WebClient, channel: str, user: str, text: str) -> None:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user, text=text)

    def clicked(body: dict[str, Any], client: WebClient, decision: str) -> None:
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        action = body["actions"][0]
        if decision == "approve":
            result = handlers.approve(user, action.get("value", ""), channel=channel)
            if not result.ok:
                reply(client, channel, user, f"Not approved: {result.message}")
            return
        message = body.get("message") or {}
        client.views_open(trigger_id=body["trigger_id"], view=cards.deny_modal(
            action.get("value", ""), channel, str(message.get("ts", ""))))

    @app.action(cards.APPROVE_ACTION)
    def approve_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        after_ack.submit(_logged, clicked, body, client, "approve")

    @app.action(cards.DENY_ACTION)
    def deny_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        _logged(clicked, body, client, "deny")  # views.open needs the fresh trigger_id

    @app.view(cards.DENY_VIEW)
    def deny_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                       client: WebClient) -> None:
        values = view["state"]["values"]
        reason = (values.get(cards.REASON_BLOCK, {}).get(cards.REASON_ACTION, {})
                  .get("value") or "").strip()
        if not reason:
            ack(response_action="errors", errors={cards.REASON_BLOCK: "A reason is required."})
            return
        ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        user = body["user"]["id"]

        def work() -> None:
            result = handlers.deny(user, meta.get("value", ""), reason,
                                   channel=meta.get("channel", ""))
            if not result.ok:
                reply(client, meta.get("channel", ""), user, f"Not denied: {result.message}")

        after_ack.submit(_logged, work)

    return handlers


def _logged(func: Callable[..., Any], *args: Any) -> None:
    try:
        func(*args)
    except Exception as exc:
        log.warning("approval handling failed: %s: %s", type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
