"""Approval clicks as Slack sends them: signed block_actions / view_submission requests into
the bot's bolt app (bot.app.create_app + bot.listeners.operation_actions.register), real Redis,
the lab, the
RQ worker in burst mode, and the Slack Web API mock recording everything said.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from rq import SimpleWorker
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient

from bot.app import create_app
from bot.callbacks import operation_progress
from bot.render import operation_card
from config.load import load_settings
from tests.slack_mock import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackMock,
    signed_headers,
    slash_command_body,
)
from tests.test_operations_lab import REQUESTER, Env, auth_creations, drive, start
from tests.test_operations_lab import env_for as env_for  # the fixture
from workers import audit
from workers.changes import approval, execute, operation
from workers.jobs import change_jobs
from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue

CHANNEL = "C0OPS"
GROUP_MEMBER = "U0CAROL"
OUTSIDER = "U0EVE"


@pytest.fixture()
def slack(slack: SlackMock, monkeypatch: pytest.MonkeyPatch) -> SlackMock:
    """The plugin's mock, with the approvers' user group and the bot's env pointing at it."""
    slack.usergroups["S0ADMINS"] = [GROUP_MEMBER, REQUESTER]
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    return slack


@pytest.fixture()
def bot(
    slack: SlackMock, env_for: Callable[..., Env]
) -> Callable[..., tuple[Env, App]]:
    def _make(scenario: str = "expiring-sha1", **org: str) -> tuple[Env, App]:
        env = env_for(scenario, **org)
        settings = load_settings()
        client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
        app = create_app(settings, client=client)  # registers the approval listeners
        return env, app

    return _make


def dispatch(app: App, payload: dict[str, Any]) -> int:
    body = urlencode({"payload": json.dumps(payload)})
    response = app.dispatch(BoltRequest(body=body, headers={
        k.lower(): v for k, v in signed_headers(body).items()}))
    return response.status


def click(app: App, user: str, action_id: str, value: str, ts: str = "1.1") -> int:
    return dispatch(app, {
        "type": "block_actions", "user": {"id": user}, "team": {"id": "T0EXAUTH"},
        "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": f"trig-{time.monotonic()}",
        "channel": {"id": CHANNEL}, "container": {"type": "message", "message_ts": ts},
        "message": {"ts": ts, "text": "card"},
        "actions": [{"type": "button", "action_id": action_id, "value": value,
                     "block_id": "b", "action_ts": "1"}],
    })


