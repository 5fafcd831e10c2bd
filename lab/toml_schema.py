"""The scenario TOML file as pydantic models: which keys exist, their types and their rules.

Problems are reported in one line naming the key, in the lab's words (`lab.toml_checks`).
Keys are checked in the order they appear in the file's sections, and references between
sections (a certificate's `installed_on` naming servers, AuthConfig naming certificate ids)
are checked as soon as what they name is known: each section's validator records the names
it vouches for in the validation context, which pydantic carries in field order. So the
first problem reported is the first one a reader meets.

Defaults for keys a file leaves out are the ones listed in `lab.scenario`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from lab.certs import KEY_SIZES, SIGNATURES, parse_subject
from lab.clock import MAX_DAYS
from lab.toml_checks import (
    Bool,
    Duration,
    Int,
    NonEmpty,
    Str,
    Strings,
    Time,
    TimeOrRelative,
    array_of_tables,
    integer,
    kind_of,
    known,
    problem,
    table,
    time_or_relative,
)

DEFAULT_VERSION = "Version 15.2 (Build 1544.4)"
ROLES = ("Mailbox", "ClientAccess", "Edge")
SERVICES = ("None", "IIS", "SMTP", "IMAP", "POP", "UM", "UMCallRouter", "Federation")
ENDPOINTS = ("exchange", "host", "any")
FAULT_KINDS = ("unreachable", "error", "latency", "auth_failure")
# The Microsoft Graph stand-in (`[entra]`): how its faults answer, which requests they hit,
# and the application permissions (app roles) a client application may hold.
GRAPH_FAULT_KINDS = ("forbidden", "throttled", "server_error", "unreachable")
GRAPH_OPERATIONS = ("token", "read", "write", "any")
GRAPH_PERMISSIONS = ("Application.Read.All", "Application.ReadWrite.All",
                     "Application.ReadWrite.OwnedBy", "Directory.Read.All",
                     "Directory.ReadWrite.All")
DEFAULT_TENANT_ID = "8a1c3e5f-2b4d-4c6e-9f70-1a2b3c4d5e6f"
# Graph's Retry-After is a few seconds; a minute already outlasts any sensible job wait.
MAX_RETRY_AFTER = 3600
# A fault's added delay; the same bound as `exauth lab serve --latency-ms`: a minute per
# request already outlasts every client timeout, and a bigger number only hangs the lab.
MAX_LATENCY_MS = 60_000
VERSION = re.compile(r"^Version (\d+)\.(\d+) \(Build (\d+)\.(\d+)\)$")
_THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def in_scope(version: str, roles: tuple[str, ...] | list[str]) -> bool:
    """Mailbox/Client Access on Exchange 2013 or later (never Edge, never 2010)."""
    match = VERSION.match(version)
    major = int(match.group(1)) if match else 0
    return major == 15 and "Edge" not in roles and bool({"Mailbox", "ClientAccess"} & set(roles))


# -- tables --------------------------------------------------------------------------------


class _Table(BaseModel):
    """A TOML table: anything else, or a key it does not know, is the first problem."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The keys as the "allowed:" hint lists them, when not in the order they are checked.
    keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def known_keys(cls, data: Any) -> Any:
        allowed = cls.keys or tuple(cls.model_fields)
        for key in table(data):
            if key not in allowed:
                raise problem(f"unknown key (allowed: {', '.join(allowed)})", under=(key,))
        return data


class ReplicationFile(_Table):
    same_site: Duration = timedelta(minutes=15)
    cross_site: Duration = timedelta(hours=24)


class LabFile(_Table):
    keys = ("now", "hybrid", "serialization_signing", "auth_admin_last_run", "replication")
    now: Time = None
    auth_admin_last_run: TimeOrRelative = None
    replication: ReplicationFile = Field(default_factory=ReplicationFile)
    hybrid: Bool = False
    serialization_signing: Bool = False


