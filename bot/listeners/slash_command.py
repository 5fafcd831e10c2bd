"""The `/exauth` slash command: parse, ack, hand the rest over (a bolt listener, kept thin).

Slack gives a slash command 3 seconds. The listener only parses (bot.listeners.command_text),
acks, and hands the rest (post a placeholder, enqueue a job, answer an operation
subcommand) to bot.listeners.after_ack, so Slack has its answer before any network call is
made; no Exchange call ever runs in the bot. A request Slack marks as a retry
(`X-Slack-Retry-Num`) is acked and dropped; a second delivery of a trigger_id already seen
is dropped after the ack (bot.listeners.after_ack).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from slack_bolt import Ack, App, BoltRequest, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.callbacks import job_results
from bot.listeners import operation_actions
from bot.listeners.after_ack import AfterAck, ReadRequest, Started
from bot.listeners.command_text import Reply, RunJob, RunOp, interpret
from bot.listeners.operation_actions import Approvals
from bot.render import messages
from workers.jobs import read_jobs
from workers.jobs.queues import ReadJob

log = logging.getLogger(__name__)

COMMAND = "/exauth"

READ_JOBS = {"status": read_jobs.status_job, "plan": read_jobs.plan_job,
             "rehearse": read_jobs.rehearse_job}


def register(app: App, after_ack: AfterAck, approvals: Approvals,
             org_channels: dict[str, str]) -> None:
    """Add the `/exauth` listener to the bot's App."""

    @app.command(COMMAND)
    def exauth(ack: Ack, command: dict[str, Any], client: WebClient, request: BoltRequest,
               respond: Respond) -> None:
        decision = interpret(command.get("text") or "", command.get("channel_id") or "",
                             org_channels)
        if isinstance(decision, Reply):
            ack(text=decision.text, response_type="ephemeral")
            return
        ack()
        if is_redelivery(request):
            log.info("Slack re-delivery of %s ignored", command.get("trigger_id"))
            return
        if isinstance(decision, RunOp):
            after_ack.hand_over(Started(command, respond, partial(start_op, decision, approvals)))
            return
        after_ack.hand_over(Started(command, respond, partial(
            post_placeholder, decision, client, after_ack)))


def is_redelivery(request: BoltRequest) -> bool:
    """Slack sets X-Slack-Retry-Num when it re-sends a request it thinks went unanswered.

    In Socket Mode bolt copies an envelope's `retry_attempt` into that header, and a first
    delivery says 0 there: only a number above 0 marks a re-delivery.
    """
    number = (request.headers.get("x-slack-retry-num") or [""])[0]  # bolt: lists of values
    try:
        return int(number) > 0
    except ValueError:
        return bool(number)


def start_op(decision: RunOp, handlers: Approvals, command: dict[str, Any],
             respond: Respond) -> None:
    """Operation subcommands: check who asks, enqueue, answer ephemerally (after the ack).
    Every one of them needs Redis; when it does not answer, the one error path
    (bot.listeners.after_ack.answer_failure) tells the asker so."""
    respond(text=_op_answer(decision, handlers, command), response_type="ephemeral")


def _op_answer(decision: RunOp, handlers: Approvals, command: dict[str, Any]) -> str:
    redis = handlers.conn
    settings = handlers.settings
    user = command.get("user_id") or ""
    channel = command.get("channel_id") or ""
    if decision.kind == "resume":
        text = operation_actions.resume(redis, handlers, settings, user, channel, decision.args[0])
    else:
        org = settings.org(decision.org)
        if decision.kind == "fix":
            text = operation_actions.fix(redis, handlers, org, user, channel, list(decision.args))
        elif decision.kind == "rotate":
            text = operation_actions.rotate(redis, handlers, org, user, channel)
        elif decision.kind == "backend":
            server = decision.args[0] if decision.args else None
            text = operation_actions.backend(redis, handlers, org, user, channel, server)
        elif decision.kind == "ops":
            text = operation_actions.ops(redis, org)
        else:
            text = operation_actions.audit_text(redis, org)
    return text


def post_placeholder(decision: RunJob, client: WebClient, after_ack: AfterAck,
                     command: dict[str, Any], respond: Respond) -> None:
    """Post the placeholder, then hand the job that will replace it to the enqueuer."""
    channel = command.get("channel_id") or ""
    placeholder = messages.placeholder_message(decision.org, decision.kind)
    try:
        posted = client.chat_postMessage(channel=channel, text=placeholder["text"],
                                         blocks=placeholder["blocks"])
    except SlackApiError as exc:
        error = exc.response.get("error")
        hint = " Invite me first: `/invite @exauth`." if error in (
            "not_in_channel", "channel_not_found") else ""
        respond(text=f"I could not post in this channel ({error}).{hint}",
                response_type="ephemeral")
        return
    meta = {
        "org": decision.org,
        "kind": decision.kind,
        "reply": {"channel": posted.get("channel") or channel, "ts": posted.get("ts")},
        "requested_by": command.get("user_id"),
    }
    job = ReadJob(READ_JOBS[decision.kind], decision.org, meta,
                  on_success=job_results.ON_SUCCESS[decision.kind],
                  on_failure=job_results.ON_FAILURE)
    after_ack.enqueue_read(ReadRequest(job, client))
