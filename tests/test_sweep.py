"""The warnings sweep end to end: the lab over real PSRP, real Redis, the Slack mock.

Time is the lab's virtual clock (`handle.org.advance`), passed to the sweep as `now`, so a
month of daily sweeps runs in seconds. Posting goes through bot/warnings_notify.deliver
(what the RQ callback calls); one test runs the whole path through RQ and a real worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from slack_sdk import WebClient

from bot.callbacks.warning_posts import deliver
from bot.listeners.warning_buttons import handle_snooze
from bot.render.warning_notice import SNOOZE_ACTION
from config.load import load_settings
from config.schema import OrgSettings, Settings
from lab.serve import LabHandle, config_toml
from tests.slack_mock import BOT_TOKEN, Call, SlackMock
from workers import audit
from workers.changes.approval import GroupCache
from workers.clock import FixedClock
from workers.jobs.queues import CHANGE_QUEUE, READ_QUEUE, SERIALIZER, queue
from workers.jobs.worker_process import run as run_worker
from workers.warnings import warning_state
from workers.warnings.sweep import enqueue_sweep, sweep

CHANNEL = "C0WARN"
APPROVER = "U0APPROVER"
HEALTHY = Path(__file__).resolve().parent.parent / "lab" / "built_in_scenarios" / "healthy.toml"


class Org:
    """A lab whose current auth certificate has `auth_days` left, and the settings for it."""

    def __init__(self, handle: LabHandle, settings: Settings, config: Path) -> None:
        self.handle, self.settings, self.config = handle, settings, config

    @property
    def org(self) -> OrgSettings:
        return self.settings.org("lab")

    def now(self) -> datetime:
        return self.handle.org.now().astimezone(UTC)

    def advance(self, **kw: float) -> datetime:
        self.handle.org.advance(timedelta(**kw))
        return self.now()


@pytest.fixture()
def lab_org(make_lab: Callable[..., LabHandle], tmp_path: Path) -> Callable[..., Org]:
    def _make(auth_days: int) -> Org:
        scenario = HEALTHY.read_text().replace("days_left = 1100", f"days_left = {auth_days}")
        path = tmp_path / f"auth{auth_days}.toml"
        path.write_text(scenario)
        handle = make_lab(str(path))
        password = tmp_path / "lab.password"
        password.write_text(handle.password)
        text = config_toml(handle.info, str(password), writer=handle.writer)
        text = text.replace('channel = ""', f'channel = "{CHANNEL}"\napprovers = ["{APPROVER}"]')
        config = tmp_path / "exauth.toml"
        config.write_text(text)
        return Org(handle, load_settings(config), config)

    return _make


def client_for(slack: SlackMock) -> WebClient:
    return WebClient(token=BOT_TOKEN, base_url=slack.api_url)


def run_sweep(org: Org, conn: redis.Redis, slack: SlackMock, now: datetime,
              run_id: str) -> dict[str, Any]:
    result = sweep(org.org, conn, now=now, run_id=run_id)
    deliver(client_for(slack), conn, result)
    return result


def posts(slack: SlackMock, *, threaded: bool | None = None) -> list[Call]:
    calls = slack.calls_of("chat.postMessage")
    if threaded is None:
        return calls
    return [c for c in calls if bool(c.params.get("thread_ts")) == threaded]


def test_61_59_29_days_posts_exactly_two_warnings_and_no_duplicates(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    org = lab_org(62)
    first = org.advance(hours=12)  # 61.5 days left -> 61: outside every band
    assert run_sweep(org, conn, slack, first, "d0")["notices"] == []
    day2 = org.advance(days=2)  # 59
    run_sweep(org, conn, slack, day2, "d2")
    run_sweep(org, conn, slack, org.advance(hours=3), "d2b")  # same day again: nothing
    run_sweep(org, conn, slack, org.advance(days=1), "d3")  # 58: same band, nothing
    day32 = org.advance(days=29, hours=-3)  # 29
    run_sweep(org, conn, slack, day32, "d32")
    run_sweep(org, conn, slack, day32, "d32")  # the same sweep again (RQ retry)

    top = posts(slack, threaded=False)
    assert len(top) == 2 and posts(slack, threaded=True) == []
    assert "expires in 59 days" in top[0].params["text"]
    assert "expires in 29 days" in top[1].params["text"]
    blocks = json.loads(top[0].params["blocks"]) if isinstance(top[0].params["blocks"], str) \
        else top[0].params["blocks"]
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["exauth_warning_fix", SNOOZE_ACTION]
    current = str(org.handle.org.state()["auth_config"]["current"]).upper()
    assert json.loads(buttons[1]["value"]) == {"org": "lab", "key": f"auth:current:{current}"}
    state = warning_state.get(conn, "lab", f"auth:current:{current}")
    assert state is not None and state.band == 30 and state.ts == top[1].response["ts"]


def test_unreachable_warns_on_the_second_failed_sweep_and_resolves(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    org = lab_org(1100)
    org.handle.org.add_fault({"server": "ex3", "endpoint": "any", "kind": "unreachable"})
    first = run_sweep(org, conn, slack, org.advance(hours=1), "r1")
    assert first["notices"] == [] and posts(slack) == []  # a reboot pages nobody
    run_sweep(org, conn, slack, org.advance(days=1), "r2")
    warned = posts(slack)
    assert len(warned) == 1 and "ex3" in warned[0].params["text"]
    run_sweep(org, conn, slack, org.advance(hours=2), "r3")  # same day: no duplicate
    assert len(posts(slack)) == 1
    org.handle.org.clear_faults()
    run_sweep(org, conn, slack, org.advance(hours=2), "r4")
    updates = slack.calls_of("chat.update")
    assert updates and updates[-1].params["ts"] == warned[0].response["ts"]
    closed = updates[-1].params["text"]
    assert "Resolved" in closed and "answers again" in closed
    assert warning_state.snapshot(conn, "lab") == {}


def test_one_failed_sweep_between_good_ones_never_warns(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    org = lab_org(1100)
    run_sweep(org, conn, slack, org.advance(hours=1), "g1")
    org.handle.org.add_fault({"server": "ex2", "endpoint": "any", "kind": "unreachable"})
    run_sweep(org, conn, slack, org.advance(days=1), "b1")
    org.handle.org.clear_faults()
    run_sweep(org, conn, slack, org.advance(days=1), "g2")
    org.handle.org.add_fault({"server": "ex2", "endpoint": "any", "kind": "unreachable"})
    run_sweep(org, conn, slack, org.advance(days=1), "b2")  # not consecutive: still quiet
    assert posts(slack) == []


def snooze_body(key: str, user: str, ts: str) -> dict[str, Any]:
    value = json.dumps({"org": "lab", "key": key})
    return {"user": {"id": user}, "channel": {"id": CHANNEL},
            "message": {"ts": ts, "text": "warning", "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "warning"}},
                {"type": "actions", "elements": [
                    {"type": "button", "action_id": "exauth_warning_fix", "value": value,
                     "text": {"type": "plain_text", "text": "Fix"}},
                    {"type": "button", "action_id": SNOOZE_ACTION, "value": value,
                     "text": {"type": "plain_text", "text": "Snooze 7 days"}}]}]},
            "actions": [{"action_id": SNOOZE_ACTION, "value": value}]}


def test_snooze_approvers_only_holds_until_severity_rises(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    org = lab_org(8)
    client = client_for(slack)
    groups = GroupCache(lambda g: client.usergroups_users_list(usergroup=g)["users"])
    start = org.advance(hours=12)  # 7 days left: band 7, reminders daily
    run_sweep(org, conn, slack, start, "s0")
    message = posts(slack)[0]
    current = str(org.handle.org.state()["auth_config"]["current"]).upper()
    key = f"auth:current:{current}"

    body = snooze_body(key, "U0SOMEONE", message.response["ts"])
    assert handle_snooze(org.settings, conn, client, groups, body, start) == "not_approver"
    assert slack.calls_of("chat.postEphemeral")[-1].params["user"] == "U0SOMEONE"
    body = snooze_body(key, APPROVER, message.response["ts"])
    assert handle_snooze(org.settings, conn, client, groups, body, start) == "snoozed"
    edited = slack.calls_of("chat.update")[-1]
    assert edited.params["ts"] == message.response["ts"] and SNOOZE_ACTION not in json.dumps(
        edited.params["blocks"])
    outcomes = [(e["actor"], e["outcome"]) for e in audit.entries(conn, "lab")]
    assert outcomes == [(APPROVER, "snoozed"), ("U0SOMEONE", "refused: not an approver")]

    for day in (1, 2, 3):  # 6, 5, 4 days left: the daily reminder is held back
        run_sweep(org, conn, slack, org.advance(days=1), f"s{day}")
    assert len(posts(slack)) == 1
    run_sweep(org, conn, slack, org.advance(days=1), "s4")  # 3 days: band 3 lifts it
    latest = posts(slack)
    assert len(latest) == 2 and "snooze lifted" in latest[1].params["text"]
    state = warning_state.get(conn, "lab", key)
    assert state is not None and state.snooze_until is None


def test_sweep_through_rq_and_a_real_worker_posts_via_the_callback(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    org = lab_org(20)
    org.config.write_text(f'[slack]\napi_url = "{slack.api_url}"\n\n' + org.config.read_text())
    monkeypatch.setenv("EXAUTH_CONFIG", str(org.config))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    job = enqueue_sweep(conn, "lab", run_id="slot-1")
    assert run_worker(load_settings(), burst=True) == 0
    job.refresh()
    assert job.get_status() == "finished"
    posted = slack.wait_for("chat.postMessage")
    assert len(posted) == 1 and "expires in" in posted[0].params["text"]
    assert queue(READ_QUEUE, conn).serializer is SERIALIZER
    # the callback recorded it: a second sweep posts nothing
    enqueue_sweep(conn, "lab", run_id="slot-2")
    assert run_worker(load_settings(), burst=True) == 0
    assert len(slack.calls_of("chat.postMessage")) == 1


def test_buttons_registered_on_the_bolt_app(lab_org: Callable[..., Org], conn: redis.Redis,
                                            slack: SlackMock, redis_url: str) -> None:
    """The bot's App answers both action_ids: Snooze (approver) and Fix (starts the
    recommended operation, as /exauth fix does)."""
    from slack_bolt import App, BoltRequest

    from bot.listeners.after_ack import AfterAck
    from bot.listeners.operation_actions import Approvals
    from bot.listeners.warning_buttons import register
    from tests.slack_mock import SIGNING_SECRET, signed_headers

    org = lab_org(20)
    run_sweep(org, conn, slack, org.advance(hours=12), "b0")
    message = posts(slack)[0]
    current = str(org.handle.org.state()["auth_config"]["current"]).upper()
    app = App(client=client_for(slack), signing_secret=SIGNING_SECRET,
              process_before_response=True)
    register(app, org.settings, Approvals(org.settings, conn, app.client), AfterAck(conn),
             redis_url=redis_url)

    def click(action: str) -> int:
        payload = snooze_body(f"auth:current:{current}", APPROVER, message.response["ts"])
        payload["actions"][0]["action_id"] = action
        payload.update(type="block_actions", team={"id": "T0EXAUTH"},
                       container={"message_ts": message.response["ts"]})
        body = "payload=" + quote(json.dumps(payload))
        headers = {k.lower(): v for k, v in signed_headers(body).items()}
        return app.dispatch(BoltRequest(body=body, headers=headers)).status

    assert click(SNOOZE_ACTION) == 200
    edited = slack.wait_for("chat.update")[-1]
    assert ":zzz: Snoozed by" in json.dumps(edited.params["blocks"])
    assert click("exauth_warning_fix") == 200
    deadline = time.monotonic() + 10
    while not queue(CHANGE_QUEUE, conn).get_jobs() and time.monotonic() < deadline:
        time.sleep(0.02)
    [job] = queue(CHANGE_QUEUE, conn).get_jobs()
    assert job.func_name == "workers.jobs.change_jobs.start_operation_job"
    assert list(job.args[:3]) == ["lab", None, APPROVER]  # recommended action, for the clicker
    told = slack.wait_for("chat.postEphemeral")[-1].params["text"]
    assert "preparing the change the status recommends" in told


def test_a_deleted_back_end_certificate_warns_at_once_and_daily(
        make_lab: Callable[..., LabHandle], tmp_path: Path, conn: redis.Redis,
        slack: SlackMock) -> None:
    """The third seed article's outage: no expiry date to count down, so it is critical now."""
    handle = make_lab("backend-deleted")
    password = tmp_path / "lab.password"
    password.write_text(handle.password)
    config = tmp_path / "exauth.toml"
    config.write_text(config_toml(handle.info, str(password), writer=handle.writer)
                      .replace('channel = ""', f'channel = "{CHANNEL}"'))
    org = Org(handle, load_settings(config), config)
    run_sweep(org, conn, slack, org.advance(hours=1), "b1")
    [warning] = posts(slack)
    assert "ex2" in warning.params["text"] and "/exauth backend lab" in warning.params["text"]
    run_sweep(org, conn, slack, org.advance(hours=1), "b2")  # same day: nothing new
    assert len(posts(slack)) == 1
    run_sweep(org, conn, slack, org.advance(days=1), "b3")  # next day: reminded
    assert len(posts(slack)) == 2


