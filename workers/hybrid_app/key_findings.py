"""What the dedicated hybrid application's keys mean for the org: the `hybrid_app` part of
the status and its findings (codes documented in README "Status findings").

Pure functions of what was read (the AuthConfig thumbprints, the keys or why they could
not be read, what Exchange's Auth Server names, the org's time), like
`workers.status.findings`:

- HYBRID_APP_CURRENT_MISSING  critical: hybrid already fails for the current certificate.
- HYBRID_APP_NEXT_MISSING     warning; critical once the next certificate's effective date
                              is NEXT_NEAR away or past (it breaks hybrid when published).
- HYBRID_APP_STALE_KEY        info: a key of a certificate that is not current, next or
                              previous (the clean-up removes it).
- HYBRID_APP_UNREADABLE       unknown: Graph could not be asked; Graph's reason in one line.
- HYBRID_APP_NOT_CONFIGURED   info: a hybrid org without `[org.hybrid_app]`; exauth cannot
                              see the application.
- HYBRID_APP_ID_MISMATCH      warning: Exchange's EvoSTS Auth Server names another
                              application than `[org.hybrid_app] app_id`: exauth would keep
                              the wrong one in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from workers.hybrid_app.keys import AppKey
from workers.status.report_model import (
    Finding,
    FindingCode,
    HybridAppKey,
    HybridAppStatus,
    KeyRole,
    Severity,
)

NEXT_NEAR = timedelta(days=7)


@dataclass(frozen=True)
class HybridAppRead:
    """One read of the application: its keys, or the one line of why there are none."""

    app_id: str
    keys: tuple[AppKey, ...] | None
    error: str | None = None
    # What Exchange's Auth Server names (Get-AuthServer): None unknown, "" none.
    exchange_app_id: str | None = None


def _short(thumbprint: str) -> str:
    return f"{thumbprint[:8]}…" if len(thumbprint) > 8 else thumbprint


def role_of(thumbprint: str, *, current: str | None, next_: str | None,
            previous: str | None) -> KeyRole:
    wanted = thumbprint.upper()
    for role, value in ((KeyRole.CURRENT, current), (KeyRole.NEXT, next_),
                        (KeyRole.PREVIOUS, previous)):
        if value and value.upper() == wanted:
            return role
    return KeyRole.STALE


def hybrid_app_status(read: HybridAppRead | None, *, hybrid: bool, configured: bool,
                      current: str | None, next_: str | None, previous: str | None,
                      next_effective: datetime | None, now: datetime
                      ) -> tuple[HybridAppStatus | None, list[Finding]]:
    """(the status's `hybrid_app` part, its findings). None for an org that is not hybrid."""
    if not hybrid:
        return None, []
    if not configured or read is None:
        return (HybridAppStatus(configured=False, app_id=None, read=False, error=None,
                                exchange_app_id=None, keys=[], current_on_app=None,
                                next_on_app=None),
                [_finding(FindingCode.HYBRID_APP_NOT_CONFIGURED, Severity.INFO,
                          "hybrid org: exauth does not check the dedicated Exchange hybrid "
                          "application in Entra ID; configure [org.hybrid_app]")])
    findings: list[Finding] = []
    if read.exchange_app_id and read.exchange_app_id.lower() != read.app_id.lower():
        findings.append(_finding(
            FindingCode.HYBRID_APP_ID_MISMATCH, Severity.WARNING,
            f"Exchange's EvoSTS Auth Server names the hybrid application "
            f"{read.exchange_app_id}, but [org.hybrid_app] app_id is {read.app_id}: exauth "
            "keeps the wrong application in step"))
    if read.keys is None:
        findings.append(_finding(
            FindingCode.HYBRID_APP_UNREADABLE, Severity.UNKNOWN,
            f"the dedicated hybrid application {read.app_id} could not be read: "
            f"{read.error or 'no reason given'}"))
        return (HybridAppStatus(configured=True, app_id=read.app_id, read=False,
                                error=read.error, exchange_app_id=read.exchange_app_id,
                                keys=[], current_on_app=None, next_on_app=None), findings)
    on_app = {key.thumbprint for key in read.keys}
    keys = [HybridAppKey(**key.as_status(), role=role_of(
        key.thumbprint, current=current, next_=next_, previous=previous)) for key in read.keys]
    current_on = None if not current else current.upper() in on_app
    next_on = None if not next_ else next_.upper() in on_app
    if current_on is False:
        findings.append(_finding(
            FindingCode.HYBRID_APP_CURRENT_MISSING, Severity.CRITICAL,
            f"the current Auth Certificate {_short(current or '')} is not on the dedicated "
            "hybrid application: hybrid Free/Busy, MailTips and photos fail; `fix` uploads "
            "it"))
    if next_on is False:
        near = next_effective is not None and next_effective - now <= NEXT_NEAR
        when = "" if next_effective is None else (
            " and it is due to be published" if near else " before it is published")
        findings.append(_finding(
            FindingCode.HYBRID_APP_NEXT_MISSING,
            Severity.CRITICAL if near else Severity.WARNING,
            f"the next Auth Certificate {_short(next_ or '')} is not on the dedicated hybrid "
            f"application yet{when}: upload it, or hybrid breaks at publication"))
    for key in keys:
        if key.role is KeyRole.STALE:
            findings.append(_finding(
                FindingCode.HYBRID_APP_STALE_KEY, Severity.INFO,
                f"the dedicated hybrid application still holds key {_short(key.thumbprint)} "
                f"({key.display_name or 'no name'}), which is no longer current, next or "
                "previous"))
    return (HybridAppStatus(configured=True, app_id=read.app_id, read=True, error=None,
                            exchange_app_id=read.exchange_app_id, keys=keys,
                            current_on_app=current_on, next_on_app=next_on), findings)


def _finding(code: FindingCode, severity: Severity, message: str) -> Finding:
    return Finding(code=code, severity=severity, server=None, message=message)
