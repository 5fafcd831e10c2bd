"""`/exauth status` end to end: signed request -> bot -> Redis/RQ -> real worker -> lab -> Slack.

Everything is real except Slack (tests/slack_mock.py over HTTP): the bot's HTTP server
verifies real signatures, jobs go through Redis with RQ's JSON serializer, a real RQ
SimpleWorker runs them in burst mode in this process, the worker reads the lab over
WS-Man/PSRP with pypsrp, and RQ's callbacks (bot.callbacks.job_results) edit the placeholder in
place.
The worker finds the lab through a config file in $EXAUTH_CONFIG, as in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from bot.app import create_app
from bot.http import SlackHttpServer
from config.load import load_settings
from lab.serve import LabHandle, config_toml
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    Call,
    SlackMock,
    block_problem,
    signed_headers,
    slash_command_body,
)
from workers.jobs.queues import READ_QUEUE, SERIALIZER, queue
from workers.jobs.worker_process import run as run_worker

CHANNEL = "C0LABOPS"


class Stack:
    """The bot in HTTP mode wired to a lab through a config file."""

    def __init__(self, lab: LabHandle, slack: SlackMock, redis_url: str, config: Path,
                 server: SlackHttpServer) -> None:
        self.lab, self.slack, self.redis_url, self.config, self.server = (
            lab, slack, redis_url, config, server)
        self._triggers = 0

    def command(self, text: str) -> requests.Response:
        self._triggers += 1
        body = slash_command_body(text, channel_id=CHANNEL, trigger_id=f"t{self._triggers}",
                                  response_url=self.slack.response_url())
        return requests.post(f"http://127.0.0.1:{self.server.port}/slack/events", data=body,
                             headers=signed_headers(body), timeout=10)

    def enqueued(self, count: int = 1, timeout: float = 10) -> list[Any]:
        q = queue(READ_QUEUE, redis.Redis.from_url(self.redis_url))
        deadline = time.monotonic() + timeout
        while len(q.get_jobs()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        jobs = q.get_jobs()
        assert len(jobs) == count, f"expected {count} queued job(s), found {len(jobs)}"
        return jobs

    def work(self) -> None:
        """A real RQ worker, burst mode, in this process (as `exauth worker --burst`)."""
        assert run_worker(load_settings(), burst=True) == 0

    def updates(self) -> list[Call]:
        return self.slack.calls_of("chat.update")

    def report(self) -> tuple[Call, str]:
        """`/exauth status` through a worker: the last update Slack took, and its texts."""
        assert self.command("status").status_code == 200
        self.enqueued()
        self.work()
        update = self.updates()[-1]
        assert_slack_accepts(update)
        return update, "\n".join(texts(update))


@pytest.fixture()
def stack_for(make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Stack]]:
    servers: list[SlackHttpServer] = []

    def _make(scenario: str | Path = "healthy", *, password: str | None = None,
              **lab_kwargs: Any) -> Stack:
        lab = make_lab(str(scenario), **lab_kwargs)
        password_file = tmp_path / "lab.password"
        password_file.write_text(password if password is not None else lab.password)
        text = config_toml(lab.info, str(password_file), writer=lab.writer)
        text = text.replace('channel = ""', f'channel = "{CHANNEL}"')
        config = tmp_path / "exauth.toml"
        config.write_text(f'[slack]\napi_url = "{slack.api_url}"\n\n{text}')
        monkeypatch.setenv("EXAUTH_CONFIG", str(config))
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        monkeypatch.delenv("SLACK_API_URL", raising=False)
        server = SlackHttpServer(create_app(load_settings()), "127.0.0.1", 0)
        server.start_background()
        servers.append(server)
        return Stack(lab, slack, redis_url, config, server)

    yield _make
    for server in servers:
        server.stop()


def texts(call: Call) -> list[str]:
    blocks = call.params["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    found = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [e["text"] for e in block.get("elements") or []]
    return found


def assert_slack_accepts(call: Call) -> None:
    """Slack would take this message: ok answer, <= 50 blocks, texts within limits."""
    assert call.response.get("ok"), call.response
    blocks = call.params["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert len(blocks) <= 50
    assert block_problem({"blocks": blocks}) is None
    assert call.params["text"]


def lab_current_thumbprint(lab: LabHandle) -> str:
    state = lab.org.state()
    current = state["auth_config"]["current"]
    assert current, "the lab scenario has a current auth certificate"
    return str(current).upper()


def test_status_updates_the_placeholder_with_the_full_report(stack_for: Callable[..., Stack]
                                                             ) -> None:
    stack = stack_for("healthy")
    assert stack.command("status").status_code == 200
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    job = stack.enqueued()[0]
    stack.work()

    updates = stack.updates()
    assert len(updates) == 1
    update = updates[0]
    assert update.params["channel"] == CHANNEL
    assert update.params["ts"] == placeholder.response["ts"]  # the same message, edited
    assert_slack_accepts(update)
    body = "\n".join(texts(update))
    assert texts(update)[0] == ":white_check_mark: lab: OK"
    assert f"*Current:* `{lab_current_thumbprint(stack.lab)}`" in body
    for server in stack.lab.info["servers"]:
        assert f"`{server['name']}`" in body
    assert "Checked at " in body
    # the job's result is the status JSON, stored with the JSON serializer
    job.refresh()
    result = job.return_value()
    assert result["org"] == "lab" and len(result["servers"]) == len(stack.lab.info["servers"])


def test_plan_updates_the_placeholder_with_steps(stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    assert stack.command("plan").status_code == 200
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    assert placeholder.params["text"] == "Planning for lab..."
    stack.enqueued()
    stack.work()
    update = stack.updates()[0]
    assert update.params["ts"] == placeholder.response["ts"]
    assert_slack_accepts(update)
    assert texts(update)[0] == ":clipboard: lab: plan"
    assert update.params["text"].startswith("exauth plan lab: ")


def test_wrong_password_ends_in_one_readable_line_without_retries(
        stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy", password="not-the-lab-password")
    assert stack.command("status").status_code == 200
    job = stack.enqueued()[0]
    stack.work()

    update = stack.updates()[-1]
    assert_slack_accepts(update)
    text = update.params["text"]
    assert text.startswith("Could not check lab: ")
    assert "\n" not in text and "Traceback" not in json.dumps(update.params)
    assert "password" in text.lower() or "401" in text or "auth" in text.lower()
    # a bad password is not retried (account lockout): failed at once, nothing scheduled
    connection = redis.Redis.from_url(stack.redis_url)
    assert job.id in FailedJobRegistry(READ_QUEUE, connection=connection,
                                       serializer=SERIALIZER).get_job_ids()
    assert ScheduledJobRegistry(READ_QUEUE, connection=connection,
                                serializer=SERIALIZER).get_job_ids() == []
    assert len(stack.updates()) == 1


def test_unreachable_org_says_retrying_then_retry_delivers_the_report(
        stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    for server in stack.lab.info["servers"]:
        stack.lab.org.add_fault({"server": server["name"], "endpoint": "any",
                                 "kind": "unreachable"})
    assert stack.command("status").status_code == 200
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    job = stack.enqueued()[0]
    stack.work()

    first = stack.updates()[-1]
    assert first.params["ts"] == placeholder.response["ts"]
    assert_slack_accepts(first)
    assert first.params["text"].startswith("Checking lab... attempt 1 failed (")
    assert first.params["text"].endswith("retrying in 5 s.")
    connection = redis.Redis.from_url(stack.redis_url)
    scheduled = ScheduledJobRegistry(READ_QUEUE, connection=connection, serializer=SERIALIZER)
    assert scheduled.get_job_ids() == [job.id]

    # The servers come back; make the retry due now instead of waiting 5 s.
    stack.lab.org.clear_faults()
    job.refresh()
    scheduled.schedule(job, datetime.now(UTC))
    stack.work()
    final = stack.updates()[-1]
    assert final.params["ts"] == placeholder.response["ts"]
    assert_slack_accepts(final)
    assert texts(final)[0] == ":white_check_mark: lab: OK"


def test_rate_limited_update_is_retried_as_slack_asks(stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    stack.slack.rate_limit_next("chat.update", retry_after=0)
    assert stack.command("status").status_code == 200
    stack.enqueued()
    stack.work()
    updates = stack.updates()
    assert [u.status for u in updates] == [429, 200]
    assert texts(updates[1])[0] == ":white_check_mark: lab: OK"


def test_sixty_server_org_end_to_end(stack_for: Callable[..., Stack], tmp_path: Path) -> None:
    scenario = tmp_path / "scaled60.toml"
    scenario.write_text(scaled_scenario_toml(60, broken_backend=("ex7", "ex42")))
    stack = stack_for(scenario)
    _update, body = stack.report()
    assert "`ex7`" in body and "`ex42`" in body  # problems are named
    assert "58 more servers fine" in body  # the rest summarised
    assert "60 servers" in body


def scaled_scenario_toml(servers: int, *, broken_backend: tuple[str, ...] = ()) -> str:
    """A big healthy org (two sites) in the scenario TOML of DESIGN.md; `broken_backend`
    servers have a back end binding without a certificate."""
    names = [f"ex{i}" for i in range(1, servers + 1)]
    lines = ["# scaled org for the Slack limits test", "[lab]", "hybrid = false", ""]
    for i, name in enumerate(names):
        lines += ["[[server]]", f'name = "{name}"', f'fqdn = "{name}.contoso.lab"',
                  f'site = "Site-{"AB"[i % 2]}"', 'version = "Version 15.2 (Build 1544.4)"',
                  'roles = ["Mailbox"]', f"writer = {'true' if i == 0 else 'false'}", ""]
    lines += ["[[certificate]]", 'id = "auth"',
              'subject = "CN=Microsoft Exchange Server Auth Certificate"',
              'friendly_name = "Microsoft Exchange Server Auth Certificate"', "days_left = 1100",
              'services = ["SMTP"]', f"installed_on = {json.dumps(names)}", ""]
    for name in names:
        lines += ["[[certificate]]", f'id = "backend-{name}"', f'subject = "CN={name}"',
                  'friendly_name = "Microsoft Exchange"',
                  f'sans = ["{name}", "{name}.contoso.lab"]', "days_left = 1500",
                  'services = ["IIS"]', f'installed_on = ["{name}"]', ""]
    lines += ["[auth_config]", 'current = "auth"', ""]
    for name in names:
        cert = "" if name in broken_backend else f"backend-{name}"
        lines += ["[[backend]]", f'server = "{name}"', f'certificate = "{cert}"', ""]
    return "\n".join(lines)


def test_deleted_placeholder_gets_a_new_message(stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    stack.slack.fail_next("chat.update", "message_not_found")
    assert stack.command("status").status_code == 200
    stack.enqueued()
    stack.work()
    posts = stack.slack.calls_of("chat.postMessage")
    assert posts[0].params["text"] == "Checking lab..."
    assert len(posts) == 2
    assert_slack_accepts(posts[1])
    assert texts(posts[1])[0] == ":white_check_mark: lab: OK"


def test_unreachable_writer_is_reported_readably(stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    writer = next(s["name"] for s in stack.lab.info["servers"] if s["fqdn"] == stack.lab.writer)
    stack.lab.org.add_fault({"server": writer, "endpoint": "any", "kind": "unreachable"})
    update, body = stack.report()
    assert texts(update)[0] == ":red_circle: lab: CRITICAL"
    assert "*1 unreachable*" in body
    line = next(t for t in body.splitlines() if t.startswith(f":x: `{writer}` unreachable: "))
    assert "Traceback" not in body and len(line) < 400
    assert f"*blocked* on `{writer}`" in body
