"""Prometheus metrics scraped from a running bot (HTTP mode) and from `exauth metrics`, after a
real worker checked the lab: the figures are those of `exauth status --json` for the org.

Real parts: the lab over WS-Man/PSRP, Redis and RQ, the bot's waitress server, the
`exauth` console script in a subprocess; Slack is the local mock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.app import create_app
from bot.http import SlackHttpServer
from bot.slack import CountingWebClient, tally_errors_to
from config.load import load_settings
from lab.serve import LabHandle, config_toml
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackMock,
    signed_headers,
    slash_command_body,
)
from workers.changes import approval, operation
from workers.jobs.worker_process import run as run_worker
from workers.status import last_check

CHANNEL = "C0LABOPS"
ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not scraped; have {sorted(n for n, _ in samples)}"
    return samples[key]


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Stack:
    def __init__(self, lab: LabHandle, slack: SlackMock, redis_url: str, config: Path,
                 server: SlackHttpServer) -> None:
        self.lab, self.slack, self.redis_url, self.config, self.server = (
            lab, slack, redis_url, config, server)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"

    def status_command(self, trigger: str = "t1") -> None:
        body = slash_command_body("status", channel_id=CHANNEL, trigger_id=trigger,
                                  response_url=self.slack.response_url())
        response = requests.post(f"http://127.0.0.1:{self.server.port}/slack/events",
                                 data=body, headers=signed_headers(body), timeout=10)
        assert response.status_code == 200
        self.slack.wait_for("chat.postMessage")
        conn = redis.Redis.from_url(self.redis_url)
        for _ in range(200):
            if conn.llen("rq:queue:exauth-read"):
                break
            __import__("time").sleep(0.02)
        assert run_worker(load_settings(), burst=True) == 0

    def cli_status_json(self) -> dict[str, Any]:
        """`exauth status --json` for the same org, as a user runs it."""
        done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(self.config),
                               "status", "--org", "lab", "--json"], capture_output=True,
                              text=True, cwd=ROOT, timeout=120, env=os.environ.copy())
        assert done.returncode in (0, 1, 2), done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document


@pytest.fixture()
def stack_for(make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Stack]]:
    servers: list[SlackHttpServer] = []

    def _make(scenario: str = "healthy", *, password: str | None = None) -> Stack:
        lab = make_lab(scenario)
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
        settings = load_settings()
        server = SlackHttpServer(create_app(settings), "127.0.0.1", 0,
                                 metrics=metrics.registry(settings,
                                                          redis.Redis.from_url(redis_url)))
        server.start_background()
        servers.append(server)
        return Stack(lab, slack, redis_url, config, server)

    yield _make
    for server in servers:
        server.stop()


def assert_figures_match(samples: Samples, status: dict[str, Any]) -> None:
    """Every certificate date and day count of the status JSON is what the gauges say."""
    for slot in ("current", "next", "previous"):
        cert = status["auth"][slot]
        key = ("exauth_auth_certificate_not_after_seconds",
               (("org", "lab"), ("slot", slot)))
        if cert is None:
            assert key not in samples
            continue
        assert samples[key] == stamp(cert["not_after"])
        assert value(samples, "exauth_auth_certificate_days_left", org="lab",
                     slot=slot) == cert["days_left"]
    assert status["backend"], "the lab has back end certificates"
    for entry in status["backend"]:
        server = entry["server"]
        assert value(samples, "exauth_backend_ok", org="lab",
                     server=server) == (0 if entry["problem"] else 1)
        if entry["not_after"]:
            assert value(samples, "exauth_backend_certificate_not_after_seconds", org="lab",
                         server=server) == stamp(entry["not_after"])
            assert value(samples, "exauth_backend_certificate_days_left", org="lab",
                         server=server) == entry["days_left"]
    for server in status["servers"]:
        assert value(samples, "exauth_server_reachable", org="lab",
                     server=server["fqdn"]) == (1 if server["reachable"] else 0)


@pytest.mark.parametrize("scenario", ["healthy", "staged"])
def test_bot_metrics_show_the_figures_of_exauth_status_json(
        scenario: str, stack_for: Callable[..., Stack]) -> None:
    stack = stack_for(scenario)
    before = scrape(stack.metrics_url)
    assert value(before, "exauth_metrics_redis_up") == 1
    assert ("exauth_last_check_success", (("org", "lab"),)) not in before  # never checked

    stack.status_command()
    samples = scrape(stack.metrics_url)
    cli = stack.cli_status_json()
    assert_figures_match(samples, cli)
    if scenario == "staged":
        assert cli["auth"]["next"] is not None
        assert value(samples, "exauth_auth_next_effective_seconds",
                     org="lab") == stamp(cli["auth"]["next"]["effective"])
    stored = last_check.load(redis.Redis.from_url(stack.redis_url), "lab")
    assert stored.status is not None and stored.ok
    assert value(samples, "exauth_last_check_success", org="lab") == 1
    assert value(samples, "exauth_last_successful_check_timestamp_seconds",
                 org="lab") == stored.succeeded_at.timestamp()  # type: ignore[union-attr]
    from workers.status.report import exit_code
    from workers.status.report_model import parse_status
    assert value(samples, "exauth_org_state", org="lab") == exit_code(parse_status(cli))
    # the status job's run time, tallied by the worker
    assert value(samples, "exauth_job_duration_seconds_count", kind="status",
                 outcome="ok") == 1
    assert value(samples, "exauth_job_duration_seconds_bucket", kind="status", outcome="ok",
                 le="+Inf") == 1
    assert value(samples, "exauth_job_duration_seconds_sum", kind="status", outcome="ok") > 0


def test_the_example_alert_rules_name_metrics_the_exporter_serves(
        stack_for: Callable[..., Stack], conn: redis.Redis) -> None:
    stack = stack_for("healthy")
    stack.status_command()
    step = {"title": "Stage the next certificate", "cmdlet": "Set-AuthConfig",
            "changes_state": True, "kind": "stage_next", "endpoint": "exchange"}
    operation.create(conn, "lab", "stage_new", "UREQ", [step])
    names = {name for name, _ in scrape(stack.metrics_url)}
    rules = (ROOT / "config" / "prometheus-alerts.example.yml").read_text()
    exprs = re.findall(r"^\s*expr: (.+)$", rules, re.M)
    assert len(exprs) >= 6
    used = {name for expr in exprs for name in re.findall(r"exauth_[a-z_]+", expr)}
    assert used and used <= names, used - names
    for needed in ("30 * 86400", "7 * 86400", "exauth_last_check_success",
                   "exauth_oldest_pending_approval_age_seconds > 86400"):
        assert needed in rules


def test_exauth_metrics_serves_the_same_figures_for_socket_mode(
        stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    stack.status_command()
    from_bot = scrape(stack.metrics_url)
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(stack.config),
                                "metrics", "--host", "127.0.0.1", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env=os.environ.copy())
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("exauth metrics: serving /metrics on port "), line
        port = int(line.rsplit(" ", 1)[1])
        from_process = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        process.terminate()
        process.wait(timeout=10)
    shared = {k: v for k, v in from_bot.items() if k[0].startswith(
        ("exauth_auth", "exauth_backend", "exauth_last", "exauth_org", "exauth_job"))}
    assert shared and all(from_process.get(k) == v for k, v in shared.items())
    assert_figures_match(from_process, stack.cli_status_json())


def test_a_failed_check_shows_as_failing_and_keeps_the_last_good_figures(
        stack_for: Callable[..., Stack], tmp_path: Path) -> None:
    stack = stack_for("healthy")
    stack.status_command("t1")
    good = scrape(stack.metrics_url)
    (tmp_path / "lab.password").write_text("not-the-lab-password")
    stack.slack.calls.clear()
    stack.status_command("t2")
    samples = scrape(stack.metrics_url)
    assert value(samples, "exauth_last_check_success", org="lab") == 0
    assert value(samples, "exauth_last_check_timestamp_seconds", org="lab") > value(
        good, "exauth_last_check_timestamp_seconds", org="lab")
    assert value(samples, "exauth_last_successful_check_timestamp_seconds", org="lab") == \
        value(good, "exauth_last_successful_check_timestamp_seconds", org="lab")
    key = ("exauth_auth_certificate_not_after_seconds", (("org", "lab"), ("slot", "current")))
    assert samples[key] == good[key]
    assert value(samples, "exauth_job_duration_seconds_count", kind="status",
                 outcome="failed") == 1
    stored = last_check.load(redis.Redis.from_url(stack.redis_url), "lab")
    assert stored.outcome == "failed" and stored.error


def test_open_operations_and_the_oldest_pending_approval(stack_for: Callable[..., Stack],
                                                          conn: redis.Redis) -> None:
    stack = stack_for("healthy")
    step = {"title": "Stage the next certificate", "cmdlet": "Set-AuthConfig",
            "changes_state": True, "kind": "stage_next", "endpoint": "exchange"}
    op = operation.create(conn, "lab", "stage_new", "UREQ", [step, step])
    operation.set_step(conn, op["id"], 0, "awaiting_approval")
    asked = datetime.now(UTC) - timedelta(hours=26)
    approval.request(conn, op["id"], 0, requester="UREQ", ttl_minutes=60, now=asked)
    samples = scrape(stack.metrics_url)
    assert value(samples, "exauth_open_operations", org="lab", kind="stage_new",
                 state="open") == 1
    age = value(samples, "exauth_oldest_pending_approval_age_seconds", org="lab")
    assert 26 * 3600 <= age < 27 * 3600


def test_refused_requests_and_slack_errors_are_counted(stack_for: Callable[..., Stack],
                                                       slack: SlackMock,
                                                       conn: redis.Redis) -> None:
    stack = stack_for("healthy")
    before = scrape(stack.metrics_url)
    refused = before.get(("exauth_refused_requests_total", (("status", "401"),)), 0.0)
    body = slash_command_body("status", channel_id=CHANNEL, trigger_id="x")
    answer = requests.post(f"http://127.0.0.1:{stack.server.port}/slack/events", data=body,
                           headers={**signed_headers(body), "X-Slack-Signature": "v0=bad"},
                           timeout=10)
    assert answer.status_code == 401

    tally_errors_to(conn)
    client = CountingWebClient(token=BOT_TOKEN, base_url=slack.api_url)
    slack.fail_next("chat.update", "message_not_found")
    with pytest.raises(Exception, match="message_not_found"):
        client.chat_update(channel=CHANNEL, ts="1.2", text="x")
    samples = scrape(stack.metrics_url)
    assert value(samples, "exauth_refused_requests_total", status="401") == refused + 1
    assert value(samples, "exauth_slack_api_errors_total", method="chat.update",
                 error="message_not_found") == 1


def test_a_scrape_says_when_redis_is_not_readable(slack: SlackMock, redis_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from config.load import settings_from_dict
    from tests.test_bot_http import org_table

    settings = settings_from_dict({"org": [org_table("lab", CHANNEL)]}, source="test.toml")
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    app = metrics.metrics_wsgi(metrics.registry(settings, dead))
    seen: list[str] = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"},
                        lambda status, headers: seen.append(status)))
    assert seen == ["200 OK"]
    assert b"exauth_metrics_redis_up 0.0" in body


def test_a_listeners_slack_error_is_counted(stack_for: Callable[..., Stack],
                                            slack: SlackMock) -> None:
    """The client bolt hands a listener counts too (bot.app._App)."""
    stack = stack_for("healthy")
    slack.fail_next("chat.postMessage", "not_in_channel")
    body = slash_command_body("status", channel_id=CHANNEL, trigger_id="t-err",
                              response_url=slack.response_url())
    answer = requests.post(f"http://127.0.0.1:{stack.server.port}/slack/events", data=body,
                           headers=signed_headers(body), timeout=10)
    assert answer.status_code == 200
    slack.wait_for("response")  # the asker heard why
    samples = scrape(stack.metrics_url)
    assert value(samples, "exauth_slack_api_errors_total", method="chat.postMessage",
                 error="not_in_channel") == 1
