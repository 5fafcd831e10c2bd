"""The Home tab: signed `app_home_opened` events into the bot's HTTP server, views.publish on
the Slack mock, built from each org's stored check (no Exchange call on open).

Two orgs: `lab` (a real lab; approvers U0APPROVER and the user group S0OPS, channel
C0LABOPS) and `fabrikam` (never contacted: its stored status is written here). Who sees
what is decided by approver/operator lists, user groups and channel membership, the last two
asked from the Slack mock.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from bot.app import create_app
from bot.http import SlackHttpServer
from bot.render.home_view import CHECK_NOW_ACTION, OPEN_PLAN_ACTION
from config.load import load_settings
from lab.serve import LabHandle, config_toml
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEAM_ID,
    SlackMock,
    app_home_opened_body,
    signed_headers,
    signed_json_headers,
)
from workers.changes import operation
from workers.jobs.queues import READ_QUEUE, queue
from workers.jobs.worker_process import run as run_worker
from workers.status import last_check
from workers.status.collect import status as collect_status

LAB_CHANNEL = "C0LABOPS"
FAB_CHANNEL = "C0FABRIKAM"
APPROVER = "U0APPROVER"
GROUPIE = "U0GROUPIE"  # in the user group S0OPS, an approver group of lab
LAB_MEMBER = "U0LABMEMBER"  # in lab's channel only
FAB_USER = "U0FABUSER"  # in fabrikam's channel only
STRANGER = "U0STRANGER"

FABRIKAM = """
[[org]]
name = "fabrikam"
channel = "C0FABRIKAM"
approvers = ["U0FABAPPROVER"]
writer = "ex1.fabrikam.com"

[org.exchange]
url = "https://ex1.fabrikam.com/PowerShell"
username = "svc"
password_env = "EXAUTH_TEST_UNUSED_PASSWORD"
"""


class Stack:
    def __init__(self, lab: LabHandle, slack: SlackMock, conn: redis.Redis,
                 server: SlackHttpServer) -> None:
        self.lab, self.slack, self.conn, self.server = lab, slack, conn, server
        self._n = 0

    def post(self, body: str, headers: dict[str, str]) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{self.server.port}/slack/events", data=body,
                             headers=headers, timeout=10)

    def open_home(self, user: str, *, tab: str = "home") -> requests.Response:
        self._n += 1
        body = app_home_opened_body(user, tab=tab, event_id=f"Ev{self._n}")
        return self.post(body, signed_json_headers(body))

    def home_of(self, user: str, count: int = 1) -> dict[str, Any]:
        """The view last published for `user`, once `count` were published to them."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            calls = [c for c in self.slack.calls_of("views.publish")
                     if c.params.get("user_id") == user]
            if len(calls) >= count:
                call = calls[-1]
                assert call.response.get("ok"), call.response
                view = call.params["view"]
                return json.loads(view) if isinstance(view, str) else view
            time.sleep(0.02)
        raise AssertionError(f"no views.publish #{count} for {user}")

    def click(self, user: str, action: str, value: str) -> requests.Response:
        self._n += 1
        payload = {
            "type": "block_actions", "user": {"id": user}, "team": {"id": TEAM_ID},
            "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": f"trig-{self._n}",
            "container": {"type": "view", "view_id": f"VHOME{user}"},
            "view": {"id": f"VHOME{user}", "type": "home"},
            "actions": [{"type": "button", "action_id": action, "value": value,
                         "block_id": f"home:{value}", "action_ts": "1"}],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, signed_headers(body))

    def work(self) -> None:
        q = queue(READ_QUEUE, self.conn)
        deadline = time.monotonic() + 10
        while not q.count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert q.count, "a job was enqueued"
        assert run_worker(load_settings(), burst=True) == 0

    def store_statuses(self) -> dict[str, Any]:
        """lab's status read from the lab; fabrikam's a copy with a broken back end."""
        lab_status = collect_status(load_settings().org("lab")).to_json()
        last_check.record_success(self.conn, lab_status)
        fab = copy.deepcopy(lab_status)
        fab["org"] = "fabrikam"
        fab["backend"][0]["server"] = "ex1.fabrikam.com"
        fab["backend"][0]["problem"] = "no_certificate"
        last_check.record_success(self.conn, fab)
        return lab_status


