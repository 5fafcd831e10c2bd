"""What is wrong (or worth knowing) about one org, as findings an admin can act on.

The first half reads an observation the way every rule needs it (which servers count,
where a certificate is, how many whole days it has left, what is wrong with a back end
binding); `workers.status.decide` and `workers.status.report` share these readings so the status
JSON,
the findings and the decision can never disagree. The second half turns them into
`Finding`s (workers.status.report_model, DESIGN.md "Status JSON"),
with thresholds from DOMAIN.md section 3 and HealthChecker's colours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from workers.hybrid_app.key_findings import hybrid_app_status
from workers.status.observation import CertFacts, OrgObs, ServerObs
from workers.status.report_model import (
    BackendProblem,
    Finding,
    FindingCode,
    HybridAppStatus,
    Severity,
)

AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
WARNING_DAYS = 60  # HealthChecker yellow below this
CRITICAL_DAYS = 30  # HealthChecker red below this
BACKEND_WARNING_DAYS = 30
PUBLISH_GRACE = timedelta(hours=12)  # the AuthAdmin servicelet runs every 12 hours
WEAK_HASHES = frozenset({"sha1", "md5", "md2", "md4"})
MIN_KEY_SIZE = 2048

_VERSION_15 = re.compile(r"^\s*Version\s+15\.\d+", re.IGNORECASE)
_IN_SCOPE_ROLES = frozenset({"mailbox", "clientaccess"})


# --- reading the observation -------------------------------------------------------------


def is_in_scope(roles: Iterable[str], version: str) -> bool:
    """Mailbox/Client Access servers of Exchange 2013 and later; never Edge, never 2010."""
    lowered = {role.strip().lower() for role in roles}
    if "edge" in lowered or not lowered & _IN_SCOPE_ROLES:
        return False
    return bool(_VERSION_15.match(version or ""))


def in_scope_servers(obs: OrgObs) -> list[ServerObs]:
    return [server for server in obs.servers if is_in_scope(server.roles, server.version)]


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days left, floored: negative once expired."""
    return math.floor((not_after - now) / timedelta(days=1))


def iso(moment: datetime) -> str:
    """The one time format of the status JSON: UTC, seconds, "Z"."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def short(thumbprint: str) -> str:
    """A thumbprint prefix an admin can recognise in Exchange's output."""
    return f"{thumbprint[:8]}…" if len(thumbprint) > 8 else thumbprint


def is_auth_subject(subject: str) -> bool:
    return re.sub(r"\s+", " ", subject.strip()).lower() == AUTH_SUBJECT.lower()


def find_facts(obs: OrgObs, thumbprint: str) -> CertFacts | None:
    """The facts of a certificate from any server's store (None when no store lists it)."""
    wanted = thumbprint.upper()
    for server in obs.servers:
        for cert in server.certificates or ():
            if cert.thumbprint.upper() == wanted:
                return cert
    return None


@dataclass(frozen=True)
class CertView:
    """One certificate named by AuthConfig and where the in-scope servers stand on it.

    present: the server's store lists it; missing: a reachable server whose listed store
    does not; unknown: unreachable, or the store could not be listed.
    """

    thumbprint: str
    facts: CertFacts | None
    present_on: tuple[str, ...]
    missing_on: tuple[str, ...]
    unknown_on: tuple[str, ...]

    def expired(self, now: datetime) -> bool:
        return self.facts is not None and self.facts.not_after <= now

    def days_left(self, now: datetime) -> int | None:
        return None if self.facts is None else days_left(self.facts.not_after, now)

    def valid(self, now: datetime) -> bool:
        """Known, on at least one server, not expired."""
        return self.facts is not None and bool(self.present_on) and not self.expired(now)

    def usable(self, now: datetime) -> bool:
        """DOMAIN section 4: valid and present on every reachable in-scope server."""
        return self.valid(now) and not self.missing_on