class ServerFile(_Table):
    name: NonEmpty
    fqdn: NonEmpty
    site: NonEmpty
    version: Str = DEFAULT_VERSION
    roles: Strings = Field(default_factory=lambda: ["Mailbox"])
    reachable: Bool = True
    writer: Bool = False

    @field_validator("name")
    @classmethod
    def netbios(cls, name: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$", name):
            raise problem(f"{name!r} is not a NetBIOS-style server name")
        return name

    @field_validator("fqdn")
    @classmethod
    def fqdn_of_name(cls, fqdn: str, info: ValidationInfo) -> str:
        if not re.match(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", fqdn):
            raise problem(f"{fqdn!r} is not a fully qualified domain name")
        name = info.data.get("name", "")
        if fqdn.split(".", 1)[0].lower() != name.lower():
            raise problem(f"{fqdn!r} does not start with the server name {name!r}")
        return fqdn

    @field_validator("version")
    @classmethod
    def version_text(cls, version: str) -> str:
        if not VERSION.match(version):
            raise problem(f"{version!r} is not like \"{DEFAULT_VERSION}\"")
        return version

    @field_validator("roles")
    @classmethod
    def known_roles(cls, roles: list[str]) -> list[str]:
        if not roles:
            raise problem("must name at least one role")
        for i, role in enumerate(roles):
            if role not in ROLES:
                raise problem(f"unknown role {role!r} (use {', '.join(ROLES)})", under=(i,))
        return roles


class CertificateFile(_Table):
    keys = ("id", "subject", "friendly_name", "sans", "not_before", "not_after", "days_left",
            "signature", "key_size", "services", "installed_on")
    id: NonEmpty
    subject: NonEmpty
    not_before: Time = None
    not_after: Time = None
    days_left: float | None = Field(default=None, validate_default=True)
    signature: Str = "sha256"
    key_size: Int = 2048
    services: Strings = Field(default_factory=list)
    installed_on: Strings = Field(default_factory=list)
    friendly_name: Str = ""
    sans: Strings = Field(default_factory=list)

    @field_validator("subject")
    @classmethod
    def subject_name(cls, subject: str) -> str:
        try:
            parse_subject(subject)
        except ValueError as exc:
            raise problem(str(exc)) from None
        return subject

    @field_validator("days_left", mode="before")
    @classmethod
    def expiry(cls, value: Any, info: ValidationInfo) -> float | None:
        """days_left or not_after, exactly one; then not_before must come first."""
        not_after = info.data.get("not_after")
        if value is not None:
            if not_after is not None:
                raise problem("give either days_left or not_after, not both")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise problem(f"must be a number, not {kind_of(value)}")
            if not math.isfinite(value) or abs(value) > MAX_DAYS:
                raise problem(f"must be a number of days from -{MAX_DAYS} to {MAX_DAYS} "
                               f"(got {value!r})")
            value = float(value)
        elif not_after is None:
            raise problem("missing (give not_after or days_left)", key="not_after")
        not_before = info.data.get("not_before")
        if not_before is not None and not_after is not None and not_before >= not_after:
            raise problem("must be earlier than not_after", key="not_before")
        return value

    @field_validator("signature")
    @classmethod
    def known_signature(cls, signature: str) -> str:
        if signature not in SIGNATURES:
            raise problem(f"unknown signature {signature!r} (use {', '.join(SIGNATURES)})")
        return signature

    @field_validator("key_size")
    @classmethod
    def known_key_size(cls, key_size: int) -> int:
        if key_size not in KEY_SIZES:
            raise problem(f"{key_size} is not one of {', '.join(map(str, KEY_SIZES))}")
        return key_size

    @field_validator("services")
    @classmethod
    def known_services(cls, services: list[str]) -> list[str]:
        for i, service in enumerate(services):
            if service not in SERVICES:
                raise problem(f"unknown service {service!r} (use {', '.join(SERVICES)})",
                               under=(i,))
        return services

    @field_validator("installed_on")
    @classmethod
    def installed_on_servers(cls, servers: list[str], info: ValidationInfo) -> list[str]:
        servers_known = known(info).servers
        for i, server in enumerate(servers):
            if servers_known is not None and server not in servers_known:
                raise problem(f"unknown server {server!r}", under=(i,))
        return servers


def _cert_ref(value: str, info: ValidationInfo) -> str:
    """"" | a certificate id of this file | "thumbprint:<40 hex digits>" (kept upper-case)."""
    if value.startswith("thumbprint:"):
        if not _THUMBPRINT.match(value[len("thumbprint:"):]):
            raise problem("thumbprint: must be followed by 40 hex digits")
        return "thumbprint:" + value[len("thumbprint:"):].upper()
    ids = known(info).ids
    if value and ids is not None and value not in ids:
        raise problem(f"unknown certificate id {value!r}")
    return value


class AuthConfigFile(_Table):
    current: Str = ""
    next: Str = ""
    previous: Str = ""
    next_effective: datetime | timedelta | None = Field(default=None, validate_default=True)

    check_refs = field_validator("current", "next", "previous")(_cert_ref)

    @field_validator("next_effective", mode="before")
    @classmethod
    def effective(cls, value: Any, info: ValidationInfo) -> datetime | timedelta | None:
        effective = None if value is None else time_or_relative(value)
        nxt = info.data.get("next", "")
        if nxt and effective is None:
            raise problem("missing (next is set)")
        if effective is not None and not nxt and "next" in info.data:
            raise problem("set but next is empty")
        return effective


def _known_server(server: str, info: ValidationInfo) -> str:
    servers_known = known(info).servers
    if servers_known is not None and server not in servers_known:
        raise problem(f"unknown server {server!r}")
    return server


class BackendFile(_Table):
    server: Str
    certificate: Str

    check_server = field_validator("server")(_known_server)

    # "" (a binding without a certificate), a certificate id, or "thumbprint:<hex>": a
    # binding naming a certificate no store holds (a snapshot of an org where it was
    # deleted keeps the hash the binding names).
    check_certificate = field_validator("certificate")(_cert_ref)


class FaultFile(_Table):
    keys = ("server", "endpoint", "cmdlet", "kind", "message", "latency_ms")
    server: Str
    endpoint: Str = "any"
    kind: Str
    cmdlet: Str = ""
    latency_ms: int = Field(default=None, validate_default=True)
    message: Str = ""

    check_server = field_validator("server")(_known_server)

    @field_validator("endpoint")
    @classmethod
    def known_endpoint(cls, endpoint: str) -> str:
        if endpoint not in ENDPOINTS:
            raise problem(f"unknown endpoint {endpoint!r} (use {', '.join(ENDPOINTS)})")
        return endpoint

    @field_validator("kind")
    @classmethod
    def fault_kind(cls, kind: str) -> str:
        if kind not in FAULT_KINDS:
            raise problem(f"unknown kind {kind!r} (use {', '.join(FAULT_KINDS)})")
        return kind

    @field_validator("latency_ms", mode="before")
    @classmethod
    def latency(cls, value: Any, info: ValidationInfo) -> int:
        """Required for a "latency" fault, 0 for the others."""
        if value is None:
            if info.data.get("kind") == "latency":
                raise problem("missing")
            return 0
        latency_ms = integer(value)
        if latency_ms < 0:
            raise problem("must not be negative")
        if latency_ms > MAX_LATENCY_MS:
            raise problem(f"must be at most {MAX_LATENCY_MS} (got {latency_ms})")
        return latency_ms


def _guid(value: str) -> str:
    if not _GUID.match(value):
        raise problem(f"{value!r} is not a GUID like \"{DEFAULT_TENANT_ID}\"")
    return value.lower()


class GraphFaultFile(_Table):
    """A fault of the Graph stand-in: `[[entra.fault]]`, or `POST /_lab/faults` with
    endpoint "graph". `times` = how many requests it answers before it is gone (0: until
    cleared)."""

    keys = ("endpoint", "kind", "operation", "times", "retry_after", "status", "message")
    endpoint: Str = "graph"
    kind: Str
    operation: Str = "any"
    times: Int = 0
    retry_after: int = Field(default=None, validate_default=True)
    status: int = Field(default=None, validate_default=True)
    message: Str = ""

    @field_validator("endpoint")
    @classmethod
    def graph_endpoint(cls, endpoint: str) -> str:
        if endpoint != "graph":
            raise problem(f"must be \"graph\" here (got {endpoint!r})")
        return endpoint

    @field_validator("kind")
    @classmethod
    def graph_kind(cls, kind: str) -> str:
        if kind not in GRAPH_FAULT_KINDS:
            raise problem(f"unknown kind {kind!r} (use {', '.join(GRAPH_FAULT_KINDS)})")
        return kind

    @field_validator("operation")
    @classmethod
    def graph_operation(cls, operation: str) -> str:
        if operation not in GRAPH_OPERATIONS:
            raise problem(f"unknown operation {operation!r} "
                          f"(use {', '.join(GRAPH_OPERATIONS)})")
        return operation

    @field_validator("times")
    @classmethod
    def some_times(cls, times: int) -> int:
        if times < 0:
            raise problem("must not be negative (0: until cleared)")
        return times

    @field_validator("retry_after", mode="before")
    @classmethod
    def seconds_to_wait(cls, value: Any, info: ValidationInfo) -> int:
        """Seconds in the Retry-After header: "throttled" only (default 1)."""
        if value is None:
            return 1 if info.data.get("kind") == "throttled" else 0
        if info.data.get("kind") != "throttled":
            raise problem("only a \"throttled\" fault has a Retry-After")
        seconds = integer(value)
        if not 0 <= seconds <= MAX_RETRY_AFTER:
            raise problem(f"must be 0 to {MAX_RETRY_AFTER} seconds (got {seconds})")
        return seconds

    @field_validator("status", mode="before")
    @classmethod
    def http_status(cls, value: Any, info: ValidationInfo) -> int:
        """The answer's status: 403, 429, or 500-599 for "server_error" (default 503)."""
        kind = info.data.get("kind")
        fixed = {"forbidden": 403, "throttled": 429, "unreachable": 0}
        if value is None:
            return fixed.get(str(kind), 503)
        if kind != "server_error":
            raise problem("only a \"server_error\" fault takes a status")
        status = integer(value)
        if not 500 <= status <= 599:
            raise problem(f"must be 500 to 599 (got {status})")
        return status


class ApplicationFile(_Table):
    """`[[entra.application]]`: an application registration of the tenant.

    `keys` are certificate ids whose public keys the application holds as keyCredentials
    (the dedicated Exchange hybrid application holds the Auth Certificate's); a client
    application signs in with `secret` (lab credentials are not secrets) or with the
    private key of one of its `keys`; `permissions` are the Graph application permissions
    granted to it; `owners` the app_ids of applications that own it (what
    Application.ReadWrite.OwnedBy needs).
    """

    keys = ("app_id", "display_name", "keys", "secret", "permissions", "owners")
    app_id: NonEmpty
    display_name: Str = ""
    key_ids: Strings = Field(default_factory=list, alias="keys")
    secret: Str = ""
    permissions: Strings = Field(default_factory=list)
    owners: Strings = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    check_app_id = field_validator("app_id")(_guid)

    @field_validator("key_ids")
    @classmethod
    def known_key_ids(cls, key_ids: list[str], info: ValidationInfo) -> list[str]:
        ids = known(info).ids
        for i, cert_id in enumerate(key_ids):
            if ids is not None and cert_id not in ids:
                raise problem(f"unknown certificate id {cert_id!r}", under=(i,))
            if cert_id in key_ids[:i]:
                raise problem(f"certificate {cert_id!r} is listed twice", under=(i,))
        return key_ids

    @field_validator("permissions")
    @classmethod
    def known_permissions(cls, permissions: list[str]) -> list[str]:
        for i, permission in enumerate(permissions):
            if permission not in GRAPH_PERMISSIONS:
                raise problem(f"unknown permission {permission!r} "
                              f"(use {', '.join(GRAPH_PERMISSIONS)})", under=(i,))
        return permissions

    @field_validator("owners")
    @classmethod
    def owner_ids(cls, owners: list[str]) -> list[str]:
        for i, owner in enumerate(owners):
            if not _GUID.match(owner):
                raise problem(f"{owner!r} is not a GUID", under=(i,))
        return [owner.lower() for owner in owners]


class EntraFile(_Table):
    """`[entra]`: the Entra ID tenant behind the lab's Microsoft Graph stand-in.

    `hybrid_app_id` names the dedicated Exchange hybrid application, `client_id` the
    application exauth signs in as (the ready line and `--write-config` hand out its
    credentials); `exchange_app_id` what Exchange's Auth Server records (default
    hybrid_app_id); `max_key_lifetime_days` is a tenant policy refusing longer-lived keys.
    """

    keys = ("tenant_id", "hybrid_app_id", "client_id", "exchange_app_id",
            "max_key_lifetime_days", "application", "fault")
    tenant_id: Str = DEFAULT_TENANT_ID
    application: Annotated[list[ApplicationFile], array_of_tables("entra.application")] = \
        Field(default_factory=list, validate_default=True)
    hybrid_app_id: Str
    client_id: Str
    # What Exchange's EvoSTS Auth Server names as its application: default hybrid_app_id;
    # another GUID rehearses a mismatch, "" an Auth Server not yet pointed at one.
    exchange_app_id: Str | None = None
    max_key_lifetime_days: int | None = Field(default=None, validate_default=True)
    fault: Annotated[list[GraphFaultFile], array_of_tables("entra.fault")] = \
        Field(default_factory=list)

    check_tenant = field_validator("tenant_id")(_guid)

    @field_validator("application", mode="after")
    @classmethod
    def unique_apps(cls, apps: list[ApplicationFile]) -> list[ApplicationFile]:
        if not apps:
            raise problem("at least one [[entra.application]] is required")
        ids = [a.app_id for a in apps]
        for i, app_id in enumerate(ids):
            if app_id in ids[:i]:
                raise problem(f"duplicate app_id {app_id!r}", under=(i, "app_id"))
        for i, app in enumerate(apps):
            for j, owner in enumerate(app.owners):
                if owner not in ids:
                    raise problem(f"no [[entra.application]] has app_id {owner!r}",
                                  under=(i, "owners", j))
        return apps

    @field_validator("hybrid_app_id", "client_id")
    @classmethod
    def names_an_app(cls, value: str, info: ValidationInfo) -> str:
        value = _guid(value)
        apps = info.data.get("application")
        if apps is not None and value not in {a.app_id for a in apps}:
            raise problem(f"no [[entra.application]] has app_id {value!r}")
        return value

    @field_validator("exchange_app_id")
    @classmethod
    def recorded_app(cls, value: str | None) -> str | None:
        return value if not value else _guid(value)

    @field_validator("max_key_lifetime_days", mode="before")
    @classmethod
    def lifetime(cls, value: Any) -> int | None:
        if value is None:
            return None
        days = integer(value)
        if not 1 <= days <= MAX_DAYS:
            raise problem(f"must be 1 to {MAX_DAYS} days (got {days})")
        return days


class ScenarioFile(_Table):
    """A whole file. Validate with `context=Known()`, so references are checked."""

    lab: LabFile = Field(default_factory=LabFile)
    server: Annotated[list[ServerFile], array_of_tables("server")] = \
        Field(default_factory=list, validate_default=True)
    certificate: Annotated[list[CertificateFile], array_of_tables("certificate")] = \
        Field(default_factory=list, validate_default=True)
    auth_config: AuthConfigFile = Field(default_factory=AuthConfigFile)
    backend: Annotated[list[BackendFile], array_of_tables("backend")] = \
        Field(default_factory=list)
    fault: Annotated[list[FaultFile], array_of_tables("fault")] = Field(default_factory=list)
    entra: EntraFile | None = None

    @field_validator("server", mode="after")
    @classmethod
    def servers_together(cls, servers: list[ServerFile], info: ValidationInfo) -> list[ServerFile]:
        if not servers:
            raise problem("at least one [[server]] is required")
        for i, spec in enumerate(servers):
            for other in servers[:i]:
                if other.name.lower() == spec.name.lower():
                    raise problem(f"duplicate server name {spec.name!r}", under=(i, "name"))
                if other.fqdn.lower() == spec.fqdn.lower():
                    raise problem(f"duplicate fqdn {spec.fqdn!r}", under=(i, "fqdn"))
        writers = [i for i, s in enumerate(servers) if s.writer]
        if len(writers) > 1:
            raise problem("only one server can be the writer", under=(writers[1], "writer"))
        for i in writers:
            if not in_scope(servers[i].version, servers[i].roles):
                raise problem("the writer must be an Exchange 2013+ Mailbox/ClientAccess "
                               "server", under=(i, "writer"))
        known(info).servers = {s.name for s in servers}
        return servers

    @field_validator("certificate", mode="after")
    @classmethod
    def unique_ids(cls, certificates: list[CertificateFile],
             info: ValidationInfo) -> list[CertificateFile]:
        ids = [c.id for c in certificates]
        for i, cert_id in enumerate(ids):
            if cert_id in ids[:i]:
                raise problem(f"duplicate id {cert_id!r}", under=(i, "id"))
        known(info).ids = set(ids)
        return certificates

    @field_validator("backend", mode="after")
    @classmethod
    def one_backend_each(cls, backends: list[BackendFile]) -> list[BackendFile]:
        seen: set[str] = set()
        for i, backend in enumerate(backends):
            if backend.server in seen:
                raise problem(f"server {backend.server!r} already has a [[backend]] entry",
                               under=(i, "server"))
            seen.add(backend.server)
        return backends
