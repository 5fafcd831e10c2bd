"""Block Kit views: content people need, within every limit Slack enforces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.render import messages
from tests.slack_mock import block_problem
from workers.status.report_model import Overall, parse_status

CURRENT = "A1" * 20
NEXT = "B2" * 20
PREVIOUS = "C3" * 20


def _cert(thumb: str, days: int, present: list[str], missing: list[str] | None = None,
          unknown: list[str] | None = None, sig: str = "sha256") -> dict[str, Any]:
    return {"thumbprint": thumb, "subject": "CN=Microsoft Exchange Server Auth Certificate",
            "not_before": "2022-01-01T00:00:00+00:00", "not_after": "2027-01-01T00:00:00+00:00",
            "days_left": days, "signature_hash": sig, "key_size": 2048,
            "present_on": present, "missing_on": missing or [], "unknown_on": unknown or []}


def make_status(servers: int, *, bad_backend: int = 0, unreachable: int = 0,
                findings_per_server: int = 0) -> dict[str, Any]:
    """A status dict shaped like DESIGN.md's, with `servers` servers over two sites."""
    fqdns = [f"ex{i:02d}.contoso.com" for i in range(1, servers + 1)]
    down = set(fqdns[:unreachable])
    up = [f for f in fqdns if f not in down]
    status: dict[str, Any] = {
        "org": "contoso",
        "checked_at": "2026-11-22T08:00:00+00:00",
        "hybrid": True,
        "sites": ["Berlin", "Paris"],
        "servers": [{"name": f.split(".")[0].upper(), "fqdn": f,
                     "site": "Berlin" if i % 2 else "Paris",
                     "version": "Version 15.2 (Build 1544.4)",
                     "roles": ["Mailbox"], "reachable": f not in down,
                     "error": "ex: WinRM connection refused <tcp/5985>" if f in down else None}
                    for i, f in enumerate(fqdns)],
        "auth": {
            "current": _cert(CURRENT, 12, up[1:], missing=up[:1], unknown=sorted(down)),
            "next": {**_cert(NEXT, 1800, up), "effective": "2026-12-22T08:00:00+00:00"},
            "previous": _cert(PREVIOUS, -300, [], sig="sha1"),
        },
        "backend": [],
        "findings": [
            {"code": "AUTH_CURRENT_EXPIRING", "severity": "critical", "server": None,
             "message": "The Auth Certificate expires in 12 days <soon> & then OWA breaks"},
            {"code": "AUTH_CURRENT_MISSING_ON_SERVER", "severity": "warning",
             "server": up[0], "message": "not in the store"},
        ],
        "actions": [
            {"kind": "import_current", "servers": up[:1], "reason": "current cert missing"},
            {"kind": "wait_for_publish", "servers": [], "reason": "next publishes on 2026-12-22"},
        ],
    }
    for i, fqdn in enumerate(fqdns):
        if fqdn in down:
            row = {"server": fqdn, "thumbprint": None, "not_after": None, "days_left": None,
                   "problem": "unknown"}
        elif i < unreachable + bad_backend:
            row = {"server": fqdn, "thumbprint": None, "not_after": None, "days_left": None,
                   "problem": "no_certificate"}
        else:
            row = {"server": fqdn, "thumbprint": f"{i:040X}", "not_after": "2029-05-01T00:00:00Z",
                   "days_left": 900 + i, "problem": None}
        status["backend"].append(row)
        for n in range(findings_per_server):
            status["findings"].append({"code": "BACKEND_EXPIRING", "severity": "warning",
                                       "server": fqdn, "message": f"finding {n} " + "x" * 200})
    return status


def render(status: dict[str, Any], state: str) -> dict[str, Any]:
    """The report of a hand-built status document, read by the model as the callback does."""
    return messages.status_message(parse_status(status), Overall(state))


def all_texts(message: dict[str, Any]) -> list[str]:
    texts = []
    for block in message["blocks"]:
        if isinstance(block.get("text"), dict):
            texts.append(block["text"]["text"])
        for element in block.get("elements") or []:
            texts.append(element["text"])
    return texts


def assert_valid(message: dict[str, Any]) -> None:
    assert message["text"], "fallback text must be set"
    assert len(message["blocks"]) <= messages.MAX_BLOCKS
    assert block_problem({"blocks": message["blocks"]}) is None
    for block in message["blocks"]:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
            assert block["text"]["type"] == "plain_text"
    json.dumps(message)  # JSON-able, as chat.update needs


