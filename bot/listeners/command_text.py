"""What a `/exauth ...` slash command asks for, decided without any I/O.

The Slack listener must answer within 3 s and must never guess: this module turns the
command text plus the channel it came from into either a short ephemeral reply or a job to
enqueue. It is pure so every answer (usage, unknown org, unowned channel) is unit tested.

Decisions written down here:
- `help` and `orgs` work in any channel (they reveal no certificate data).
- `status` / `plan` / `rehearse` run only in the channel the org is configured for: reports carry
  thumbprints and server names, so they stay in the org's own channel. Naming another
  org's name from a foreign channel gets a pointer to that org's channel instead.
- With no org named, the org is the one mapped to the channel; if several orgs share the
  channel, the user must name one.
- Slack sends the typed text with `&`, `<` and `>` encoded as `&amp;`, `&lt;` and `&gt;`;
  it is decoded once here, so a name is looked up as typed and escaped exactly once when
  it is shown back (bot.render.messages.escape).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.render.messages import escape

JOB_SUBCOMMANDS = ("status", "plan", "rehearse")
OP_SUBCOMMANDS = ("fix", "rotate", "backend", "ops", "audit", "resume")
SUBCOMMANDS = ("help", "orgs", *JOB_SUBCOMMANDS, *OP_SUBCOMMANDS)

USAGE = (
    "Usage: `/exauth help` | `status [org]` | `plan [org]` | `rehearse [org]` | `orgs` | "
    "`fix [org] [override]` "
    "| `rotate [org]` | `backend [org] [server]` | `ops [org]` | `audit [org]` | "
    "`resume <op>`\n"
    "`status` checks the Exchange Auth Certificate and back end certificates; `plan` shows "
    "what a fix would run; `rehearse` runs it first on a replica of the org; `fix`, `rotate` "
    "and `backend` start an operation whose changing steps each wait for an approver. The "
    "org defaults to this channel's org."
)


@dataclass(frozen=True)
class Reply:
    """Answer the user in the ack itself (ephemeral), enqueue nothing."""

    text: str


@dataclass(frozen=True)
class RunJob:
    """Post a placeholder in the channel and enqueue a read job for one org."""

    kind: str  # "status" | "plan" | "rehearse"
    org: str


@dataclass(frozen=True)
class RunOp:
    """An operation subcommand for one org: handled after the ack (Redis + enqueue)."""

    kind: str  # one of OP_SUBCOMMANDS
    org: str  # "" for `resume`, whose operation names its org
    args: tuple[str, ...] = ()  # fix: ("override",) or (); backend: (server,) or ()


Decision = Reply | RunJob | RunOp


def interpret(text: str, channel_id: str, orgs: Mapping[str, str]) -> Decision:
    """Decide what `/exauth <text>` typed in `channel_id` asks for.

    `orgs` maps each configured org name to its Slack channel ID, in config order.
    """
    words = decode(text).split()
    subcommand = words[0].lower() if words else "help"
    args = words[1:]

    if subcommand not in SUBCOMMANDS:
        return Reply(f"Unknown subcommand `{_clip(subcommand)}`.\n{USAGE}")
    if subcommand == "help":
        return Reply(USAGE)
    if subcommand == "orgs":
        return Reply(_orgs_text(orgs, channel_id))
    if subcommand in OP_SUBCOMMANDS:
        return _op(subcommand, args, channel_id, orgs)
    if len(args) > 1:
        return Reply(f"`{subcommand}` takes at most one org name.\n{USAGE}")
    return _job(subcommand, args[0] if args else None, channel_id, orgs)


def decode(text: str) -> str:
    """Slack's encoding of command text undone (the three entities it writes, `&amp;` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _op(kind: str, args: list[str], channel_id: str, orgs: Mapping[str, str]) -> Decision:
    """Operation subcommands: an optional org name first, then what the subcommand takes."""
    if kind == "resume":
        if len(args) != 1:
            return Reply(f"`resume` takes the operation id (see `/exauth ops`).\n{USAGE}")
        return RunOp(kind="resume", org="", args=(args[0],))
    named = args[0] if args and _find(args[0], orgs) is not None else None
    if named is None and args and kind != "backend" and args[0].lower() != "override":
        return _job(kind, args[0], channel_id, orgs)  # says "unknown org"
    rest = tuple(args[1:] if named is not None else args)
    if kind == "fix":
        unknown = [word for word in rest if word.lower() != "override"]
    elif kind == "backend":
        unknown = list(rest[1:])
    else:
        unknown = list(rest)
    if unknown:
        return Reply(f"`{kind}` does not take `{_clip(' '.join(unknown))}`.\n{USAGE}")
    target = _job(kind, named, channel_id, orgs)
    if not isinstance(target, RunJob):
        return target
    extra = ("override",) if kind == "fix" and rest else rest if kind == "backend" else ()
    return RunOp(kind=kind, org=target.org, args=extra)


def _job(kind: str, named: str | None, channel_id: str, orgs: Mapping[str, str]) -> Decision:
    owned = [name for name, channel in orgs.items() if channel == channel_id]
    if named is None:
        if not owned:
            return Reply(f"No org is configured for this channel. {_where(orgs)}\n{USAGE}")
        if len(owned) > 1:
            return Reply(
                f"This channel serves several orgs ({escape(', '.join(owned))}); name one, "
                f"e.g. `/exauth {kind} {escape(owned[0])}`."
            )
        return RunJob(kind=kind, org=owned[0])

    org = _find(named, orgs)
    if org is None:
        known = escape(", ".join(orgs)) or "none"
        return Reply(f"Unknown org `{_clip(named)}` (configured: {known}).\n{USAGE}")
    if orgs[org] != channel_id:
        if not owned:
            return Reply(
                f"No org is configured for this channel; `{escape(org)}` is managed in "
                f"<#{orgs[org]}>.\n{USAGE}"
            )
        return Reply(f"`{escape(org)}` is managed in <#{orgs[org]}>; ask there.")
    return RunJob(kind=kind, org=org)


def _find(named: str, orgs: Mapping[str, str]) -> str | None:
    """Org names match case-insensitively (people type fast in chat)."""
    for name in orgs:
        if name.lower() == named.lower():
            return name
    return None


def _orgs_text(orgs: Mapping[str, str], channel_id: str) -> str:
    if not orgs:
        return "No org is configured."
    lines = ["Configured orgs:"]
    for name, channel in orgs.items():
        here = " (this channel)" if channel == channel_id else ""
        lines.append(f"- `{escape(name)}` in <#{channel}>{here}")
    return "\n".join(lines)


def _where(orgs: Mapping[str, str]) -> str:
    if not orgs:
        return "No org is configured at all."
    return "Orgs live in: " + ", ".join(f"`{escape(n)}` <#{c}>" for n, c in orgs.items()) + "."


def _clip(word: str, limit: int = 40) -> str:
    """Echo user text back short, inert (escaped), and without backticks that would break
    the formatting."""
    word = word.replace("`", "'")
    return escape(word if len(word) <= limit else word[: limit - 1] + "…")
