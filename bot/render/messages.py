"""Slack messages (Block Kit) built from what the workers return.

Pure functions: a status (workers.status.report_model.OrgStatus) or a plan document in,
`{"text", "blocks"}` out, so every limit Slack enforces is unit tested without Slack.
Slack rejects a whole message (`invalid_blocks`) when one limit is broken, and an org with
dozens of servers easily breaks them, so everything here is built to a budget: at most 50
blocks, at most 3000 characters per text object, a header of at most 150 characters. Long
lists are summarised ("57 more servers fine") rather than cut mid-line. `text` is always
set: it is what notifications and screen readers show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from workers.status.report_model import (
    ActionKind,
    AuthCert,
    BackendProblem,
    NextAuthCert,
    OrgStatus,
    Overall,
    Severity,
)

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
MAX_FALLBACK = 3000

# Lists are capped so the biggest org still fits the block budget with room to spare.
MAX_BACKEND_LINES = 25
MAX_FINDING_LINES = 30
MAX_UNREACHABLE_LINES = 15

STATE_LABEL = {
    Overall.OK: (":white_check_mark:", "OK"),
    Overall.WARNING: (":warning:", "WARNING"),
    Overall.CRITICAL: (":red_circle:", "CRITICAL"),
    Overall.UNKNOWN: (":grey_question:", "UNKNOWN"),
}
SEVERITY_ICON = {Severity.CRITICAL: ":red_circle:", Severity.WARNING: ":warning:",
                 Severity.UNKNOWN: ":grey_question:", Severity.INFO: ":information_source:"}
PROBLEM_TEXT = {
    BackendProblem.NO_BINDING: "no https binding on *:444:",
    BackendProblem.NO_CERTIFICATE: "binding has no certificate",
    BackendProblem.NOT_IN_STORE: "bound certificate is not in the store",
    BackendProblem.EXPIRED: "expired",
    BackendProblem.EXPIRING: "expiring",
    BackendProblem.UNKNOWN: "could not be checked",
}

Block = dict[str, Any]
Message = dict[str, Any]


# --- the status report ------------------------------------------------------------------


def status_message(status: OrgStatus, state: Overall) -> Message:
    """The full report for one org; `state` is `workers.status.report.overall(status)`."""
    org = status.org or "?"
    names = _short_names(status)
    icon, label = STATE_LABEL.get(state, STATE_LABEL[Overall.UNKNOWN])
    blocks: list[Block] = [
        _header(f"{icon} {org}: {label}"),
        _context(_summary_line(status)),
    ]
    blocks += _sections(_auth_lines(status, names))
    hybrid_app = _hybrid_app_lines(status)
    if hybrid_app:
        blocks += _sections(hybrid_app)
    blocks.append({"type": "divider"})
    blocks += _sections(_backend_lines(status, names))
    findings = _finding_lines(status, names)
    if findings:
        blocks.append({"type": "divider"})
        blocks += _sections(["*Findings*", *findings])
    blocks.append({"type": "divider"})
    blocks += _sections(["*Recommended*", *_action_lines(status, names)])
    blocks.append(_context(
        f"Checked at {escape(status.checked_at or '?')} · "
        f"`/exauth plan {escape(org)}` shows the exact steps a fix would run"
    ))
    return {"text": _fallback(status, org, label), "blocks": _fit(blocks)}


def _summary_line(status: OrgStatus) -> str:
    servers = status.servers
    sites = status.sites
    down = [s for s in servers if not s.reachable]
    parts = [f"{len(servers)} server{'s' if len(servers) != 1 else ''}",
             f"{len(sites)} AD site{'s' if len(sites) != 1 else ''}"]
    if down:
        parts.append(f"*{len(down)} unreachable*")
    if status.hybrid:
        parts.append("hybrid")
    return " · ".join(parts)


def _auth_lines(status: OrgStatus, names: Mapping[str, str]) -> list[str]:
    auth = status.auth
    lines = ["*Auth Certificate* (Get-AuthConfig)"]
    roles: tuple[tuple[str, AuthCert | None], ...] = (
        ("current", auth.current), ("next", auth.next), ("previous", auth.previous))
    for role, cert in roles:
        title = role.capitalize()
        if cert is None:
            lines.append(f"*{title}:* not set")
            continue
        lines.append(f"*{title}:* {_cert_line(cert)}")
        if isinstance(cert, NextAuthCert) and cert.effective:
            lines.append(f"    effective {_date(cert.effective, with_time=True)}")
        if role == "previous":
            continue  # the old cert is expected to vanish from servers; where it is matters not
        if cert.missing_on:
            lines.append(f"    :x: missing on {_server_list(cert.missing_on, names)}")
        if cert.unknown_on:
            lines.append(f"    :grey_question: not checked on "
                         f"{_server_list(cert.unknown_on, names)}")
    return lines


def _cert_line(cert: AuthCert) -> str:
    parts = [f"`{escape(cert.thumbprint or '?')}`"]
    if cert.not_after:
        parts.append(_expiry(cert.not_after, cert.days_left))
    else:
        parts.append("not found on any server")
    details = [escape(cert.signature_hash)] if cert.signature_hash else []
    if cert.key_size:
        details.append(f"{cert.key_size} bit")
    if details:
        parts.append(" ".join(details))
    return " · ".join(parts)


def _backend_lines(status: OrgStatus, names: Mapping[str, str]) -> list[str]:
    """Problems first, one line each; fine servers are counted, not listed, in big orgs."""
    rows = status.backend
    reachable = {s.fqdn: s.reachable for s in status.servers}
    errors = {s.fqdn: s.error for s in status.servers}
    bad = [r for r in rows if r.problem]
    good = [r for r in rows if not r.problem]
    lines = ["*Back end certificates* (Exchange Back End, https *:444:)"]
    if not rows:
        lines.append("no in-scope servers")
        return lines
    shown_good = good if len(bad) + len(good) <= MAX_BACKEND_LINES else []
    for row in bad[:MAX_BACKEND_LINES]:
        server = row.server
        problem = row.problem
        text = PROBLEM_TEXT.get(problem, str(problem))
        if problem == BackendProblem.UNKNOWN and not reachable.get(server, True):
            text = f"unreachable: {escape(_one_line(errors.get(server) or 'no answer'))}"
        detail = ""
        if row.not_after:
            detail = f" · `{escape(row.thumbprint or '?')}` " \
                     f"{_expiry(row.not_after, row.days_left)}"
        lines.append(f":x: `{_name(server, names)}` {text}{detail}")
    if len(bad) > MAX_BACKEND_LINES:
        lines.append(f"… and {len(bad) - MAX_BACKEND_LINES} more servers with problems")
    for row in shown_good:
        lines.append(f":white_check_mark: `{_name(row.server, names)}` "
                     f"`{escape(row.thumbprint or '?')}` "
                     f"{_expiry(row.not_after, row.days_left)}")
    if good and not shown_good:
        soonest = min(good, key=lambda r: r.days_left if r.days_left is not None else 10**6)
        lines.append(f":white_check_mark: {len(good)} more servers fine (soonest expiry: "
                     f"`{_name(soonest.server, names)}` in "
                     f"{_days(soonest.days_left)})")
    return lines


def _hybrid_app_lines(status: OrgStatus) -> list[str]:
    """The dedicated hybrid application's keys, in a few lines (none if not hybrid)."""
    section = status.hybrid_app
    if section is None:
        return []
    title = "*Hybrid application* (Entra ID)"
    if not section.configured:
        return [title, "not checked: configure `[org.hybrid_app]`"]
    app = f"`{escape(section.app_id or '?')}`"
    if not section.read:
        return [title, f":grey_question: {app} could not be read: "
                       f"{escape(_one_line(section.error or ''))}"]
    lines = [f"{title} {app}"]
    for which, held in (("current", section.current_on_app), ("next", section.next_on_app)):
        if held is None:
            continue
        mark = ":white_check_mark:" if held else ":red_circle:"
        lines.append(f"{mark} {which.capitalize()} Auth Certificate "
                     f"{'is' if held else 'is *not*'} among its keys")
    stale = section.stale()
    if stale:
        lines.append(f":information_source: {len(stale)} stale key"
                     f"{'s' if len(stale) != 1 else ''}: " + ", ".join(
                         f"`{escape(k.thumbprint[:8])}…`" for k in stale))
    return lines


