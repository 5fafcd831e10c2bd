"""The four procedures of DOMAIN.md end to end, driven only the way people drive them:
a signed `/exauth` slash command, then Approve clicks on the card exactly as Slack last
showed it, with a real RQ worker (burst) between clicks and the cron's resume job for the
waits, against the lab with its clock moved as needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from rq import SimpleWorker
from slack_bolt import App

from bot.render import operation_card
from tests.slack_mock import SlackMock
from tests.test_approvals_slack import CHANNEL, bot, click, slack, slash, wait_until
from tests.test_operations_lab import APPROVER, Env, all_pools_work, auth_creations
from tests.test_operations_lab import env_for as env_for  # the fixture
from workers import audit
from workers.changes import operation
from workers.jobs.cron import enqueue_resume_due
from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue

__all__ = ["bot", "slack"]  # fixtures used below


def card_approve_value(slack: SlackMock) -> str | None:
    """The Approve button of the newest version of the card in the channel, if it has one."""
    cards_shown = [c for c in slack.calls if c.method in ("chat.postMessage", "chat.update")
                   and c.params.get("channel") == CHANNEL and not c.params.get("thread_ts")]
    if not cards_shown:
        return None
    blocks = cards_shown[-1].params.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    for block in blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == operation_card.APPROVE_ACTION:
                return str(element["value"])
    return None


def drive_via_slack(env: Env, app: App, slack: SlackMock,
                    command: str) -> tuple[dict[str, Any], set[str]]:
    changes = queue(CHANGE_QUEUE, env.conn)

    def work() -> None:
        SimpleWorker([changes], connection=env.conn, serializer=SERIALIZER).work(burst=True)

    assert slash(app, slack, command) == 200
    wait_until(lambda: changes.count == 1)
    work()
    [op] = operation.open_ops(env.conn, env.org.name)
    clicked: set[str] = set()
    for round_ in range(120):
        op = operation.load(env.conn, op["id"])
        assert op is not None
        if op["state"] in operation.CLOSED_STATES:
            return op, clicked
        if op["state"] == "waiting":  # what `exauth cron` does every 15 minutes
            due = datetime.fromisoformat(op["resume_at"]) - env.handle.org.now()
            env.handle.org.advance(max(due, timedelta(0)) + timedelta(minutes=1))
            enqueue_resume_due(env.conn, f"e2e-{round_}")
            work()
            continue
        value = wait_until(lambda: (card_approve_value(slack) or "") not in ("", *clicked)
                           and card_approve_value(slack))
        clicked.add(value)
        assert click(app, APPROVER, operation_card.APPROVE_ACTION, value) == 200
        wait_until(lambda: changes.count >= 1)
        work()
    raise AssertionError(f"operation did not finish: {op['state']}")


@pytest.mark.parametrize("scenario, command, kind", [
    ("expiring-sha1", "fix", "stage_new"),
    ("expired", "fix", "replace_now"),
    ("missing-on-server", "fix", "import_current"),
    ("backend-deleted", "backend", "repair_backend"),
])
def test_procedure_through_slack(bot: Callable[..., tuple[Env, App]], slack: SlackMock,
                                 scenario: str, command: str, kind: str) -> None:
    env, app = bot(scenario)
    before = env.handle.org.state()
    op, clicked = drive_via_slack(env, app, slack, command)

    assert (op["kind"], op["state"]) == (kind, "done"), [
        (s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    state = env.handle.org.state()
    if kind in ("stage_new", "replace_now"):
        new = op["recorded"]["new_thumbprint"]
        assert state["auth_config"]["current"] == new != before["auth_config"]["current"]
        assert state["auth_config"]["previous"] == ""
        assert len(auth_creations(env.handle)) == 1  # exactly one new auth certificate
        env.handle.org.advance("25h")  # cross-site replication reaches Site-B within a day
        assert all_pools_work(env.handle)  # OWA/ECP healthy
    elif kind == "import_current":
        current = before["auth_config"]["current"]
        assert current in {c["thumbprint"] for c in state["stores"]["ex3"]}
        assert not auth_creations(env.handle)
    else:
        new = op["recorded"]["backend_cert:ex2.contoso.lab"]
        assert state["bindings"]["ex2"]["backend_effective"]["certificate_hash"] == new
    # every state-changing step ran after a click of the approver, each click audited
    assert all(s["state"] in ("done", "skipped") for s in op["steps"])
    approvals = [e for e in audit.entries(env.conn, "lab", 500)
                 if e["action"] == "approval.approve" and e["actor"] == APPROVER]
    assert clicked and len(approvals) == len(clicked)
    assert {e["outcome"] for e in approvals} == {"approved"}
