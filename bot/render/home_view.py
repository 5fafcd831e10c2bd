"""The app's Home tab (Block Kit `home` view), built from each org's last stored check.

Pure: `OrgCard`s in, a view dict out (bot.home gathers the cards from Redis). A Home view
takes at most 100 blocks; an org takes at most 5 (header line, facts, operations, last
check, buttons) plus a divider, so MAX_ORGS orgs fit with room for the head and the foot.
Outside text (org and server names, errors) is escaped for mrkdwn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.render.messages import PROBLEM_TEXT, STATE_LABEL, escape

CHECK_NOW_ACTION = "home_check_now"
OPEN_PLAN_ACTION = "home_open_plan"
MAX_ORGS = 15
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 3000
MAX_BACKEND_LINES = 8
MAX_OPERATION_LINES = 5


@dataclass(frozen=True)
class OperationLine:
    op_id: str
    kind: str
    state: str
    waiting_for: str  # the next step's title, or ""
    link: str  # the card's permalink, or ""


@dataclass(frozen=True)
class OrgCard:
    """What the Home tab says about one org (from its stored status, never Exchange)."""

    org: str
    channel: str
    state: str  # ok | warning | critical | unknown | never (not checked yet)
    current_days: int | None
    next_days: int | None
    next_effective: datetime | None
    backend_problems: list[tuple[str, str]]  # (server, problem)
    operations: list[OperationLine]
    checked_at: datetime | None  # last good check
    attempted_at: datetime | None
    last_ok: bool
    last_error: str
    checking: bool = False  # a "Check now" from this user is on its way
    notes: list[str] = field(default_factory=list)


def home_view(cards: Sequence[OrgCard], *, now: datetime) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Exchange certificates"}},
        _context("The orgs you approve or operate, or whose channel you are in; from each "
                 "org's last check (`/exauth status` or *Check now* reads it again)."),
        {"type": "divider"},
    ]
    if not cards:
        blocks.append(_section("No org to show: you are not an approver or operator of any "
                               "org, nor in any org's channel."))
    for card in cards[:MAX_ORGS]:
        blocks += org_blocks(card, now=now)
        blocks.append({"type": "divider"})
    if len(cards) > MAX_ORGS:
        blocks.append(_context(f"{len(cards) - MAX_ORGS} more org(s) not shown: use "
                               "`/exauth status <org>` in their channel."))
    return {"type": "home", "blocks": blocks[:MAX_VIEW_BLOCKS]}


def org_blocks(card: OrgCard, *, now: datetime) -> list[dict[str, Any]]:
    icon, label = STATE_LABEL.get(card.state, (":hourglass:", "NOT CHECKED YET"))
    channel = f"  <#{card.channel}>" if card.channel else ""
    blocks = [_section(f"*{escape(card.org)}*  {icon} {label}{channel}")]
    facts = [f"*Current:* {_days(card.current_days)}", f"*Next:* {_next(card, now)}"]
    if card.backend_problems:
        lines = [f"`{escape(server)}` {escape(PROBLEM_TEXT.get(problem, problem))}"
                 for server, problem in card.backend_problems[:MAX_BACKEND_LINES]]
        more = len(card.backend_problems) - MAX_BACKEND_LINES
        if more > 0:
            lines.append(f"and {more} more")
        facts.append("*Back end:* " + "; ".join(lines))
    elif card.state != "never":
        facts.append("*Back end:* no problem")
    blocks.append(_section("\n".join(facts)))
    if card.operations:
        lines = [_operation(op) for op in card.operations[:MAX_OPERATION_LINES]]
        blocks.append(_section("*Open operations:*\n" + "\n".join(lines)))
    blocks.append(_context(_last_check(card, now)))
    blocks.append({"type": "actions", "block_id": f"home:{card.org}"[:255], "elements": [
        _button("Check now", CHECK_NOW_ACTION, card.org, primary=True),
        _button("Open the plan", OPEN_PLAN_ACTION, card.org),
    ]})
    return blocks


def _operation(op: OperationLine) -> str:
    what = f"`{escape(op.op_id)}` {escape(op.kind)} ({escape(op.state)})"
    if op.waiting_for:
        what += f", next: {escape(op.waiting_for)}"
    return f"• <{op.link}|{what}>" if op.link else f"• {what}"


def _last_check(card: OrgCard, now: datetime) -> str:
    if card.checking:
        head = ":hourglass_flowing_sand: Checking now..."
    elif card.attempted_at is None:
        head = "Never checked here yet."
    elif card.last_ok:
        head = f"Last check {_ago(card.attempted_at, now)}."
    else:
        good = (f" Last good check {_ago(card.checked_at, now)}." if card.checked_at
                else " No good check yet.")
        head = (f":x: Last check {_ago(card.attempted_at, now)} failed: "
                f"{escape(card.last_error[:300])}.{good}")
    return " ".join([head, *card.notes])[:MAX_TEXT]


def _next(card: OrgCard, now: datetime) -> str:
    if card.next_days is None:
        return "none staged"
    text = _days(card.next_days)
    if card.next_effective is not None:
        verb = "effective" if card.next_effective > now else "was due"
        text += f", {verb} {card.next_effective:%Y-%m-%d %H:%M} UTC"
    return text


def _days(days: int | None) -> str:
    if days is None:
        return "not set"
    if days < 0:
        return f"*expired* {-days} day(s) ago"
    return f"{days} day(s) left"


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 90:
        span = "just now"
    elif seconds < 5400:
        span = f"{seconds // 60} min ago"
    elif seconds < 2 * 86400:
        span = f"{seconds // 3600} h ago"
    else:
        span = f"{seconds // 86400} days ago"
    return f"{span} ({when:%Y-%m-%d %H:%M} UTC)"


def _button(text: str, action: str, org: str, *, primary: bool = False) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action, "value": org[:2000],
                              "text": {"type": "plain_text", "text": text}}
    if primary:
        button["style"] = "primary"
    return button


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:MAX_TEXT]}]}


# --- the plan, opened from the Home tab in a modal ----------------------------------------

PLAN_VIEW = "exauth_home_plan"
MAX_MODAL_BLOCKS = 100


def plan_modal(org: str, blocks: Sequence[dict[str, Any]] | None = None, *,
               text: str = "") -> dict[str, Any]:
    """The plan modal: `blocks` of the plan (bot.render.messages.plan_message), or one line
    (`text`: reading..., refused, failed)."""
    body = list(blocks or [])[:MAX_MODAL_BLOCKS] or [_section(text or "...")]
    return {"type": "modal", "callback_id": PLAN_VIEW,
            "title": {"type": "plain_text", "text": "exauth plan"},
            "close": {"type": "plain_text", "text": "Close"},
            "private_metadata": org[:3000],
            "blocks": body}


def plan_reading(org: str) -> dict[str, Any]:
    return plan_modal(org, text=f":hourglass_flowing_sand: Reading *{escape(org)}* and "
                                "working out the plan (nothing is changed)...")