def cert_view(obs: OrgObs, thumbprint: str | None) -> CertView | None:
    if not thumbprint:
        return None
    wanted = thumbprint.upper()
    present: list[str] = []
    missing: list[str] = []
    unknown: list[str] = []
    for server in in_scope_servers(obs):
        if server.certificates is not None and any(
            cert.thumbprint.upper() == wanted for cert in server.certificates
        ):
            present.append(server.fqdn)
        elif server.reachable and server.certificates is not None:
            missing.append(server.fqdn)
        else:
            unknown.append(server.fqdn)
    return CertView(wanted, find_facts(obs, wanted), tuple(present), tuple(missing), tuple(unknown))


def backend_problem(server: ServerObs, now: datetime) -> BackendProblem | None:
    """DOMAIN section 7 for one server: None when healthy, else what is wrong."""
    backend = server.backend
    if backend is None or backend.error:
        return BackendProblem.UNKNOWN
    if not backend.has_binding:
        return BackendProblem.NO_BINDING
    if not backend.thumbprint:
        return BackendProblem.NO_CERTIFICATE
    if backend.cert is None:
        return BackendProblem.NOT_IN_STORE
    if backend.cert.not_after <= now:
        return BackendProblem.EXPIRED
    if days_left(backend.cert.not_after, now) < BACKEND_WARNING_DAYS:
        return BackendProblem.EXPIRING
    return None


# --- findings ----------------------------------------------------------------------------


def finding(code: FindingCode, severity: Severity, server: str | None, message: str) -> Finding:
    return Finding(code=code, severity=severity, server=server, message=message)


def findings(obs: OrgObs) -> list[Finding]:
    """Every finding for the org, most severe first (stable within a severity)."""
    now = obs.checked_at
    found: list[Finding] = []
    found += _unreachable(obs)
    found += _current(obs, now)
    found += _next(obs, now)
    found += _duplicates(obs)
    found += _previous(obs)
    found += _backend(obs, now)
    if obs.hybrid:
        found.append(finding(
            FindingCode.HYBRID_DETECTED, Severity.INFO, None,
            "Hybrid is configured: after the Auth Certificate changes, re-run the Hybrid "
            "Configuration Wizard (hybrid Free/Busy and archive policies break until then).",
        ))
    found += hybrid_app_part(obs)[1]
    return sorted(found, key=lambda item: item.severity.rank)


def hybrid_app_part(obs: OrgObs) -> tuple[HybridAppStatus | None, list[Finding]]:
    """The status's `hybrid_app` part and its findings (workers.hybrid_app)."""
    auth = obs.auth
    return hybrid_app_status(
        obs.hybrid_app, hybrid=obs.hybrid, configured=obs.hybrid_app is not None,
        current=auth.current, next_=auth.next, previous=auth.previous,
        next_effective=auth.next_effective, now=obs.checked_at)


def _names(obs: OrgObs) -> dict[str, str]:
    return {server.fqdn: server.name for server in obs.servers}


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _unreachable(obs: OrgObs) -> list[Finding]:
    out = []
    for server in in_scope_servers(obs):
        if not server.reachable:
            why = f" ({server.error})" if server.error else ""
            out.append(finding(
                FindingCode.SERVER_UNREACHABLE, Severity.CRITICAL, server.fqdn,
                f"{server.name} could not be asked{why}; no change runs until it answers.",
            ))
        elif server.backend is not None and server.backend.error:
            out.append(finding(
                FindingCode.SERVER_UNREACHABLE, Severity.WARNING, server.fqdn,
                f"{server.name}: its host endpoint (WinRM) could not be asked "
                f"({server.backend.error}); back end binding not checked and app pools "
                "cannot be recycled there.",
            ))
    return out


