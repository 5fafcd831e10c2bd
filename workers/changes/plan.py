"""The exact steps an action would run: cmdlet, endpoint, server, bound parameters.

Pure: from the status (workers.status.report_model.OrgStatus) and one of its actions to a
list of `Step`s (DOMAIN.md sections 5, 6 and 7). The executor binds each parameter with
`add_cmdlet` + `add_parameter` (a `None` value is a switch; an empty name is a positional
argument), never building script text; `Step.render()` is only the line an admin would type
to do the same by hand, quoted so that no value can break out of its argument.

Values not known when planning are placeholders the executor fills in: `NEW_THUMBPRINT`
(the certificate the New-ExchangeCertificate step created), `EXPORTED_FILE_DATA` (the bytes
the export step returned), `secret_ref(name)` = "<secret:name>" (a secret the executor
fetches by name at run time; the plan never holds a secret). Dates travel as ISO 8601
strings and are recomputed when a step runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from workers.changes.step_kind import StepKind
from workers.exchange.parsing import BACKEND_BINDING, BACKEND_SITE, CERT_STORE
from workers.status.findings import iso, short
from workers.status.report_model import (
    Action,
    ActionKind,
    AuthCert,
    AuthStatus,
    BackendProblem,
    HybridAppStatus,
    OrgStatus,
)

NEW_THUMBPRINT = "<new thumbprint>"
EXPORTED_FILE_DATA = "<file data from the export step>"
AUTH_NAME = "Microsoft Exchange Server Auth Certificate"
APP_POOLS = ("MSExchangeOWAAppPool", "MSExchangeECPAppPool")
SNAPIN = "Microsoft.Exchange.Management.PowerShell.SnapIn"

# Switch parameters: rendered `-Name` (value None) or `-Name:$false`, never `-Name $false`.
SWITCHES = frozenset({
    "Confirm", "Force", "WhatIf", "PublishCertificate", "ClearPreviousCertificate",
    "BinaryEncoded",
})


def secret_ref(name: str) -> str:
    """A placeholder naming a secret the executor resolves when the step runs."""
    return f"<secret:{name}>"


_SECRET_REF = re.compile(r"<secret:([^<>\r\n]{1,200})>")


@dataclass(frozen=True)
class Step:
    """One step; `kind` says what it does (execution dispatches on it), `title` is only
    text for people."""

    title: str
    server: str  # fqdn the command runs against
    endpoint: str  # "exchange" | "host" | "graph" (Microsoft Graph, not PowerShell)
    cmdlet: str
    parameters: tuple[tuple[str, Any], ...]
    changes_state: bool
    note: str = ""
    kind: StepKind = field(kw_only=True)

    def render(self) -> str:
        """The PowerShell line an admin would type for this step."""
        parts = [self.cmdlet]
        for name, value in self.parameters:
            if name == "":
                parts.append(_argument(value))
            elif value is None:
                parts.append(f"-{name}")
            elif isinstance(value, bool) and name in SWITCHES:
                parts.append(f"-{name}:{_literal(value)}")
            elif name == "Password" and isinstance(value, str) and _SECRET_REF.fullmatch(value):
                prompt = value[len("<secret:"):-1]
                parts.append(f"-{name} (Read-Host -AsSecureString -Prompt {quote(prompt)})")
            else:
                parts.append(f"-{name} {_argument(value)}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "kind": self.kind.value,
            "server": self.server,
            "endpoint": self.endpoint,
            "cmdlet": self.cmdlet,
            "parameters": [[name, _jsonable(value)] for name, value in self.parameters],
            "changes_state": self.changes_state,
            "note": self.note,
            "command": self.render(),
        }


# --- rendering values --------------------------------------------------------------------

# Safe as a bare command-mode argument: starts with a letter (or "/" for exe switches),
# then only letters, digits, ".", "_", "-". Anything else is quoted.
_BARE = re.compile(r"/?[A-Za-z][A-Za-z0-9._-]*")
# PowerShell closes a single-quoted string on any of these, so each is doubled.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def quote(value: str) -> str:
    """A string literal PowerShell reads back as exactly `value`, with no expansion."""
    if _CONTROL.search(value):
        return _double_quoted(value)
    return "'" + "".join(c * 2 if c in _SINGLE_QUOTES else c for c in value) + "'"


def _double_quoted(value: str) -> str:
    escapes = {"\n": "`n", "\r": "`r", "\t": "`t", "\x00": "`0"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif _CONTROL.match(char):
            out.append(f"$([char]0x{ord(char):02x})")
        elif char in '`$"\u201c\u201d\u201e':
            out.append("`" + char)
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _literal(value: Any) -> str:
    """A value inside an expression (array element, switch value): strings always quoted."""
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return quote(iso(value))
    if isinstance(value, list | tuple):
        return "@(" + ", ".join(_literal(item) for item in value) + ")"
    return quote(str(value))


def _argument(value: Any) -> str:
    """A value in argument position: safe bare words stay bare, for readability."""
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return _literal(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


# --- reading the status ------------------------------------------------------------------


@dataclass(frozen=True)
class _Org:
    """The parts of the status the steps need."""

    writer: str
    in_scope: tuple[str, ...]
    hybrid: bool
    auth: AuthStatus
    backend: dict[str, BackendProblem | None]
    hybrid_app: HybridAppStatus | None = None
    lifetime_days: int | None = None  # [org.rotation]: new Auth Certificates' lifetime
    now: datetime | None = None

    def cert(self, which: str) -> AuthCert | None:
        """AuthConfig's `current`, `next` or `previous` certificate (None when not set)."""
        cert: AuthCert | None = getattr(self.auth, which)
        return cert

    @property
    def app_id(self) -> str | None:
        """The dedicated hybrid application exauth keeps in step (a configured hybrid org)."""
        section = self.hybrid_app
        return section.app_id if self.hybrid and section is not None and section.configured \
            else None


