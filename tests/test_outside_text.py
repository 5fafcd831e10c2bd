"""Text from outside (Exchange's messages, deny reasons, org/server/certificate names, what a
user typed) is shown in Slack, never interpreted: `&`, `<` and `>` are escaped exactly once
wherever it enters mrkdwn (section text, fields, context elements, confirm dialogs) or a
message's `text` fallback, while our own mentions and links still work. plain_text objects
(headers, labels) are shown literally by Slack and carry the raw text.

The view builders are checked with a hostile string in every outside field; then the same
strings travel the real wire: a signed Deny click through bolt, an Approve click whose step
fails in Exchange with a hostile message, `/exauth resume` with a hostile "operation id",
and a status job that a lab fault (POST /_lab/faults) fails with a hostile message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rq import SimpleWorker
from rq.job import Job
from slack_bolt import App

from bot.callbacks import operation_progress
from bot.listeners import command_text, operation_actions
from bot.render import messages, operation_card, warning_notice
from config.load import load_settings
from tests.fixtures_lab import control
from tests.slack_mock import SlackMock
from tests.test_approvals_slack import (
    CHANNEL,
    GROUP_MEMBER,
    bot,
    click,
    deny_submission,
    dispatch,
    open_card,
    slack,
    slash,
    wait_until,
)
from tests.test_jobs_status import Stack, stack_for
from tests.test_operations_lab import Env
from tests.test_operations_lab import env_for as env_for  # the fixture
from workers import audit
from workers.changes import operation
from workers.exchange.errors import ExchangeFailed
from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue
from workers.status.report_model import Overall, parse_status
from workers.warnings.rules import Notice

__all__ = ["bot", "slack", "stack_for"]  # fixtures used below

RAW_TOKENS = ("<!channel>", "<@U0EVIL>", "<https://evil.example")


def hostile(field: str) -> str:
    """Everything Slack would act on, tagged with the field it was put in."""
    return f"<!channel> <@U0EVIL> <https://evil.example|Re-approve {field}> & co"


def escaped(field: str) -> str:
    return (f"&lt;!channel&gt; &lt;@U0EVIL&gt; &lt;https://evil.example|Re-approve {field}"
            "&gt; &amp; co")


def texts(message: Any) -> tuple[list[str], list[str]]:
    """(mrkdwn texts including the `text` fallback, plain_text texts) of a message/view."""
    mrkdwn: list[str] = []
    plain: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "mrkdwn":
                mrkdwn.append(node["text"])
            elif kind == "plain_text":
                plain.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if isinstance(message, dict) and isinstance(message.get("text"), str):
        mrkdwn.append(message["text"])
    if isinstance(message, dict) and isinstance(message.get("blocks"), str):
        message = {**message, "blocks": json.loads(message["blocks"])}
    walk(message.get("blocks") if isinstance(message, dict) else message)
    return mrkdwn, plain


def assert_inert(mrkdwn: list[str] | str, *fields: str) -> None:
    """No raw token anywhere, each field shown escaped once, nothing escaped twice."""
    joined = mrkdwn if isinstance(mrkdwn, str) else "\n".join(mrkdwn)
    for token in RAW_TOKENS:
        assert token not in joined, f"{token} reaches Slack raw:\n{joined}"
    assert "&amp;lt;" not in joined and "&amp;amp;" not in joined, "escaped twice"
    for field in fields:
        assert escaped(field) in joined, f"{field} is not shown (escaped once):\n{joined}"


# --- the one function ---------------------------------------------------------------------


def test_escape_replaces_exactly_slacks_three_characters_once() -> None:
    assert messages.escape("<!channel> & <@U1> <a|b>") == \
        "&lt;!channel&gt; &amp; &lt;@U1&gt; &lt;a|b&gt;"
    assert messages.escape("&lt;") == "&amp;lt;"  # literal text stays literal
    assert messages.escape("*bold* `code` _x_ 'q' \"d\"") == "*bold* `code` _x_ 'q' \"d\""


# --- view builders, a hostile string in every outside field -------------------------------


def hostile_status() -> dict[str, Any]:
    """A status document whose every outside field is hostile text (read with parse_status)."""
    fqdn, down = "ex1.contoso.lab", "ex2.contoso.lab"
    cert = {"thumbprint": hostile("thumbprint"), "subject": None, "not_before": None,
            "not_after": "2027-01-01T00:00:00+00:00",
            "days_left": 12, "signature_hash": hostile("sighash"), "key_size": 2048,
            "present_on": [fqdn], "missing_on": [], "unknown_on": [down]}
    return {
        "org": hostile("org"), "checked_at": hostile("checked"), "hybrid": False,
        "sites": ["A"],
        "servers": [
            {"name": hostile("server"), "fqdn": fqdn, "site": "A", "version": "",
             "roles": [], "reachable": True, "error": None},
            {"name": hostile("down"), "fqdn": down, "site": "A", "version": "", "roles": [],
             "reachable": False, "error": hostile("winrm")},
        ],
        "auth": {"current": cert, "next": None, "previous": None},
        "backend": [
            {"server": fqdn, "thumbprint": hostile("backend"), "not_after": "2029-01-01",
             "days_left": 5, "problem": "expiring"},
            {"server": down, "thumbprint": None, "not_after": None, "days_left": None,
             "problem": "unknown"},
        ],
        "findings": [{"code": "AUTH_CURRENT_EXPIRING", "severity": "critical",
                      "server": fqdn, "message": hostile("finding")}],
        "actions": [{"kind": "stage_new", "servers": [fqdn], "reason": hostile("action")}],
    }


def test_status_report_shows_every_outside_field_escaped() -> None:
    message = messages.status_message(parse_status(hostile_status()), Overall.CRITICAL)
    mrkdwn, plain = texts(message)
    assert_inert(mrkdwn, "thumbprint", "sighash", "server", "down", "winrm", "backend",
                 "finding", "action", "org", "checked")
    assert_inert(message["text"], "org")
    # the header is plain_text: Slack shows it as typed, so it takes the raw name
    assert hostile("org") in plain[0] and "&lt;" not in plain[0]


def test_plan_failure_retry_and_placeholder_escape_outside_text() -> None:
    document = {"org": hostile("org"), "checked_at": hostile("checked"), "actions": [
        {"kind": "stage_new", "servers": ["ex1.contoso.lab"], "reason": hostile("reason"),
         "steps": [{"title": hostile("title"), "server": hostile("server"),
                    "endpoint": hostile("endpoint"), "changes_state": True,
                    "command": "New-ExchangeCertificate -FriendlyName '" + hostile("command")
                               + "'", "note": hostile("note")}]}]}
    message = messages.plan_message(document)
    assert_inert(texts(message)[0], "org", "checked", "reason", "title", "server", "endpoint",
                 "command", "note")
    assert_inert(message["text"], "org")
    for message in (messages.failure_message(hostile("org"), "status", hostile("error")),
                    messages.retrying_message(hostile("org"), "status", hostile("error"), 1, 5)):
        assert_inert(texts(message)[0], "org", "error")
        assert_inert(message["text"], "org", "error")
    message = messages.placeholder_message(hostile("org"), "status")
    assert_inert(texts(message)[0], "org")
    assert_inert(message["text"], "org")


def hostile_op(state: str = "open") -> dict[str, Any]:
    step = {"index": 0, "title": hostile("title"), "server": hostile("server"),
            "endpoint": "exchange", "cmdlet": "New-ExchangeCertificate",
            "parameters": [["-FriendlyName", hostile("param")]], "changes_state": True,
            "state": "awaiting_approval", "outcome": None, "note": hostile("note"),
            "request_id": "r1", "expires_at": "2026-11-30T10:00:00+00:00", "batch": [0]}
    return {"id": "abc123", "org": hostile("org"), "kind": "stage_new",
            "requester": "local:" + hostile("requester"), "state": state,
            "reason": hostile("reason"), "waiting_for": hostile("waiting"),
            "resume_at": "2026-11-30T10:00:00+00:00", "steps": [step], "card": None}


def test_operation_card_and_thread_lines_escape_outside_text() -> None:
    op = hostile_op()
    card = operation_card.operation_card(op)
    mrkdwn, plain = texts(card)
    assert_inert(mrkdwn, "title", "server", "param", "note", "requester", "reason")
    assert_inert(card["text"], "org")
    assert hostile("org") in plain[0]  # header: plain_text, shown as typed
    confirm = next(e for b in card["blocks"] if b["type"] == "actions"
                   for e in b["elements"] if "confirm" in e)["confirm"]["text"]["text"]
    assert_inert(confirm, "title", "server")

    waiting = operation_card.operation_card({**op, "state": "waiting"})
    assert_inert(texts(waiting)[0], "waiting")

    failed = {"step": 0, "state": "failed", "detail": hostile("exchange")}
    line = operation_card.progress_line(op, failed)
    assert_inert(line, "title", "exchange")
    done = {"step": None, "state": "done", "detail": hostile("done")}
    line = operation_card.progress_line(op, done)
    assert_inert(line, "done")
    # our own mention still works
    card = operation_card.operation_card({**op, "requester": "U0ALICE"})
    assert "<@U0ALICE>" in "\n".join(texts(card)[0])


def test_commands_echo_what_was_typed_escaped() -> None:
    orgs = {hostile("org"): "C0OPS", "lab": "C0LAB"}
    for text in (hostile("word"), f"status {hostile('word')}", f"fix {hostile('word')}",
                 f"backend lab ex1 {hostile('word')}"):
        reply = command_text.interpret(text, "C0OPS", orgs)
        assert isinstance(reply, command_text.Reply), text
        mrkdwn = reply.text
        for token in RAW_TOKENS:
            assert token not in mrkdwn, (text, mrkdwn)
        assert "&amp;lt;" not in mrkdwn
    assert_inert(command_text.interpret("orgs", "C0OPS", orgs).text, "org")  # type: ignore[union-attr]
    # our own channel links still work
    assert "<#C0LAB>" in command_text.interpret("orgs", "C0OPS", orgs).text  # type: ignore[union-attr]


def test_warning_messages_escape_notice_text_and_org() -> None:
    notice = Notice(key="k", band=7, kind="new", severity="warning",
                    text=f":warning: *lab*: {hostile('notice')}")
    for message in (warning_notice.warning_message(hostile("org"), notice),
                    warning_notice.warning_message(hostile("org"), notice, fresh=True)):
        mrkdwn, _ = texts(message)
        assert_inert(mrkdwn, "notice", "org")
        assert "*lab*" in mrkdwn[1]  # our emphasis stays
    assert_inert(texts(warning_notice.resolved_message(notice))[0], "notice")


def test_operation_subcommand_answers_escape_outside_text(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, _ = bot()
    op_id, op, _ = open_card(env)
    handlers = operation_actions.Approvals(load_settings(), env.conn, None)  # type: ignore[arg-type]
    answer = operation_actions.resume(env.conn, handlers, handlers.settings, "U0ALICE", CHANNEL,
                              hostile("opid"))
    assert_inert(answer)  # clipped to 40 characters, so not the whole field
    assert answer.startswith("No operation `&lt;!channel&gt; &lt;@U0EVIL&gt;")

    def mutate(doc: dict[str, Any]) -> None:
        for step in doc["steps"]:
            step["title"] = hostile("title")

    operation.update(env.conn, op_id, mutate)
    org = handlers.settings.org(op["org"])
    assert_inert(operation_actions.ops(env.conn, org), "title")
    audit.record(env.conn, org=org.name, actor="U0EVE", action="approval.deny",
                 target=f"{op_id}/1", outcome="denied", detail={"reason": hostile("audit")})
    assert_inert(operation_actions.audit_text(env.conn, org), "audit")


def test_operation_job_failure_line_escapes_the_exchange_error(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, _ = bot()
    job = Job.create("workers.jobs.change_jobs.start_operation_job", connection=env.conn,
                     meta={"reply": {"channel": CHANNEL}, "what": "fix"})
    error = ExchangeFailed("ex1.contoso.lab", "New-ExchangeCertificate", hostile("exchange"))
    operation_progress.operation_job_failed(job, env.conn, ExchangeFailed, error, None)
    said = slack.wait_for("chat.postMessage")[-1].params["text"]
    assert_inert(said, "exchange")


# --- on the wire --------------------------------------------------------------------------


def deny(app: App, value: str, ts: str, reason: str) -> int:
    return dispatch(app, deny_submission(value, ts, reason))


def said_since(slack: SlackMock, start: int) -> list[str]:
    """Every mrkdwn text and fallback Slack was given after call number `start`."""
    out: list[str] = []
    for call in slack.calls[start:]:
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral",
                           "response"):
            out += texts(call.params)[0]
    return out


def test_hostile_deny_reason_reaches_slack_escaped(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    op_id, op, value = open_card(env)
    start = len(slack.calls)
    assert deny(app, value, op["card"]["ts"], hostile("reason")) == 200
    wait_until(lambda: (operation.load(env.conn, op_id) or {})["state"] == "cancelled")
    note = wait_until(lambda: [c for c in slack.calls_of("chat.postMessage")
                               if c.params.get("thread_ts") and "denied" in c.params["text"]])
    update = wait_until(lambda: slack.calls_of("chat.update"))[-1]
    assert_inert(note[0].params["text"], "reason")
    assert_inert(texts(update.params)[0], "reason")  # the card says why, escaped
    assert_inert(said_since(slack, start), "reason")
    assert f"<@{GROUP_MEMBER}>" in note[0].params["text"]  # our mention still works


def test_hostile_exchange_error_of_a_step_reaches_the_thread_escaped(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    env, app = bot()
    _, op, value = open_card(env)
    step = op["steps"][json.loads(value)["step"]]
    control(env.handle, "POST", "faults", {
        "server": step["server"].split(".")[0], "endpoint": "any", "kind": "error",
        "cmdlet": step["cmdlet"], "message": hostile("exchange")})
    start = len(slack.calls)
    assert click(app, GROUP_MEMBER, operation_card.APPROVE_ACTION, value) == 200
    changes = queue(CHANGE_QUEUE, env.conn)
    wait_until(lambda: changes.count == 1)
    SimpleWorker([changes], connection=env.conn, serializer=SERIALIZER).work(burst=True)
    said = said_since(slack, start)
    assert any("exchange" in text for text in said), said
    assert_inert(said, "exchange")


def test_hostile_operation_id_typed_in_resume_is_echoed_escaped(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    _, app = bot()
    assert slash(app, slack, "resume " + hostile("opid").replace(" ", "")) == 200
    reply = wait_until(lambda: slack.calls_of("response"))[0]
    said = "\n".join(texts(reply.params)[0])
    assert "No operation `&lt;!channel&gt;&lt;@U0EVIL&gt;" in said
    assert_inert(said)


@pytest.fixture()
def failing_stack(stack_for: Callable[..., Stack]) -> Iterator[Stack]:
    stack = stack_for("healthy")
    faults = [{"server": server["name"], "endpoint": "any", "kind": "error",
               "cmdlet": "Get-AuthConfig", "message": hostile("exchange")}
              for server in stack.lab.info["servers"]]
    assert control(stack.lab, "POST", "faults", faults)["added"] == len(faults)
    yield stack


def test_hostile_exchange_error_fails_a_status_job_escaped(failing_stack: Stack) -> None:
    stack = failing_stack
    assert stack.command("status").status_code == 200
    stack.enqueued()
    stack.work()
    update = stack.updates()[-1]
    assert update.params["text"].startswith("Could not check lab: ")
    assert_inert(texts(update.params)[0], "exchange")
    assert_inert(update.params["text"], "exchange")

