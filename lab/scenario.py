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

Benchmarks and tests build larger orgs with `scaled(servers, sites)`, the healthy scenario
stretched to N servers spread over S sites.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lab.certs import (
    AUTH_FRIENDLY_NAME,
    AUTH_SUBJECT,
    BACKEND_FRIENDLY_NAME,
    KEY_SIZES,
    SIGNATURES,
    is_auth_subject,
    parse_subject,
)
from lab.clock import MAX_DAYS, parse_duration, parse_time

SCENARIO_DIR = Path(__file__).with_name("scenarios")
DEFAULT_SCENARIO = "healthy"
DEFAULT_VERSION = "Version 15.2 (Build 1544.4)"
ROLES = ("Mailbox", "ClientAccess", "Edge")
SERVICES = ("None", "IIS", "SMTP", "IMAP", "POP", "UM", "UMCallRouter", "Federation")
ENDPOINTS = ("exchange", "host", "any")
FAULT_KINDS = ("unreachable", "error", "latency", "auth_failure")
_VERSION = re.compile(r"^Version (\d+)\.(\d+) \(Build (\d+)\.(\d+)\)$")
_THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
# A fault's added delay; the same bound as `exauth lab serve --latency-ms`: a minute per
# request already outlasts every client timeout, and a bigger number only hangs the lab.
MAX_LATENCY_MS = 60_000


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
        match = _VERSION.match(self.version)
        major = int(match.group(1)) if match else 0
        return major == 15 and "Edge" not in self.roles and bool(
            {"Mailbox", "ClientAccess"} & set(self.roles))


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
    certificate: str  # certificate id, or "" for a binding without a certificate


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

    def certificate(self, cert_id: str) -> CertificateSpec:
        for spec in self.certificates:
            if spec.id == cert_id:
                return spec
        raise KeyError(cert_id)


# ---------------------------------------------------------------------------------------
# Public entry points


def builtin_names() -> list[str]:
    """Names of lab/scenarios/*.toml, the default scenario first."""
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
    return _Validator(source).scenario(data, name or Path(source).stem, description)


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
# Validation


