"""Proactive expiry warnings: what deserves a Slack message today, decided over plain data.

Three steps, all pure (the sweep does the I/O around them):

1. `subjects(status)`: everything in one status JSON that can warrant a warning, each with
   a stable key that names the certificate (or server) it is about, so a new certificate
   is a new subject and a renewed one drops out:
       auth:current:<thumbprint>   auth:next:<thumbprint>   backend:<server>:<thumbprint>
       overdue:<thumbprint>        missing:<thumbprint>:<server>   unreachable:<server>
       hybrid_app:current:<thumbprint>   hybrid_app:next:<thumbprint>   hybrid_app:unreadable
   ("unreachable:org" when no server answered at all; the hybrid_app keys are the dedicated
   hybrid application in Entra ID lacking a certificate's key, or Graph not answering).
2. `band_for(days_left, bands)`: which warning band a certificate is in; a band is the
   smallest configured number of days that is still >= days left (61 -> none, 59 -> 60,
   29 -> 30, expired -> the smallest band).
3. `decide(subjects, snapshot, now, bands)`: compared with what was already said (the
   `WarnState` per key that workers.warnings.warning_state keeps in Redis), the notices to send.

The rules (issue 6), and choices where it is silent:
- One message per certificate per band ("new"). Within a band nothing is repeated, except
  from 7 days left and after expiry, when a reminder goes into that message's thread once
  per UTC day ("repeat"). News within a band (a successor got staged, severity rose) goes
  into the thread ("thread"). A subject that has gone (certificate replaced or renewed,
  server answers again) closes its message ("resolved").
- Conditions without a date (missing on a server, publication overdue, unreachable) get
  one message when they appear or get more severe; critical ones are repeated daily.
- A server is only unreachable after 2 consecutive failed sweeps (a reboot pages nobody).
- A snooze holds back repeats and news until it ends; a more severe band or a higher
  severity lifts it at once (the notice says so, and the state forgets the snooze).
- A current Auth Certificate whose successor is staged, reached every server and is
  effective before the current one expires is "info" and not repeated daily: the
  rotation is on track, and the overdue/missing subjects speak up if it stalls.
- Subjects on servers that could not be asked this time are neither resolved nor
  forgotten (unknown is not gone). The same holds for the hybrid application's missing
  keys while Graph cannot be read: `unknown_servers` then names `GRAPH_SOURCE`.
- The hybrid application (issue 13): its lacking the current certificate's key is
  critical and reminded daily (hybrid fails now); lacking the staged next one is a warning
  that turns critical near the effective date (a "new" message then, like any rise in
  severity); Graph not answering is one warning (no daily repeat: nothing is known to be
  broken), resolved once Graph answers. Fix on any of them starts `upload_hybrid_key`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from workers.status.report_model import (
    ActionKind,
    AuthCert,
    BackendProblem,
    BackendStatus,
    Finding,
    FindingCode,
    NextAuthCert,
    OrgStatus,
    Severity,
)

Kind = Literal["new", "repeat", "thread", "resolved"]

DEFAULT_BANDS = (60, 30, 14, 7, 3, 1, 0)
REPEAT_DAILY_FROM_DAYS = 7  # from this many days left (and after expiry): daily reminders
UNREACHABLE_AFTER_FAILURES = 2  # consecutive failed sweeps before a server is reported
AUTH_CRITICAL_DAYS = 30  # HealthChecker red
BACKEND_CRITICAL_DAYS = 7
ORG_SERVER = "org"  # the "server" of unreachable:org (no server answered at all)
# The "server" of the hybrid application's subjects: unknown while Graph cannot be read (no
# fqdn has parentheses, so it never names a real server).
GRAPH_SOURCE = "(graph)"
HYBRID_APP_PREFIX = "hybrid_app"

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


@dataclass(frozen=True)
class Subject:
    """One thing a warning can be about, as seen in one status."""

    key: str
    kind: str  # auth_current | auth_next | backend | broken | overdue | missing | unreachable
    #            | hybrid_app
    title: str  # short name for people: "Auth Certificate `ABCD1234…`"
    message: str  # what, why it matters, what to do (one paragraph, mrkdwn)
    severity: str
    days_left: int | None = None
    server: str | None = None
    news: str = ""  # changes of this are posted in the thread (e.g. "successor staged")
    repeats: bool = False  # reminded daily while it lasts (subject to the band rule)


@dataclass(frozen=True)
class WarnState:
    """What was said about one key, as workers.warnings.warning_state stores it."""

    band: int | None = None
    severity: str | None = None
    posted_on: str | None = None  # UTC date (YYYY-MM-DD) of the last post
    news: str = ""
    title: str = ""
    channel: str | None = None
    ts: str | None = None
    snooze_until: datetime | None = None
    snooze_band: int | None = None
    snooze_severity: str | None = None
    snoozed_by: str | None = None
    failures: int = 0

    @property
    def posted(self) -> bool:
        return self.posted_on is not None

    def snoozed(self, now: datetime) -> bool:
        return self.snooze_until is not None and now < self.snooze_until


@dataclass(frozen=True)
class Notice:
    """One thing to post; travels as JSON from the sweep job to the Slack callback."""

    key: str
    band: int | None
    kind: Kind
    text: str
    severity: str
    title: str = ""
    days_left: int | None = None
    news: str = ""
    lifts_snooze: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notice:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


# --- 1. subjects -------------------------------------------------------------------------


def subjects(status: OrgStatus) -> list[Subject]:
    """Every subject in one status (DESIGN.md "Status JSON"), in a stable order."""
    names = {s.fqdn: s.name for s in status.servers}
    org = status.org or "?"
    current: AuthCert | None = status.auth.current
    nxt: NextAuthCert | None = status.auth.next
    if nxt and current and nxt.thumbprint == current.thumbprint:
        nxt = None
    findings = status.findings
    waiting = {
        server
        for action in status.actions
        if action.kind == ActionKind.WAIT_REPLICATION
        for server in action.servers
    }
    out: list[Subject] = []
    if current and current.days_left is not None:
        out.append(_auth_current(org, current, nxt))
    if nxt and nxt.days_left is not None:
        out.append(_auth_next(org, nxt))
    for entry in status.backend:
        if entry.thumbprint and entry.days_left is not None:
            out.append(_backend(org, entry, names))
    out += _broken_backend(org, findings, names)
    if nxt:
        for item in _with_code(findings, FindingCode.AUTH_NEXT_PUBLISH_OVERDUE):
            thumb = nxt.thumbprint
            out.append(Subject(
                key=f"overdue:{thumb}", kind="overdue",
                title=f"Publication of Auth Certificate `{short(thumb)}`",
                message=f"*{org}*: {item.message} Run `/exauth plan {org}` for the steps.",
                severity=str(item.severity),
                repeats=item.severity == Severity.CRITICAL,
            ))
    out += _missing(org, current, FindingCode.AUTH_CURRENT_MISSING_ON_SERVER, findings, names,
                    set())
    out += _missing(org, nxt, FindingCode.AUTH_NEXT_MISSING_ON_SERVER, findings, names, waiting)
    for item in _with_code(findings, FindingCode.SERVER_UNREACHABLE):
        server = item.server or ORG_SERVER
        severity = str(item.severity)
        out.append(Subject(
            key=f"unreachable:{server}", kind="unreachable",
            title=f"Server {names.get(server) or server}",
            message=f"*{org}*: {item.message}", severity=severity, server=server,
            repeats=item.severity == Severity.CRITICAL,
        ))
    out += _hybrid_app(org, status, current, nxt)
    return out


def _hybrid_app(org: str, status: OrgStatus, current: AuthCert | None,
                nxt: NextAuthCert | None) -> list[Subject]:
    """The dedicated hybrid application's findings as subjects, keyed by the certificate
    whose key it lacks (a new certificate is a new subject; uploading it resolves it)."""
    section = status.hybrid_app
    if section is None or not section.configured:
        return []
    fix = f" Press Fix (or `/exauth fix {org}`) to upload it; every other key is kept."
    out: list[Subject] = []
    wanted = ((FindingCode.HYBRID_APP_CURRENT_MISSING, "current", current),
              (FindingCode.HYBRID_APP_NEXT_MISSING, "next", nxt))
    for code, which, cert in wanted:
        for item in _with_code(status.findings, code):
            if cert is None:
                continue
            thumb = cert.thumbprint.upper()
            out.append(Subject(
                key=f"{HYBRID_APP_PREFIX}:{which}:{thumb}", kind="hybrid_app",
                title=f"Hybrid application key of the {which} Auth Certificate "
                      f"`{short(thumb)}`",
                message=f"*{org}*: {_sentence(item.message)}{fix}",
                severity=str(item.severity), server=GRAPH_SOURCE,
                repeats=item.severity == Severity.CRITICAL,
            ))
    for item in _with_code(status.findings, FindingCode.HYBRID_APP_UNREADABLE):
        out.append(Subject(
            key=f"{HYBRID_APP_PREFIX}:unreadable", kind="hybrid_app",
            title=f"Dedicated hybrid application {section.app_id or ''}".rstrip(),
            message=f"*{org}*: {_sentence(item.message)} Whether it holds the current and "
                    "next Auth Certificate is unknown until it can be read. Check exauth's "
                    "Entra application (its secret or certificate, the permission "
                    "Application.ReadWrite.OwnedBy and its ownership of the hybrid "
                    f"application; README \"Entra ID\") with `exauth config check`.",
            severity="warning", repeats=False,
        ))
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def org_unreachable(org: str, reason: str) -> Subject:
    """The subject for a sweep in which no server answered at all (status itself failed)."""
    return Subject(
        key=f"unreachable:{ORG_SERVER}", kind="unreachable", title=f"Exchange org {org}",
        message=f"*{org}*: no Exchange server answered the daily check ({reason}); "
                "certificates could not be checked.",
        severity="critical", server=ORG_SERVER, repeats=True,
    )


def unknown_servers(status: OrgStatus) -> set[str]:
    """Servers whose certificates could not be read this time (their subjects are unknown)."""
    unknown = {s.fqdn for s in status.servers if not s.reachable}
    unknown |= {b.server for b in status.backend if b.problem == BackendProblem.UNKNOWN}
    if status.hybrid_app is not None and not status.hybrid_app.read:
        unknown.add(GRAPH_SOURCE)  # its keys are unknown, not fixed
    return unknown


def _auth_current(org: str, cert: AuthCert, nxt: NextAuthCert | None) -> Subject:
    thumb = cert.thumbprint
    days = int(cert.days_left or 0)
    title = f"Auth Certificate `{short(thumb)}`"
    harm = ("OWA/ECP fail after login, hybrid Free/Busy breaks and the Exchange Management "
            "Shell may fail")
    on_track = _successor_on_track(cert, nxt)
    if days < 0:
        what = f"*{org}*: the current {title} {_expiry(days, cert.not_after)}: {harm}."
    else:
        what = (f"*{org}*: the current {title} {_expiry(days, cert.not_after)}. When it "
                f"expires, {harm}.")
    if on_track and nxt is not None:
        news = f"successor {nxt.thumbprint} effective {nxt.effective}"
        todo = (f" Its successor `{short(nxt.thumbprint)}` is staged on every server "
                f"and publishes on {_date(nxt.effective)}; nothing to do unless that "
                "date passes.")
        severity = "info"
    else:
        news = f"successor {nxt.thumbprint}" if nxt else ""
        todo = (f" Stage its successor now (it needs time to replicate): `/exauth plan {org}`."
                if days >= 0 else f" Replace it now: `/exauth plan {org}`.")
        severity = "critical" if days < AUTH_CRITICAL_DAYS else "warning"
    return Subject(
        key=f"auth:current:{thumb}", kind="auth_current", title=title, message=what + todo,
        severity=severity, days_left=days, news=news, repeats=not on_track,
    )


def _auth_next(org: str, cert: NextAuthCert) -> Subject:
    thumb = cert.thumbprint
    days = int(cert.days_left or 0)
    title = f"staged next Auth Certificate `{short(thumb)}`"
    what = (f"*{org}*: the {title} {_expiry(days, cert.not_after)}; publishing an expired "
            f"certificate breaks OAuth. Stage a new one: `/exauth plan {org}`.")
    return Subject(
        key=f"auth:next:{thumb}", kind="auth_next", title=title[0].upper() + title[1:],
        message=what, severity="critical" if days < AUTH_CRITICAL_DAYS else "warning",
        days_left=days, repeats=True,
    )


def _backend(org: str, entry: BackendStatus, names: Mapping[str, str]) -> Subject:
    thumb = str(entry.thumbprint)
    server = entry.server
    name = names.get(server) or server
    days = int(entry.days_left or 0)
    title = f"Back end certificate `{short(thumb)}` on {name}"
    harm = "OWA/ECP, ActiveSync and remote PowerShell through this server fail"
    when = "Now" if days < 0 else "When it lapses"
    what = (f"*{org}*: the {title[0].lower() + title[1:]} {_expiry(days, entry.not_after)}. "
            f"{when}, {harm}. Renew it (a new self-signed certificate bound to \"Exchange "
            "Back End\" *:444:; never a public one, never delete the old one first).")
    return Subject(
        key=f"backend:{server}:{thumb}", kind="backend", title=title, message=what,
        severity="critical" if days <= BACKEND_CRITICAL_DAYS else "warning",
        days_left=days, server=server, repeats=True,
    )


def _missing(org: str, cert: AuthCert | None, code: FindingCode,
             findings: Sequence[Finding], names: Mapping[str, str],
             waiting: Collection[str]) -> list[Subject]:
    if not cert:
        return []
    thumb = cert.thumbprint
    said = {str(f.server): f for f in _with_code(findings, code)}
    out = []
    for server in cert.missing_on:
        if server in waiting:
            continue  # cross-site replication still has time (decision: wait_replication)
        item = said.get(server)
        severity = str(item.severity) if item else "critical"
        message = item.message if item else (
            f"Auth Certificate `{short(thumb)}` is not on {names.get(server) or server}.")
        out.append(Subject(
            key=f"missing:{thumb}:{server}", kind="missing",
            title=f"Auth Certificate `{short(thumb)}` on {names.get(server) or server}",
            message=f"*{org}*: {message} Run `/exauth plan {org}` for the import steps.",
            severity=severity, server=server, repeats=severity == "critical",
        ))
    return out


BROKEN_BACKEND_CODES = (FindingCode.BACKEND_NO_BINDING, FindingCode.BACKEND_NO_CERTIFICATE,
                        FindingCode.BACKEND_CERT_NOT_IN_STORE)


def _broken_backend(org: str, findings: Sequence[Finding],
                    names: Mapping[str, str]) -> list[Subject]:
    """A back end binding without a (stored) certificate breaks OWA, ECP, ActiveSync and the
    server's remote PowerShell now, not on a date: critical, reminded daily."""
    out = []
    for code in BROKEN_BACKEND_CODES:
        for item in _with_code(findings, code):
            server = item.server or ""
            out.append(Subject(
                key=f"broken:{server}:{code}", kind="broken",
                title=f"Back end certificate on {names.get(server) or server}",
                message=f"*{org}*: {item.message} Run `/exauth backend {org}` to repair it.",
                severity=str(item.severity), server=server,
                repeats=True,
            ))
    return out