def test_the_sweep_job_counts_days_on_the_orgs_clock(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    """The cron's sweep passes no time: a lab moved 45 days ahead is swept at its time."""
    org = lab_org(40)
    org.advance(days=45)
    result = sweep(org.org, conn, now=None, run_id="clock-1")
    assert abs(datetime.fromisoformat(result["swept_at"]) - org.now()) < timedelta(minutes=1)
    assert any(n["days_left"] < 0 for n in result["notices"]), result["notices"]


def test_the_sweep_notes_the_orgs_offset_from_the_clock_it_is_given(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    """Our time is the clock passed in, not a process-wide one: the offset the bot's snooze
    later counts by is the org's Get-Date minus that clock; the sweep is on the org's."""
    org = lab_org(40)
    ours = FixedClock(datetime(2020, 2, 3, 4, 5, tzinfo=UTC))
    result = sweep(org.org, conn, now=None, run_id="offset-1", clock=ours)
    assert abs(datetime.fromisoformat(result["swept_at"]) - org.now()) < timedelta(minutes=1)
    on_org = warning_state.on_org_clock(conn, "lab", ours.now())
    assert abs(on_org - org.now()) < timedelta(minutes=1)


def test_a_snooze_counts_on_the_orgs_clock_when_the_lab_runs_ahead(
        lab_org: Callable[..., Org], conn: redis.Redis, slack: SlackMock) -> None:
    """The bot sets a snooze at its own time; the sweeps judge it on the org's clock."""
    org = lab_org(40)
    org.advance(days=33)  # 7 days left on the lab's clock, a month ahead of ours
    client = client_for(slack)
    deliver(client, conn, sweep(org.org, conn, now=None, run_id="a0"))
    message = posts(slack)[0]
    current = str(org.handle.org.state()["auth_config"]["current"]).upper()
    body = snooze_body(f"auth:current:{current}", APPROVER, message.response["ts"])
    groups = GroupCache(lambda g: client.usergroups_users_list(usergroup=g)["users"])
    assert handle_snooze(org.settings, conn, client, groups, body,
                         datetime.now(UTC)) == "snoozed"
    state = warning_state.get(conn, "lab", f"auth:current:{current}")
    assert state is not None and state.snooze_until is not None
    assert abs(state.snooze_until - (org.now() + timedelta(days=7))) < timedelta(minutes=5)
    org.advance(days=1)  # 6 days left: the daily reminder is held back
    deliver(client, conn, sweep(org.org, conn, now=None, run_id="a1"))
    assert len(posts(slack)) == 1