def _current(obs: OrgObs, now: datetime) -> list[Finding]:
    view = cert_view(obs, obs.auth.current)
    if view is None:
        return [finding(
            FindingCode.AUTH_CURRENT_NOT_SET, Severity.CRITICAL, None,
            "AuthConfig names no current Auth Certificate: server-to-server OAuth, OWA/ECP "
            "and hybrid cannot work.",
        )]
    label = f"Current Auth Certificate {short(view.thumbprint)}"
    out = _validity(view, label, now)
    names = _names(obs)
    for fqdn in view.missing_on:
        out.append(finding(
            FindingCode.AUTH_CURRENT_MISSING_ON_SERVER, Severity.CRITICAL, fqdn,
            f"{label} is not in the certificate store of {names.get(fqdn, fqdn)}: OWA/ECP "
            "there fail after login.",
        ))
    out += _strength(view, label, "the next rotation creates a SHA-256 one")
    return out


def _validity(view: CertView, label: str, now: datetime) -> list[Finding]:
    facts = view.facts
    if facts is None:
        return []
    left = days_left(facts.not_after, now)
    when = _date(facts.not_after)
    if facts.not_after <= now:
        ago = (now - facts.not_after).days
        age = "today" if ago == 0 else f"{ago} day{'s' if ago != 1 else ''} ago"
        return [finding(
            FindingCode.AUTH_CURRENT_EXPIRED, Severity.CRITICAL, None,
            f"{label} expired {age} ({when}): OWA/ECP fail after login, hybrid Free/Busy "
            "breaks and the Exchange Management Shell may fail.",
        )]
    if left < WARNING_DAYS:
        severity = Severity.CRITICAL if left < CRITICAL_DAYS else Severity.WARNING
        return [finding(
            FindingCode.AUTH_CURRENT_EXPIRING, severity, None,
            f"{label} expires in {left} day{'s' if left != 1 else ''} ({when}); stage its "
            "successor now (it needs time to replicate).",
        )]
    return []


def _strength(view: CertView, label: str, advice: str) -> list[Finding]:
    facts = view.facts
    if facts is None:
        return []
    out = []
    if facts.signature_hash.lower() in WEAK_HASHES:
        out.append(finding(
            FindingCode.AUTH_WEAK_SIGNATURE, Severity.WARNING, None,
            f"{label} is signed with {facts.signature_hash.upper()}; move to SHA-2 at the "
            f"next rotation ({advice}).",
        ))
    if 0 < facts.key_size < MIN_KEY_SIZE:
        out.append(finding(
            FindingCode.AUTH_WEAK_KEY, Severity.WARNING, None,
            f"{label} has a {facts.key_size}-bit key; {MIN_KEY_SIZE} bits is the minimum "
            "(the rotation creates a 2048-bit key).",
        ))
    return out


def _next(obs: OrgObs, now: datetime) -> list[Finding]:
    auth = obs.auth
    if not auth.next or (auth.current and auth.next.upper() == auth.current.upper()):
        return []
    view = cert_view(obs, auth.next)
    assert view is not None
    label = f"Staged next Auth Certificate {short(view.thumbprint)}"
    out = []
    if view.facts is not None and view.expired(now):
        out.append(finding(
            FindingCode.AUTH_NEXT_EXPIRED, Severity.CRITICAL, None,
            f"{label} expired on {_date(view.facts.not_after)}; publishing it would break "
            "OAuth. Stage a new one.",
        ))
    due = auth.next_effective is not None and auth.next_effective <= now
    names = _names(obs)
    for fqdn in view.missing_on:
        out.append(finding(
            FindingCode.AUTH_NEXT_MISSING_ON_SERVER,
            Severity.CRITICAL if due else Severity.WARNING, fqdn,
            f"{label} has not reached {names.get(fqdn, fqdn)}"
            + (" and is already due for publication." if due else " yet."),
        ))
    effective = auth.next_effective
    if effective is not None and now - effective > PUBLISH_GRACE:
        hours = math.floor((now - effective) / timedelta(hours=1))
        out.append(finding(
            FindingCode.AUTH_NEXT_PUBLISH_OVERDUE, Severity.WARNING, None,
            f"{label} was due {hours} h ago ({iso(effective)}) and is still not current: "
            "the AuthAdmin servicelet (MSExchangeServiceHost) seems stuck; publish it.",
        ))
    out += _strength(view, label, "stage a SHA-256 one instead")
    return out


