"""Who may approve or resume, and from where: signed requests into the bot's bolt app, real
Redis, the lab, and the Slack mock (the fixtures of tests/test_approvals_slack.py).

- A Slack user group that cannot be listed fails closed for that group only.
- An Approve click or `/exauth resume` from a channel other than the org's is refused and
  audited; `/exauth resume` is for the org's operators (anyone in the channel when none are
  listed) and approvers (bot.listeners.operation_actions.resume says why).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient

from bot.listeners.warning_buttons import handle_snooze
from bot.render import operation_card
from bot.render.warning_notice import SNOOZE_ACTION
from config.load import settings_from_dict
from tests.slack_mock import BOT_TOKEN, SlackMock, signed_headers, slash_command_body
from tests.test_approvals_slack import CHANNEL, GROUP_MEMBER, OUTSIDER, dispatch, open_card
from tests.test_approvals_slack import bot as bot  # the fixtures
from tests.test_approvals_slack import slack as slack
from tests.test_operations_lab import APPROVER, Env
from tests.test_operations_lab import env_for as env_for
from workers import audit
from workers.changes import approval, operation
from workers.jobs.queues import CHANGE_QUEUE, queue

ELSEWHERE = "C0ELSEWHERE"
OPERATOR = "U0OPER"
Bot = Callable[..., tuple[Env, App]]


def click(app: App, user: str, value: str, channel: str = CHANNEL) -> None:
    assert dispatch(app, {
        "type": "block_actions", "user": {"id": user}, "team": {"id": "T0EXAUTH"},
        "api_app_id": "A0EXAUTH", "token": "x", "trigger_id": f"trig-{time.monotonic()}",
        "channel": {"id": channel}, "container": {"type": "message", "message_ts": "1.1"},
        "message": {"ts": "1.1", "text": "card"},
        "actions": [{"type": "button", "action_id": operation_card.APPROVE_ACTION, "value": value,
                     "block_id": "b", "action_ts": "1"}],
    }) == 200


def ephemeral_to(slack: SlackMock, user: str, count: int = 1) -> str:
    """The newest ephemeral line to `user`, once `count` of them arrived."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        said = [c.params["text"] for c in slack.calls_of("chat.postEphemeral")
                if c.params.get("user") == user]
        if len(said) >= count:
            return said[-1]
        time.sleep(0.05)
    raise AssertionError(f"no ephemeral answer to {user}")


def slash(app: App, slack: SlackMock, text: str, user: str, channel: str = CHANNEL) -> str:
    """Send `/exauth <text>`; returns the ephemeral answer posted to its response_url."""
    trigger = f"trig-{time.monotonic()}"
    body = slash_command_body(text, channel_id=channel, trigger_id=trigger, user_id=user,
                              response_url=slack.response_url(trigger))
    before = len(slack.calls_of("response"))
    response = app.dispatch(BoltRequest(body=body, headers={
        k.lower(): v for k, v in signed_headers(body).items()}))
    assert response.status == 200
    answer = slack.wait_for("response", before + 1, timeout=5)[-1]
    assert answer.params["response_type"] == "ephemeral"
    return str(answer.params["text"])


def resume_jobs(env: Env) -> list[Any]:
    return [job for job in queue(CHANGE_QUEUE, env.conn).get_jobs()
            if job.func_name.endswith("resume_job")]


def audited(env: Env, action: str) -> list[tuple[str, str]]:
    return [(e["actor"], e["outcome"]) for e in audit.entries(env.conn, "lab", 200)
            if e["action"] == action]


# --- user groups -----------------------------------------------------------------------------


def test_a_group_slack_cannot_list_fails_closed_for_that_group_only(
        bot: Bot, slack: SlackMock) -> None:
    # S0GONE is listed but Slack cannot list it (no_such_subteam in the mock).
    env, app = bot(approvers=f'["{APPROVER}", "S0GONE"]')
    op_id, _, value = open_card(env)
    index = json.loads(value)["step"]

    click(app, OUTSIDER, value)
    refused = ephemeral_to(slack, OUTSIDER)
    assert refused.startswith("Not approved:") and "S0GONE" in refused
    assert "\n" not in refused
    assert (approval.get(env.conn, op_id, index) or {})["state"] == "pending"

    click(app, APPROVER, value)  # listed by user ID: the failing group does not matter
    deadline = time.monotonic() + 5
    while (approval.get(env.conn, op_id, index) or {}).get("state") != "enqueued":
        assert time.monotonic() < deadline, ephemeral_to(slack, APPROVER)
        time.sleep(0.05)
    outcomes = audited(env, "approval.approve")
    assert (OUTSIDER, "groups_unchecked") in outcomes and (APPROVER, "approved") in outcomes