def _finding_lines(status: OrgStatus, names: Mapping[str, str]) -> list[str]:
    findings = sorted(status.findings, key=lambda f: f.severity.rank)
    lines = []
    for finding in findings[:MAX_FINDING_LINES]:
        icon = SEVERITY_ICON.get(finding.severity, ":grey_question:")
        where = f" [`{_name(finding.server, names)}`]" if finding.server else ""
        lines.append(f"{icon} *{finding.code}*{where}: "
                     f"{escape(_one_line(finding.message or ''))}")
    rest = findings[MAX_FINDING_LINES:]
    if rest:
        counts = _count(f.severity for f in rest)
        lines.append(f"… and {len(rest)} more findings ({counts})")
    return lines


def _action_lines(status: OrgStatus, names: Mapping[str, str]) -> list[str]:
    if not status.actions:
        return ["nothing to do"]
    lines = []
    for number, action in enumerate(status.actions, start=1):
        where = f" on {_server_list(action.servers, names)}" if action.servers else ""
        lines.append(f"{number}. *{action.kind}*{where}: "
                     f"{escape(_one_line(action.reason or ''))}")
    return lines


def _fallback(status: OrgStatus, org: str, label: str) -> str:
    findings = status.findings
    kinds = [a.kind for a in status.actions if a.kind != ActionKind.NONE]
    text = f"exauth {escape(org)}: {label}"
    if findings:
        text += f" - {len(findings)} finding{'s' if len(findings) != 1 else ''} " \
                f"({_count(f.severity for f in findings)})"
    if kinds:
        text += f"; recommended: {', '.join(str(k) for k in kinds)}"
    return _clip(text, MAX_FALLBACK)


