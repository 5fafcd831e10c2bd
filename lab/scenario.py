"""Scenario TOML files -> a validated `Scenario`.

A scenario is what someone rehearses on, so a mistake in one must be reported the way a
config error is: one line naming the file, the key and what is wrong
("bad.toml: server[1].site: missing"). Array entries are numbered from 0. Relative times
(`days_left`, `next_effective = "+30d"`) stay relative here and are resolved by the org
against its clock, so a scenario without `[lab] now` always describes "today".

Defaults for keys a file leaves out: `[lab]` hybrid false, serialization_signing false,
replication 15m same-site / 24h cross-site, AuthAdmin last run = the lab's start;
`[[server]]` version "Version 15.2 (Build 1544.4)", roles ["Mailbox"], reachable true,
writer false; `[[certificate]]` signature sha256, key_size 2048, services [] ("None"),
not_before = not_after - 5 years (Exchange's validity), installed_on []; `[[fault]]`
endpoint "any". The private key of a scenario certificate is exportable when its subject is
the Auth Certificate's (setup creates it with -PrivateKeyExportable), not otherwise.

An `[entra]` table adds the Entra ID tenant behind the lab's Microsoft Graph stand-in
(`lab.graph`): `[[entra.application]]`s (app_id, display_name, `keys` = certificate ids
whose public keys they hold, `secret`, `permissions`, `owners`), `hybrid_app_id` (the
dedicated Exchange hybrid application), `client_id` (the application exauth signs in as),
`exchange_app_id` (what Exchange's EvoSTS Auth Server records; default hybrid_app_id),
`max_key_lifetime_days` (a tenant policy) and `[[entra.fault]]`s (kind "forbidden",
"throttled", "server_error" or "unreachable"; operation "token", "read", "write" or
"any"; `times`, `retry_after`, `status`, `message`).

Benchmarks and tests build larger orgs with `scaled(servers, sites)`, the healthy scenario
stretched to N servers spread over S sites.

The file's keys, types and rules are the pydantic models of `lab.toml_schema` (value
checks and the one-line error in `lab.toml_checks`); this module
turns a validated file into the frozen specs below, which the org is built from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.certs import (
    AUTH_FRIENDLY_NAME,
    AUTH_SUBJECT,
    BACKEND_FRIENDLY_NAME,
    is_auth_subject,
)
from lab.toml_checks import Known, one_line
from lab.toml_schema import (
    DEFAULT_VERSION,
    ENDPOINTS,
    FAULT_KINDS,
    MAX_LATENCY_MS,
    ROLES,
    SERVICES,
    EntraFile,
    FaultFile,
    GraphFaultFile,
    ScenarioFile,
    in_scope,
)

__all__ = [
    "DEFAULT_VERSION",
    "ENDPOINTS",
    "FAULT_KINDS",
    "MAX_LATENCY_MS",
    "ROLES",
    "SCENARIO_DIR",
    "SERVICES",
    "ApplicationSpec",
    "AuthConfigSpec",
    "BackendSpec",
    "CertificateSpec",
    "EntraSpec",
    "FaultSpec",
    "GraphFaultSpec",
    "LabSettings",
    "Scenario",
    "ScenarioError",
    "ServerSpec",
    "builtin_names",
    "describe",
    "from_dict",
    "load",
    "scaled",
    "validate_fault",
    "validate_graph_fault",
]

SCENARIO_DIR = Path(__file__).with_name("built_in_scenarios")
DEFAULT_SCENARIO = "healthy"


class ScenarioError(ValueError):
    """A scenario problem; str() is "<file>: <key path>: <what is wrong>"."""


@dataclass(frozen=True)
class LabSettings:
    now: datetime | None = None  # None: the wall clock when the org starts
    hybrid: bool = False
    serialization_signing: bool = False
    auth_admin_last_run: datetime | timedelta | None = None  # timedelta: relative to now
    same_site: timedelta | None = timedelta(minutes=15)  # None: never
    cross_site: timedelta | None = timedelta(hours=24)


@dataclass(frozen=True)
class ServerSpec:
    name: str
    fqdn: str
    site: str
    version: str = DEFAULT_VERSION
    roles: tuple[str, ...] = ("Mailbox",)
    reachable: bool = True
    writer: bool = False

    @property
    def in_scope(self) -> bool:
        """Mailbox/Client Access on Exchange 2013 or later (never Edge, never 2010)."""
        return in_scope(self.version, self.roles)


@dataclass(frozen=True)
class CertificateSpec:
    id: str
    subject: str
    friendly_name: str = ""
    sans: tuple[str, ...] = ()
    not_before: datetime | None = None
    not_after: datetime | None = None
    days_left: float | None = None  # relative to the lab's now
    signature: str = "sha256"
    key_size: int = 2048
    services: tuple[str, ...] = ()
    installed_on: tuple[str, ...] = ()

    @property
    def exportable(self) -> bool:
        return is_auth_subject(self.subject)


@dataclass(frozen=True)
class AuthConfigSpec:
    current: str = ""  # "" | certificate id | "thumbprint:<HEX>"
    next: str = ""
    previous: str = ""
    next_effective: datetime | timedelta | None = None  # timedelta: relative to now


@dataclass(frozen=True)
class BackendSpec:
    server: str
    certificate: str  # certificate id, "thumbprint:<HEX>" (in no store), or "" (none)


@dataclass(frozen=True)
class FaultSpec:
    server: str
    kind: str
    endpoint: str = "any"
    cmdlet: str | None = None
    message: str = ""
    latency_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "endpoint": self.endpoint, "cmdlet": self.cmdlet,
                "kind": self.kind, "message": self.message, "latency_ms": self.latency_ms}


@dataclass(frozen=True)
class GraphFaultSpec:
    """A fault of the Graph stand-in; `times` 0 = until cleared."""

    kind: str
    operation: str = "any"
    times: int = 0
    retry_after: int = 0
    status: int = 503
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": "graph", "kind": self.kind, "operation": self.operation,
                "times": self.times, "retry_after": self.retry_after, "status": self.status,
                "message": self.message}


@dataclass(frozen=True)
class ApplicationSpec:
    app_id: str
    display_name: str = ""
    keys: tuple[str, ...] = ()  # certificate ids
    secret: str = ""
    permissions: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()  # app_ids


@dataclass(frozen=True)
class EntraSpec:
    """The tenant behind the Graph stand-in (`[entra]`)."""

    tenant_id: str
    hybrid_app_id: str
    client_id: str
    applications: tuple[ApplicationSpec, ...] = ()
    max_key_lifetime_days: int | None = None
    faults: tuple[GraphFaultSpec, ...] = ()
    exchange_app_id: str = ""  # what Exchange's EvoSTS Auth Server names

@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str = ""
    lab: LabSettings = field(default_factory=LabSettings)
    servers: tuple[ServerSpec, ...] = ()
    certificates: tuple[CertificateSpec, ...] = ()
    auth_config: AuthConfigSpec = field(default_factory=AuthConfigSpec)
    backends: tuple[BackendSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    entra: EntraSpec | None = None

    def certificate(self, cert_id: str) -> CertificateSpec:
        for spec in self.certificates:
            if spec.id == cert_id:
                return spec
        raise KeyError(cert_id)


# ---------------------------------------------------------------------------------------
# Public entry points


def builtin_names() -> list[str]:
    """Names of lab/built_in_scenarios/*.toml, the default scenario first."""
    names = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
    if DEFAULT_SCENARIO in names:
        names.remove(DEFAULT_SCENARIO)
        names.insert(0, DEFAULT_SCENARIO)
    return names


def describe(name: str) -> str:
    """The one-line description: the first `# comment` line of the built-in file."""
    path = SCENARIO_DIR / f"{name}.toml"
    if not path.is_file():
        raise ScenarioError(f"{name}: scenario: {_unknown_name_hint()}")
    return _description(path.read_text(encoding="utf-8"))


def load(name_or_path: str | os.PathLike[str]) -> Scenario:
    """A built-in scenario by name, or a scenario TOML file by path."""
    text_name = os.fspath(name_or_path)
    builtin = SCENARIO_DIR / f"{text_name}.toml"
    if "/" not in text_name and "\\" not in text_name and builtin.is_file():
        path, label = builtin, builtin.name
    else:
        path, label = Path(text_name), text_name
        if not path.is_file():
            raise ScenarioError(f"{label}: scenario: {_unknown_name_hint()}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{label}: file: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{label}: toml: {exc}") from None
    return from_dict(data, source=label, name=path.stem, description=_description(text))


def from_dict(data: dict[str, Any], *, source: str, name: str = "",
              description: str = "") -> Scenario:
    """Validate parsed TOML (or an equivalent dict built in code) into a Scenario."""
    try:
        checked = ScenarioFile.model_validate(data, context=Known())
    except ValidationError as error:
        raise ScenarioError(one_line(source, error)) from None
    return _scenario(checked, source=source, name=name or Path(source).stem,
                     description=description)


def scaled(servers: int, sites: int = 2) -> Scenario:
    """The healthy org stretched to `servers` servers (ex1..exN) over `sites` AD sites.

    Servers are dealt to sites round-robin (ex1 -> Site-A, ex2 -> Site-B, ...); ex1 is the
    writer. Used by benchmarks and by tests that need a large org.
    """
    if servers < 1 or sites < 1:
        raise ScenarioError(f"scaled: servers/sites: must be at least 1 (got {servers}/{sites})")
    site_names = [f"Site-{_site_letter(i)}" for i in range(sites)]
    names = [f"ex{i + 1}" for i in range(servers)]
    data: dict[str, Any] = {
        "lab": {"serialization_signing": True,
                "replication": {"same_site": "15m", "cross_site": "24h"}},
        "server": [
            {"name": n, "fqdn": f"{n}.contoso.lab", "site": site_names[i % sites],
             "writer": i == 0}
            for i, n in enumerate(names)
        ],
        "certificate": [
            {"id": "auth", "subject": AUTH_SUBJECT,
             "friendly_name": AUTH_FRIENDLY_NAME,
             "days_left": 1100, "services": ["SMTP"], "installed_on": names},
            *({"id": f"backend-{n}", "subject": f"CN={n}", "friendly_name": BACKEND_FRIENDLY_NAME,
               "sans": [n, f"{n}.contoso.lab"], "days_left": 1500,
               "services": ["IMAP", "POP", "IIS", "SMTP"], "installed_on": [n]} for n in names),
        ],
        "auth_config": {"current": "auth"},
        "backend": [{"server": n, "certificate": f"backend-{n}"} for n in names],
    }
    return from_dict(data, source=f"scaled({servers},{sites})", name=f"scaled-{servers}",
                     description=f"healthy org with {servers} servers in {sites} sites")


def _site_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _description(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        return stripped.lstrip("#").strip() if stripped.startswith("#") else ""
    return ""


def _unknown_name_hint() -> str:
    return ("no built-in scenario or file of that name (built-in: "
            + ", ".join(builtin_names()) + ")")


# ---------------------------------------------------------------------------------------
# A validated file -> specs


def _scenario(checked: ScenarioFile, *, source: str, name: str, description: str) -> Scenario:
    lab, auth = checked.lab, checked.auth_config
    return Scenario(
        name=name, source=source, description=description,
        lab=LabSettings(now=lab.now, hybrid=lab.hybrid,
                        serialization_signing=lab.serialization_signing,
                        auth_admin_last_run=lab.auth_admin_last_run,
                        same_site=lab.replication.same_site,
                        cross_site=lab.replication.cross_site),
        servers=tuple(ServerSpec(name=s.name, fqdn=s.fqdn, site=s.site, version=s.version,
                                 roles=tuple(s.roles), reachable=s.reachable, writer=s.writer)
                      for s in checked.server),
        certificates=tuple(CertificateSpec(
            id=c.id, subject=c.subject, friendly_name=c.friendly_name, sans=tuple(c.sans),
            not_before=c.not_before, not_after=c.not_after, days_left=c.days_left,
            signature=c.signature, key_size=c.key_size,
            services=tuple(s for s in c.services if s != "None"),
            installed_on=tuple(c.installed_on)) for c in checked.certificate),
        auth_config=AuthConfigSpec(current=auth.current, next=auth.next,
                                   previous=auth.previous, next_effective=auth.next_effective),
        backends=tuple(BackendSpec(server=b.server, certificate=b.certificate)
                       for b in checked.backend),
        faults=tuple(_fault(f) for f in checked.fault),
        entra=None if checked.entra is None else _entra(checked.entra))


def _entra(checked: EntraFile) -> EntraSpec:
    return EntraSpec(
        tenant_id=checked.tenant_id, hybrid_app_id=checked.hybrid_app_id,
        client_id=checked.client_id, max_key_lifetime_days=checked.max_key_lifetime_days,
        exchange_app_id=checked.hybrid_app_id if checked.exchange_app_id is None
        else checked.exchange_app_id,
        applications=tuple(ApplicationSpec(
            app_id=a.app_id, display_name=a.display_name, keys=tuple(a.key_ids),
            secret=a.secret, permissions=tuple(a.permissions), owners=tuple(a.owners))
            for a in checked.application),
        faults=tuple(_graph_fault(f) for f in checked.fault))


def _graph_fault(checked: GraphFaultFile) -> GraphFaultSpec:
    return GraphFaultSpec(kind=checked.kind, operation=checked.operation, times=checked.times,
                          retry_after=checked.retry_after, status=checked.status,
                          message=checked.message)


def _fault(checked: FaultFile) -> FaultSpec:
    return FaultSpec(server=checked.server, kind=checked.kind, endpoint=checked.endpoint,
                     cmdlet=checked.cmdlet or None, message=checked.message,
                     latency_ms=checked.latency_ms)


def validate_fault(fault: dict[str, Any], servers: set[str]) -> FaultSpec:
    """One fault given at run time (control API), checked like a scenario [[fault]]."""
    try:
        checked = FaultFile.model_validate(fault, context=Known(servers=set(servers)))
    except ValidationError as error:
        raise ScenarioError(one_line("fault", error, under="fault")) from None
    return _fault(checked)


def validate_graph_fault(fault: dict[str, Any]) -> GraphFaultSpec:
    """One Graph fault given at run time (control API, endpoint "graph")."""
    try:
        checked = GraphFaultFile.model_validate(fault, context=Known())
    except ValidationError as error:
        raise ScenarioError(one_line("fault", error, under="fault")) from None
    return _graph_fault(checked)
