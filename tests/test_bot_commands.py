"""`/exauth` parsing and routing: what each text typed in each channel leads to."""

from __future__ import annotations

import pytest

from bot.listeners.command_text import USAGE, Reply, RunJob, RunOp, decode, interpret

ORGS = {"contoso": "C0CONTOSO", "fabrikam": "C0FABRIKAM"}
SHARED = {"contoso": "C0SHARED", "fabrikam": "C0SHARED"}


@pytest.mark.parametrize(
    ("text", "channel", "expected"),
    [
        ("status", "C0CONTOSO", RunJob("status", "contoso")),
        ("", "C0CONTOSO", Reply(USAGE)),
        ("help", "C0NOBODY", Reply(USAGE)),
        ("  STATUS  ", "C0CONTOSO", RunJob("status", "contoso")),
        ("plan", "C0FABRIKAM", RunJob("plan", "fabrikam")),
        ("status contoso", "C0CONTOSO", RunJob("status", "contoso")),
        ("status Contoso", "C0CONTOSO", RunJob("status", "contoso")),
        ("plan fabrikam", "C0FABRIKAM", RunJob("plan", "fabrikam")),
        ("status contoso", "C0SHARED", None),
    ],
    ids=["status-default-org", "empty-is-help", "help-anywhere", "case-and-spaces",
         "plan-default-org", "status-named", "org-case-insensitive", "plan-named",
         "named-org-in-unowned-channel"],
)
def test_routes(text: str, channel: str, expected: object) -> None:
    decision = interpret(text, channel, ORGS)
    if expected is None:
        assert isinstance(decision, Reply)
        assert "<#C0CONTOSO>" in decision.text and "Usage" in decision.text
    else:
        assert decision == expected


@pytest.mark.parametrize(
    ("text", "channel", "fragments"),
    [
        ("reboot", "C0CONTOSO", ["Unknown subcommand `reboot`", "Usage"]),
        ("status nowhere", "C0CONTOSO", ["Unknown org `nowhere`", "contoso, fabrikam", "Usage"]),
        ("status", "C0NOBODY", ["No org is configured for this channel", "Usage"]),
        ("plan", "C0NOBODY", ["No org is configured for this channel", "<#C0FABRIKAM>"]),
        ("status fabrikam", "C0CONTOSO", ["`fabrikam` is managed in <#C0FABRIKAM>"]),
        ("status contoso extra", "C0CONTOSO", ["at most one org name", "Usage"]),
        ("`rm -rf`", "C0CONTOSO", ["Unknown subcommand `'rm`"]),
    ],
    ids=["unknown-subcommand", "unknown-org", "unowned-channel-status",
         "unowned-channel-plan", "other-orgs-channel", "too-many-args", "backticks-escaped"],
)
def test_replies(text: str, channel: str, fragments: list[str]) -> None:
    decision = interpret(text, channel, ORGS)
    assert isinstance(decision, Reply)
    for fragment in fragments:
        assert fragment in decision.text


def test_orgs_lists_every_org_and_marks_this_channel() -> None:
    decision = interpret("orgs", "C0FABRIKAM", ORGS)
    assert isinstance(decision, Reply)
    lines = decision.text.splitlines()
    assert "- `contoso` in <#C0CONTOSO>" in lines
    assert "- `fabrikam` in <#C0FABRIKAM> (this channel)" in lines


def test_shared_channel_needs_an_org_name() -> None:
    decision = interpret("status", "C0SHARED", SHARED)
    assert isinstance(decision, Reply)
    assert "several orgs (contoso, fabrikam)" in decision.text
    assert interpret("status fabrikam", "C0SHARED", SHARED) == RunJob("status", "fabrikam")


def test_no_orgs_configured() -> None:
    assert interpret("orgs", "C1", {}) == Reply("No org is configured.")
    decision = interpret("status", "C1", {})
    assert isinstance(decision, Reply) and "No org is configured at all" in decision.text


def test_long_unknown_words_are_clipped() -> None:
    decision = interpret("x" * 500, "C0CONTOSO", ORGS)
    assert isinstance(decision, Reply)
    assert len(decision.text) < len(USAGE) + 100


@pytest.mark.parametrize(
    ("text", "channel", "expected"),
    [
        ("fix", "C0CONTOSO", RunOp("fix", "contoso")),
        ("fix override", "C0CONTOSO", RunOp("fix", "contoso", ("override",))),
        ("fix contoso override", "C0CONTOSO", RunOp("fix", "contoso", ("override",))),
        ("rotate", "C0FABRIKAM", RunOp("rotate", "fabrikam")),
        ("backend", "C0CONTOSO", RunOp("backend", "contoso")),
        ("backend ex2.contoso.com", "C0CONTOSO", RunOp("backend", "contoso",
                                                        ("ex2.contoso.com",))),
        ("backend contoso ex2", "C0CONTOSO", RunOp("backend", "contoso", ("ex2",))),
        ("ops", "C0CONTOSO", RunOp("ops", "contoso")),
        ("audit fabrikam", "C0FABRIKAM", RunOp("audit", "fabrikam")),
        ("resume op-123", "C0NOBODY", RunOp("resume", "", ("op-123",))),
    ],
    ids=["fix", "fix-override", "fix-named-override", "rotate", "backend-all",
         "backend-server", "backend-named-server", "ops", "audit-named", "resume-anywhere"],
)
def test_operation_subcommands(text: str, channel: str, expected: RunOp) -> None:
    assert interpret(text, channel, ORGS) == expected


@pytest.mark.parametrize(
    ("text", "channel", "fragment"),
    [
        ("fix nonsense", "C0CONTOSO", "Unknown org `nonsense`"),
        ("rotate contoso now", "C0CONTOSO", "does not take `now`"),
        ("backend contoso ex1 ex2", "C0CONTOSO", "does not take `ex2`"),
        ("resume", "C0CONTOSO", "operation id"),
        ("fix", "C0NOBODY", "No org is configured for this channel"),
        ("rotate fabrikam", "C0CONTOSO", "<#C0FABRIKAM>"),
    ],
    ids=["unknown-org", "extra-word", "two-servers", "resume-needs-id", "unowned-channel",
         "other-orgs-channel"],
)
def test_operation_subcommand_errors(text: str, channel: str, fragment: str) -> None:
    decision = interpret(text, channel, ORGS)
    assert isinstance(decision, Reply)
    assert fragment in decision.text


def test_slack_encoded_text_is_decoded_once_and_escaped_once_when_shown_back() -> None:
    # Slack sends `/exauth status <b>&` as "status &lt;b&gt;&amp;"
    reply = interpret("status &lt;b&gt;&amp;", "C1", {"contoso": "C1"})
    assert isinstance(reply, Reply)
    assert "&lt;b&gt;&amp;" in reply.text
    assert "&amp;lt;" not in reply.text and "&amp;amp;" not in reply.text
    # a name typed with an encoded character is looked up as typed
    assert interpret("status a&amp;b", "C2", {"a&b": "C2"}) == RunJob("status", "a&b")
    # an entity the user typed literally arrives as "&amp;lt;" and stays literal text
    assert decode("&amp;lt;") == "&lt;"