def _org(status: OrgStatus, writer: str, lifetime_days: int | None = None,
         now: datetime | None = None) -> _Org:
    in_scope = tuple(s.fqdn for s in status.in_scope())
    found = status.server(writer) if writer else None
    resolved = found.fqdn if found is not None else writer
    if not resolved:
        # No writer configured: show the first reachable in-scope server, never "".
        reachable = [s.fqdn for s in status.servers if s.reachable and s.fqdn in in_scope]
        resolved = (reachable or list(in_scope) or ["<writer>"])[0]
    backend = {entry.server: entry.problem for entry in status.backend}
    return _Org(resolved, in_scope, status.hybrid, status.auth, backend, status.hybrid_app,
                lifetime_days, now)


def _thumbprint(cert: AuthCert | None) -> str | None:
    return cert.thumbprint if cert is not None else None


def effective_date(current_not_after: datetime | None, now: datetime) -> datetime | None:
    """DOMAIN section 5 step 3; None means "too late for staging: emergency path"."""
    if current_not_after is None:
        return None
    left = current_not_after - now
    if left > timedelta(days=32):
        return now + timedelta(days=30)
    if left > timedelta(hours=61):
        return now + timedelta(hours=49)
    return None


# --- building blocks ---------------------------------------------------------------------


def _reread(org: _Org, note: str) -> Step:
    return Step("Re-read AuthConfig", org.writer, "exchange", "Get-AuthConfig", (), False, note,
                kind=StepKind.REREAD_AUTH_CONFIG)


# New-SelfSignedCertificate's key as Exchange keeps its own: RSA in the legacy CSP,
# exportable (the certificate servicelet copies it to the other servers).
SELF_SIGNED_PROVIDER = "Microsoft RSA SChannel Cryptographic Provider"
NOT_BEFORE_SLACK = timedelta(minutes=10)


