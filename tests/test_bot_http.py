"""The bot in HTTP mode answering REAL signed requests, with real Redis/RQ and a Slack mock.

Each test POSTs a slash command exactly as Slack does (form body, v0 signature) to the
bot's HTTP server on an ephemeral port, then looks at what landed in RQ and what the bot
said to the (mock) Slack Web API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from bot.app import create_app
from bot.http import SlackHttpServer
from config.load import settings_from_dict
from config.schema import Settings
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackMock,
    signed_headers,
    slash_command_body,
)
from workers import redis_keys
from workers.jobs.queues import READ_QUEUE, queue

CONTOSO = "C0CONTOSO"
FABRIKAM = "C0FABRIKAM"


def org_table(name: str, channel: str) -> dict[str, Any]:
    return {"name": name, "channel": channel, "writer": f"ex1.{name}.com",
            "exchange": {"url": f"https://ex1.{name}.com/PowerShell", "username": "svc",
                         "password_env": "EXAUTH_TEST_UNUSED_PASSWORD"}}


@pytest.fixture()
def settings(slack: SlackMock, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    return settings_from_dict({"slack": {"api_url": slack.api_url},
                               "org": [org_table("contoso", CONTOSO),
                                       org_table("fabrikam", FABRIKAM)]},
                              source="test.toml")


@pytest.fixture()
def bot(settings: Settings, redis_url: str) -> Iterator[SlackHttpServer]:
    server = SlackHttpServer(create_app(settings, redis_url=redis_url), "127.0.0.1", 0)
    server.start_background()
    yield server
    server.stop()


def post(bot: SlackHttpServer, slack: SlackMock, text: str, *, channel: str = CONTOSO,
         trigger: str = "trig-1", secret: str = SIGNING_SECRET, timestamp: int | None = None,
         extra: dict[str, str] | None = None) -> requests.Response:
    body = slash_command_body(text, channel_id=channel, trigger_id=trigger,
                              response_url=slack.response_url(trigger))
    headers = {**signed_headers(body, secret=secret, timestamp=timestamp), **(extra or {})}
    return requests.post(f"http://127.0.0.1:{bot.port}/slack/events", data=body,
                         headers=headers, timeout=10)


def read_jobs(redis_url: str) -> list[Any]:
    return queue(READ_QUEUE, redis.Redis.from_url(redis_url)).get_jobs()


def wait_jobs(redis_url: str, count: int, timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = read_jobs(redis_url)
        if len(jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.02)


def job_hash(redis_url: str, job_id: str) -> dict[str, str]:
    """The job exactly as stored in Redis."""
    stored = redis.Redis.from_url(redis_url).hgetall(f"rq:job:{job_id}")
    return {k.decode(): v.decode(errors="replace") for k, v in stored.items()}


def settle() -> None:
    """Give a listener that should do nothing the time it would need to do something."""
    time.sleep(0.5)


def test_status_acks_posts_placeholder_and_enqueues(bot: SlackHttpServer, slack: SlackMock,
                                                    redis_url: str) -> None:
    response = post(bot, slack, "status")
    assert response.status_code == 200
    assert response.text == ""  # a bare ack: the placeholder in the channel is the answer

    placeholder = slack.wait_for("chat.postMessage")[0]
    assert placeholder.params["channel"] == CONTOSO
    assert placeholder.params["text"] == "Checking contoso..."
    assert placeholder.headers["authorization"] == f"Bearer {BOT_TOKEN}"

    jobs = wait_jobs(redis_url, 1)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.func_name == "workers.jobs.read_jobs.status_job"
    assert job.args == ("contoso",) or list(job.args) == ["contoso"]
    assert job.meta["reply"] == {"channel": CONTOSO, "ts": placeholder.response["ts"]}
    assert job.meta["kind"] == "status" and job.meta["requested_by"] == "U0ALICE"
    stored_job = job_hash(redis_url, job.id)
    assert stored_job["success_callback_name"] == "bot.callbacks.job_results.status_ready"
    assert stored_job["failure_callback_name"] == "bot.callbacks.job_results.job_failed"
    assert job.retries_left == 3 and job.retry_intervals == [5, 15, 30]
    assert job.timeout == 300

    # Stored as JSON (never pickle) and without any secret.
    raw = redis.Redis.from_url(redis_url).hget(f"rq:job:{job.id}", "data")
    assert raw is not None
    stored = json.loads(zlib.decompress(raw).decode())  # RQ zlib-compresses the payload
    assert stored[0] == "workers.jobs.read_jobs.status_job"
    dump = json.dumps({**stored_job, "data": stored})
    assert BOT_TOKEN not in dump and SIGNING_SECRET not in dump


def test_plan_uses_plan_job(bot: SlackHttpServer, slack: SlackMock, redis_url: str) -> None:
    assert post(bot, slack, "plan fabrikam", channel=FABRIKAM).status_code == 200
    assert slack.wait_for("chat.postMessage")[0].params["text"] == "Planning for fabrikam..."
    job = wait_jobs(redis_url, 1)[0]
    assert job.func_name == "workers.jobs.read_jobs.plan_job"
    assert list(job.args) == ["fabrikam"]
    callback = job_hash(redis_url, job.id)["success_callback_name"]
    assert callback == "bot.callbacks.job_results.plan_ready"


@pytest.mark.parametrize("case", ["bad-signature", "wrong-secret", "stale-timestamp",
                                  "future-timestamp"])
def test_unverified_requests_get_401(case: str, bot: SlackHttpServer, slack: SlackMock,
                                     redis_url: str) -> None:
    if case == "bad-signature":
        body = slash_command_body("status", channel_id=CONTOSO, trigger_id="t")
        headers = signed_headers(body)
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
        response = requests.post(f"http://127.0.0.1:{bot.port}/slack/events", data=body,
                                 headers=headers, timeout=10)
    elif case == "wrong-secret":
        response = post(bot, slack, "status", secret="not-the-signing-secret")
    elif case == "stale-timestamp":
        response = post(bot, slack, "status", timestamp=int(time.time()) - 6 * 60)
    else:
        response = post(bot, slack, "status", timestamp=int(time.time()) + 6 * 60)
    assert response.status_code == 401
    settle()
    assert read_jobs(redis_url) == []
    assert slack.calls_of("chat.postMessage") == []


def test_recent_timestamp_within_five_minutes_is_accepted(bot: SlackHttpServer,
                                                          slack: SlackMock,
                                                          redis_url: str) -> None:
    assert post(bot, slack, "status", timestamp=int(time.time()) - 4 * 60).status_code == 200
    assert len(wait_jobs(redis_url, 1)) == 1


def test_same_trigger_id_enqueues_once(bot: SlackHttpServer, slack: SlackMock,
                                       redis_url: str) -> None:
    assert post(bot, slack, "status", trigger="dup-1").status_code == 200
    assert len(wait_jobs(redis_url, 1)) == 1
    second = post(bot, slack, "status", trigger="dup-1")
    assert second.status_code == 200  # acked, so Slack stops re-sending
    settle()
    assert len(read_jobs(redis_url)) == 1
    assert len(slack.calls_of("chat.postMessage")) == 1
    assert redis.Redis.from_url(redis_url).ttl(redis_keys.slack_delivery("dup-1")) > 0
    # a new trigger is a new request
    assert post(bot, slack, "status", trigger="dup-2").status_code == 200
    assert len(wait_jobs(redis_url, 2)) == 2


def test_slack_retry_header_enqueues_nothing(bot: SlackHttpServer, slack: SlackMock,
                                             redis_url: str) -> None:
    response = post(bot, slack, "status", trigger="retry-1",
                    extra={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert response.status_code == 200
    settle()
    assert read_jobs(redis_url) == []
    assert slack.calls_of("chat.postMessage") == []


@pytest.mark.parametrize(
    ("text", "channel", "fragment"),
    [
        ("help", "C0RANDOM", "Usage: `/exauth help`"),
        ("orgs", "C0RANDOM", "- `contoso` in <#C0CONTOSO>"),
        ("reboot now", CONTOSO, "Unknown subcommand `reboot`"),
        ("status nowhere", CONTOSO, "Unknown org `nowhere` (configured: contoso, fabrikam)"),
        ("status", "C0RANDOM", "No org is configured for this channel"),
        ("status fabrikam", CONTOSO, "`fabrikam` is managed in <#C0FABRIKAM>"),
    ],
    ids=["help", "orgs", "unknown-subcommand", "unknown-org", "unowned-channel",
         "other-orgs-channel"],
)
def test_short_ephemeral_answers(text: str, channel: str, fragment: str, bot: SlackHttpServer,
                                 slack: SlackMock, redis_url: str) -> None:
    response = post(bot, slack, text, channel=channel)
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert fragment in answer["text"]
    settle()
    assert read_jobs(redis_url) == []
    assert slack.calls_of("chat.postMessage") == []


def test_bot_not_in_channel_says_how_to_fix(bot: SlackHttpServer, slack: SlackMock,
                                            redis_url: str) -> None:
    slack.fail_next("chat.postMessage", "not_in_channel")
    assert post(bot, slack, "status", trigger="nic").status_code == 200
    answer = slack.wait_for("response")[0]
    assert answer.params["response_type"] == "ephemeral"
    assert "not_in_channel" in answer.params["text"] and "/invite @exauth" in answer.params["text"]
    settle()
    assert read_jobs(redis_url) == []


def test_rate_limited_placeholder_is_retried_as_slack_asks(bot: SlackHttpServer,
                                                           slack: SlackMock,
                                                           redis_url: str) -> None:
    slack.rate_limit_next("chat.postMessage", retry_after=0)
    assert post(bot, slack, "status", trigger="rl").status_code == 200
    calls = slack.wait_for("chat.postMessage", 2)
    assert [c.status for c in calls] == [429, 200]
    job = wait_jobs(redis_url, 1)[0]
    assert job.meta["reply"]["ts"] == calls[1].response["ts"]


def test_health_endpoint_and_unknown_path(bot: SlackHttpServer) -> None:
    assert requests.get(f"http://127.0.0.1:{bot.port}/healthz", timeout=5).text == "ok"
    assert requests.post(f"http://127.0.0.1:{bot.port}/other", timeout=5).status_code == 404


@pytest.mark.parametrize(("headers", "redelivered"), [
    ({}, False),
    ({"x-slack-retry-num": "0"}, False),  # Socket Mode: bolt mirrors retry_attempt 0 here
    ({"x-slack-retry-num": "1"}, True),
    ({"x-slack-retry-num": "3"}, True),
    ({"x-slack-retry-num": "soon"}, True),  # unreadable but present: treat as a retry
])
def test_only_a_retry_number_above_zero_is_a_redelivery(headers: dict[str, str],
                                                        redelivered: bool) -> None:
    from slack_bolt import BoltRequest

    from bot.listeners.slash_command import is_redelivery

    assert is_redelivery(BoltRequest(body="", headers=headers)) is redelivered


# --- requests are checked before anything else ------------------------------------------


def sign(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 signature over the raw bytes (signed_headers takes text; garbage is not)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def raw_post(bot: SlackHttpServer, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{bot.port}/slack/events", data=body,
                         headers=headers, timeout=10)


FORM = "application/x-www-form-urlencoded"
COMMAND_FORM = slash_command_body("status", channel_id=CONTOSO, trigger_id="odd").encode()

# (body, content type): each is not a form Slack would send, or its payload is not JSON.
UNREADABLE_BODIES = {
    "json": (b'{"type": "block_actions", "actions": []}', "application/json"),
    "json-as-form": (b'{"type": "block_actions", "x": "a=b"}', FORM),
    "broken-json": (b'{"type": "block_act', "application/json"),
    "binary": (b"\xff\xfe\x00\x01garbage\x80", FORM),
    "not-utf8-percent": (COMMAND_FORM.replace(b"text=status", b"text=%ff%fe"), FORM),
    "bad-percent": (COMMAND_FORM.replace(b"text=status", b"text=%zzstatus"), FORM),
    "not-key-value": (b"status and nothing else", FORM),
    "payload-not-json": (b"payload=%7Bnot+json", FORM),
    "payload-json-list": (b"payload=%5B1%2C2%5D", FORM),
    "payload-json-string": (b"payload=%22x%22", FORM),
    "payload-odd-shape": (urlencode({"payload": '{"type": "block_actions", "team": 5}'}).encode(),
                          FORM),  # JSON, but bolt cannot read its team
    "empty": (b"", FORM),
}


def said(slack: SlackMock) -> list[str]:
    """What the bot asked Slack for, beyond bolt's auth.test at start-up."""
    return [c.method for c in slack.calls if c.method != "auth.test"]


