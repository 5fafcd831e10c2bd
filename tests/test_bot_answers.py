"""Every slash command and every button click gets an answer the user can see, whatever is down.

The bot runs in HTTP mode (bot.http.SlackHttpServer) and gets REAL signed requests; its Redis
is a throwaway `redis-server` that a test stops or hangs (SIGSTOP), never the shared one.
What the user sees is what reaches the Slack mock: a post to the command's `response_url`
(slash commands) or a `chat.postEphemeral` (clicks).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from bot.app import create_app
from bot.http import SlackHttpServer
from bot.listeners.after_ack import FAILED
from bot.render import operation_card
from bot.render.warning_notice import FIX_ACTION, SNOOZE_ACTION
from config.load import settings_from_dict
from config.schema import Settings
from tests.conftest import _free_port, _reachable
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    Call,
    SlackMock,
    signed_headers,
    slash_command_body,
)
from tests.test_approvals_slack import deny_submission as slack_deny_submission
from workers import redis_keys
from workers.jobs import queues

CHANNEL = "C0CONTOSO"
USER = "U0ALICE"
ANSWER_WITHIN = 3.0  # seconds: Slack's promise to the user, asserted generously


class ThrowawayRedis:
    """A redis-server of this test's own, on a free port, that the test may stop or hang."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("these tests need `redis-server` on PATH (Debian: redis-server)")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="exauth-redis-down-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"redis-server on port {self.port} never answered")
            time.sleep(0.05)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)

    def hang(self) -> None:
        os.kill(self._proc.pid, signal.SIGSTOP)

    def close(self) -> None:
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture()
def own_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    try:
        yield server
    finally:
        server.close()


def make_settings(slack: SlackMock, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    org = {"name": "contoso", "channel": CHANNEL, "writer": "ex1.contoso.com",
           "approvers": [USER],
           "exchange": {"url": "https://ex1.contoso.com/PowerShell", "username": "svc",
                        "password_env": "EXAUTH_TEST_UNUSED_PASSWORD"}}
    return settings_from_dict({"slack": {"api_url": slack.api_url}, "org": [org]},
                              source="test.toml")


@pytest.fixture()
def start_bot(slack: SlackMock, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Callable[[str], SlackHttpServer]]:
    servers: list[SlackHttpServer] = []

    def _start(redis_url: str) -> SlackHttpServer:
        settings = make_settings(slack, redis_url, monkeypatch)
        server = SlackHttpServer(create_app(settings, redis_url=redis_url), "127.0.0.1", 0)
        server.start_background()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


def post(bot: SlackHttpServer, body: str) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{bot.port}/slack/events", data=body,
                         headers=signed_headers(body), timeout=10)


def slash(text: str, slack: SlackMock, trigger: str) -> str:
    return slash_command_body(text, channel_id=CHANNEL, trigger_id=trigger, user_id=USER,
                              response_url=slack.response_url(trigger))


def button(action_id: str, value: str, trigger: str, **extra: str) -> str:
    return urlencode({"payload": json.dumps({**extra,
        "type": "block_actions", "user": {"id": USER}, "team": {"id": "T0EXAUTH"},
        "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": trigger,
        "channel": {"id": CHANNEL}, "container": {"type": "message", "message_ts": "1.1"},
        "message": {"ts": "1.1", "text": "card"},
        "actions": [{"type": "button", "action_id": action_id, "value": value,
                     "block_id": "b", "action_ts": "1"}]})})


def deny_submission(value: str, trigger: str) -> str:
    return urlencode({"payload": json.dumps(slack_deny_submission(
        value, "1.1", "not now", user=USER, channel=CHANNEL, trigger=trigger))})


CARD_VALUE = json.dumps({"op": "op1", "step": 0, "req": "r1"})
WARNING_VALUE = json.dumps({"org": "contoso", "key": "auth:current:AB12"})

# name -> (request body, where the user's answer shows up)
REQUESTS: dict[str, Callable[[SlackMock, str], tuple[str, str]]] = {
    **{text: (lambda slack, trigger, text=text: (slash(text, slack, trigger), "response"))
       for text in ("fix", "rotate", "backend", "ops", "audit", "resume op1", "status",
                    "plan")},
    "approve-click": lambda slack, trigger: (
        button(operation_card.APPROVE_ACTION, CARD_VALUE, trigger), "chat.postEphemeral"),
    "deny-submit": lambda slack, trigger: (
        deny_submission(CARD_VALUE, trigger), "chat.postEphemeral"),
    "snooze-click": lambda slack, trigger: (
        button(SNOOZE_ACTION, WARNING_VALUE, trigger), "chat.postEphemeral"),
    "fix-click": lambda slack, trigger: (
        button(FIX_ACTION, WARNING_VALUE, trigger), "chat.postEphemeral"),
}


@pytest.mark.parametrize("state", ["stopped", "hung"])
@pytest.mark.parametrize("name", list(REQUESTS))
def test_with_redis_down_every_request_is_answered_in_one_line(
        name: str, state: str, own_redis: ThrowawayRedis, slack: SlackMock,
        start_bot: Callable[[str], SlackHttpServer]) -> None:
    bot = start_bot(own_redis.url)
    if state == "stopped":
        own_redis.stop()
    else:
        own_redis.hang()
    body, where = REQUESTS[name](slack, f"trig-{name.replace(' ', '-')}-{state}")
    sent = time.monotonic()
    response = post(bot, body)
    assert response.status_code == 200
    answer: Call = slack.wait_for(where, timeout=10)[0]
    took = time.monotonic() - sent
    text = answer.params["text"]
    assert "Redis" in text and "not reachable" in text and "\n" not in text
    if where == "response":
        assert answer.params["response_type"] == "ephemeral"
    else:
        assert answer.params["user"] == USER and answer.params["channel"] == CHANNEL
    assert took < ANSWER_WITHIN, f"the answer took {took:.1f} s"
    time.sleep(0.3)
    assert slack.calls_of("chat.postMessage") == []  # nothing public, no placeholder left


