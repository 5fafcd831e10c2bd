"""`exauth bot` in Socket Mode, its default, end to end as a process.

Slack's side is played by the Web API mock (apps.connections.open hands out the socket URL)
and a WebSocket server (tests/slack_mock.SocketModeMock) that says hello and delivers
envelopes the way Slack does. The bot is the real `exauth bot` process with only
$SLACK_APP_TOKEN and $SLACK_BOT_TOKEN set; its jobs go through real Redis to a real RQ
worker that reads the lab over WS-Man/PSRP, and the placeholder is edited in place; an
Approve click arrives as an `interactive` envelope and runs its step on the lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bot.render import operation_card
from config.load import load_settings
from lab.serve import LabHandle, config_toml
from tests.slack_mock import APP_TOKEN, BOT_TOKEN, SlackMock, SocketModeMock, slash_command
from workers.jobs.queues import READ_QUEUE, queue
from workers.jobs.worker_process import run as run_worker

CHANNEL = "C0SOCKET"
APPROVER = "U0BOB"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def socket_mode(slack: SlackMock) -> Iterator[SocketModeMock]:
    mock = SocketModeMock()
    slack.socket_url = mock.url
    yield mock
    mock.stop()


class Bot:
    """A running `exauth bot` process, the lab it is configured for, and what it wrote to
    stderr once stopped."""

    def __init__(self, proc: subprocess.Popen[str], lab: LabHandle) -> None:
        self.proc, self.lab = proc, lab
        self.stderr = ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, self.stderr = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
        return self.proc.returncode


@pytest.fixture()
def start_bot(make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Bot]]:
    bots: list[Bot] = []

    def _start(app_token: str = APP_TOKEN, scenario: str = "healthy", *,
               bot_token: str = BOT_TOKEN, api_url: str | None = None) -> Bot:
        lab = make_lab(scenario)
        password_file = tmp_path / "lab.password"
        password_file.write_text(lab.password)
        text = config_toml(lab.info, str(password_file), writer=lab.writer)
        config = tmp_path / "exauth.toml"
        config.write_text(f'[slack]\napi_url = "{api_url or slack.api_url}"\n\n' + text.replace(
            'channel = ""', f'channel = "{CHANNEL}"\napprovers = ["{APPROVER}"]'))
        # The worker (this process) finds the same config and Redis as the bot.
        monkeypatch.setenv("EXAUTH_CONFIG", str(config))
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SLACK_") and k != "PYTHONPATH"}
        env.update(EXAUTH_CONFIG=str(config), REDIS_URL=redis_url, SLACK_BOT_TOKEN=bot_token,
                   SLACK_APP_TOKEN=app_token, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "bot"], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        bot = Bot(proc, lab)
        bots.append(bot)
        return bot

    yield _start
    for bot in bots:
        bot.stop()


def queued(redis_url: str, count: int, timeout: float = 10) -> int:
    q = queue(READ_QUEUE, redis.Redis.from_url(redis_url))
    deadline = time.monotonic() + timeout
    while q.count < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return q.count


def test_status_over_socket_mode_acks_posts_and_updates_the_placeholder(
        start_bot: Callable[..., Bot], slack: SlackMock, socket_mode: SocketModeMock,
        redis_url: str) -> None:
    bot = start_bot()
    socket_mode.wait_connected()
    command = slash_command("status", channel_id=CHANNEL, trigger_id="trig-1",
                            response_url=slack.response_url())
    socket_mode.deliver("slash_commands", command, envelope_id="env-1")

    ack = socket_mode.wait_ack("env-1")
    assert ack["envelope_id"] == "env-1"
    placeholder = slack.wait_for("chat.postMessage")[0]
    assert placeholder.params["channel"] == CHANNEL
    assert queued(redis_url, 1) == 1

    assert run_worker(load_settings(), burst=True) == 0
    update = slack.wait_for("chat.update")[-1]
    assert update.params["ts"] == placeholder.response["ts"]
    assert "OK" in update.params["text"], update.params["text"]

    bot.stop()
    assert "Traceback" not in bot.stderr
    assert APP_TOKEN not in bot.stderr and BOT_TOKEN not in bot.stderr
    assert "will be unused" not in bot.stderr  # bolt's misleading token notice is filtered


def test_a_redelivered_envelope_is_acked_and_enqueues_nothing_more(
        start_bot: Callable[..., Bot], slack: SlackMock, socket_mode: SocketModeMock,
        redis_url: str) -> None:
    start_bot()
    socket_mode.wait_connected()
    command = slash_command("status", channel_id=CHANNEL, trigger_id="trig-2",
                            response_url=slack.response_url())
    socket_mode.deliver("slash_commands", command, envelope_id="env-2")
    socket_mode.wait_ack("env-2")
    socket_mode.deliver("slash_commands", command, envelope_id="env-2b", retry_attempt=1)
    socket_mode.wait_ack("env-2b")
    assert queued(redis_url, 1) == 1
    time.sleep(0.5)  # a second enqueue would come right after the second ack
    assert queued(redis_url, 2, timeout=0) == 1
    assert len(slack.calls_of("chat.postMessage")) == 1


def test_a_bad_command_gets_its_help_in_the_ack(
        start_bot: Callable[..., Bot], slack: SlackMock, socket_mode: SocketModeMock,
        redis_url: str) -> None:
    start_bot()
    socket_mode.wait_connected()
    command = slash_command("frobnicate", channel_id=CHANNEL, trigger_id="trig-3")
    socket_mode.deliver("slash_commands", command, envelope_id="env-3")
    ack = socket_mode.wait_ack("env-3")
    assert "frobnicate" in ack["payload"]["text"]
    assert ack["payload"]["response_type"] == "ephemeral"
    assert queued(redis_url, 1, timeout=0.3) == 0


@pytest.mark.parametrize(("tokens", "line"), [
    ({"app_token": "xapp-1-wrong"}, "exauth: Slack refused $SLACK_APP_TOKEN (invalid_auth)"),
    ({"bot_token": "xoxb-wrong"}, "exauth: Slack refused $SLACK_BOT_TOKEN (invalid_auth)"),
    ({"api_url": "http://127.0.0.1:9/api/"},
     "exauth: cannot reach Slack's Web API at http://127.0.0.1:9/api/"),
], ids=["app-token", "bot-token", "no-slack"])
def test_what_keeps_the_bot_from_slack_ends_it_with_one_line(
        tokens: dict[str, str], line: str, start_bot: Callable[..., Bot],
        socket_mode: SocketModeMock) -> None:
    bot = start_bot(**tokens)
    try:
        bot.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the bot kept running without Slack")
    bot.stop()
    assert bot.proc.returncode != 0
    assert "Traceback" not in bot.stderr
    last = bot.stderr.strip().splitlines()[-1]
    assert last.startswith(line), bot.stderr
    assert "wrong" not in bot.stderr  # the refused token itself is never printed
    assert socket_mode.connections == 0


def test_an_approve_click_over_socket_mode_runs_the_step(
        start_bot: Callable[..., Bot], slack: SlackMock, socket_mode: SocketModeMock) -> None:
    lab = start_bot(scenario="expiring-sha1").lab
    socket_mode.wait_connected()
    fix = slash_command("fix", channel_id=CHANNEL, trigger_id="trig-fix",
                        response_url=slack.response_url())
    socket_mode.deliver("slash_commands", fix, envelope_id="env-fix")
    socket_mode.wait_ack("env-fix")
    value = None
    for _ in range(50):  # the start job posts the card; a worker runs it
        run_worker(load_settings(), burst=True)
        value = approve_value(slack)
        if value:
            break
        time.sleep(0.1)
    assert value, [c.method for c in slack.calls]

    socket_mode.deliver("interactive", {
        "type": "block_actions", "user": {"id": APPROVER}, "team": {"id": "T0EXAUTH"},
        "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": "trig-click",
        "channel": {"id": CHANNEL}, "container": {"type": "message", "message_ts": "1.1"},
        "message": {"ts": "1.1", "text": "card"},
        "actions": [{"type": "button", "action_id": operation_card.APPROVE_ACTION, "value": value,
                     "block_id": "b", "action_ts": "1"}],
    }, envelope_id="env-click")
    socket_mode.wait_ack("env-click")
    for _ in range(50):
        run_worker(load_settings(), burst=True)
        if [c for c in lab.org.calls() if c["command"] == "New-ExchangeCertificate"]:
            break
        time.sleep(0.1)
    created = [c for c in lab.org.calls() if c["command"] == "New-ExchangeCertificate"]
    assert len(created) == 1 and created[0]["outcome"] == "ok", created


def approve_value(slack: SlackMock) -> str | None:
    for call in reversed(slack.calls):
        if call.method not in ("chat.postMessage", "chat.update"):
            continue
        blocks = call.params.get("blocks") or []
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        for block in blocks:
            for element in block.get("elements") or [] if block.get("type") == "actions" else []:
                if element.get("action_id") == operation_card.APPROVE_ACTION:
                    return str(element["value"])
    return None