def _successor_on_track(cert: AuthCert, nxt: NextAuthCert | None) -> bool:
    if not nxt or nxt.missing_on or not nxt.present_on:
        return False
    if (nxt.days_left or 0) <= 0:
        return False
    effective, expires = nxt.effective, cert.not_after
    return bool(effective and expires and effective < expires)


def _with_code(findings: Iterable[Finding], code: FindingCode) -> list[Finding]:
    return [f for f in findings if f.code == code]


def _expiry(days: int, not_after: str | None) -> str:
    when = _date(not_after)
    if days < 0:
        ago = -days
        return f"expired {ago} day{'s' if ago != 1 else ''} ago ({when})"
    if days == 0:
        return f"expires within a day ({when})"
    return f"expires in {days} day{'s' if days != 1 else ''} ({when})"


def _date(value: Any) -> str:
    return str(value)[:10] if value else "an unknown date"


def short(thumbprint: str) -> str:
    return f"{thumbprint[:8]}…" if len(thumbprint) > 8 else thumbprint


# --- 2. bands ----------------------------------------------------------------------------


def band_for(days_left: int, bands: Iterable[int]) -> int | None:
    """The band a certificate with `days_left` is in; None when it is not in any yet.

    Expired certificates (negative days) sit in the smallest band.
    """
    inside = [band for band in bands if days_left <= band]
    return min(inside) if inside else None