@pytest.fixture()
def stack(make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    lab = make_lab("healthy")
    password_file = tmp_path / "lab.password"
    password_file.write_text(lab.password)
    text = config_toml(lab.info, str(password_file), writer=lab.writer)
    text = text.replace('channel = ""', f'channel = "{LAB_CHANNEL}"\n'
                                         f'approvers = ["{APPROVER}", "S0OPS"]')
    config = tmp_path / "exauth.toml"
    config.write_text(f'[slack]\napi_url = "{slack.api_url}"\n\n{text}\n{FABRIKAM}')
    for name, value in (("EXAUTH_CONFIG", str(config)), ("REDIS_URL", redis_url),
                        ("SLACK_BOT_TOKEN", BOT_TOKEN), ("SLACK_SIGNING_SECRET", SIGNING_SECRET)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    slack.usergroups["S0OPS"] = [GROUPIE]
    slack.channel_members[LAB_CHANNEL] = ["U0A", "U0B", LAB_MEMBER, APPROVER]
    slack.channel_members[FAB_CHANNEL] = ["U0C", FAB_USER]
    server = SlackHttpServer(create_app(load_settings()), "127.0.0.1", 0)
    server.start_background()
    conn = redis.Redis.from_url(redis_url)
    yield Stack(lab, slack, conn, server)
    server.stop()
    conn.close()


def texts(view: dict[str, Any]) -> str:
    return json.dumps(view)


def actions(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in view["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


def test_an_approver_sees_their_org_from_the_stored_status(stack: Stack) -> None:
    status = stack.store_statuses()
    step = {"title": "Stage the next certificate", "cmdlet": "Set-AuthConfig",
            "changes_state": True, "kind": "stage_next", "endpoint": "exchange"}
    op = operation.create(stack.conn, "lab", "stage_new", APPROVER, [step],
                          card={"channel": LAB_CHANNEL, "ts": "1700000000.000042"})
    calls_before = len(stack.lab.org.calls()) if hasattr(stack.lab.org, "calls") else None

    response = stack.open_home(APPROVER)
    assert response.status_code == 200 and response.text == ""  # the ack: nothing to say
    view = stack.home_of(APPROVER)
    body = texts(view)
    assert "*lab*" in body and "fabrikam" not in body
    current = status["auth"]["current"]
    assert f"{current['days_left']} day(s) left" in body or \
        f"{current['days_left'] - 1} day(s) left" in body
    assert "none staged" in body  # no next certificate in the healthy lab
    assert "*Back end:* no problem" in body
    # the open operation, linked to its card
    assert (f"https://exauth-test.slack.com/archives/{LAB_CHANNEL}/p1700000000000042"
            in body)
    assert op["id"] in body and "stage_new" in body
    assert "Last check just now" in body
    assert actions(view) == [(CHECK_NOW_ACTION, "lab"), (OPEN_PLAN_ACTION, "lab")]
    if calls_before is not None:  # opening Home read nothing from Exchange
        assert len(stack.lab.org.calls()) == calls_before


def test_a_user_of_another_org_sees_only_that_org(stack: Stack) -> None:
    stack.store_statuses()
    assert stack.open_home(FAB_USER).status_code == 200
    view = stack.home_of(FAB_USER)
    body = texts(view)
    assert "*fabrikam*" in body
    assert "lab" not in body.replace("plain_text", "")  # nothing of lab: not even its name
    assert "`ex1.fabrikam.com` binding has no certificate" in body
    assert actions(view) == [(CHECK_NOW_ACTION, "fabrikam"), (OPEN_PLAN_ACTION, "fabrikam")]


@pytest.mark.parametrize(("user", "orgs"), [(GROUPIE, ["lab"]), (LAB_MEMBER, ["lab"]),
                                            (STRANGER, [])])
def test_groups_and_channels_decide_who_sees_an_org(stack: Stack, user: str,
                                                    orgs: list[str]) -> None:
    stack.store_statuses()
    assert stack.open_home(user).status_code == 200
    view = stack.home_of(user)
    assert [v for _, v in actions(view)][::2] == orgs
    if not orgs:
        assert "No org to show" in texts(view)


def test_a_channel_slack_cannot_list_hides_its_org(stack: Stack) -> None:
    stack.store_statuses()
    for _ in ("lab", "fabrikam"):  # each org's channel lookup fails once
        stack.slack.fail_next("conversations.members", "ratelimited")
    assert stack.open_home(FAB_USER).status_code == 200
    assert actions(stack.home_of(FAB_USER)) == []  # fail closed


def test_the_messages_tab_publishes_nothing(stack: Stack) -> None:
    assert stack.open_home(APPROVER, tab="messages").status_code == 200
    assert stack.open_home(STRANGER).status_code == 200
    stack.home_of(STRANGER)  # the second event was handled: the first one would be before
    assert [c.params["user_id"] for c in stack.slack.calls_of("views.publish")] == [STRANGER]


def test_an_unsigned_event_is_refused(stack: Stack) -> None:
    body = app_home_opened_body(APPROVER)
    headers = {**signed_json_headers(body), "X-Slack-Signature": "v0=" + "0" * 64}
    assert stack.post(body, headers).status_code == 401
    bad = json.dumps({"type": "event_callback", "event": "not an object"})
    assert stack.post(bad, signed_json_headers(bad)).status_code == 400


def test_check_now_reads_the_org_and_refreshes_every_viewer(stack: Stack) -> None:
    # Before any check: the approver and the group member open Home ("never checked").
    assert stack.open_home(APPROVER).status_code == 200
    assert "Never checked here yet" in texts(stack.home_of(APPROVER))
    assert stack.open_home(GROUPIE).status_code == 200
    stack.home_of(GROUPIE)

    assert stack.click(APPROVER, CHECK_NOW_ACTION, "lab").status_code == 200
    assert "Checking now" in texts(stack.home_of(APPROVER, 2))
    job = queue(READ_QUEUE, stack.conn).get_jobs()[0]
    assert job.func_name == "workers.jobs.read_jobs.status_job"
    stack.work()

    after = texts(stack.home_of(APPROVER, 3))
    assert "Last check just now" in after and "day(s) left" in after
    # the status changed (first one stored): the other viewer's Home follows
    assert "day(s) left" in texts(stack.home_of(GROUPIE, 2))
    stored = last_check.load(stack.conn, "lab")
    assert stored.ok and stored.status is not None


def test_check_now_by_someone_who_may_not_see_the_org_enqueues_nothing(stack: Stack) -> None:
    assert stack.click(FAB_USER, CHECK_NOW_ACTION, "lab").status_code == 200
    view = stack.home_of(FAB_USER)
    assert "lab" not in texts(view).replace("plain_text", "")
    assert queue(READ_QUEUE, stack.conn).count == 0


def test_open_the_plan_fills_a_modal(stack: Stack) -> None:
    assert stack.click(APPROVER, OPEN_PLAN_ACTION, "lab").status_code == 200
    opened = stack.slack.wait_for("views.open")[0]
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "modal" and "Reading *lab*" in json.dumps(view)
    stack.work()
    update = stack.slack.wait_for("views.update")[-1]
    assert update.response.get("ok"), update.response
    assert update.params["view_id"] == opened.response["view"]["id"]
    plan_view = update.params["view"]
    plan_view = json.loads(plan_view) if isinstance(plan_view, str) else plan_view
    assert ":clipboard: lab: plan" in json.dumps(plan_view)


def test_an_operation_that_moves_refreshes_the_home_tab(stack: Stack) -> None:
    from bot.callbacks import operation_progress

    stack.store_statuses()
    assert stack.open_home(APPROVER).status_code == 200
    assert "Open operations" not in texts(stack.home_of(APPROVER))
    step = {"title": "Stage the next certificate", "cmdlet": "Set-AuthConfig",
            "changes_state": True, "kind": "stage_next", "endpoint": "exchange"}
    op = operation.create(stack.conn, "lab", "stage_new", APPROVER, [step],
                          card={"channel": LAB_CHANNEL, "ts": "1700000000.000042"})

    class FinishedJob:  # what RQ hands the callback: meta and the result
        meta = {"reply": {"channel": LAB_CHANNEL}}

    operation_progress.operation_updated(FinishedJob(), stack.conn,  # type: ignore[arg-type]
                                         {"op_id": op["id"]})
    view = texts(stack.home_of(APPROVER, 2))
    assert "Open operations" in view and op["id"] in view