def _duplicates(obs: OrgObs) -> list[Finding]:
    """Auth-subject certificates that AuthConfig does not name, next to others."""
    named = {t.upper() for t in (obs.auth.current, obs.auth.next, obs.auth.previous) if t}
    out = []
    for server in in_scope_servers(obs):
        auth_certs = [c for c in server.certificates or () if is_auth_subject(c.subject)]
        unnamed = [c.thumbprint for c in auth_certs if c.thumbprint.upper() not in named]
        if len(auth_certs) > 1 and unnamed:
            listed = ", ".join(short(t) for t in unnamed)
            out.append(finding(
                FindingCode.AUTH_DUPLICATE_ON_SERVER, Severity.WARNING, server.fqdn,
                f"{server.name} holds {len(auth_certs)} Auth Certificates; {listed} "
                f"{'is' if len(unnamed) == 1 else 'are'} not named by AuthConfig (was the "
                "procedure run twice?). Remove unnamed ones once the rotation is settled.",
            ))
    return out


def _previous(obs: OrgObs) -> list[Finding]:
    previous = obs.auth.previous
    if not previous or (obs.auth.current and previous.upper() == obs.auth.current.upper()):
        return []
    return [finding(
        FindingCode.PREVIOUS_NOT_CLEARED, Severity.INFO, None,
        f"AuthConfig still names previous Auth Certificate {short(previous.upper())}; clear it "
        "(and remove it from the servers) once the current one has served for 24 h.",
    )]


_BACKEND_HARM = "OWA/ECP, ActiveSync and remote PowerShell through this server fail"


def _backend(obs: OrgObs, now: datetime) -> list[Finding]:
    out = []
    for server in in_scope_servers(obs):
        problem = backend_problem(server, now)
        backend = server.backend
        if problem in (None, BackendProblem.UNKNOWN) or backend is None:
            continue
        name = server.name
        thumb = short(backend.thumbprint or "")
        if problem == BackendProblem.NO_BINDING:
            out.append(finding(
                FindingCode.BACKEND_NO_BINDING, Severity.CRITICAL, server.fqdn,
                f"{name}: the \"Exchange Back End\" site has no https binding on *:444:; "
                f"{_BACKEND_HARM}.",
            ))
        elif problem == BackendProblem.NO_CERTIFICATE:
            out.append(finding(
                FindingCode.BACKEND_NO_CERTIFICATE, Severity.CRITICAL, server.fqdn,
                f"{name}: the \"Exchange Back End\" https *:444: binding names no certificate; "
                f"{_BACKEND_HARM}.",
            ))
        elif problem == BackendProblem.NOT_IN_STORE:
            out.append(finding(
                FindingCode.BACKEND_CERT_NOT_IN_STORE, Severity.CRITICAL, server.fqdn,
                f"{name}: the back end binding names certificate {thumb}, which is not in "
                f"Cert:\\LocalMachine\\My; {_BACKEND_HARM}.",
            ))
        elif problem == BackendProblem.EXPIRED and backend.cert is not None:
            out.append(finding(
                FindingCode.BACKEND_EXPIRED, Severity.CRITICAL, server.fqdn,
                f"{name}: back end certificate {thumb} expired on "
                f"{_date(backend.cert.not_after)}; renew it (never replace it with a public one).",
            ))
        elif problem == BackendProblem.EXPIRING and backend.cert is not None:
            left = days_left(backend.cert.not_after, now)
            out.append(finding(
                FindingCode.BACKEND_EXPIRING, Severity.WARNING, server.fqdn,
                f"{name}: back end certificate {thumb} expires in {left} day"
                f"{'s' if left != 1 else ''} ({_date(backend.cert.not_after)}); renew it.",
            ))
    return out
