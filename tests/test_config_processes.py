"""`--config` is the config of the whole process: its jobs and callbacks use it too.

Every process here is a real `exauth` started from a working directory with no
exauth.toml in it and no $EXAUTH_CONFIG in its environment, the config given only by
`--config` (relative to that directory, or absolute). The jobs run in a real
`exauth worker --burst` against a lab over WS-Man/PSRP, and what they and their RQ
callbacks say lands in the Slack Web API mock over HTTP.
"""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests
from rq.job import Job
from rq.registry import FailedJobRegistry
from slack_sdk import WebClient

from bot.callbacks import job_results
from bot.listeners.slash_command import READ_JOBS
from bot.render import messages
from lab.serve import LabHandle
from tests.conftest import _free_port
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackMock,
    signed_headers,
    slash_command_body,
)
from tests.test_bot_socket_mode import Bot
from tests.test_cli import EXAUTH, exauth, exauth_env, lab_config_with_redis, start_exauth
from tests.test_cron import run_ids, wait_until
from workers.jobs.queues import CHANGE_QUEUE, READ_QUEUE, SERIALIZER, enqueue_read, queue

CHANNEL = "C0CONFIG"
# Secrets only; empty values are ignored, so the file's [redis] and [slack] api_url apply
# whatever the environment running the tests has set.
ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
       "REDIS_URL": "", "SLACK_API_URL": "", "SLACK_APP_TOKEN": ""}


class Place:
    """A config in `<tmp>/etc/exauth.toml` and an empty working directory beside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.etc = tmp_path / "etc"
        self.cwd = tmp_path / "elsewhere"
        self.etc.mkdir()
        self.cwd.mkdir()
        self.config = self.etc / "exauth.toml"
        self.relative = os.path.join("..", "etc", "exauth.toml")  # as typed in self.cwd

    def write(self, handle: LabHandle, redis_url: str, slack: SlackMock,
              extra: str = "") -> None:
        config = lab_config_with_redis(handle, self.etc, redis_url)
        assert config == self.config
        text = config.read_text().replace('channel = ""', f'channel = "{CHANNEL}"')
        config.write_text(f'{text}\n[slack]\napi_url = "{slack.api_url}"\n{extra}')
        assert not (self.cwd / "exauth.toml").exists()


def failed_jobs(redis_url: str) -> list[str]:
    """Each failed job's function and the last line of its error."""
    conn = redis.Redis.from_url(redis_url)
    failed = []
    for name in (READ_QUEUE, CHANGE_QUEUE):
        for job_id in FailedJobRegistry(queue=queue(name, conn)).get_job_ids():
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            result = job.latest_result()
            error = (result.exc_string or "").strip() if result else ""
            failed.append(f"{job.func_name}: {error.splitlines()[-1] if error else '?'}")
    return failed