def test_small_org_report_has_every_part() -> None:
    status = make_status(3, bad_backend=1)
    message = render(status, "critical")
    assert_valid(message)
    header = message["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":red_circle: contoso: CRITICAL"
    body = "\n".join(all_texts(message))
    # current / next / previous with thumbprint, expiry, days left, servers missing it
    assert f"*Current:* `{CURRENT}` · expires 2027-01-01 (*12 days left*) · sha256 2048 bit\n" \
        in body
    assert "missing on `EX01`" in body
    assert f"*Next:* `{NEXT}`" in body and "effective 2026-12-22 08:00 UTC" in body
    assert f"*Previous:* `{PREVIOUS}`" in body \
        and "*expired* 2027-01-01 (*299 days ago*)" in body
    # back end per server: the broken one named, the good ones listed
    assert ":x: `EX01` binding has no certificate" in body
    assert ":white_check_mark: `EX02`" in body and ":white_check_mark: `EX03`" in body
    # findings with severity, escaped for mrkdwn
    assert (":red_circle: *AUTH_CURRENT_EXPIRING*: The Auth Certificate expires in 12 days "
            "&lt;soon&gt; &amp; then OWA breaks") in body
    assert ":warning: *AUTH_CURRENT_MISSING_ON_SERVER* [`EX01`]" in body
    # actions in order, then the footer with checked_at
    assert body.index("1. *import_current* on `EX01`") < body.index("2. *wait_for_publish*")
    assert "Checked at 2026-11-22T08:00:00+00:00" in all_texts(message)[-1]
    assert "hybrid" in body
    assert message["text"].startswith("exauth contoso: CRITICAL - 2 findings (1 critical, "
                                      "1 warning); recommended: import_current")


@pytest.mark.parametrize(("state", "icon"), [("ok", ":white_check_mark:"),
                                             ("warning", ":warning:"),
                                             ("unknown", ":grey_question:")])
def test_header_shows_overall_state(state: str, icon: str) -> None:
    message = render(make_status(2), state)
    assert message["blocks"][0]["text"]["text"].startswith(icon)


def test_sixty_server_org_is_summarised_within_limits() -> None:
    status = make_status(60, bad_backend=3, unreachable=2, findings_per_server=1)
    message = render(status, "critical")
    assert_valid(message)
    body = "\n".join(all_texts(message))
    # problems are each named, fine servers counted
    assert ":x: `EX01` unreachable: ex: WinRM connection refused &lt;tcp/5985&gt;" in body
    assert ":x: `EX05` binding has no certificate" in body
    assert "55 more servers fine" in body
    assert ":white_check_mark: `EX30`" not in body
    # findings capped with a count of the rest
    assert "… and 32 more findings (32 warning)" in body
    # the unknown_on list of the current cert is shortened too
    assert "not checked on `EX01`, `EX02`" in body


def test_huge_org_still_fits() -> None:
    status = make_status(400, bad_backend=200, unreachable=50, findings_per_server=3)
    status["actions"] = [{"kind": "repair_backend", "servers": [s["fqdn"] for s in
                                                                  status["servers"]],
                          "reason": "r" * 5000}] * 60
    message = render(status, "critical")
    assert_valid(message)
    assert "more servers with problems" in "\n".join(all_texts(message))


def test_long_org_name_header_is_clipped() -> None:
    status = make_status(1)
    status["org"] = "o" * 400
    message = render(status, "ok")
    assert_valid(message)
    assert message["blocks"][0]["text"]["text"].endswith("…")


def test_empty_status_does_not_break() -> None:
    message = render({"org": "lab", "checked_at": "2026-11-22T08:00:00Z", "hybrid": False,
                      "sites": [], "servers": [], "backend": [], "findings": [], "actions": [],
                      "auth": {"current": None, "next": None, "previous": None}}, "unknown")
    assert_valid(message)
    assert "*Current:* not set" in "\n".join(all_texts(message))
    assert "nothing to do" in "\n".join(all_texts(message))


def test_failure_is_one_line_never_a_traceback() -> None:
    reason = ("ex1.contoso.com: authentication failed (HTTP 401)\nTraceback (most recent call "
              "last):\n  File \"x.py\", line 1")
    message = messages.failure_message("contoso", "status", reason)
    assert_valid(message)
    assert message["text"] == ("Could not check contoso: ex1.contoso.com: authentication "
                               "failed (HTTP 401)")
    assert "Traceback" not in json.dumps(message)


def test_retrying_says_when() -> None:
    message = messages.retrying_message("contoso", "status", "network error: refused", 1, 5)
    assert_valid(message)
    assert message["text"] == ("Checking contoso... attempt 1 failed (network error: refused); "
                               "retrying in 5 s.")


def test_placeholder() -> None:
    message = messages.placeholder_message("contoso", "status")
    assert_valid(message)
    assert message["text"] == "Checking contoso..."


def test_plan_message_lists_steps_with_commands() -> None:
    document = {"org": "contoso", "checked_at": "2026-11-22T08:00:00+00:00", "actions": [
        {"kind": "stage_new", "servers": [], "reason": "current expires in 40 days", "steps": [
            {"title": "Create the new Auth Certificate", "server": "ex1.contoso.com",
             "endpoint": "exchange", "changes_state": True,
             "command": "New-ExchangeCertificate -Server 'ex1.contoso.com' -KeySize 2048",
             "note": ""},
            {"title": "Re-read AuthConfig", "server": "ex1.contoso.com", "endpoint": "exchange",
             "changes_state": False, "command": "Get-AuthConfig", "note": "idempotency <check>"},
        ]}]}
    message = messages.plan_message(document)
    assert_valid(message)
    body = "\n".join(all_texts(message))
    assert "1. [:lock: approval] Create the new Auth Certificate" in body
    assert "`New-ExchangeCertificate -Server 'ex1.contoso.com' -KeySize 2048`" in body
    assert "2. [read-only] Re-read AuthConfig" in body
    assert "_idempotency &lt;check&gt;_" in body
    assert message["text"] == "exauth plan contoso: stage_new"


def test_plan_with_many_steps_fits() -> None:
    step = {"title": "t" * 300, "server": "ex.contoso.com", "endpoint": "host",
            "changes_state": True, "command": "Restart-WebAppPool " + "x" * 3000, "note": "n"}
    document = {"org": "contoso", "checked_at": "?", "actions": [
        {"kind": "repair_backend", "servers": ["ex.contoso.com"], "reason": "r", "steps":
         [step] * 40}] * 20}
    assert_valid(messages.plan_message(document))


def test_section_packing_never_splits_lines() -> None:
    lines = [f"line {i} " + "y" * 290 for i in range(40)]
    blocks = messages._sections(lines)
    joined = "\n".join(b["text"]["text"] for b in blocks).splitlines()
    assert joined == lines
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert len(blocks) == 4  # 10 lines of ~298 chars per 3000-char section
