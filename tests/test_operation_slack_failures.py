"""Operations never go silent in Slack.

An operation card that Slack rate limits: the worker waits as Slack's Retry-After says and
tries again; when Slack still says no, the requester hears it ephemerally and the
operation waits in Redis until `/exauth resume <op>` posts its card. A step past its time
limit says so in the card's thread, with the command that carries the operation on.

Signed slash commands into the bolt app, real Redis, RQ worker (burst) against the lab, the
Slack Web API mock answering HTTP 429 with Retry-After.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from rq import SimpleWorker
from slack_bolt import App

import workers.jobs.queues
from bot.render import operation_card
from tests.slack_mock import Call, SlackMock
from tests.test_approvals_slack import CHANNEL, bot, click, slack, slash, wait_until
from tests.test_operations_lab import APPROVER, REQUESTER, Env
from tests.test_operations_lab import env_for as env_for  # the fixture
from tests.test_operations_slack_e2e import card_approve_value
from workers.changes import operation
from workers.jobs.deadline import Worker
from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue

__all__ = ["bot", "slack"]  # fixtures used below


def work(env: Env, worker: type[SimpleWorker] = SimpleWorker) -> None:
    changes = queue(CHANGE_QUEUE, env.conn)
    wait_until(lambda: changes.count >= 1)
    worker([changes], connection=env.conn, serializer=SERIALIZER).work(burst=True)


def card_posts(slack: SlackMock) -> list[Call]:
    return [c for c in slack.calls_of("chat.postMessage")
            if c.params.get("channel") == CHANNEL and not c.params.get("thread_ts")]


def has_approve_button(call: Call) -> bool:
    blocks = call.params.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return any(element.get("action_id") == operation_card.APPROVE_ACTION
               for block in blocks if block.get("type") == "actions"
               for element in block.get("elements", []))


def test_rate_limited_card_is_posted_after_waiting_as_slack_says(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    slack.rate_limit_next("chat.postMessage", retry_after=1, times=2)
    assert slash(app, slack, "fix") == 200
    work(env)

    posts = card_posts(slack)
    assert [c.status for c in posts] == [429, 429, 200]
    assert posts[1].at - posts[0].at >= 1 and posts[2].at - posts[1].at >= 1  # Retry-After
    assert has_approve_button(posts[2])
    assert not slack.calls_of("chat.postEphemeral")


def test_card_slack_keeps_refusing_is_told_to_the_requester_and_resume_posts_it(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    slack.rate_limit_next("chat.postMessage", retry_after=0, times=4)  # 1 try + 3 retries
    assert slash(app, slack, "fix") == 200
    work(env)

    assert [c.status for c in card_posts(slack)] == [429, 429, 429, 429]
    [op] = operation.open_ops(env.conn, env.org.name)
    assert op.get("card") is None
    [told] = slack.calls_of("chat.postEphemeral")
    assert (told.params["channel"], told.params["user"]) == (CHANNEL, REQUESTER)
    assert told.params["text"] == (
        f":warning: Slack did not take the card of operation `{op['id']}` for lab "
        f"(ratelimited). The operation is kept; `/exauth resume {op['id']}` posts its card "
        "here.")

    assert slash(app, slack, f"resume {op['id']}") == 200
    work(env)
    posted = card_posts(slack)[-1]
    assert posted.status == 200 and has_approve_button(posted)
    reloaded = operation.load(env.conn, op["id"])
    assert reloaded is not None and reloaded["card"]["ts"] == posted.response["ts"]


def test_step_past_its_time_limit_says_so_in_the_thread_and_resume_carries_on(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env, app = bot()
    assert slash(app, slack, "fix") == 200
    work(env)
    [op] = operation.open_ops(env.conn, env.org.name)
    value = card_approve_value(slack)
    assert value
    for server in env.handle.info["servers"]:
        env.handle.org.add_fault({"server": server["name"], "endpoint": "any",
                                  "kind": "latency", "latency_ms": 1500})
    limit = workers.jobs.queues.CHANGE_TIMEOUT
    monkeypatch.setattr(workers.jobs.queues, "CHANGE_TIMEOUT", 2)
    assert click(app, APPROVER, operation_card.APPROVE_ACTION, value) == 200
    work(env, Worker)  # the exauth worker class: its time limit stops the step

    said = wait_until(lambda: [c for c in slack.calls_of("chat.postMessage")
                               if c.params.get("thread_ts") == op["card"]["ts"]
                               and c.params["text"].startswith(":x:")])
    assert [c.params["text"] for c in said] == [
        ":x: exauth step: the check took longer than its 2 s time limit and was stopped. "
        f"Operation `{op['id']}` is kept; `/exauth resume {op['id']}` carries it on."]

    env.handle.org.clear_faults()
    monkeypatch.setattr(workers.jobs.queues, "CHANGE_TIMEOUT", limit)
    updates_before = len(slack.calls_of("chat.update"))
    assert slash(app, slack, f"resume {op['id']}") == 200
    work(env)
    resumed = operation.load(env.conn, op["id"])
    assert resumed is not None and resumed["state"] in (*operation.OPEN_STATES, "done")
    # re-validated: the step's effect adopted, or its approval asked for again
    assert [s["state"] for s in resumed["steps"] if s["state"] == "running"] == []
    assert len(slack.calls_of("chat.update")) > updates_before  # the card follows
