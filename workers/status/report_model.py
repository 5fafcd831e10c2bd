"""The status of one org as typed models: the shape of DESIGN.md "Status JSON", in code.

`workers.status.report.build_status` returns an `OrgStatus`; every consumer reads it by
attribute (`status.auth.current.thumbprint`) and chooses behaviour by enum, never by the
display text of a finding or an action. It becomes JSON only at the boundaries: the status
job's RQ result, `exauth status --json`, stored fingerprints. `to_json()` gives exactly the
document DESIGN.md fixes (same keys, same order, nulls kept), and `parse_status` reads
one back, with a one-line error when the document is not a status.

Field order here *is* the key order of the JSON: do not reorder fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from config.errors import ExauthError


class Severity(StrEnum):
    """How bad a finding is (HealthChecker's colours); declared from worst to mildest."""

    CRITICAL = "critical"
    WARNING = "warning"
    UNKNOWN = "unknown"  # could not be judged (the hybrid application unreadable)
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for critical: findings are listed most severe first."""
        return list(Severity).index(self)


class Overall(StrEnum):
    """The org's state for monitoring; `unknown` when no in-scope server answered, or when
    a finding could not be judged and none is known to be warning or critical."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        """Monitoring-plugin convention: 0 ok, 1 warning, 2 critical, 3 could not check."""
        return list(Overall).index(self)


class FindingCode(StrEnum):
    """DESIGN.md "Finding codes"."""

    AUTH_CURRENT_NOT_SET = "AUTH_CURRENT_NOT_SET"
    AUTH_CURRENT_EXPIRED = "AUTH_CURRENT_EXPIRED"
    AUTH_CURRENT_EXPIRING = "AUTH_CURRENT_EXPIRING"
    AUTH_CURRENT_MISSING_ON_SERVER = "AUTH_CURRENT_MISSING_ON_SERVER"
    AUTH_NEXT_EXPIRED = "AUTH_NEXT_EXPIRED"
    AUTH_NEXT_MISSING_ON_SERVER = "AUTH_NEXT_MISSING_ON_SERVER"
    AUTH_NEXT_PUBLISH_OVERDUE = "AUTH_NEXT_PUBLISH_OVERDUE"
    AUTH_WEAK_SIGNATURE = "AUTH_WEAK_SIGNATURE"
    AUTH_WEAK_KEY = "AUTH_WEAK_KEY"
    AUTH_DUPLICATE_ON_SERVER = "AUTH_DUPLICATE_ON_SERVER"
    PREVIOUS_NOT_CLEARED = "PREVIOUS_NOT_CLEARED"
    SERVER_UNREACHABLE = "SERVER_UNREACHABLE"
    BACKEND_NO_BINDING = "BACKEND_NO_BINDING"
    BACKEND_NO_CERTIFICATE = "BACKEND_NO_CERTIFICATE"
    BACKEND_CERT_NOT_IN_STORE = "BACKEND_CERT_NOT_IN_STORE"
    BACKEND_EXPIRED = "BACKEND_EXPIRED"
    BACKEND_EXPIRING = "BACKEND_EXPIRING"
    HYBRID_DETECTED = "HYBRID_DETECTED"
    # The dedicated hybrid application in Entra ID (issue 13; README "Status findings").
    HYBRID_APP_CURRENT_MISSING = "HYBRID_APP_CURRENT_MISSING"
    HYBRID_APP_NEXT_MISSING = "HYBRID_APP_NEXT_MISSING"
    HYBRID_APP_STALE_KEY = "HYBRID_APP_STALE_KEY"
    HYBRID_APP_UNREADABLE = "HYBRID_APP_UNREADABLE"
    HYBRID_APP_NOT_CONFIGURED = "HYBRID_APP_NOT_CONFIGURED"
    HYBRID_APP_ID_MISMATCH = "HYBRID_APP_ID_MISMATCH"


class ActionKind(StrEnum):
    """DOMAIN.md section 4's actions, declared in the order to do them."""

    BLOCKED = "blocked"
    # The dedicated hybrid application lacks the current (or staged next) key: hybrid is
    # broken now, or breaks at publication (workers.status.decide).
    UPLOAD_HYBRID_KEY = "upload_hybrid_key"
    REPLACE_NOW = "replace_now"
    PUBLISH_NEXT = "publish_next"
    IMPORT_CURRENT = "import_current"
    IMPORT_NEXT = "import_next"
    STAGE_NEW = "stage_new"
    WAIT_REPLICATION = "wait_replication"
    WAIT_FOR_PUBLISH = "wait_for_publish"
    REPAIR_BACKEND = "repair_backend"
    CLEANUP = "cleanup"
    NONE = "none"


class BackendProblem(StrEnum):
    """What is wrong with a server's back end binding (DOMAIN.md section 7); null = healthy."""

    NO_BINDING = "no_binding"
    NO_CERTIFICATE = "no_certificate"
    NOT_IN_STORE = "not_in_store"
    EXPIRED = "expired"
    EXPIRING = "expiring"
    UNKNOWN = "unknown"

    @property
    def broken(self) -> bool:
        """Broken enough that the server's Exchange endpoint fails: repaired before anything."""
        return self in (BackendProblem.NO_BINDING, BackendProblem.NO_CERTIFICATE,
                        BackendProblem.NOT_IN_STORE, BackendProblem.EXPIRED)


class _Part(BaseModel):
    """Every part of the status: unknown keys are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ServerStatus(_Part):
    name: str
    fqdn: str
    site: str
    version: str
    roles: list[str]
    reachable: bool
    error: str | None

    @property
    def in_scope(self) -> bool:
        """Mailbox/Client Access on Exchange 2013 and later (workers.status.findings)."""
        from workers.status.findings import is_in_scope

        return is_in_scope(self.roles, self.version)


class AuthCert(_Part):
    """CERT of DESIGN.md: one certificate AuthConfig names, and where the servers stand."""

    thumbprint: str
    subject: str | None
    not_before: str | None
    not_after: str | None
    days_left: int | None
    signature_hash: str | None
    key_size: int | None
    present_on: list[str]
    missing_on: list[str]
    unknown_on: list[str]

    @property
    def expires(self) -> datetime | None:
        return None if self.not_after is None else parse_time(self.not_after)


class NextAuthCert(AuthCert):
    """The staged next certificate: CERT plus when the servicelet may publish it."""

    effective: str | None


class AuthStatus(_Part):
    current: AuthCert | None
    next: NextAuthCert | None
    previous: AuthCert | None

    def named(self) -> list[AuthCert]:
        """The certificates AuthConfig names, current first."""
        return [cert for cert in (self.current, self.next, self.previous) if cert is not None]


class BackendStatus(_Part):
    server: str
    thumbprint: str | None
    not_after: str | None
    days_left: int | None
    problem: BackendProblem | None


class KeyRole(StrEnum):
    """What a key of the dedicated hybrid application is to the org's AuthConfig."""

    CURRENT = "current"
    NEXT = "next"
    PREVIOUS = "previous"
    STALE = "stale"  # none of those: the clean-up removes it


class HybridAppKey(_Part):
    """One keyCredential of the dedicated hybrid application."""

    thumbprint: str
    key_id: str
    display_name: str
    not_before: str | None
    not_after: str | None
    role: KeyRole


class HybridAppStatus(_Part):
    """The dedicated hybrid application in Entra ID (workers.hybrid_app); null on an org
    that is not hybrid. `configured`: [org.hybrid_app] is set; `read`: Graph answered
    (else `error` is Graph's reason); `exchange_app_id`: what Exchange's EvoSTS Auth Server
    names (null unknown)."""

    configured: bool
    app_id: str | None
    read: bool
    error: str | None
    exchange_app_id: str | None
    keys: list[HybridAppKey]
    current_on_app: bool | None
    next_on_app: bool | None

    def stale(self) -> list[HybridAppKey]:
        return [key for key in self.keys if key.role is KeyRole.STALE]

    def holds(self, thumbprint: str) -> bool:
        return self.read and any(k.thumbprint == thumbprint.upper() for k in self.keys)


class Finding(_Part):
    code: FindingCode
    severity: Severity
    server: str | None
    message: str


class Action(_Part):
    """One thing to do about the org; `servers` are fqdns, `reason` is display text only."""

    kind: ActionKind
    servers: list[str]
    reason: str


class OrgStatus(_Part):
    """The status of one org: DESIGN.md "Status JSON"."""

    org: str
    checked_at: str
    hybrid: bool
    sites: list[str]
    servers: list[ServerStatus]
    auth: AuthStatus
    backend: list[BackendStatus]
    # Issue 13: only a hybrid org's status has this key (DESIGN's keys stay exactly as they
    # are for every other org): absent and None are the same.
    hybrid_app: HybridAppStatus | None = None
    findings: list[Finding]
    actions: list[Action]

    @property
    def checked_time(self) -> datetime:
        """When the status was judged, on the org's own clock (workers.status.collect)."""
        return parse_time(self.checked_at)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of DESIGN.md (plain dicts, lists, strings; key order kept);
        `hybrid_app` only for a hybrid org."""
        return self.model_dump(mode="json",
                               exclude={"hybrid_app"} if self.hybrid_app is None else None)

    def in_scope(self) -> list[ServerStatus]:
        return [server for server in self.servers if server.in_scope]

    def server(self, name: str) -> ServerStatus | None:
        """A server by fqdn or short name, case-insensitively."""
        wanted = name.lower()
        return next((s for s in self.servers if wanted in (s.fqdn.lower(), s.name.lower())),
                    None)

    def backend_of(self, fqdn: str) -> BackendStatus | None:
        return next((entry for entry in self.backend if entry.server == fqdn), None)


class StatusDocumentError(ExauthError, ValueError):
    """A document that is not a status JSON; str() is one line naming the first bad key."""

    permanent = True


def parse_status(document: Any) -> OrgStatus:
    """A status JSON (dict, or the model itself) as an `OrgStatus`, or StatusDocumentError."""
    if isinstance(document, OrgStatus):
        return document
    try:
        return OrgStatus.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StatusDocumentError(
            f"not a status document: {where}: {first['msg']}{more}"
        ) from None


def parse_time(text: str) -> datetime:
    """A status time ("2026-01-01T00:00:00Z") as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
