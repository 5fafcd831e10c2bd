"""A warning as a Slack message: its text, the Fix and Snooze buttons, and its later forms.

Pure: the sweep's callback (bot.callbacks.warning_posts) posts these and the buttons'
listener (bot.listeners.warning_buttons) rewrites them, so both agree on the action ids
and on what a snoozed or resolved warning looks like.
"""

from __future__ import annotations

import json
from typing import Any

from bot.render.messages import escape
from workers.warnings.rules import EMOJI, Notice

FIX_ACTION = "exauth_warning_fix"

SNOOZE_ACTION = "exauth_warning_snooze"

MAX_TEXT = 2900



def warning_message(org: str, notice: Notice, *, fresh: bool = False) -> dict[str, Any]:
    """A warning with its two buttons (values carry org + warning key, nothing secret).

    A notice's text is mrkdwn emphasis (`*`, backticks) around outside values (names,
    Exchange's words) and never carries a Slack `<...>` token (workers.warnings.rules writes
    none), so it enters the message escaped as one piece."""
    text = notice.text
    if fresh:
        text = f"{EMOJI.get(notice.severity, '')} {strip_prefix(notice.text)}"
    text = escape(text)
    value = json.dumps({"org": org, "key": notice.key}, separators=(",", ":"))
    band = "expired / last band" if notice.band == 0 else (
        f"{notice.band}-day warning" if notice.band is not None else "condition")
    return {
        "text": clip(plain(text)),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}},
            {"type": "actions", "block_id": "exauth_warning", "elements": [
                {"type": "button", "action_id": FIX_ACTION, "style": "primary",
                 "text": {"type": "plain_text", "text": "Fix"}, "value": value},
                {"type": "button", "action_id": SNOOZE_ACTION,
                 "text": {"type": "plain_text", "text": "Snooze 7 days"}, "value": value},
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(
                f"exauth warning · {escape(org)} · {band} · reminders and news in the thread")}]},
        ],
    }


def resolved_message(notice: Notice) -> dict[str, Any]:
    text = escape(notice.text)  # as in warning_message
    return {"text": clip(plain(text)),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}]}


def without_snooze(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        if block.get("type") == "actions":
            kept = [e for e in block.get("elements") or [] if e.get("action_id") != SNOOZE_ACTION]
            if kept:
                out.append({**block, "elements": kept})
        elif block.get("type") == "context" and ":zzz:" in json.dumps(block):
            continue  # an older snooze line
        else:
            out.append(block)
    return out


def strip_prefix(text: str) -> str:
    for emoji in EMOJI.values():
        text = text.removeprefix(emoji).lstrip()
    for prefix in ("Daily reminder: ", "Update: "):
        text = text.removeprefix(prefix)
    return text


def plain(text: str) -> str:
    return text.replace("*", "").replace("`", "")


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