# --- 3. decide ---------------------------------------------------------------------------


def decide(
    found: Sequence[Subject],
    snapshot: Mapping[str, WarnState],
    now: datetime,
    bands: Iterable[int] = DEFAULT_BANDS,
    *,
    unknown: Collection[str] = (),
    complete: bool = True,
) -> list[Notice]:
    """The notices for one sweep (see the module docstring for the rules).

    `unknown`: servers that could not be asked this time; `complete=False`: the status
    itself could not be read, so nothing but the subjects given is known.
    """
    bands = tuple(bands)
    today = utc_date(now)
    out: list[Notice] = []
    for subject in found:
        notice = _one(subject, snapshot.get(subject.key), now, today, bands)
        if notice is not None:
            out.append(notice)
    present = {subject.key for subject in found}
    for key, state in snapshot.items():
        if key in present or not state.posted or not _known(key, unknown, complete):
            continue
        out.append(Notice(key=key, band=state.band, kind="resolved", text=resolved_text(key, state),
                          severity="info", title=state.title))
    return out


def stale_keys(
    found: Sequence[Subject],
    snapshot: Mapping[str, WarnState],
    *,
    unknown: Collection[str] = (),
    complete: bool = True,
) -> list[str]:
    """Keys with state but nothing posted whose subject has gone (e.g. one failed sweep
    followed by a good one): forgotten quietly, which also resets failure counters."""
    present = {subject.key for subject in found}
    return [
        key for key, state in snapshot.items()
        if key not in present and not state.posted and _known(key, unknown, complete)
    ]