def assert_quiet(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """No traceback in the log or on the process's stderr."""
    assert "Traceback" not in caplog.text
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("case", sorted(UNREADABLE_BODIES))
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_unreadable_body_gets_401_unsigned_and_400_signed(
        case: str, signed: bool, bot: SlackHttpServer, slack: SlackMock, redis_url: str,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    body, content_type = UNREADABLE_BODIES[case]
    ts = str(int(time.time()))
    signature = sign(body, ts) if signed else "v0=" + "0" * 64
    response = raw_post(bot, body, {"Content-Type": content_type,
                                    "X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": signature})
    assert response.status_code == (400 if signed else 401)
    settle()
    assert read_jobs(redis_url) == []
    assert said(slack) == []
    assert_quiet(caplog, capfd)


@pytest.mark.parametrize("timestamp", ["soon", "", "12e3", "1.5", "-1", "0x10",
                                       "1_700_000_000"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_unreadable_timestamp_gets_401(
        timestamp: str, signed: bool, bot: SlackHttpServer, slack: SlackMock,
        redis_url: str, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A timestamp that is not a plain number cannot show the request is fresh, so even a
    signature over it proves nothing: 401 (bolt today: int() raises, 500 and a traceback)."""
    signature = sign(COMMAND_FORM, timestamp) if signed else "v0=" + "0" * 64
    response = raw_post(bot, COMMAND_FORM, {"Content-Type": FORM,
                                            "X-Slack-Request-Timestamp": timestamp,
                                            "X-Slack-Signature": signature})
    assert response.status_code == 401
    settle()
    assert read_jobs(redis_url) == []
    assert said(slack) == []
    assert_quiet(caplog, capfd)


@pytest.mark.parametrize("missing", ["timestamp", "signature", "both", "content-type"])
def test_missing_headers(missing: str, bot: SlackHttpServer, slack: SlackMock, redis_url: str,
                         caplog: pytest.LogCaptureFixture,
                         capfd: pytest.CaptureFixture[str]) -> None:
    """Without either Slack header a request is unsigned (401); a signed form without its
    Content-Type is not a form Slack sends (400)."""
    ts = str(int(time.time()))
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": sign(COMMAND_FORM, ts)}
    if missing in ("timestamp", "both"):
        del headers["X-Slack-Request-Timestamp"]
    if missing in ("signature", "both"):
        del headers["X-Slack-Signature"]
    if missing == "content-type":
        del headers["Content-Type"]
    response = raw_post(bot, COMMAND_FORM, headers)
    assert response.status_code == (400 if missing == "content-type" else 401)
    settle()
    assert read_jobs(redis_url) == []
    assert said(slack) == []
    assert_quiet(caplog, capfd)


def test_oversized_body_is_refused_before_it_is_read(
        bot: SlackHttpServer, slack: SlackMock, redis_url: str,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    body = b"text=" + b"a" * (2 * 1024 * 1024)
    ts = str(int(time.time()))
    response = raw_post(bot, body, {"Content-Type": FORM, "X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": sign(body, ts)})
    assert response.status_code == 413
    assert read_jobs(redis_url) == []
    assert said(slack) == []
    assert_quiet(caplog, capfd)


def test_a_signed_form_with_a_json_payload_still_reaches_bolt(
        bot: SlackHttpServer, slack: SlackMock, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The checks let through what Slack really sends: a click no listener knows is
    bolt's to answer (404), not refused as unreadable (400)."""
    payload = {"type": "block_actions", "team": {"id": "T0EXAUTH"},
               "user": {"id": "U0ALICE"}, "channel": {"id": CONTOSO},
               "actions": [{"action_id": "no-such-action", "value": "x"}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    response = raw_post(bot, body, {"Content-Type": FORM, "X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": sign(body, ts)})
    assert response.status_code == 404
    assert_quiet(caplog, capfd)