# --- other messages -----------------------------------------------------------------------


DOING = {"status": "Checking", "plan": "Planning for",
         "rehearse": "Rehearsing on a replica of"}
WHAT = {"status": "check", "plan": "plan for", "rehearse": "rehearse on"}


def placeholder_message(org: str, kind: str) -> Message:
    """What the channel sees at once; the worker's callback replaces it in place."""
    text = f"{DOING.get(kind, 'Checking')} {escape(org)}..."
    how = ("Reading Exchange over PowerShell Remoting; this message updates when done."
           if kind != "rehearse" else
           "Reading Exchange once for a snapshot, then running the change on a lab replica "
           "(nothing reaches the org); this message updates when done.")
    return {"text": text, "blocks": [
        _section(f":hourglass_flowing_sand: {text}"),
        _context(how),
    ]}


def retrying_message(org: str, kind: str, reason: str, attempt: int, delay: int | None) -> Message:
    """One attempt failed and RQ will try again: say so instead of going silent."""
    doing = DOING.get(kind, "Checking")
    when = f" in {delay} s" if delay else ""
    text = (f"{doing} {escape(org)}... attempt {attempt} failed "
            f"({escape(_one_line(reason))}); retrying{when}.")
    return {"text": _clip(text, MAX_FALLBACK), "blocks": [
        _section(f":hourglass_flowing_sand: {text}"),
    ]}


def failure_message(org: str, kind: str, reason: str) -> Message:
    """The final word on a job that failed: one clear line, never a traceback."""
    what = WHAT.get(kind, "check")
    text = f"Could not {what} {escape(org)}: {escape(_one_line(reason))}"
    return {"text": _clip(text, MAX_FALLBACK), "blocks": [
        _section(f":x: {text}"),
        _context(f"Try again with `/exauth {kind} {escape(org)}`; `exauth config check` on the "
                 "worker host tests every endpoint."),
    ]}


def operation_failure_text(what: str, reason: str, op_id: str | None = None) -> str:
    """A failed operation job (start, step, resume...): one line, never a traceback; when
    its operation is still open, how to pick it up again."""
    text = f":x: exauth {what}: {escape(_one_line(reason))}"
    if op_id:
        text = text.rstrip(".") + (f". Operation `{op_id}` is kept; `/exauth resume {op_id}` "
                                   "carries it on.")
    return _clip(text, MAX_FALLBACK)


def card_not_posted_text(op_id: str, org: str, error: str) -> str:
    """For the requester alone: the operation exists but Slack took no card for it."""
    return _clip(f":warning: Slack did not take the card of operation `{op_id}` for "
                 f"{escape(org)} ({escape(_one_line(error))}). The operation is kept; "
                 f"`/exauth resume {op_id}` posts its card here.", MAX_FALLBACK)


def sweep_failure_text(org: str, reason: str) -> str:
    """A warnings sweep that failed as a whole, for the org's channel (nobody asked)."""
    return _clip(f":warning: exauth could not run the warnings check of {escape(org)}: "
                 f"{escape(_one_line(reason))}. It runs again at its next scheduled time; "
                 f"`/exauth status {escape(org)}` checks now.", MAX_FALLBACK)