def _one(subject: Subject, state: WarnState | None, now: datetime, today: str,
         bands: tuple[int, ...]) -> Notice | None:
    if subject.kind == "unreachable" and (
            state is None or state.failures < UNREACHABLE_AFTER_FAILURES):
        return None
    band = band_for(subject.days_left, bands) if subject.days_left is not None else None
    if subject.days_left is not None and band is None:
        return None  # not in any band yet (e.g. 61 days)
    rank = SEVERITY_RANK.get(subject.severity, 1)
    snoozed = state is not None and state.snoozed(now)
    if state is None or not state.posted:
        return _notice(subject, band, "new", subject.message, lifts=False)
    if band is not None and (state.band is None or band < state.band):
        return _notice(subject, band, "new", subject.message, lifts=snoozed)
    higher = rank > SEVERITY_RANK.get(state.severity or "info", 0)
    if band is None and higher:
        return _notice(subject, band, "new", subject.message, lifts=snoozed)
    lifted = snoozed and (
        (band is not None and state.snooze_band is not None and band < state.snooze_band)
        or rank > SEVERITY_RANK.get(state.snooze_severity or "critical", 2)
    )
    if snoozed and not lifted:
        return None
    if _repeats_today(subject, state, today):
        return _notice(subject, band, "repeat", f"Daily reminder: {subject.message}",
                       lifts=lifted)
    if subject.news != state.news or higher:
        return _notice(subject, band, "thread", f"Update: {subject.message}", lifts=lifted)
    return None


