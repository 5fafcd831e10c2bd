"""The Slack app (its listeners from bot.listeners), and `exauth bot` that connects it to Slack.

Slack gives a slash command 3 seconds; every listener acks first and hands the rest to
bot.listeners.after_ack, the app's one executor and one error path. The app runs with
`process_before_response=True`: bolt's default would run the listener in its own executor
and poll for the ack every 10 ms, which sets a 10 ms floor on every answer and, with 50
commands in flight, 50 threads waking to poll; running the (tiny) listener inline and
deferring the I/O ourselves answers in about a millisecond.

Socket Mode (the default when `$SLACK_APP_TOKEN` is set) needs no inbound port. HTTP mode
serves POST /slack/events on bot.http.SlackHttpServer (waitress).
"""

from __future__ import annotations

import logging
import re
import signal
import threading

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import metrics
from bot.http import EVENTS_PATH, SlackHttpServer
from bot.listeners.after_ack import AfterAck
from bot.listeners.app_home import register as register_home
from bot.listeners.operation_actions import register as register_approvals
from bot.listeners.slash_command import register as register_slash_command
from bot.listeners.warning_buttons import register as register_warnings
from bot.slack import (
    CountingWebClient,
    SlackNotConfigured,
    api_url,
    tally_errors_to,
    web_client,
)
from config.schema import Settings
from workers import log_filter
from workers.jobs.queues import ANSWER_TIMEOUT, connect

log = logging.getLogger(__name__)


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


class _App(App):
    """bolt's App, whose per-request client tallies Slack API errors like every other.

    bolt builds a plain WebClient for each request (in `_init_context`) and hands it to the
    listeners; making it a bot.slack.CountingWebClient in place costs the ack path nothing
    (a bolt middleware that swapped it took the ack p99 of bench/slack_ack_bench.py from
    ~30 to ~80 ms). Should a bolt release stop calling `_init_context`, errors of the
    listeners' clients go uncounted, nothing else changes (tests/test_metrics.py notices)."""

    def _init_context(self, req: BoltRequest) -> None:
        super()._init_context(req)
        client = req.context.get("client")
        if type(client) is WebClient:  # exactly: a subclass of ours stays as it is
            client.__class__ = CountingWebClient


def create_app(settings: Settings, *, redis_url: str | None = None,
               client: WebClient | None = None) -> App:
    """The bolt App with the `/exauth` listener; tests hand in their own client/Redis."""
    signing_secret = settings.slack.signing_secret
    app = _App(
        client=client or web_client(settings),
        signing_secret=signing_secret.get_secret_value() if signing_secret else "",
        process_before_response=True,
    )
    # The app's one executor for work after an ack, and its one error path
    # (bot.listeners.after_ack).
    after_ack = AfterAck(connect(redis_url or settings.redis.url, timeout=ANSWER_TIMEOUT))
    app.error(after_ack.listener_error)
    # Slack API errors of the listeners' clients are tallied for /metrics (bot.slack).
    tally_errors_to(after_ack.redis)

    org_channels = {org.name: org.channel for org in settings.orgs}

    # Approve/Deny on operation cards, and the warnings' "Fix" / "Snooze 7 days" buttons.
    approvals = register_approvals(app, settings, after_ack, redis_url=redis_url)
    register_warnings(app, settings, approvals, after_ack, redis_url=redis_url)
    register_slash_command(app, after_ack, approvals, org_channels)
    register_home(app, settings, after_ack)  # the Home tab (bot.home)
    return app


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
                                 signing_secret=settings.slack.signing_secret.get_secret_value(),
                                 metrics=metrics.registry(settings, connect(
                                     settings.redis.url, timeout=ANSWER_TIMEOUT)))
        # stop() waits for the I/O thread, which is this one: call it from another.
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop).start())
        log.info("exauth bot: HTTP mode on port %d, POST %s, GET %s", server.port,
                 EVENTS_PATH, metrics.METRICS_PATH)
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