def _new_auth_cert(org: _Org, note: str) -> Step:
    if org.lifetime_days is not None:
        start = (org.now or datetime.now().astimezone()) - NOT_BEFORE_SLACK
        return Step(
            f"Create the new Auth Certificate on the writer ({org.lifetime_days}-day lifetime)",
            org.writer, "host", "New-SelfSignedCertificate",
            (
                ("Subject", f"CN={AUTH_NAME}"),
                ("FriendlyName", AUTH_NAME),
                ("CertStoreLocation", CERT_STORE),
                ("KeyAlgorithm", "RSA"),
                ("KeyLength", 2048),
                ("HashAlgorithm", "SHA256"),
                ("KeyExportPolicy", "Exportable"),
                ("KeySpec", "KeyExchange"),
                ("Provider", SELF_SIGNED_PROVIDER),
                ("NotBefore", iso(start)),
                ("NotAfter", iso(start + timedelta(days=org.lifetime_days))),
            ),
            True,
            note + f" [org.rotation] lifetime_days = {org.lifetime_days}: New-ExchangeCertificate"
            " cannot set a lifetime, so Windows makes it in the machine store, which is "
            "Exchange's; the dates are recomputed when the step runs.",
            kind=StepKind.CREATE_AUTH_CERT_WITH_LIFETIME,
        )
    return Step(
        "Create the new Auth Certificate on the writer",
        org.writer, "exchange", "New-ExchangeCertificate",
        (
            ("Server", org.writer),
            ("KeySize", 2048),
            ("PrivateKeyExportable", True),
            ("SubjectName", f"cn={AUTH_NAME}"),
            ("FriendlyName", AUTH_NAME),
            ("DomainName", ()),
            ("Services", "None"),
        ),
        True,
        note,
        kind=StepKind.CREATE_AUTH_CERT,
    )


def _stage(org: _Org, effective: datetime, note: str) -> Step:
    return Step(
        "Stage it as the next Auth Certificate",
        org.writer, "exchange", "Set-AuthConfig",
        (
            ("NewCertificateThumbprint", NEW_THUMBPRINT),
            ("NewCertificateEffectiveDate", iso(effective)),
            ("Force", None),
        ),
        True,
        note,
        kind=StepKind.STAGE_NEXT,
    )


def _publish(org: _Org, note: str = "") -> Step:
    return Step(
        "Publish the next Auth Certificate now", org.writer, "exchange", "Set-AuthConfig",
        (("PublishCertificate", None), ("Confirm", False)), True, note,
        kind=StepKind.PUBLISH_NEXT,
    )


def _clear_previous(org: _Org, note: str = "") -> Step:
    return Step(
        "Clear the previous Auth Certificate from AuthConfig",
        org.writer, "exchange", "Set-AuthConfig",
        (("ClearPreviousCertificate", None), ("Confirm", False)), True, note,
        kind=StepKind.CLEAR_PREVIOUS,
    )


def _recycle(servers: Iterable[str], note: str = "") -> list[Step]:
    return [
        Step(
            f"Recycle {pool} on {server}", server, "host", "Restart-WebAppPool",
            (("Name", pool),), True,
            note or "OWA and ECP cache the Auth Certificate until recycled.",
            kind=StepKind.RECYCLE_APP_POOL,
        )
        for server in servers
        for pool in APP_POOLS
    ]


def _hcw(org: _Org) -> list[Step]:
    if not org.hybrid:
        return []
    return [Step(
        "Re-run the Hybrid Configuration Wizard", org.writer, "exchange",
        "Get-HybridConfiguration", (), False,
        "Manual: run the Hybrid Configuration Wizard again so Microsoft 365 learns the new "
        "Auth Certificate; hybrid Free/Busy and archive policies stay broken until then.",
        kind=StepKind.HYBRID_WIZARD_REMINDER,
    )]


def _post_publish(org: _Org) -> list[Step]:
    """DOMAIN section 5 step 6: once the new certificate is current."""
    return [_clear_previous(org), *_recycle(org.in_scope), *_hcw(org)]


def graph_request(app_id: str) -> str:
    """The "cmdlet" of a Graph step: the request it sends, for people and the audit log."""
    return f"PATCH /v1.0/applications(appId='{app_id}')"


def _upload_key(org: _Org, thumbprint: str, which: str) -> list[Step]:
    """Issue 13: the key must be on the dedicated hybrid application before the
    certificate is published (none for an org exauth does not keep in step)."""
    if org.app_id is None:
        return []
    return [Step(
        f"Upload the {which} Auth Certificate to the hybrid application", org.writer, "graph",
        graph_request(org.app_id),
        (("Keep", "every key it holds, unchanged"), ("Add", thumbprint)), True,
        "Graph's PATCH replaces the whole keyCredentials collection: the keys are read just "
        "before, sent back with this certificate's public key (AsymmetricX509Cert, Verify, "
        f"its own dates, thumbprint as identifier; read from {org.writer}), and read again "
        "after: anything else gone fails the step.",
        kind=StepKind.UPLOAD_HYBRID_KEY,
    )]


