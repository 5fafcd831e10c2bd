"""The operation card: one Slack message per operation, updated as it goes.

It shows the plan (every step with its state), the next state-changing step with its exact
cmdlet and parameters (every command of the batch its approval covers), who asked, when the
approval expires, and the Approve (with a confirm dialog) / Deny (opens a modal asking for a
reason) buttons. When an operator overrode "blocked", a bold banner says so first.

Only the operation document is rendered: it holds no secrets (a password is a
`<secret:NAME>` reference, shown as a Read-Host prompt), so neither can the card.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from bot.render.messages import escape
from workers.changes import interruption
from workers.changes.change_states import OperationState, StepState
from workers.changes.execute import WORLD_CHANGED
from workers.changes.lifecycle import command
from workers.changes.operation import Operation, Step

APPROVE_ACTION = "exauth_approve"
DENY_ACTION = "exauth_deny"
DENY_VIEW = "exauth_deny_modal"
REASON_BLOCK = "reason"
REASON_ACTION = "reason_input"
MAX_SECTION = 2900  # Slack allows 3000 characters per section text
MAX_HEADER = 150
SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")  # a Slack user ID; breakglass users are local:NAME

STATE_MARKS = {
    "pending": ":white_circle:",
    "awaiting_approval": ":raised_hand:",
    "approved": ":large_blue_circle:",
    "running": ":hourglass_flowing_sand:",
    "done": ":white_check_mark:",
    "failed": ":x:",
    "skipped": ":heavy_minus_sign:",
    "interrupted": ":warning:",  # an event (workers.jobs.interruption_notice), not a state
}
DENIED_MARK = ":no_entry:"
INTERRUPTED_MARK = ":warning:"
OP_STATES = {
    "open": "open",
    "waiting": "waiting",
    "done": "done :white_check_mark:",
    "failed": "failed :x:",
    "cancelled": "cancelled",
    "blocked": "blocked :no_entry_sign:",
    "superseded": "superseded :leftwards_arrow_with_hook:",
}


def button_value(op: Operation | dict[str, Any], index: int) -> str:
    op = Operation.of(op)
    return json.dumps({"op": op.id, "step": index, "req": op.steps[index].request_id},
                      separators=(",", ":"))


def parse_value(value: str) -> tuple[str, int, str | None]:
    """(op id, step, request id) from a button value; ValueError when it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("op"), str) or not isinstance(
            data.get("step"), int) or isinstance(data.get("step"), bool):
        raise ValueError("not an exauth button")
    req = data.get("req")
    return data["op"], data["step"], req if isinstance(req, str) else None


def operation_card(op: Operation | dict[str, Any], rehearsed: str | None = None
                   ) -> dict[str, Any]:
    """{"text", "blocks"} for chat.postMessage / chat.update; `rehearsed` is the line of
    the org's last rehearsal of this kind of change ("rehearsed <when>: ok"), if any."""
    op = Operation.of(op)
    denied = denied_step(op) if op.state == OperationState.CANCELLED else None
    state = f"denied {DENIED_MARK}" if denied else OP_STATES.get(op.state, str(op.state))
    interrupted = interruption.describe(op)
    if interrupted:
        state = f"{interrupted} {INTERRUPTED_MARK}"
    title = f"exauth {op.kind} on {op.org}: {state}"  # plain_text: shown as is
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, MAX_HEADER)}},
    ]
    if denied:
        # A header is plain_text, where Slack shows <@U…> as typed: the mention goes here.
        who, why = _denial(denied)
        blocks.append(_section(f"{DENIED_MARK} *Denied by {who}:* {_clip(why, 2000)}\n"
                               f"Step {denied.index + 1} was not run; the operation "
                               "is cancelled."))
    halted = getattr(op, "halted", None)
    if isinstance(halted, dict):
        label = f"{str(halted['outcome']).capitalize()} at step {int(halted['step']) + 1}"
        text = f":no_entry_sign: *{label}:* {_clip(escape(str(halted['why'])), 1500)}"
        if halted.get("recommended"):
            text += f"\n*Recommended now:* {_clip(escape(str(halted['recommended'])), 1000)}"
        text += ("\n`/exauth resume " + op.id + "` carries it on once every server answers "
                 "(Exchange is read again and the step asked for again)."
                 if op.state == OperationState.BLOCKED else "")
        blocks.append(_section(text))
    if interrupted:
        blocks.append(_section(
            f"{INTERRUPTED_MARK} *{interrupted.capitalize()}:* the worker running it stopped "
            f"before it finished. `/exauth resume {op.id}` carries on: Exchange is read "
            "again, what the step did is adopted, and it is asked for again only if it did "
            "nothing."))
    if op.override:
        blocks.append(_section(
            "*:warning: OPERATOR OVERRIDE: the status was BLOCKED (a server could not be "
            "asked). This operation was started anyway by an operator's explicit override; "
            "changes may not reach the unreachable servers.*"))
    blocks.append(_section(
        f"*Operation* `{op.id}` requested by {mention(op.requester)}\n"
        f"{_clip(escape(op.reason or ''), 1500)}"))
    if rehearsed:
        icon = ":performing_arts:" if rehearsed.endswith(": ok") else ":warning:"
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _clip(f"{icon} {escape(rehearsed)}", 2000)}]})
    blocks.append(_section("*Plan*\n" + _plan(op)))
    failed = next((s for s in op.steps if s.state == StepState.FAILED), None)
    if failed is not None and op.state == OperationState.FAILED:
        # Why it ended, on the card itself (e.g. Graph's own reason for a 403).
        blocks.append(_section(
            f":x: *Step {failed.index + 1} failed:* {escape(failed.title)}\n"
            f"{_clip(escape(failed.outcome or ''), 1500)}"))
    index = op.next_index()
    step = op.steps[index] if index is not None else None
    if op.state == OperationState.WAITING:
        blocks.append(_section(f"*Waiting* until {_when(op.resume_at)}: "
                               f"{_clip(escape(op.waiting_for or ''), 1500)}"))
    if (step is not None and step.state == StepState.AWAITING_APPROVAL
            and op.state == OperationState.OPEN):
        members = step.batch or [index]
        commands = "\n".join(escape(command(op, op.steps[i])) for i in members)
        blocks.append(_section(
            f"*Next state-changing step needs approval:* {escape(step.title)}"
            + (f" (and {len(members) - 1} more of the same)" if len(members) > 1 else "")
            + f"\n```{_clip(commands, 2400)}```"))
        where = (f"runs against Microsoft Graph (certificate read from "
                 f"{escape(step.server)})" if step.endpoint == "graph" else
                 f"runs on {escape(step.server)} ({step.endpoint} endpoint)")
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"Requested by {mention(op.requester)} · approval expires "
            f"{_when(step.expires_at)} · {where}")}]})
        if step.note:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": _clip(escape(step.note), 2000)}]})
        blocks.append(_buttons(op, int(index)))  # type: ignore[arg-type]
    if denied:
        who, why = _denial(denied)
        state = f"denied by {who}: {why}"
    text = f"exauth {op.kind} on {escape(op.org)}: {state} ({op.id})"
    return {"text": _clip(text, MAX_SECTION), "blocks": blocks}