def test_group_membership_with_one_group_unlistable() -> None:
    def fetch(group: str) -> list[str]:
        if group == "S0GONE":
            raise ConnectionError("slack says no")
        return {"S0ADMINS": ["U0CAROL"]}[group]

    cache = approval.GroupCache(fetch)
    listed = ["U0BOB", "S0GONE", "S0ADMINS"]
    assert cache.membership("U0BOB", listed) == approval.Membership(frozenset())  # no lookup
    carol = cache.membership("U0CAROL", listed)
    assert carol.allows("U0CAROL", listed) and carol.unchecked == ("S0GONE",)
    eve = cache.membership("U0EVE", listed)
    assert not eve.allows("U0EVE", listed) and eve.unchecked == ("S0GONE",)


def test_an_operators_group_slack_cannot_list_is_named(bot: Bot, slack: SlackMock) -> None:
    _, app = bot(operators='["S0GONE"]')
    answer = slash(app, slack, "fix", OUTSIDER)
    assert answer.startswith("Only the operators of lab") and "S0GONE" in answer


def test_snooze_by_an_approver_listed_by_id_does_not_wait_on_a_failing_group(
        slack: SlackMock, conn: redis.Redis) -> None:
    org = {"name": "lab", "channel": CHANNEL, "writer": "ex1.lab", "approvers": [APPROVER,
                                                                                "S0GONE"],
           "exchange": {"url": "https://ex1.lab/PowerShell", "username": "svc",
                        "password_env": "EXAUTH_TEST_UNUSED_PASSWORD"}}
    settings = settings_from_dict({"org": [org]}, source="test.toml")
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    groups = approval.GroupCache(lambda g: client.usergroups_users_list(usergroup=g)["users"])

    def snooze(user: str) -> str:
        body = {"user": {"id": user}, "channel": {"id": CHANNEL},
                "message": {"ts": "1.1", "text": "warning", "blocks": []},
                "actions": [{"action_id": SNOOZE_ACTION,
                             "value": json.dumps({"org": "lab", "key": "auth:current:AB"})}]}
        return handle_snooze(settings, conn, client, groups, body, datetime.now(UTC))

    assert snooze(APPROVER) == "gone"  # allowed; there is just no such warning to snooze
    assert snooze(OUTSIDER) == "lookup_failed"
    assert "S0GONE" in ephemeral_to(slack, OUTSIDER)


# --- the channel an Approve click comes from --------------------------------------------------


def test_an_approve_click_from_another_channel_is_refused_and_audited(
        bot: Bot, slack: SlackMock) -> None:
    env, app = bot()
    op_id, _, value = open_card(env)
    index = json.loads(value)["step"]
    click(app, APPROVER, value, channel=ELSEWHERE)
    refused = ephemeral_to(slack, APPROVER)
    assert refused.startswith("Not approved:") and f"<#{CHANNEL}>" in refused
    time.sleep(0.3)
    assert (approval.get(env.conn, op_id, index) or {})["state"] == "pending"
    assert queue(CHANGE_QUEUE, env.conn).count == 0
    assert audited(env, "approval.approve") == [(APPROVER, "wrong_channel")]

    click(app, APPROVER, value)  # the same approver in the org's channel
    deadline = time.monotonic() + 5
    while (approval.get(env.conn, op_id, index) or {}).get("state") != "enqueued":
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- /exauth resume -----------------------------------------------------------------------


def test_resume_from_another_channel_is_refused_and_audited(bot: Bot, slack: SlackMock) -> None:
    env, app = bot()
    op_id, _, _ = open_card(env)
    answer = slash(app, slack, f"resume {op_id}", APPROVER, channel=ELSEWHERE)
    assert f"<#{CHANNEL}>" in answer and "\n" not in answer
    assert resume_jobs(env) == []
    assert audited(env, "operation.resume") == [(APPROVER, "refused: wrong channel")]
    assert operation.load(env.conn, op_id) is not None


def test_resume_is_for_operators_and_approvers_when_operators_are_listed(
        bot: Bot, slack: SlackMock) -> None:
    env, app = bot(operators=f'["{OPERATOR}"]')
    op_id, _, _ = open_card(env)

    answer = slash(app, slack, f"resume {op_id}", OUTSIDER)
    assert answer.startswith("Only the operators") and "\n" not in answer
    assert resume_jobs(env) == []
    assert audited(env, "operation.resume") == [(OUTSIDER, "refused: not an operator or "
                                                            "approver")]

    assert "Re-validating" in slash(app, slack, f"resume {op_id}", OPERATOR)
    assert "Re-validating" in slash(app, slack, f"resume {op_id}", APPROVER)  # not an operator
    assert "Re-validating" in slash(app, slack, f"resume {op_id}", GROUP_MEMBER)  # by group
    assert [job.args[1] for job in resume_jobs(env)] == [OPERATOR, APPROVER, GROUP_MEMBER]


def test_without_operators_anyone_in_the_channel_may_resume(bot: Bot, slack: SlackMock) -> None:
    env, app = bot()  # no operators listed: anyone in the org's channel may start, or resume
    op_id, _, _ = open_card(env)
    assert "Re-validating" in slash(app, slack, f"resume {op_id}", OUTSIDER)
    assert [job.args[1] for job in resume_jobs(env)] == [OUTSIDER]