def _remove_stale_keys(org: _Org, note: str) -> list[Step]:
    if org.app_id is None:
        return []
    return [Step(
        "Remove stale keys from the hybrid application", org.writer, "graph",
        graph_request(org.app_id),
        (("Keep", "the keys of the current, next and previous Auth Certificates"),
         ("Remove", "every other key")), True,
        note + " The keys of the current, next and previous Auth Certificates always stay.",
        kind=StepKind.REMOVE_STALE_HYBRID_KEYS,
    )]


def _get_cert(server: str, thumbprint: str, title: str, kind: StepKind, note: str = "") -> Step:
    return Step(
        title, server, "exchange", "Get-ExchangeCertificate",
        (("Server", server), ("Thumbprint", thumbprint)), False, note, kind=kind,
    )


def _remove_cert(server: str, thumbprint: str, note: str) -> Step:
    return Step(
        f"Remove the old Auth Certificate {short(thumbprint)} from {server}",
        server, "exchange", "Remove-ExchangeCertificate",
        (("Server", server), ("Thumbprint", thumbprint), ("Confirm", False)), True, note,
        kind=StepKind.REMOVE_OLD_AUTH_CERT,
    )


# --- the steps of each action ------------------------------------------------------------


def steps(status: OrgStatus, action: Action, *, writer: str, now: datetime,
          lifetime_days: int | None = None) -> list[Step]:
    """The steps of one action of `status`, in order (`lifetime_days`: [org.rotation])."""
    org = _org(status, writer, lifetime_days, now)
    servers = list(action.servers)
    reason = action.reason
    builders: dict[ActionKind, Callable[[], list[Step]]] = {
        ActionKind.STAGE_NEW: lambda: _stage_new(org, now),
        ActionKind.REPLACE_NOW: lambda: _replace_now(org, now),
        ActionKind.PUBLISH_NEXT: lambda: _publish_next(org),
        ActionKind.IMPORT_CURRENT: lambda: _import(org, "current", servers),
        ActionKind.IMPORT_NEXT: lambda: _import(org, "next", servers),
        ActionKind.REPAIR_BACKEND: lambda: _repair_backend(org, servers),
        ActionKind.CLEANUP: lambda: _cleanup(org, servers),
        ActionKind.UPLOAD_HYBRID_KEY: lambda: _upload_hybrid_key(org, reason),
        ActionKind.WAIT_REPLICATION: lambda: _wait_replication(org, servers, reason),
        ActionKind.WAIT_FOR_PUBLISH: lambda: _wait_for_publish(org, reason),
        ActionKind.BLOCKED: lambda: _blocked(org, servers, reason),
        ActionKind.NONE: lambda: [_reread(org, reason or "Nothing to do.")],
    }
    return builders[action.kind]()


def plan(status: OrgStatus, *, writer: str, now: datetime,
         lifetime_days: int | None = None) -> list[dict[str, Any]]:
    """Every action of the status with its steps, JSON-able (`exauth plan --json`)."""
    return [
        {
            **item.model_dump(mode="json"),
            "steps": [step.to_dict() for step in steps(status, item, writer=writer, now=now,
                                                       lifetime_days=lifetime_days)],
        }
        for item in status.actions
    ]


def _stage_new(org: _Org, now: datetime) -> list[Step]:
    current = org.cert("current")
    effective = effective_date(current.expires if current else None, now)
    if effective is None:
        first, *rest = _replace_now(org, now)
        too_late = ("The current certificate has 61 h or less left: too late to stage, so "
                    "this is the emergency replacement. ")
        return [replace(first, note=too_late + first.note), *rest]
    old = current.thumbprint if current else None
    cleanup_after = iso(effective + timedelta(hours=24))
    out = [
        _reread(org, "Stop if a usable next Auth Certificate is already staged."),
        _new_auth_cert(org, "Only on the writer, under the org's writer lock. Record the new "
                            "thumbprint before the next step so a retry reuses it."),
        _stage(org, effective, f"Effective {iso(effective)} (recomputed from the time the "
                               "step runs; it must lie in the future)."),
        *_upload_key(org, NEW_THUMBPRINT, "next"),
        *[
            _get_cert(server, NEW_THUMBPRINT, f"Verify the new certificate reached {server}",
                      StepKind.VERIFY_NEW_CERT_REACHED,
                      "Import it where it is still missing (import_next).")
            for server in org.in_scope
        ],
        Step("Watch for publication", org.writer, "exchange", "Get-AuthConfig", (), False,
             f"The AuthAdmin servicelet publishes it after {iso(effective)} (it runs every "
             "12 h). Early publish, on request: Set-AuthConfig -PublishCertificate.",
             kind=StepKind.WATCH_PUBLICATION),
        *_post_publish(org),
    ]
    if old:
        out += [
            _remove_cert(server, old, f"Not before {cleanup_after}: the new certificate must "
                                      "have been current for 24 h.")
            for server in (current.present_on if current else [])
        ]
    out += _remove_stale_keys(org, f"Not before {cleanup_after}: the new certificate must have "
                                   "been current for 24 h.")
    return out