def worker_burst(place: Place, config: str) -> str:
    """`exauth worker --burst` from the other directory; what it logged."""
    result = exauth("--config", config, "worker", "--burst", cwd=place.cwd, env=ENV)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_worker_runs_a_status_job_and_its_callback_with_the_config_it_was_given(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    place.write(make_lab("healthy"), redis_url, slack)
    # What the bot does for `/exauth status lab`: a placeholder, then the job that replaces it.
    placeholder = messages.placeholder_message("lab", "status")
    posted = WebClient(token=BOT_TOKEN, base_url=slack.api_url).chat_postMessage(
        channel=CHANNEL, text=placeholder["text"], blocks=placeholder["blocks"])
    enqueue_read(redis.Redis.from_url(redis_url), READ_JOBS["status"], "lab",
                 meta={"org": "lab", "kind": "status", "requested_by": "U0ALICE",
                       "reply": {"channel": CHANNEL, "ts": posted["ts"]}},
                 on_success=job_results.ON_SUCCESS["status"], on_failure=job_results.ON_FAILURE)

    logged = worker_burst(place, place.relative)

    assert failed_jobs(redis_url) == []
    [update] = slack.calls_of("chat.update")
    assert update.params["ts"] == posted["ts"]
    assert "lab" in update.params["text"] and "OK" in update.params["text"], update.params
    assert "Traceback" not in logged


def wait_listening(bot: Bot, port: int, timeout: float = 30) -> None:
    """Until the bot accepts connections (it checks its token with Slack first)."""
    deadline = time.monotonic() + timeout
    while True:
        if bot.proc.poll() is not None:
            bot.stop()
            raise AssertionError(f"the bot exited: {bot.stderr}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the bot never listened"
            time.sleep(0.1)


def test_bot_over_http_and_its_worker_answer_a_signed_status_command(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    handle = make_lab("healthy")
    place.write(handle, redis_url, slack)
    port = _free_port()
    bot = Bot(start_exauth("--config", str(place.config), "bot", "--http", "--port",
                           str(port), cwd=place.cwd, env=ENV), handle)
    try:
        wait_listening(bot, port)
        body = slash_command_body("status", channel_id=CHANNEL, trigger_id="trig-1",
                                  response_url=slack.response_url())
        response = requests.post(f"http://127.0.0.1:{port}/slack/events", data=body,
                                 headers=signed_headers(body), timeout=10)
        assert response.status_code == 200
        [placeholder] = slack.wait_for("chat.postMessage")
        assert placeholder.params["text"] == "Checking lab..."
        wait_until(lambda: queue(READ_QUEUE, redis.Redis.from_url(redis_url)).count == 1)
    finally:
        code = bot.stop()
    assert code == 0, bot.stderr
    assert "Traceback" not in bot.stderr

    logged = worker_burst(place, str(place.config))

    assert failed_jobs(redis_url) == []
    [update] = slack.calls_of("chat.update")
    assert update.params["ts"] == placeholder.response["ts"]
    assert "OK" in update.params["text"], update.params["text"]
    assert "Traceback" not in logged


def test_cron_enqueues_and_the_worker_sweeps_with_the_config_they_were_given(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    place.write(make_lab("expiring-sha1"), redis_url, slack,
                extra='\n[org.warnings]\ncron = "* * * * *"\n')
    conn = redis.Redis.from_url(redis_url)
    cron = start_exauth("--config", place.relative, "cron", cwd=place.cwd, env=ENV)
    try:
        # The leader catches up the slot of the last minute: a sweep of "lab", and the
        # operations' resume sweep on the change queue (one more of each if a minute or a
        # quarter turns meanwhile).
        wait_until(lambda: run_ids(conn) != [] and queue(CHANGE_QUEUE, conn).count > 0,
                   timeout=30)
    finally:
        cron.terminate()
        _, said = cron.communicate(timeout=20)
    assert cron.returncode == 0, said
    assert "active as" in said and "Traceback" not in said
    assert all(run_id.startswith("lab@") for run_id in run_ids(conn))

    logged = worker_burst(place, place.relative)

    assert failed_jobs(redis_url) == []  # the sweeps and the operations' resume sweeps
    warnings = slack.calls_of("chat.postMessage")
    assert warnings, "the sweep posted no warning"
    assert {w.params["channel"] for w in warnings} == {CHANNEL}
    assert "lab" in warnings[0].params["text"], warnings[0].params["text"]
    assert "Traceback" not in logged


def run_in_terminal(*args: str, cwd: Path, answers: str,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`exauth` with a terminal on stdin, where break-glass asks; `answers` typed ahead."""
    parent, child = pty.openpty()
    try:
        os.write(parent, answers.encode())
        return subprocess.run([*EXAUTH, *args], cwd=cwd, env=exauth_env(ENV), stdin=child,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        os.close(child)
        os.close(parent)


def test_fix_and_audit_use_the_config_they_were_given(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    handle = make_lab("missing-on-server")
    place.write(handle, redis_url, slack)
    fixed = run_in_terminal("--config", place.relative, "fix", "--org", "lab",
                            cwd=place.cwd, answers="yes\n" * 10)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Traceback" not in fixed.stdout + fixed.stderr
    [done] = [line for line in fixed.stdout.splitlines() if line.startswith("Operation ")
              and line.endswith(" done.")]
    op_id = done.split()[1]
    assert [c for c in handle.org.calls()
            if c["command"].startswith("Import-ExchangeCertificate")]

    shown = exauth("--config", place.relative, "audit", "--org", "lab", "--json",
                   cwd=place.cwd, env=ENV)
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)
    assert ("operation.close", f"{op_id}", "done") in {
        (e["action"], e["target"], e["outcome"]) for e in entries}
    assert any(e["actor"].startswith("local:") for e in entries)