def denied_step(op: Operation | dict[str, Any]) -> Step | None:
    """The step a Deny stopped (workers.changes.lifecycle.deny records who and why on it)."""
    for step in Operation.of(op).steps:
        if isinstance(step.denied, dict):
            return step
    return None


def _buttons(op: Operation, index: int) -> dict[str, Any]:
    step = op.steps[index]
    value = button_value(op, index)
    return {
        "type": "actions",
        "block_id": f"exauth_op_{op.id}_{index}",
        "elements": [
            {
                "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"}, "value": value,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Run this step?"},
                    "text": {"type": "mrkdwn", "text": _clip(
                        f"{escape(step.title)} on {escape(step.server)}. Exchange will "
                        "be re-read first; the step is refused if anything changed.", 300)},
                    "confirm": {"type": "plain_text", "text": "Approve and run"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
            {
                "type": "button", "action_id": DENY_ACTION, "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"}, "value": value,
            },
        ],
    }


def deny_modal(value: str, channel: str, ts: str) -> dict[str, Any]:
    """The modal a Deny click opens: the reason is required."""
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": json.dumps({"value": value, "channel": channel, "ts": ts}),
        "title": {"type": "plain_text", "text": "Deny this step"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK,
            "label": {"type": "plain_text",
                      "text": "Why? (shown in the channel and the audit log)"},
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION,
                        "multiline": True, "max_length": 500},
        }],
    }


def progress_line(op: Operation | dict[str, Any], event: dict[str, Any]) -> str:
    """One thread message for one event of a job."""
    index = event.get("step")
    state = str(event.get("state"))
    mark = STATE_MARKS.get(state, ":information_source:")
    raw = str(event.get("detail") or "")
    detail = _clip(escape(raw), 1500)
    op = Operation.of(op)
    if index is None:
        return f"{mark} operation `{op.id}`: {state}. {detail}"
    step = op.steps[int(index)]
    line = f"{mark} step {int(index) + 1} *{escape(step.title)}*: {state}. {detail}"
    if WORLD_CHANGED in raw:
        line += "\nA new plan is needed: run `/exauth plan` to see it, then `/exauth fix`."
    return line


def _plan(op: Operation) -> str:
    lines = []
    for step in op.steps:
        mark = STATE_MARKS.get(step.state, "")
        change = "" if step.changes_state else " _(read-only)_"
        line = f"{mark} {int(step.index) + 1}. {escape(step.title)}{change}"
        if isinstance(step.denied, dict):
            who, why = _denial(step)
            line = (f"{DENIED_MARK} {int(step.index) + 1}. {escape(step.title)} - "
                    f"*Denied by {who}:* {_clip(why, 600)}")
        lines.append(line)
    text = "\n".join(lines)
    return _clip(text, MAX_SECTION - 10)


def _denial(step: Step) -> tuple[str, str]:
    """Who denied a step (a mention) and why (escaped), as mrkdwn."""
    denied = step.denied or {}
    return mention(str(denied.get("by") or "?")), escape(str(denied.get("reason") or ""))


def mention(user: str) -> str:
    """A Slack user ID becomes a mention; anyone else (a local break-glass user) is text."""
    return f"<@{user}>" if SLACK_USER.fullmatch(user) else escape(user)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION)}}


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{iso}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
