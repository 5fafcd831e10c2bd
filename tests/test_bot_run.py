"""`exauth bot` refuses to start without the token its mode needs, in one clear line."""

from __future__ import annotations

import pytest

from bot.app import run
from bot.slack import SlackNotConfigured, api_url
from config.load import settings_from_dict


@pytest.fixture(autouse=True)
def no_slack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)


def test_socket_mode_needs_the_app_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    with pytest.raises(SlackNotConfigured, match=r"\$SLACK_APP_TOKEN is not set"):
        run(settings_from_dict({}, source="t.toml"), http=False, port=3000)


def test_http_mode_needs_the_signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    with pytest.raises(SlackNotConfigured, match=r"\$SLACK_SIGNING_SECRET is not set"):
        run(settings_from_dict({}, source="t.toml"), http=True, port=3000)


def test_bot_token_is_required() -> None:
    from bot.slack import web_client

    with pytest.raises(SlackNotConfigured, match=r"\$SLACK_BOT_TOKEN is not set"):
        web_client(settings_from_dict({}, source="t.toml"))


def test_api_url_from_file_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert api_url(settings_from_dict({}, source="t.toml")) == "https://slack.com/api/"
    from_file = settings_from_dict({"slack": {"api_url": "http://127.0.0.1:9/api"}}, source="t")
    assert api_url(from_file) == "http://127.0.0.1:9/api/"
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:7/api/")
    overridden = settings_from_dict({"slack": {"api_url": "http://127.0.0.1:9/api"}}, source="t")
    assert api_url(overridden) == "http://127.0.0.1:7/api/"