def _replace_now(org: _Org, now: datetime) -> list[Step]:
    fallback = (f"If the Exchange endpoint of {org.writer} is broken, run this through its "
                f"host endpoint after Add-PSSnapin {SNAPIN}.")
    effective = now + timedelta(minutes=1)
    return [
        _reread(org, "Emergency path: stop if a usable current certificate has appeared. "
                + fallback),
        _new_auth_cert(org, "Only on the writer, under the org's writer lock. Record the new "
                            "thumbprint before the next step. " + fallback),
        _stage(org, effective, "Effective one minute after the step runs. " + fallback),
        *_upload_key(org, NEW_THUMBPRINT, "new"),
        _publish(org, fallback),
        _clear_previous(org, fallback),
        Step("Restart MSExchangeServiceHost on the writer", org.writer, "host",
             "Restart-Service", (("Name", "MSExchangeServiceHost"), ("Force", None)), True,
             "Makes the AuthAdmin servicelet pick up the new certificate at once.",
             kind=StepKind.RESTART_SERVICE_HOST),
        *_recycle(org.in_scope, "OWA and ECP cache the Auth Certificate; a failure here is "
                                "reported, not fatal."),
        Step("Watch the new certificate reach every server", org.writer, "exchange",
             "Get-AuthConfig", (), False,
             "Tell the channel: publication can take up to an hour to reach all servers.",
             kind=StepKind.WATCH_CURRENT_SPREAD),
        *_hcw(org),
    ]


def _publish_next(org: _Org) -> list[Step]:
    nxt = org.cert("next")
    thumbprint = (nxt.thumbprint if nxt else "") or "the staged next certificate"
    return [
        _reread(org, f"Stop unless the next certificate is still {thumbprint} and present on "
                     "every server."),
        *_upload_key(org, (nxt.thumbprint if nxt else "") or NEW_THUMBPRINT, "next"),
        _publish(org),
        *_post_publish(org),
    ]


def _import(org: _Org, which: str, targets: list[str]) -> list[Step]:
    cert = org.cert(which)
    thumbprint = cert.thumbprint if cert else ""
    have = list(cert.present_on) if cert else []
    source = org.writer if org.writer in have else (have[0] if have else org.writer)
    password = secret_ref(f"{which}-auth-certificate-export")
    out = [
        _get_cert(source, thumbprint, f"Re-read the {which} Auth Certificate on {source}",
                  StepKind.REREAD_IMPORT_SOURCE,
                  "Stop if it is no longer the one AuthConfig names."),
        Step(
            f"Export it with its private key from {source}", source, "exchange",
            "Export-ExchangeCertificate",
            (("Server", source), ("Thumbprint", thumbprint), ("BinaryEncoded", None),
             ("Password", password)),
            False,
            "The file data stays in the worker's memory for the import; never logged.",
            kind=StepKind.EXPORT_CERT,
        ),
    ]
    for target in targets:
        out.append(Step(
            f"Import it on {target}", target, "exchange", "Import-ExchangeCertificate",
            (("Server", target), ("FileData", EXPORTED_FILE_DATA), ("Password", password),
             ("PrivateKeyExportable", True), ("Confirm", False)),
            True, kind=StepKind.IMPORT_CERT,
        ))
    if which == "current":
        out += _recycle(targets)
    else:
        out += [_get_cert(target, thumbprint, f"Verify it is on {target}",
                          StepKind.VERIFY_IMPORTED) for target in targets]
    return out