def open_card(env: Env) -> tuple[str, dict[str, Any], str]:
    op_id = start(env)
    summary = change_jobs.lifecycle.summary(operation.load(env.conn, op_id))
    operation_progress.publish(env.conn, summary, reply_channel=CHANNEL)
    op = operation.load(env.conn, op_id)
    assert op is not None and op["card"]
    index = change_jobs.lifecycle.next_index(op)
    assert index is not None
    return op_id, op, operation_card.button_value(op, index)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               what: str = "condition reached") -> Any:
    """The first truthy value of `predicate`, polled until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def params(call: Any) -> str:
    return json.dumps(call.params)


def test_card_shows_exact_command_buttons_and_expiry(bot: Callable[..., tuple[Env, App]],
                                                     slack: SlackMock) -> None:
    env, _ = bot()
    open_card(env)
    posted = slack.calls_of("chat.postMessage")[0]
    blocks = posted.params["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    text = json.dumps(blocks)
    assert "New-ExchangeCertificate -Server ex1.contoso.lab -KeySize 2048" in text
    assert "-Services None" in text and f"<@{REQUESTER}>" in text and "expires" in text
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert actions[0]["action_id"] == operation_card.APPROVE_ACTION and "confirm" in actions[0]
    assert actions[1]["action_id"] == operation_card.DENY_ACTION
    assert "OVERRIDE" not in text


def test_refusals_change_nothing_and_an_approver_runs_the_step_once(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    op_id, op, value = open_card(env)
    index = json.loads(value)["step"]

    assert click(app, OUTSIDER, operation_card.APPROVE_ACTION, value) == 200
    assert click(app, REQUESTER, operation_card.APPROVE_ACTION, value) == 200  # requester, in group
    ephemerals = wait_until(lambda: len(slack.calls_of("chat.postEphemeral")) >= 2 and
                            slack.calls_of("chat.postEphemeral"))
    texts = sorted(c.params["text"] for c in ephemerals)
    assert any("not an approver" in t for t in texts)
    assert any("self-approval" in t for t in texts)
    assert (approval.get(env.conn, op_id, index) or {})["state"] == "pending"
    assert queue(CHANGE_QUEUE, env.conn).count == 0

    # A member of the approvers' user group approves; five more clicks change nothing.
    for _ in range(6):
        click(app, GROUP_MEMBER, operation_card.APPROVE_ACTION, value)
    wait_until(lambda: (approval.get(env.conn, op_id, index) or {}).get("state") == "enqueued")
    time.sleep(0.3)
    assert queue(CHANGE_QUEUE, env.conn).count == 1
    worker = SimpleWorker([queue(CHANGE_QUEUE, env.conn)], connection=env.conn,
                          serializer=SERIALIZER)
    worker.work(burst=True)
    assert len(auth_creations(env.handle)) == 1
    op = operation.load(env.conn, op_id)
    assert op is not None and op["steps"][index]["state"] == "done"
    assert slack.calls_of("chat.update"), "the card was not updated"
    thread = [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts")]
    assert any("Create the new Auth Certificate" in c.params["text"] for c in thread)
    outcomes = {(e["actor"], e["outcome"]) for e in audit.entries(env.conn, "lab", 200)
                if e["action"] == "approval.approve"}
    assert (OUTSIDER, "not_approver") in outcomes and (REQUESTER, "self_approval") in outcomes
    assert (GROUP_MEMBER, "approved") in outcomes


def test_expired_approval_is_refused(bot: Callable[..., tuple[Env, App]],
                                     slack: SlackMock) -> None:
    env, app = bot()
    op_id, _, value = open_card(env)
    index = json.loads(value)["step"]
    # The TTL passed: the request's expiry lies in the past.
    env.conn.hset(approval.approval_key(op_id, index), "expires_ms", "1000")
    click(app, GROUP_MEMBER, operation_card.APPROVE_ACTION, value)
    wait_until(lambda: slack.calls_of("chat.postEphemeral"))
    assert "expired" in slack.calls_of("chat.postEphemeral")[0].params["text"]
    assert (approval.get(env.conn, op_id, index) or {})["state"] == "expired"
    assert queue(CHANGE_QUEUE, env.conn).count == 0
    assert not auth_creations(env.handle)


def deny_submission(value: str, ts: str, reason: str, *, user: str = GROUP_MEMBER,
                    channel: str = CHANNEL, trigger: str = "t") -> dict[str, Any]:
    """The deny modal of the card at `ts` submitted with `reason`, as Slack sends it."""
    return {
        "type": "view_submission", "user": {"id": user}, "team": {"id": "T0EXAUTH"},
        "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": trigger,
        "view": {"id": "V1", "type": "modal", "callback_id": operation_card.DENY_VIEW,
                 "private_metadata": json.dumps({"value": value, "channel": channel,
                                                 "ts": ts}),
                 "state": {"values": {operation_card.REASON_BLOCK: {operation_card.REASON_ACTION: {
                     "type": "plain_text_input", "value": reason}}}}},
    }


def test_deny_modal_needs_a_reason_and_cancels_with_it_literally(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    op_id, op, value = open_card(env)
    hostile = "no'; Remove-Item C:\\ -Recurse; $(whoami) \"x\"\n\u202eevil ✓"

    def submit(reason: str) -> int:
        return dispatch(app, deny_submission(value, op["card"]["ts"], reason))

    assert submit("   ") == 200
    assert (operation.load(env.conn, op_id) or {})["state"] == "open"
    submit(hostile)
    wait_until(lambda: (operation.load(env.conn, op_id) or {})["state"] == "cancelled")
    denied = [e for e in audit.entries(env.conn, "lab", 100) if e["action"] == "approval.deny"]
    assert denied and denied[0]["detail"]["reason"] == hostile
    # Steps are numbered as the card numbers them, from 1, in the audit and the reason.
    index = change_jobs.lifecycle.next_index(op)
    assert index is not None
    assert denied[0]["target"] == f"{op_id}/{index + 1}"
    # the state is saved a moment before the close is audited: wait for the entry
    closed = wait_until(lambda: [e for e in audit.entries(env.conn, "lab", 100)
                                 if e["action"] == "operation.close"], what="close audited")
    assert closed[0]["detail"]["reason"].startswith(f"step {index + 1} denied by")
    # the thread note follows the card update, after the operation was cancelled
    assert wait_until(lambda: [c for c in slack.calls_of("chat.postMessage")
                               if f"denied step {index + 1}:" in c.params["text"]])
    assert not auth_creations(env.handle)
    changing = ("New-", "Set-", "Remove-", "Import-", "Restart-", "Enable-", "iisreset")
    assert not [c for c in env.handle.org.calls() if c["command"].startswith(changing)]


def test_no_secret_in_slack_logs_or_audit(bot: Callable[..., tuple[Env, App]],
                                          slack: SlackMock,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env, _ = bot("missing-on-server")
    op_id = start(env)
    secrets_seen: set[str] = set()

    original = execute.secret

    def spy(conn: Any, op: str, name: str) -> str:
        value = original(conn, op, name)
        secrets_seen.add(value)
        return value

    execute.secret = spy  # type: ignore[assignment]
    try:
        operation_progress.publish(env.conn, change_jobs.lifecycle.summary(
            operation.load(env.conn, op_id)), reply_channel=CHANNEL)
        op = drive(env, op_id)
        operation_progress.publish(env.conn, change_jobs.lifecycle.summary(op, [
            {"step": i, "state": s["state"], "detail": s["outcome"]}
            for i, s in enumerate(op["steps"])]))
    finally:
        execute.secret = original  # type: ignore[assignment]
    assert op["state"] == "done"
    assert secrets_seen, "the import never used its export password"
    said = "\n".join(params(c) for c in slack.calls)
    logged = caplog.text
    audited = json.dumps(audit.entries(env.conn, None, 1000))
    stored = json.dumps(op)
    jobs = json.dumps([j.args for j in queue(CHANGE_QUEUE, env.conn).jobs])
    for value in secrets_seen:
        for where, text in (("slack", said), ("logs", logged), ("audit", audited),
                            ("operation", stored), ("jobs", jobs)):
            assert value not in text, f"secret leaked into {where}"
    assert "Read-Host -AsSecureString" in said  # the card shows the prompt, not the value


def slash(app: App, slack: SlackMock, text: str, user: str = REQUESTER) -> int:
    trigger = f"trig-{time.monotonic()}"
    body = slash_command_body(text, channel_id=CHANNEL, trigger_id=trigger, user_id=user,
                              response_url=slack.response_url(trigger))
    response = app.dispatch(BoltRequest(body=body, headers={
        k.lower(): v for k, v in signed_headers(body).items()}))
    return response.status


def test_slash_rotate_starts_an_operation_and_posts_its_card(
    bot: Callable[..., tuple[Env, App]], slack: SlackMock, redis_url: str,
) -> None:
    env, app = bot("healthy")
    assert slash(app, slack, "rotate") == 200
    replies = wait_until(lambda: [c for c in slack.calls if c.method.startswith("response")])
    assert "preparing stage_new" in params(replies[0])
    jobs = queue(CHANGE_QUEUE, env.conn).get_jobs()
    assert [job.func_name.rsplit(".", 1)[-1] for job in jobs] == ["start_operation_job"]
    SimpleWorker([queue(CHANGE_QUEUE, env.conn)], connection=env.conn,
                 serializer=SERIALIZER).work(burst=True)
    ops = operation.open_ops(env.conn, env.org.name)
    assert [op["kind"] for op in ops] == ["stage_new"]
    cards_posted = wait_until(lambda: [c for c in slack.calls_of("chat.postMessage")
                                       if "thread_ts" not in c.params])
    assert "New-ExchangeCertificate" in params(cards_posted[0])
    # nothing changed in Exchange yet: the changing steps wait for an approver
    assert auth_creations(env.handle) == []
    # a second start while one is open is refused, and names the open operation
    assert slash(app, slack, "fix") == 200
    second = wait_until(lambda: [c for c in slack.calls if c.method.startswith("response")][1:])
    assert ops[0]["id"] in params(second[0])