def plan_message(document: Mapping[str, Any]) -> Message:
    """The decision and the exact steps, read-only (approval cards come with changes)."""
    org = str(document.get("org") or "?")
    actions = list(document.get("actions") or [])
    blocks: list[Block] = [
        _header(f":clipboard: {org}: plan"),
        _context(f"From the status checked at {escape(str(document.get('checked_at') or '?'))}; "
                 "nothing has been run."),
    ]
    for action in actions:
        servers = action.get("servers") or []
        where = f" on {_server_list(servers, {})}" if servers else ""
        lines = [f"*{action.get('kind')}*{where}: {escape(_one_line(action.get('reason') or ''))}"]
        for number, step in enumerate(action.get("steps") or [], start=1):
            gate = ":lock: approval" if step.get("changes_state") else "read-only"
            lines.append(f"{number}. [{gate}] {escape(str(step.get('title') or ''))} "
                         f"_on {escape(str(step.get('server') or '?'))} "
                         f"({escape(str(step.get('endpoint') or '?'))})_")
            if step.get("command"):
                lines.append(f"`{_clip(escape(_one_line(str(step['command']))), 1500)}`")
            if step.get("note"):
                lines.append(f"    _{escape(_one_line(str(step['note'])))}_")
        blocks += _sections(lines)
    if not actions:
        blocks.append(_section("nothing to do"))
    kinds = ", ".join(str(a.get("kind")) for a in actions) or "nothing to do"
    return {"text": _clip(f"exauth plan {escape(org)}: {kinds}", MAX_FALLBACK),
            "blocks": _fit(blocks)}


def rehearsal_message(report: Mapping[str, Any]) -> Message:
    """The rehearsal in one message: what ran, whether it went as planned, how long it took
    on the replica's clock, the status after, and what differed (the steps go in its thread)."""
    org = escape(str(report.get("org") or "?"))
    kind = str(report.get("kind") or "nothing")
    ok = bool(report.get("ok"))
    steps = list(report.get("steps") or [])
    if not steps:
        verdict = escape(_one_line(str(report.get("verdict") or "nothing to rehearse")))
        text = f"Rehearsal on a replica of {org}: {verdict}"
        return {"text": _clip(text, MAX_FALLBACK), "blocks": [
            _section(f":performing_arts: {text}"),
            _context(f"Snapshot read at {_date(report.get('snapshot_at'), with_time=True)}; "
                     "nothing was run."),
        ]}
    icon = ":white_check_mark:" if ok else ":x:"
    outcome = "ok" if ok else escape(_one_line(str(report.get("verdict") or "failed")))
    lines = [
        f"{icon} *{escape(kind)}* rehearsed on a replica of {org}: {outcome}",
        f"{len(steps)} steps, {sum(1 for s in steps if s.get('changes_state'))} of them "
        f"approved by the rehearsal; {span(report.get('virtual_seconds'))} on the replica's "
        f"clock, {report.get('wall_seconds', '?')} s of real time.",
    ]
    after = report.get("status_after") or {}
    kinds = [str(a.get("kind")) for a in after.get("actions") or []]
    findings = [f for f in after.get("findings") or [] if f.get("severity") != "info"]
    lines.append("*Status afterwards:* " + (", ".join(escape(k) for k in kinds) or "none")
                 + (f"; {_count(f.get('severity', '') for f in findings)} finding(s)"
                    if findings else "; no findings"))
    differences = list(report.get("differences") or [])
    if differences:
        lines.append("*Differed from the plan:*")
        lines += [f"• {escape(_one_line(str(d)))}" for d in differences[:10]]
    else:
        lines.append("Everything went as the plan said.")
    blocks = [_header(f"{org}: rehearsal of {kind}"), *_sections(lines),
              _context(f"Snapshot read at {_date(report.get('snapshot_at'), with_time=True)}; "
                       "nothing reached the org but that read. The steps are in the thread; "
                       "the real operation's card will say how this went.")]
    return {"text": _clip(f"Rehearsal of {escape(kind)} on {org}: {outcome}", MAX_FALLBACK),
            "blocks": _fit(blocks)}


def rehearsal_steps(report: Mapping[str, Any]) -> Message:
    """The thread under the rehearsal: each step, its outcome and its time on the replica."""
    icons = {"done": ":white_check_mark:", "skipped": ":fast_forward:", "failed": ":x:"}
    lines = []
    for step in report.get("steps") or []:
        icon = icons.get(str(step.get("state")), ":grey_question:")
        took = step.get("virtual_seconds")
        lines.append(f"{icon} {int(step.get('index', 0)) + 1}. "
                     f"{escape(str(step.get('title') or ''))} "
                     f"({'not reached' if took is None else span(took)}): "
                     f"{escape(_one_line(str(step.get('outcome') or step.get('state'))))}")
    return {"text": _clip("Rehearsal steps: " + "; ".join(lines), MAX_FALLBACK),
            "blocks": _fit(_sections(lines))}