def _repair_backend(org: _Org, servers: list[str]) -> list[Step]:
    out: list[Step] = []
    for server in servers:
        if server.lower() == org.writer.lower():
            where, endpoint = server, "host"
            how = f"Run through the host endpoint after Add-PSSnapin {SNAPIN}. "
        else:
            where, endpoint = org.writer, "exchange"
            how = ""
        binding = (("Name", BACKEND_SITE), ("BindingInformation", BACKEND_BINDING),
                   ("Protocol", "https"))
        out += [
            Step(f"Re-read the back end binding of {server}", server, "host",
                 "Get-IISSiteBinding", binding, False, kind=StepKind.REREAD_BACKEND_BINDING),
            Step(f"Create a new self-signed back end certificate on {server}", where, endpoint,
                 "New-ExchangeCertificate", (("Server", server), ("Services", "None")), True,
                 how + "Default subject and SANs (server name and FQDN). Never use "
                 "Enable-ExchangeCertificate -Services IIS for this: it binds the front end.",
                 kind=StepKind.CREATE_BACKEND_CERT),
        ]
        if org.backend.get(server) != BackendProblem.NO_BINDING:
            out.append(Step(
                f"Remove the broken https *:444: binding on {server}", server, "host",
                "Remove-IISSiteBinding", (*binding, ("Confirm", False)), True,
                kind=StepKind.REMOVE_BACKEND_BINDING,
            ))
        out += [
            Step(f"Bind the new certificate to \"Exchange Back End\" on {server}", server,
                 "host", "New-IISSiteBinding",
                 (*binding, ("CertificateThumbPrint", NEW_THUMBPRINT),
                  ("CertStoreLocation", CERT_STORE)),
                 True, kind=StepKind.BIND_BACKEND_CERT),
            Step(f"Restart IIS on {server}", server, "host", "iisreset", (("", "/noforce"),),
                 True, kind=StepKind.RESTART_IIS),
            Step(f"Verify the back end binding of {server}", server, "host",
                 "Get-IISSiteBinding", binding, False, kind=StepKind.VERIFY_BACKEND_BINDING),
        ]
    return out


def _cleanup(org: _Org, servers: list[str]) -> list[Step]:
    previous = _thumbprint(org.cert("previous"))
    current = _thumbprint(org.cert("current"))
    out = [_reread(org, "Only if the current certificate has been current for at least 24 h "
                        f"and the previous one is still {previous or 'set'}.")]
    out.append(_clear_previous(org))
    if previous and previous != current:
        out += [
            _remove_cert(server, previous, "Only after the new certificate has been current "
                                           "for 24 h.")
            for server in servers
        ]
    out += _remove_stale_keys(org, "Only after the new certificate has been current for 24 h.")
    return out


def _upload_hybrid_key(org: _Org, reason: str) -> list[Step]:
    """`fix` for a hybrid application that lacks the current (or staged next) certificate."""
    section = org.hybrid_app
    out = [_reread(org, reason or "Stop if AuthConfig changed.")]
    for which in ("current", "next"):
        cert = org.cert(which)
        if cert and section is not None and getattr(section, f"{which}_on_app") is False:
            out += _upload_key(org, cert.thumbprint, which)
    return out


def _wait_replication(org: _Org, servers: list[str], reason: str) -> list[Step]:
    thumbprint = _thumbprint(org.cert("next")) or NEW_THUMBPRINT
    return [
        _get_cert(server, thumbprint, f"Check whether the next certificate reached {server}",
                  StepKind.CHECK_REPLICATION, reason)
        for server in servers
    ]


def _wait_for_publish(org: _Org, reason: str) -> list[Step]:
    return [Step("Watch for publication", org.writer, "exchange", "Get-AuthConfig", (), False,
                 reason + " Early publish, on request: Set-AuthConfig -PublishCertificate.",
                 kind=StepKind.WATCH_PUBLICATION)]


def _blocked(org: _Org, servers: list[str], reason: str) -> list[Step]:
    if not servers:
        return [Step("Find the Exchange servers", org.writer, "exchange",
                     "Get-ExchangeServer", (), False, reason, kind=StepKind.FIND_SERVERS)]
    return [
        Step(f"Wait for {server} to answer", server, "exchange", "Get-ExchangeServer",
             (("Identity", server),), False, reason, kind=StepKind.WAIT_FOR_SERVER)
        for server in servers
    ]