def test_the_bot_waits_briefly_on_redis_and_the_worker_keeps_its_defaults() -> None:
    bot_side = queues.connect("redis://127.0.0.1:1/0", timeout=queues.ANSWER_TIMEOUT)
    kwargs = bot_side.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (1.0, 1.0)
    assert kwargs["retry"].get_retries() == 0
    worker_side = queues.connect("redis://127.0.0.1:1/0").connection_pool.connection_kwargs
    assert "socket_timeout" not in worker_side and "retry" not in worker_side
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        bot_side.ping()
    assert time.monotonic() - started < 1.5


# --- something nobody expected ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["fix", "ops", "resume op1", "approve-click", "deny-submit",
                                  "fix-click"])
def test_an_unexpected_failure_after_the_ack_is_one_plain_line_and_one_log_line(
        name: str, conn: redis.Redis, redis_url: str, slack: SlackMock,
        start_bot: Callable[[str], SlackHttpServer], caplog: pytest.LogCaptureFixture) -> None:
    """Redis answers, but with an error no handler expects (keys of the wrong type: the
    operation is a list, the org's index a string). The person still hears one plain line,
    the log gets one line for it, and no traceback is anywhere."""
    conn.rpush(redis_keys.operation("op1"), "not an operation")
    conn.set(redis_keys.org_operations("contoso"), "not a set")
    caplog.set_level(logging.INFO)
    bot = start_bot(redis_url)
    body, where = REQUESTS[name](slack, f"trig-odd-{name.replace(' ', '-')}")
    sent = time.monotonic()
    assert post(bot, body).status_code == 200
    answer: Call = slack.wait_for(where, timeout=10)[0]
    took = time.monotonic() - sent
    assert answer.params["text"] == FAILED
    assert took < ANSWER_WITHIN, f"the answer took {took:.1f} s"
    time.sleep(0.3)
    assert len(slack.calls_of(where)) == 1
    ours = [r for r in caplog.records if r.name.startswith("bot") and r.levelno >= logging.WARNING]
    assert len(ours) == 1, caplog.text
    assert "WRONGTYPE" in ours[0].getMessage() and "\n" not in ours[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text


def test_a_listener_that_raises_before_its_ack_is_answered_by_the_app_error_handler(
        slack: SlackMock, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """bolt hands what a listener raises before its ack to the app's `@app.error`: a slash
    command hears the plain line in the HTTP answer, a click through its response_url; one
    log line each, no traceback."""
    caplog.set_level(logging.INFO)
    app = create_app(make_settings(slack, redis_url, monkeypatch), redis_url=redis_url)

    @app.command("/exauth-broken")
    def broken_command(ack: Callable[..., None]) -> None:
        raise RuntimeError("a bug\nwith a second line")

    @app.action("exauth_broken")
    def broken_click(ack: Callable[..., None]) -> None:
        raise RuntimeError("another bug")

    bot = SlackHttpServer(app, "127.0.0.1", 0)
    bot.start_background()
    try:
        response = post(bot, slash_command_body(
            "x", channel_id=CHANNEL, trigger_id="trig-broken", user_id=USER,
            response_url=slack.response_url("broken"), command="/exauth-broken"))
        assert response.status_code == 200
        assert response.json() == {"response_type": "ephemeral", "text": FAILED}
        click = post(bot, button("exauth_broken", "v", "trig-broken-click",
                                 response_url=slack.response_url("broken-click")))
        assert click.status_code == 200
        answer = slack.wait_for("response", timeout=ANSWER_WITHIN)[0]
        assert answer.params["text"] == FAILED
        assert answer.params["response_type"] == "ephemeral"
    finally:
        bot.stop()
    # bolt's own start-up notices are not ours (`exauth bot` filters them when it starts)
    ours = [r for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.split(".")[0] == "bot"]
    assert [r.getMessage() for r in ours] == [
        "/exauth-broken before its ack failed: RuntimeError: a bug",
        "block_actions before its ack failed: RuntimeError: another bug"], caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text


# --- the deny form ---------------------------------------------------------------------------


def test_a_deny_form_that_cannot_open_is_answered(
        slack: SlackMock, redis_url: str, start_bot: Callable[[str], SlackHttpServer]) -> None:
    bot = start_bot(redis_url)
    slack.fail_next("views.open", "expired_trigger_id")
    deny = button(operation_card.DENY_ACTION, CARD_VALUE, "trig-deny-1")
    assert post(bot, deny).status_code == 200
    answer = slack.wait_for("chat.postEphemeral", timeout=ANSWER_WITHIN)[0]
    assert answer.params["user"] == USER and answer.params["channel"] == CHANNEL
    assert "deny form" in answer.params["text"]
    assert "expired_trigger_id" in answer.params["text"]
    assert "\n" not in answer.params["text"]

    # When it opens, the form is the answer: nothing more is said.
    deny = button(operation_card.DENY_ACTION, CARD_VALUE, "trig-deny-2")
    assert post(bot, deny).status_code == 200
    opened: list[Any] = slack.wait_for("views.open", 2)
    assert opened[1].response["ok"] is True
    time.sleep(0.3)
    assert len(slack.calls_of("chat.postEphemeral")) == 1