def span(seconds: Any) -> str:
    """A virtual duration an admin reads at a glance: "0 s", "15 min", "24 h 1 min", "30 d"."""
    if seconds is None:
        return "?"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes else ""]
    shown = " ".join(p for p in parts if p)
    return shown or f"{secs} s"


# --- Block Kit building blocks, each within Slack's limits --------------------------------


def _header(text: str) -> Block:
    return {"type": "header",
            "text": {"type": "plain_text", "text": _clip(text, MAX_HEADER), "emoji": True}}


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_TEXT)}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, MAX_TEXT)}]}


def _sections(lines: Sequence[str]) -> list[Block]:
    """Pack lines into as few sections as fit 3000 characters each, never splitting a line."""
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = _clip(line, MAX_TEXT)
        extra = len(line) + (1 if chunk else 0)
        if chunk and size + extra > MAX_TEXT:
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
            extra = len(line)
        chunk.append(line)
        size += extra
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


def _fit(blocks: list[Block]) -> list[Block]:
    """Last line of defence for the 50-block limit: keep the head, say what was cut."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    kept = blocks[: MAX_BLOCKS - 1]
    return [*kept, _context(f"… {len(blocks) - len(kept)} more blocks left out (Slack shows at "
                            f"most {MAX_BLOCKS}); `exauth status --json` has everything.")]


# --- small text helpers ---------------------------------------------------------------------


def _short_names(status: OrgStatus) -> dict[str, str]:
    return {s.fqdn: s.name for s in status.servers if s.fqdn and s.name}


def _name(server: Any, names: Mapping[str, str]) -> str:
    server = str(server or "?")
    return escape(names.get(server) or server.split(".")[0])


def _server_list(servers: Iterable[Any], names: Mapping[str, str], limit: int = 12) -> str:
    shown = [f"`{_name(s, names)}`" for s in servers]
    if len(shown) > limit:
        return ", ".join(shown[:limit]) + f" and {len(shown) - limit} more"
    return ", ".join(shown)


def _date(value: Any, *, with_time: bool = False) -> str:
    text = str(value or "?")
    if with_time:
        return text[:16].replace("T", " ") + (" UTC" if len(text) > 10 else "")
    return text[:10]


def _expiry(not_after: Any, days: Any) -> str:
    if days is not None and int(days) < 0:
        return f"*expired* {_date(not_after)} ({_days(days)})"
    return f"expires {_date(not_after)} ({_days(days)})"


def _days(days: Any) -> str:
    if days is None:
        return "? days"
    days = int(days)
    if days < 0:
        # days_left is floored: -4 means it expired 3.x days ago (as the finding says)
        ago = -days - 1
        return "*today*" if ago == 0 else f"*{ago} day{'s' if ago != 1 else ''} ago*"
    label = f"{days} day{'s' if days != 1 else ''} left"
    return f"*{label}*" if days < 30 else label


def _count(severities: Iterable[Severity]) -> str:
    counts: dict[Severity, int] = {}
    for severity in severities:
        counts[severity] = counts.get(severity, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: kv[0].rank)
    return ", ".join(f"{n} {severity}" for severity, n in ordered)


def _one_line(text: str) -> str:
    """First non-empty line only: a job's error must never paste a traceback into Slack."""
    for line in str(text).splitlines():
        if line.strip():
            return _clip(line.strip(), 500)
    return "no details"


def escape(text: str) -> str:
    """Text from outside (Exchange, a reason, a name, what a user typed), made inert for
    Slack: mrkdwn fields and a message's `text` read `&`, `<` and `>` as control
    characters, so `<!channel>` would ping everyone and `<https://x|label>` would show a
    link under the bot's name. Only these three are replaced, as Slack documents
    (https://api.slack.com/reference/surfaces/formatting#escaping); Slack shows the
    entities as the characters again, also inside code spans. Call it once, on the
    outside value where it enters a message (never on a whole message: ours carries
    mentions, links and dates on purpose). plain_text fields (headers, button labels,
    modal titles) are shown literally by Slack, mentions and links included, and take
    the raw text.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
