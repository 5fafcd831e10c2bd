"""Plain data the collector observes and the decision rules read.

The collector (I/O, `workers.status.collect`) fills these from Exchange; everything after that
(`workers.status.findings`, `workers.status.decide`, `workers.changes.plan`) is pure functions
over them, so
every rule can be tested without a network. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workers.hybrid_app.key_findings import HybridAppRead


@dataclass(frozen=True)
class CertFacts:
    """What a certificate really is, computed from its DER bytes (never from Status)."""

    thumbprint: str  # SHA-1 of the DER, upper-case hex
    subject: str  # RFC 4514 string, e.g. "CN=Microsoft Exchange Server Auth Certificate"
    not_before: datetime
    not_after: datetime
    signature_hash: str  # "sha1", "sha256", ... ("unknown" when there is none)
    key_size: int
    sans: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendObs:
    """The "Exchange Back End" https *:444: binding of one server, as the host endpoint saw it."""

    has_binding: bool
    thumbprint: str | None = None  # hash named by the binding ("" / None: no certificate)
    cert: CertFacts | None = None  # that certificate from Cert:\\LocalMachine\\My, None if absent
    error: str | None = None  # set when the host endpoint could not be asked


@dataclass(frozen=True)
class ServerObs:
    """One server from Get-ExchangeServer plus what could be learned on it."""

    name: str
    fqdn: str
    site: str
    version: str  # AdminDisplayVersion, e.g. "Version 15.2 (Build 1544.4)"
    roles: tuple[str, ...]  # e.g. ("Mailbox",), ("ClientAccess",), ("Edge",)
    reachable: bool = True
    error: str | None = None  # one readable line when not reachable / not askable
    # Every certificate in the server's Exchange store; None when it could not be listed.
    certificates: tuple[CertFacts, ...] | None = None
    backend: BackendObs | None = None  # None when not checked


@dataclass(frozen=True)
class AuthConfigObs:
    """Get-AuthConfig: the org-wide (Active Directory) choice of auth certificate."""

    current: str | None  # thumbprints upper-case hex; None when empty
    next: str | None = None
    next_effective: datetime | None = None
    previous: str | None = None


@dataclass(frozen=True)
class OrgObs:
    """Everything observed about one org in one status run."""

    org: str
    checked_at: datetime
    auth: AuthConfigObs
    servers: tuple[ServerObs, ...]
    hybrid: bool = False
    writer: str | None = None  # fqdn of the org's writer server (config)
    # The dedicated hybrid application's keys (workers.hybrid_app); None when the org is
    # not hybrid or has no [org.hybrid_app] (then Graph is never called).
    hybrid_app: HybridAppRead | None = None
