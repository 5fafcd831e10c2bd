"""After a Deny the operation card itself says who denied which step and why - in the block
under its header and on the denied step of the plan - not only the card's thread.

What it says comes from the operation as stored (workers.changes.lifecycle.deny records `denied`
on the step), so any later re-render of the card says it too; it is chosen by that record
and the operation's state, never by reading the step's outcome text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from slack_bolt import App

from bot.callbacks import operation_progress
from bot.render import operation_card
from tests.slack_mock import Call, SlackMock
from tests.test_approvals_slack import (
    CHANNEL,
    GROUP_MEMBER,
    bot,
    click,
    deny_submission,
    dispatch,
    open_card,
    slack,
    wait_until,
)
from tests.test_operations_lab import Env
from tests.test_operations_lab import env_for as env_for  # the fixture
from workers.changes import lifecycle, operation

__all__ = ["bot", "slack"]  # fixtures used below

REASON = "Not during the change freeze; ask again on Monday"


def blocks_of(call: Call) -> list[dict[str, Any]]:
    blocks = call.params["blocks"]
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def card_updates(slack: SlackMock, ts: str) -> list[Call]:
    return [c for c in slack.calls_of("chat.update") if c.params.get("ts") == ts]


def test_denied_card_says_who_and_why_on_the_step_and_under_the_header(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    op_id, op, value = open_card(env)
    index = json.loads(value)["step"]
    title = op["steps"][index]["title"]
    ts = op["card"]["ts"]

    # The Deny button, as Slack sends the click; it opens the reason modal.
    assert click(app, GROUP_MEMBER, operation_card.DENY_ACTION, value, ts=ts) == 200
    opened = slack.wait_for("views.open")[0].params["view"]
    view = json.loads(opened) if isinstance(opened, str) else opened
    # The modal submitted with a reason, as Slack sends it.
    submission = deny_submission(value, ts, REASON, trigger="t2")
    submission["view"].update(callback_id=view["callback_id"],
                              private_metadata=view["private_metadata"])  # the modal's own
    assert dispatch(app, submission) == 200

    wait_until(lambda: (operation.load(env.conn, op_id) or {})["state"] == "cancelled")
    update = wait_until(lambda: card_updates(slack, ts))[-1]
    assert update.params["channel"] == CHANNEL
    blocks = blocks_of(update)
    header = blocks[0]
    assert header["type"] == "header" and "denied" in header["text"]["text"]
    assert blocks[1]["text"]["text"].startswith(
        f":no_entry: *Denied by <@{GROUP_MEMBER}>:* {REASON}")
    plan = next(b["text"]["text"] for b in blocks
                if b["type"] == "section" and b["text"]["text"].startswith("*Plan*"))
    assert f":no_entry: {index + 1}. {title} - *Denied by <@{GROUP_MEMBER}>:* {REASON}" \
        in plan.splitlines()
    assert f"denied by <@{GROUP_MEMBER}>: {REASON}" in update.params["text"]
    assert not [b for b in blocks if b["type"] == "actions"], "a denied card keeps no buttons"

    # The stored operation carries it, typed; a later re-render says the same.
    stored = operation.load(env.conn, op_id)
    assert stored is not None
    assert stored["steps"][index]["denied"] == {"by": GROUP_MEMBER, "reason": REASON}
    before = len(card_updates(slack, ts))
    operation_progress.publish(env.conn, lifecycle.summary(stored))
    again = card_updates(slack, ts)
    assert len(again) == before + 1 and blocks_of(again[-1]) == blocks


def denied_op(**step: Any) -> dict[str, Any]:
    return {"id": "abc123", "org": "lab", "kind": "stage_new", "requester": "U0ALICE",
            "state": "cancelled", "reason": "r", "steps": [
                {"index": 0, "title": "Read AuthConfig", "server": "ex1", "endpoint": "exchange",
                 "cmdlet": "Get-AuthConfig", "parameters": [], "changes_state": False,
                 "state": "done", "outcome": "ok"},
                {"index": 1, "title": "Create the certificate", "server": "ex1",
                 "endpoint": "exchange", "cmdlet": "New-ExchangeCertificate", "parameters": [],
                 "changes_state": True, "state": "skipped", **step}]}


def test_card_reads_the_denial_record_not_the_outcome_text() -> None:
    card = operation_card.operation_card(denied_op(outcome="denied by local:alice: declined",
                                          denied={"by": "local:alice", "reason": "declined"}))
    said = json.dumps(card["blocks"])
    assert "Denied by local:alice:* declined" in said  # a terminal user is no mention
    assert "<@local:alice>" not in said
    # The same words in an outcome, without the record: the card does not call it denied.
    plain = operation_card.operation_card(denied_op(outcome="denied by U0BOB: no"))
    assert "Denied by" not in json.dumps(plain) and "denied" not in plain["text"]
    assert plain["blocks"][0]["text"]["text"].endswith(": cancelled")
