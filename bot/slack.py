"""The Slack Web API client every exauth process uses (bot listeners and RQ callbacks).

One factory so the base URL override (`[slack] api_url` / `$SLACK_API_URL`, used by tests
and by proxies) and the retry policy are the same everywhere. Slack answers HTTP 429 with
`Retry-After` when we post too fast (a burst of status reports on a busy morning);
slack_sdk's RateLimitErrorRetryHandler waits exactly as asked and tries again.
"""

from __future__ import annotations

import threading

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from config.errors import ExauthError
from config.load import load_settings
from config.schema import Settings

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


def web_client(settings: Settings) -> WebClient:
    return WebClient(
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
        if client is None:
            client = _callback_clients[key] = web_client(settings)
        return client
