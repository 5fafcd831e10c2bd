"""The Slack Web API client every exauth process uses (bot listeners and RQ callbacks).

One factory so the base URL override (`[slack] api_url` / `$SLACK_API_URL`, used by tests
and by proxies) and the retry policy are the same everywhere. Slack answers HTTP 429 with
`Retry-After` when we post too fast (a burst of status reports on a busy morning);
slack_sdk's RateLimitErrorRetryHandler waits exactly as asked and tries again.
"""

from __future__ import annotations

import threading
from typing import Any

from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from config.errors import ExauthError
from config.load import load_settings
from config.schema import Settings
from workers import tallies

DEFAULT_API_URL = "https://slack.com/api/"
RATE_LIMIT_RETRIES = 3
TIMEOUT_SECONDS = 15


class SlackNotConfigured(ExauthError, RuntimeError):
    """Raised when a token the process needs is not in its environment."""


def api_url(settings: Settings) -> str:
    url = settings.slack.api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def bot_token(settings: Settings) -> str:
    token = settings.slack.bot_token
    if token is None or not token.get_secret_value():
        raise SlackNotConfigured("$SLACK_BOT_TOKEN is not set (the bot token, xoxb-...)")
    return token.get_secret_value()


class CountingWebClient(WebClient):
    """A WebClient that tallies every Slack API error it raises (workers.tallies, shown by
    `/metrics` as exauth_slack_api_errors_total), then raises it as before."""

    def api_call(self, api_method: str, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            _tally(api_method, str(exc.response.get("error") or "unknown"))
            raise

    @classmethod
    def like(cls, client: WebClient) -> CountingWebClient:
        """The same client, counting (bolt makes a plain WebClient per request): a shallow
        copy of its settings, so whatever bolt set on it (token, team, retry handlers) holds."""
        counting = cls.__new__(cls)
        counting.__dict__.update(client.__dict__)
        return counting


_tally_conn: list[Redis] = []


def tally_errors_to(conn: Redis) -> None:
    """The Redis this process tallies Slack errors into (the bot's, or a worker's)."""
    _tally_conn[:] = [conn]


def _tally(method: str, error: str) -> None:
    if _tally_conn:
        tallies.count_slack_error(_tally_conn[0], method, error)


def web_client(settings: Settings) -> WebClient:
    return CountingWebClient(
        token=bot_token(settings),
        base_url=api_url(settings),
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


_callback_clients: dict[tuple[str, str], WebClient] = {}
_callback_clients_lock = threading.Lock()


def callback_client() -> WebClient:
    """The client RQ callbacks post with.

    Callbacks run in the worker, with no bolt app around them: they load the worker's own
    settings (its `--config`, config.load.use_config), and one client per (API URL,
    token) is kept in the process so its HTTP settings stay warm across jobs.
    """
    settings = load_settings()
    key = (api_url(settings), bot_token(settings))
    with _callback_clients_lock:
        client = _callback_clients.get(key)
        if not _tally_conn:
            from workers.jobs.queues import ANSWER_TIMEOUT, connect

            tally_errors_to(connect(settings.redis.url, timeout=ANSWER_TIMEOUT))
        if client is None:
            client = _callback_clients[key] = web_client(settings)
        return client