def _repeats_today(subject: Subject, state: WarnState, today: str) -> bool:
    if not subject.repeats or state.posted_on == today or subject.severity == "info":
        return False
    if subject.days_left is None:
        return subject.severity == "critical"
    return subject.days_left <= REPEAT_DAILY_FROM_DAYS


def _notice(subject: Subject, band: int | None, kind: Kind, text: str, *,
            lifts: bool) -> Notice:
    if lifts:
        text += " (snooze lifted: this got worse)"
    return Notice(
        key=subject.key, band=band, kind=kind, text=f"{EMOJI.get(subject.severity, '')} {text}",
        severity=subject.severity, title=subject.title, days_left=subject.days_left,
        news=subject.news, lifts_snooze=lifts,
    )


def resolved_text(key: str, state: WarnState) -> str:
    """What closing a warning says, from its key alone (the subject is gone)."""
    title = state.title or key
    kind = key.split(":", 1)[0]
    if key.startswith("auth:current:"):
        why = "is no longer the current Auth Certificate (rotation done)"
    elif key.startswith("auth:next:"):
        why = "is no longer staged as the next Auth Certificate"
    elif kind == "backend":
        why = "is no longer bound to the back end site (renewed)"
    elif kind == "broken":
        why = "is bound to a certificate in the store again (repaired)"
    elif kind == "overdue":
        why = "is no longer waiting: it was published or unstaged"
    elif kind == "missing":
        why = "is present now"
    elif kind == "unreachable":
        why = "answers again"
    elif key == f"{HYBRID_APP_PREFIX}:unreadable":
        why = "can be read through Microsoft Graph again"
    elif kind == HYBRID_APP_PREFIX:
        why = "is on the application now (or the certificate is no longer staged)"
    else:
        why = "needs no attention any more"
    return f":white_check_mark: Resolved: {title} {why}."


def fix_kind(key: str) -> str | None:
    """The operation a warning's Fix button starts: `upload_hybrid_key` for the hybrid
    application's subjects, else None (the first change the status recommends, as
    `/exauth fix`)."""
    return "upload_hybrid_key" if key.split(":", 1)[0] == HYBRID_APP_PREFIX else None


def key_server(key: str) -> str | None:
    """The server a subject key is about, if it names one."""
    parts = key.split(":")
    if parts[0] in ("backend", "broken") and len(parts) >= 3:
        return ":".join(parts[1:-1])
    if parts[0] == "missing" and len(parts) >= 3:
        return parts[-1]
    if parts[0] == "unreachable" and len(parts) >= 2:
        return ":".join(parts[1:])
    if parts[0] == HYBRID_APP_PREFIX and parts[1:2] in (["current"], ["next"]):
        return GRAPH_SOURCE
    return None


def _known(key: str, unknown: Collection[str], complete: bool) -> bool:
    if not complete:
        return key == f"unreachable:{ORG_SERVER}"
    server = key_server(key)
    if key.startswith("unreachable:"):
        return True  # its absence is exactly the news (the server answers again)
    return server is None or server not in unknown


def utc_date(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()