class _Validator:
    """Reads one scenario document; every problem becomes a ScenarioError naming its key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {key}: {problem}")

    # -- generic typed readers ---------------------------------------------------------

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {_kind(value)}")
        return value

    def array_of_tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of tables ([[{key}]]), not {_kind(value)}")
        return [self.table(item, f"{key}[{i}]") for i, item in enumerate(value)]

    def no_unknown(self, data: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                raise self.fail(where, f"unknown key (allowed: {', '.join(allowed)})")

    def string(self, data: dict[str, Any], key: str, path: str, default: str | None = None,
               *, required: bool = False, nonempty: bool = False) -> str:
        if key not in data:
            if required or default is None:
                raise self.fail(f"{path}.{key}", "missing")
            return default
        value = data[key]
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"must be a string, not {_kind(value)}")
        if nonempty and not value.strip():
            raise self.fail(f"{path}.{key}", "must not be empty")
        return value

    def boolean(self, data: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(_join(path, key), f"must be true or false, not {_kind(value)}")
        return value

    def integer(self, data: dict[str, Any], key: str, path: str, default: int | None) -> int:
        if key not in data and default is not None:
            return default
        if key not in data:
            raise self.fail(_join(path, key), "missing")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(_join(path, key), f"must be an integer, not {_kind(value)}")
        return value

    def strings(self, data: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(_join(path, key), f"must be an array of strings, not {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{_join(path, key)}[{i}]",
                                f"must be a string, not {_kind(item)}")
        return tuple(value)

    def time(self, value: Any, key: str) -> datetime:
        if not isinstance(value, str | datetime):
            raise self.fail(key, f"must be an ISO-8601 time, not {_kind(value)}")
        try:
            return parse_time(value)
        except ValueError:
            raise self.fail(key, f"{value!r} is not an ISO-8601 time "
                                 "(e.g. \"2025-03-01T09:00:00Z\")") from None

    def time_or_relative(self, value: Any, key: str) -> datetime | timedelta:
        if isinstance(value, str) and value.strip()[:1] in ("+", "-"):
            try:
                delta = parse_duration(value)
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
            assert delta is not None  # "never" does not start with a sign
            return delta
        if isinstance(value, str) and not re.match(r"^\s*\d{4}-", value):
            raise self.fail(key, f"{value!r} is neither an ISO-8601 time nor a relative time "
                                 "like \"+30d\" or \"-13h\"")
        return self.time(value, key)

    def duration(self, value: Any, key: str) -> timedelta | None:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a duration string like \"15m\", not {_kind(value)}")
        try:
            delta = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if delta is not None and delta < timedelta(0):
            raise self.fail(key, "must not be negative")
        return delta

    # -- sections ------------------------------------------------------------------------

    def scenario(self, data: dict[str, Any], name: str, description: str) -> Scenario:
        self.no_unknown(data, ("lab", "server", "certificate", "auth_config", "backend",
                               "fault"), "")
        lab = self.lab(self.table(data.get("lab", {}), "lab"))
        servers = tuple(self.server(s, f"server[{i}]")
                        for i, s in enumerate(self.array_of_tables(data, "server")))
        if not servers:
            raise self.fail("server", "at least one [[server]] is required")
        self.check_servers(servers)
        names = {s.name for s in servers}
        certificates = tuple(self.certificate(c, f"certificate[{i}]", names)
                             for i, c in enumerate(self.array_of_tables(data, "certificate")))
        ids = [c.id for c in certificates]
        for i, cert_id in enumerate(ids):
            if cert_id in ids[:i]:
                raise self.fail(f"certificate[{i}].id", f"duplicate id {cert_id!r}")
        auth = self.auth_config(self.table(data.get("auth_config", {}), "auth_config"),
                                set(ids))
        backends = tuple(self.backend(b, f"backend[{i}]", names, set(ids))
                         for i, b in enumerate(self.array_of_tables(data, "backend")))
        seen: set[str] = set()
        for i, backend in enumerate(backends):
            if backend.server in seen:
                raise self.fail(f"backend[{i}].server",
                                f"server {backend.server!r} already has a [[backend]] entry")
            seen.add(backend.server)
        faults = tuple(self.fault(f, f"fault[{i}]", names)
                       for i, f in enumerate(self.array_of_tables(data, "fault")))
        return Scenario(name=name, source=self.source, description=description, lab=lab,
                        servers=servers, certificates=certificates, auth_config=auth,
                        backends=backends, faults=faults)

    def lab(self, data: dict[str, Any]) -> LabSettings:
        self.no_unknown(data, ("now", "hybrid", "serialization_signing", "auth_admin_last_run",
                               "replication"), "lab")
        now = self.time(data["now"], "lab.now") if "now" in data else None
        last_run = (self.time_or_relative(data["auth_admin_last_run"], "lab.auth_admin_last_run")
                    if "auth_admin_last_run" in data else None)
        replication = self.table(data.get("replication", {}), "lab.replication")
        self.no_unknown(replication, ("same_site", "cross_site"), "lab.replication")
        same_site = self.duration(replication.get("same_site", "15m"),
                                  "lab.replication.same_site")
        cross_site = self.duration(replication.get("cross_site", "24h"),
                                   "lab.replication.cross_site")
        return LabSettings(
            now=now, hybrid=self.boolean(data, "hybrid", "lab", False),
            serialization_signing=self.boolean(data, "serialization_signing", "lab", False),
            auth_admin_last_run=last_run, same_site=same_site, cross_site=cross_site)

    def server(self, data: dict[str, Any], path: str) -> ServerSpec:
        self.no_unknown(data, ("name", "fqdn", "site", "version", "roles", "reachable",
                               "writer"), path)
        name = self.string(data, "name", path, required=True, nonempty=True)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$", name):
            raise self.fail(f"{path}.name", f"{name!r} is not a NetBIOS-style server name")
        fqdn = self.string(data, "fqdn", path, required=True, nonempty=True)
        if not re.match(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", fqdn):
            raise self.fail(f"{path}.fqdn", f"{fqdn!r} is not a fully qualified domain name")
        if fqdn.split(".", 1)[0].lower() != name.lower():
            raise self.fail(f"{path}.fqdn", f"{fqdn!r} does not start with the server name "
                                            f"{name!r}")
        site = self.string(data, "site", path, required=True, nonempty=True)
        version = self.string(data, "version", path, DEFAULT_VERSION)
        if not _VERSION.match(version):
            raise self.fail(f"{path}.version", f"{version!r} is not like "
                                               f"\"{DEFAULT_VERSION}\"")
        roles = self.strings(data, "roles", path) if "roles" in data else ("Mailbox",)
        if not roles:
            raise self.fail(f"{path}.roles", "must name at least one role")
        for i, role in enumerate(roles):
            if role not in ROLES:
                raise self.fail(f"{path}.roles[{i}]",
                                f"unknown role {role!r} (use {', '.join(ROLES)})")
        return ServerSpec(name=name, fqdn=fqdn, site=site, version=version, roles=roles,
                          reachable=self.boolean(data, "reachable", path, True),
                          writer=self.boolean(data, "writer", path, False))

    def check_servers(self, servers: tuple[ServerSpec, ...]) -> None:
        for i, spec in enumerate(servers):
            for other in servers[:i]:
                if other.name.lower() == spec.name.lower():
                    raise self.fail(f"server[{i}].name", f"duplicate server name {spec.name!r}")
                if other.fqdn.lower() == spec.fqdn.lower():
                    raise self.fail(f"server[{i}].fqdn", f"duplicate fqdn {spec.fqdn!r}")
        writers = [i for i, s in enumerate(servers) if s.writer]
        if len(writers) > 1:
            raise self.fail(f"server[{writers[1]}].writer", "only one server can be the writer")
        for i in writers:
            if not servers[i].in_scope:
                raise self.fail(f"server[{i}].writer",
                                "the writer must be an Exchange 2013+ Mailbox/ClientAccess server")

    def certificate(self, data: dict[str, Any], path: str, servers: set[str]) -> CertificateSpec:
        self.no_unknown(data, ("id", "subject", "friendly_name", "sans", "not_before",
                               "not_after", "days_left", "signature", "key_size", "services",
                               "installed_on"), path)
        cert_id = self.string(data, "id", path, required=True, nonempty=True)
        subject = self.string(data, "subject", path, required=True, nonempty=True)
        try:
            parse_subject(subject)
        except ValueError as exc:
            raise self.fail(f"{path}.subject", str(exc)) from None
        not_before = self.time(data["not_before"], f"{path}.not_before") \
            if "not_before" in data else None
        not_after = self.time(data["not_after"], f"{path}.not_after") \
            if "not_after" in data else None
        days_left: float | None = None
        if "days_left" in data:
            if not_after is not None:
                raise self.fail(f"{path}.days_left", "give either days_left or not_after, not both")
            value = data["days_left"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"{path}.days_left", f"must be a number, not {_kind(value)}")
            if not math.isfinite(value) or abs(value) > MAX_DAYS:
                raise self.fail(f"{path}.days_left", f"must be a number of days from "
                                                     f"-{MAX_DAYS} to {MAX_DAYS} (got {value!r})")
            days_left = float(value)
        elif not_after is None:
            raise self.fail(f"{path}.not_after", "missing (give not_after or days_left)")
        if not_before is not None and not_after is not None and not_before >= not_after:
            raise self.fail(f"{path}.not_before", "must be earlier than not_after")
        signature = self.string(data, "signature", path, "sha256")
        if signature not in SIGNATURES:
            raise self.fail(f"{path}.signature",
                            f"unknown signature {signature!r} (use {', '.join(SIGNATURES)})")
        key_size = self.integer(data, "key_size", path, 2048)
        if key_size not in KEY_SIZES:
            raise self.fail(f"{path}.key_size",
                            f"{key_size} is not one of {', '.join(map(str, KEY_SIZES))}")
        services = self.strings(data, "services", path)
        for i, service in enumerate(services):
            if service not in SERVICES:
                raise self.fail(f"{path}.services[{i}]",
                                f"unknown service {service!r} (use {', '.join(SERVICES)})")
        installed_on = self.strings(data, "installed_on", path)
        for i, server in enumerate(installed_on):
            if server not in servers:
                raise self.fail(f"{path}.installed_on[{i}]", f"unknown server {server!r}")
        return CertificateSpec(
            id=cert_id, subject=subject,
            friendly_name=self.string(data, "friendly_name", path, ""),
            sans=self.strings(data, "sans", path), not_before=not_before, not_after=not_after,
            days_left=days_left, signature=signature, key_size=key_size,
            services=tuple(s for s in services if s != "None"), installed_on=installed_on)

    def cert_ref(self, data: dict[str, Any], key: str, ids: set[str], path: str) -> str:
        value = self.string(data, key, path, "")
        if value.startswith("thumbprint:"):
            if not _THUMBPRINT.match(value[len("thumbprint:"):]):
                raise self.fail(f"{path}.{key}", "thumbprint: must be followed by 40 hex digits")
            return "thumbprint:" + value[len("thumbprint:"):].upper()
        if value and value not in ids:
            raise self.fail(f"{path}.{key}", f"unknown certificate id {value!r}")
        return value

    def auth_config(self, data: dict[str, Any], ids: set[str]) -> AuthConfigSpec:
        path = "auth_config"
        self.no_unknown(data, ("current", "next", "previous", "next_effective"), path)
        current = self.cert_ref(data, "current", ids, path)
        nxt = self.cert_ref(data, "next", ids, path)
        previous = self.cert_ref(data, "previous", ids, path)
        effective = (self.time_or_relative(data["next_effective"], f"{path}.next_effective")
                     if "next_effective" in data else None)
        if nxt and effective is None:
            raise self.fail(f"{path}.next_effective", "missing (next is set)")
        if effective is not None and not nxt:
            raise self.fail(f"{path}.next_effective", "set but next is empty")
        return AuthConfigSpec(current=current, next=nxt, previous=previous,
                              next_effective=effective)

    def backend(self, data: dict[str, Any], path: str, servers: set[str],
                ids: set[str]) -> BackendSpec:
        self.no_unknown(data, ("server", "certificate"), path)
        server = self.string(data, "server", path, required=True)
        if server not in servers:
            raise self.fail(f"{path}.server", f"unknown server {server!r}")
        certificate = self.string(data, "certificate", path, required=True)
        if certificate and certificate not in ids:
            raise self.fail(f"{path}.certificate", f"unknown certificate id {certificate!r}")
        return BackendSpec(server=server, certificate=certificate)

    def fault(self, data: dict[str, Any], path: str, servers: set[str]) -> FaultSpec:
        self.no_unknown(data, ("server", "endpoint", "cmdlet", "kind", "message",
                               "latency_ms"), path)
        server = self.string(data, "server", path, required=True)
        if server not in servers:
            raise self.fail(f"{path}.server", f"unknown server {server!r}")
        endpoint = self.string(data, "endpoint", path, "any")
        if endpoint not in ENDPOINTS:
            raise self.fail(f"{path}.endpoint",
                            f"unknown endpoint {endpoint!r} (use {', '.join(ENDPOINTS)})")
        kind = self.string(data, "kind", path, required=True)
        if kind not in FAULT_KINDS:
            raise self.fail(f"{path}.kind", f"unknown kind {kind!r} (use {', '.join(FAULT_KINDS)})")
        cmdlet = self.string(data, "cmdlet", path, "") or None
        latency_ms = self.integer(data, "latency_ms", path, 0 if kind != "latency" else None)
        if latency_ms < 0:
            raise self.fail(f"{path}.latency_ms", "must not be negative")
        if latency_ms > MAX_LATENCY_MS:
            raise self.fail(f"{path}.latency_ms",
                            f"must be at most {MAX_LATENCY_MS} (got {latency_ms})")
        message = self.string(data, "message", path, "")
        return FaultSpec(server=server, kind=kind, endpoint=endpoint, cmdlet=cmdlet,
                         message=message, latency_ms=latency_ms)


def validate_fault(fault: dict[str, Any], servers: set[str]) -> FaultSpec:
    """One fault given at run time (control API), checked like a scenario [[fault]]."""
    validator = _Validator("fault")
    return validator.fault(validator.table(fault, "fault"), "fault", servers)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a TOML date-time"
    return type(value).__name__
