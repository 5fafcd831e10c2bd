"""The Slack app: the `/exauth` listener, and `exauth bot` that connects it to Slack.

Slack gives a slash command 3 seconds. The listener only parses (bot.commands), acks,
and hands the rest (post a placeholder, enqueue a job, answer an operation subcommand)
to bot.after_ack, so Slack has its answer before any network call is made; no Exchange
call ever runs in the bot. The app runs with `process_before_response=True`: bolt's
default would run the listener in its own executor and poll for the ack every 10 ms,
which sets a 10 ms floor on every answer and, with 50 commands in flight, 50 threads
waking to poll; running the (tiny) listener inline and deferring the I/O ourselves
answers in about a millisecond.

A request Slack marks as a retry (`X-Slack-Retry-Num`) is acked and dropped; a second
delivery of a trigger_id already seen is dropped after the ack (bot.after_ack).

Socket Mode (the default when `$SLACK_APP_TOKEN` is set) needs no inbound port. HTTP mode
serves POST /slack/events on bot.http.SlackHttpServer (waitress).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from functools import partial
from typing import Any

from slack_bolt import Ack, App, BoltRequest, Respond
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import approvals as op_commands
from bot import notify, views
from bot.after_ack import AfterAck, ReadRequest, Started
from bot.approvals import Approvals
from bot.approvals import register as register_approvals
from bot.commands import Reply, RunJob, RunOp, interpret
from bot.http import EVENTS_PATH, SlackHttpServer
from bot.slack import SlackNotConfigured, api_url, web_client
from bot.warnings_notify import register as register_warnings
from config.schema import Settings
from workers import jobs, log_filter
from workers.queues import ANSWER_TIMEOUT, ReadJob, connect

log = logging.getLogger(__name__)

COMMAND = "/exauth"

READ_JOBS = {"status": jobs.status_job, "plan": jobs.plan_job}


class _SameTokenNotice(logging.Filter):
    """bolt warns "`token` will be unused" whenever $SLACK_BOT_TOKEN is set and a client is
    given; our client carries that very token (bot.slack), so the line only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _process_logging(settings: Settings) -> None:
    """The bot process's logging, set up when it starts (importing this module changes no
    logger): INFO to stderr, secrets masked, bolt's token notice dropped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _SameTokenNotice) for f in handler.filters):
            handler.addFilter(_SameTokenNotice())
    log_filter.install_for(settings)


def create_app(settings: Settings, *, redis_url: str | None = None,
               client: WebClient | None = None) -> App:
    """The bolt App with the `/exauth` listener; tests hand in their own client/Redis."""
    signing_secret = settings.slack.signing_secret
    app = App(
        client=client or web_client(settings),
        signing_secret=signing_secret.get_secret_value() if signing_secret else "",
        process_before_response=True,
    )
    # The app's one executor for work after an ack, and its one error path (bot.after_ack).
    after_ack = AfterAck(connect(redis_url or settings.redis.url, timeout=ANSWER_TIMEOUT))
    app.error(after_ack.listener_error)
    org_channels = {org.name: org.channel for org in settings.orgs}

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

    # Approve/Deny on operation cards, and the warnings' "Fix" / "Snooze 7 days" buttons.
    approvals = register_approvals(app, settings, after_ack, redis_url=redis_url)
    register_warnings(app, settings, approvals, after_ack, redis_url=redis_url)
    return app


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
    (bot.after_ack.answer_failure) tells the asker so."""
    respond(text=_op_answer(decision, handlers, command), response_type="ephemeral")


def _op_answer(decision: RunOp, handlers: Approvals, command: dict[str, Any]) -> str:
    redis = handlers.conn
    settings = handlers.settings
    user = command.get("user_id") or ""
    channel = command.get("channel_id") or ""
    if decision.kind == "resume":
        text = op_commands.resume(redis, handlers, settings, user, channel, decision.args[0])
    else:
        org = settings.org(decision.org)
        if decision.kind == "fix":
            text = op_commands.fix(redis, handlers, org, user, channel, list(decision.args))
        elif decision.kind == "rotate":
            text = op_commands.rotate(redis, handlers, org, user, channel)
        elif decision.kind == "backend":
            server = decision.args[0] if decision.args else None
            text = op_commands.backend(redis, handlers, org, user, channel, server)
        elif decision.kind == "ops":
            text = op_commands.ops(redis, org)
        else:
            text = op_commands.audit_text(redis, org)
    return text


def post_placeholder(decision: RunJob, client: WebClient, after_ack: AfterAck,
                     command: dict[str, Any], respond: Respond) -> None:
    """Post the placeholder, then hand the job that will replace it to the enqueuer."""
    channel = command.get("channel_id") or ""
    placeholder = views.placeholder_message(decision.org, decision.kind)
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
                  on_success=notify.ON_SUCCESS[decision.kind], on_failure=notify.ON_FAILURE)
    after_ack.enqueue_read(ReadRequest(job, client))


def run(settings: Settings, *, http: bool = False, port: int = 3000) -> int:
    """`exauth bot`: Socket Mode when $SLACK_APP_TOKEN is set (and --http not given)."""
    _process_logging(settings)
    app_token = settings.slack.app_token
    if not http and app_token is None:
        raise SlackNotConfigured("$SLACK_APP_TOKEN is not set: set it for Socket Mode "
                                 "(xapp-...), or run `exauth bot --http` behind a public URL")
    if http and settings.slack.signing_secret is None:
        raise SlackNotConfigured("$SLACK_SIGNING_SECRET is not set: HTTP mode needs it to "
                                 "verify that requests come from Slack")
    try:
        app = create_app(settings)  # bolt checks the bot token with auth.test here
    except SlackApiError as exc:
        raise SlackNotConfigured(f"Slack refused $SLACK_BOT_TOKEN "
                                 f"({exc.response.get('error')})") from None
    except BoltError as exc:  # bolt's word for an auth.test that said no
        said = re.search(r"'error': '([^']+)'", str(exc))
        raise SlackNotConfigured(f"Slack refused $SLACK_BOT_TOKEN "
                                 f"({said.group(1) if said else exc})") from None
    except OSError as exc:  # urllib's URLError included
        raise SlackNotConfigured(f"cannot reach Slack's Web API at {api_url(settings)}: "
                                 f"{getattr(exc, 'reason', None) or exc}") from None
    if http:
        assert settings.slack.signing_secret is not None  # checked above
        server = SlackHttpServer(app, "0.0.0.0", port,
                                 signing_secret=settings.slack.signing_secret.get_secret_value())
        # stop() waits for the I/O thread, which is this one: call it from another.
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop).start())
        log.info("exauth bot: HTTP mode on port %d, POST %s", server.port, EVENTS_PATH)
        try:
            server.serve_forever()  # Ctrl-C ends it too (waitress catches KeyboardInterrupt)
        finally:
            server.stop()
        return 0
    assert app_token is not None
    handler = SocketModeHandler(app, app_token.get_secret_value(),
                                web_client=WebClient(base_url=api_url(settings)))
    log.info("exauth bot: Socket Mode")
    try:
        handler.start()
    except SlackApiError as exc:  # apps.connections.open refused the app-level token
        raise SlackNotConfigured(
            f"Slack refused $SLACK_APP_TOKEN ({exc.response.get('error')}): it must be an "
            "app-level token (xapp-...) with the connections:write scope") from None
    return 0
