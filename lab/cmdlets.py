"""The commands each endpoint serves, with the semantics of real Exchange and IIS.

A rehearsal is only worth something if the lab refuses what real Exchange refuses, in the
same words. So parameters are bound the way PowerShell binds them (case-insensitive,
unique prefixes, positional arguments, switches as `-Name`, `-Name:$false`), a remote host
that cannot answer a prompt fails like PowerShell's non-interactive host, and each cmdlet
checks what its real counterpart checks (DOMAIN.md). Values are only ever data: a
friendly name such as `'; Remove-Item $()` is stored as text, never evaluated.

Endpoints: the Exchange endpoint (NoLanguage) serves the Exchange cmdlets; the host
endpoint serves IIS, certificate store, service and `iisreset` commands, and the Exchange
cmdlets as well after `Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn`.
Both serve `Select-Object`, the one command that takes pipeline input (Exchange's restricted
runspace exposes it, and a pipeline of commands is legal in NoLanguage).
Every command is recorded in the org's call log with its outcome.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from lab import objects
from lab.certs import (
    AUTH_FRIENDLY_NAME,
    BACKEND_FRIENDLY_NAME,
    KEY_SIZES,
    export_pfx,
    import_pfx,
    is_auth_subject,
)
from lab.clock import parse_time
from lab.org import (
    BACKEND_SITE,
    FRONTEND_SITE,
    POOLS,
    Binding,
    Org,
    OrgError,
)
from lab.scenario import SERVICES

SNAPINS = ("Microsoft.Exchange.Management.PowerShell.SnapIn",
           "Microsoft.Exchange.Management.PowerShell.E2010")
SITES = (FRONTEND_SITE, BACKEND_SITE)
KNOWN_SERVICES = ("MSExchangeServiceHost", "W3SVC", "WAS", "MSExchangeIS",
                  "MSExchangeTransport", "MSExchangeFrontEndTransport", "MSExchangeADTopology")
CERT_STORE = "Cert:\\LocalMachine\\My"
MIN_NOTICE = timedelta(hours=48)
EXCHANGE_NS = "Microsoft.Exchange.Management.SystemConfigurationTasks"


@dataclass
class Session:
    """One open shell (runspace pool) on one endpoint of one server."""

    server: str
    endpoint: Literal["exchange", "host"]
    snapin_loaded: bool = False


@dataclass
class Invocation:
    """One command of a pipeline exactly as the client sent it."""

    name: str
    parameters: list[tuple[str | None, Any]]
    is_script: bool = False


class CommandError(Exception):
    """A failed command; the transport turns it into a PowerShell ErrorRecord."""

    def __init__(self, message: str, *,
                 exception_type: str = "System.InvalidOperationException",
                 category: str = "InvalidOperation", error_id: str = "",
                 target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type
        self.category = category
        self.error_id = error_id
        self.target = target


# ---------------------------------------------------------------------------------------
# Parameter binding


COMMON = {"Confirm": "switch", "WhatIf": "switch", "Verbose": "switch", "Debug": "switch",
          "ErrorAction": "str", "WarningAction": "str", "DomainController": "str"}


@dataclass
class Command:
    name: str
    endpoint: Literal["exchange", "host", "any"]
    params: dict[str, str]  # canonical name -> kind
    run: Callable[[Call], list[Any]]
    positional: tuple[str, ...] = ()
    changes: bool = False  # honours -WhatIf
    takes_input: bool = False  # binds the previous command's output

    @property
    def error_suffix(self) -> str:
        if self.endpoint == "exchange":
            return f"{EXCHANGE_NS}.{self.name.replace('-', '')}"
        return f"Microsoft.PowerShell.Commands.{self.name.replace('-', '')}Command"


@dataclass
class Call:
    """One bound command being run: its arguments and where."""

    org: Org
    session: Session
    command: Command
    args: dict[str, Any] = field(default_factory=dict)
    input: list[Any] = field(default_factory=list)  # the previous command's output

    def has(self, name: str) -> bool:
        return name in self.args

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def fail(self, message: str, *, code: str | None = None,
             exception_type: str = "System.InvalidOperationException",
             category: str = "InvalidOperation", target: str | None = None) -> CommandError:
        prefix = code or f"{zlib.crc32(message.split(':')[0].encode()) & 0xFFFFFFFF:08X}"
        return CommandError(message, exception_type=exception_type, category=category,
                            error_id=f"{prefix},{self.command.error_suffix}", target=target)

    def org_failure(self, error: OrgError, target: str | None = None) -> CommandError:
        category = {"not_found": "ObjectNotFound", "unreachable": "ResourceUnavailable",
                    "conflict": "ResourceExists", "invalid": "InvalidArgument",
                    "refused": "InvalidOperation"}.get(error.kind, "InvalidOperation")
        if error.kind == "not_found" and "couldn't be found on the domain" in error.message:
            return self.fail(error.message, category="NotSpecified", target=target,
                             exception_type="Microsoft.Exchange.Configuration.Tasks."
                                            "ManagementObjectNotFoundException")
        return self.fail(error.message, category=category, target=target)

    def prompt(self, question: str) -> CommandError:
        """What a remote host without UI does when a cmdlet asks for confirmation."""
        return CommandError(
            "A command that prompts the user failed because the host program or the command "
            "type does not support user interaction. The host was attempting to request "
            f"confirmation with the following message: {question}",
            exception_type="System.Management.Automation.Host.HostException",
            category="NotImplemented", error_id="HostFunctionNotImplemented")

    def server(self) -> str:
        """The -Server this call names (default: the session's own server)."""
        try:
            return self.org.target(self.get("Server"), self.session.server)
        except OrgError as error:
            raise self.org_failure(error, target=str(self.get("Server"))) from None

    def context(self) -> objects.Context:
        first = self.org.servers()[0].fqdn
        signed = self.org.scenario.lab.serialization_signing and \
            self.session.endpoint == "exchange"
        return objects.Context(first.split(".", 1)[1], signed)


def _binding_error(command: Command, message: str, error_id: str) -> CommandError:
    return CommandError(message,
                        exception_type="System.Management.Automation.ParameterBindingException",
                        category="InvalidArgument", error_id=f"{error_id},{command.error_suffix}")


def _missing(command: Command, *names: str) -> CommandError:
    return _binding_error(command, "Cannot process command because of one or more missing "
                                   f"mandatory parameters: {' '.join(names)}.",
                          "MissingMandatoryParameter")


def _bind(command: Command, invocation: Invocation) -> dict[str, Any]:
    known = {**COMMON, **command.params}
    lower = {k.lower(): k for k in known}
    args: dict[str, Any] = {}
    positional: list[Any] = []
    for raw_name, value in invocation.parameters:
        if raw_name is None:
            positional.append(value)
            continue
        name = raw_name.lstrip("-").rstrip(":").strip()
        canonical = lower.get(name.lower())
        if canonical is None:
            matches = [k for low, k in lower.items() if low.startswith(name.lower()) and name]
            if len(matches) > 1:
                raise _binding_error(
                    command, f"Parameter cannot be processed because the parameter name "
                             f"'{name}' is ambiguous. Possible matches include: "
                             + " ".join(f"-{m}" for m in matches) + ".", "AmbiguousParameter")
            if not matches:
                raise _binding_error(
                    command, f"A parameter cannot be found that matches parameter name "
                             f"'{name}'.", "NamedParameterNotFound")
            canonical = matches[0]
        if canonical in args:
            raise _binding_error(
                command, f"Cannot bind parameter because parameter '{canonical}' is specified "
                         "more than once.", "ParameterAlreadyBound")
        args[canonical] = _convert(command, canonical, known[canonical], value)
    free = [p for p in command.positional if p not in args]
    for value in positional:
        if not free:
            raise _binding_error(
                command, f"A positional parameter cannot be found that accepts argument "
                         f"'{_text(value)}'.", "PositionalParameterNotFound")
        name = free.pop(0)
        args[name] = _convert(command, name, known[name], value)
    return args


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return f"System.Byte[] ({len(value)} bytes)"
    return str(value)


def _convert(command: Command, name: str, kind: str, value: Any) -> Any:
    def bad(target: str) -> CommandError:
        shown = "***" if kind == "secure" else _text(value)  # never echo a password
        return _binding_error(
            command, f"Cannot process argument transformation on parameter '{name}'. Cannot "
                     f"convert value \"{shown}\" to type \"{target}\".",
            "ParameterArgumentTransformationError")

    if kind == "switch":
        if value is None:
            return True
        if isinstance(value, str):
            return value.strip().lower() not in ("$false", "false", "0", "")
        return bool(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("$true", "true", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("$false", "false", "0"):
            return False
        if isinstance(value, int):
            return bool(value)
        raise bad("System.Boolean")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("System.Int32")
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad("System.Int32") from None
    if kind == "str":
        if value is None:
            return None
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, list | tuple):
            raise bad("System.String")
        return str(value)
    if kind == "list":
        if value is None:
            return []
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        return [str(value)]
    if kind == "names":
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            # A hashtable here is a calculated property: legal in PowerShell, not modelled.
            raise _binding_error(
                command, f"Cannot bind parameter '{name}': the lab takes property names only "
                         f"(got \"{_text(value)}\").", "CannotConvertArgument")
        return [v.strip() for v in items]
    if kind == "bytes":
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
            try:
                return bytes(value)
            except ValueError:
                raise bad("System.Byte[]") from None
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise bad("System.Byte[]") from None
        raise bad("System.Byte[]")
    if kind == "secure":
        # Like PowerShell: a plain string does not convert to SecureString, so a client
        # must send it encrypted with the session key.
        decrypt = getattr(value, "decrypt", None)
        if callable(decrypt):
            return str(decrypt())
        raise bad("System.Security.SecureString")
    if kind == "date":
        if isinstance(value, datetime | str):
            try:
                return parse_time(value)
            except ValueError:
                raise bad("System.DateTime") from None
        raise bad("System.DateTime")
    if kind == "services":
        items = value if isinstance(value, list | tuple) else str(value).split(",")
        services: list[str] = []
        for item in items:
            for part in str(item).split(","):
                part = part.strip()
                match = next((s for s in SERVICES if s.lower() == part.lower()), None)
                if match is None:
                    raise _binding_error(
                        command, f"Cannot process argument transformation on parameter "
                                 f"'{name}'. Cannot convert value \"{_text(value)}\" to type "
                                 f"\"{EXCHANGE_NS}.AllowedServices\". Error: \"Unable to match "
                                 f"the identifier name {part} to a valid enumerator name. "
                                 f"Specify one of the following enumerator names and try again:"
                                 f" {', '.join(SERVICES)}\"",
                        "ParameterArgumentTransformationError")
                if match != "None" and match not in services:
                    services.append(match)
        return services
    return value


def _recorded(parameters: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """JSON-able call-log form of the parameters; secrets and blobs are not written out."""
    out: dict[str, Any] = {}
    index = 0
    for name, value in parameters:
        if name is None:
            key = f"arg{index}"
            index += 1
        else:
            key = name.lstrip("-").rstrip(":")
        out[key] = "***" if key.lower() == "password" or hasattr(value, "decrypt") \
            else _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


# ---------------------------------------------------------------------------------------
# Running a pipeline


def run_pipeline(org: Org, session: Session, commands: list[Invocation]) -> list[Any]:
    """Run one pipeline; record each command; return its output or raise CommandError."""
    output: list[Any] = []
    for position, invocation in enumerate(commands):
        try:
            output = _run_one(org, session, invocation, output if position else [])
        except CommandError as error:
            org.record_call(server=session.server, endpoint=session.endpoint,
                            command=invocation.name,
                            parameters=_recorded(invocation.parameters),
                            outcome=f"error: {error.message}")
            raise
        org.record_call(server=session.server, endpoint=session.endpoint,
                        command=invocation.name, parameters=_recorded(invocation.parameters),
                        outcome="ok")
    return output


def _run_one(org: Org, session: Session, invocation: Invocation,
             pipeline_input: list[Any]) -> list[Any]:
    if invocation.is_script:
        if session.endpoint == "exchange":
            raise CommandError(
                "The syntax is not supported by this runspace. This can occur if the runspace"
                " is in no-language mode.",
                exception_type="System.Management.Automation.RemoteException",
                category="ParserError", error_id="ScriptsNotAllowed")
        raise CommandError(
            "The lab's host endpoint runs commands only; send script text nowhere.",
            exception_type="System.Management.Automation.RemoteException",
            category="ParserError", error_id="ScriptsNotAllowed")
    command = _lookup(session, invocation.name)
    args = _bind(command, invocation)
    if pipeline_input and not command.takes_input:
        raise CommandError(
            "The input object cannot be bound to any parameters for the command either because "
            "the command does not take pipeline input or the input and its properties do not "
            "match any of the parameters that take pipeline input.",
            exception_type="System.Management.Automation.ParameterBindingException",
            category="InvalidArgument", error_id=f"InputObjectNotBound,{command.error_suffix}")
    call = Call(org=org, session=session, command=command, args=args, input=pipeline_input)
    fault = org.command_fault(session.server, session.endpoint, command.name)
    if fault is not None:
        raise call.fail(fault)
    if command.endpoint == "exchange" and session.endpoint == "exchange":
        broken = org.exchange_endpoint_failure(session.server)
        if broken is not None:
            raise CommandError(
                f"Processing data from remote server {org.server_info(session.server)['fqdn']} "
                f"failed with the following error message: {broken}",
                exception_type="System.Management.Automation.Remoting."
                               "PSRemotingTransportException",
                category="ResourceUnavailable", error_id="JobFailure")
        signing = org.signing_failure(session.server)
        if signing is not None:
            raise call.fail(signing, code="SerializationSigning")
    if command.changes and call.get("WhatIf"):
        return []
    return command.run(call)


def _lookup(session: Session, name: str) -> Command:
    command = COMMANDS.get(name.strip().lower())
    available = command is not None and (
        command.endpoint in ("any", session.endpoint)
        or (command.endpoint == "exchange" and session.snapin_loaded))
    if command is None or not available:
        raise CommandError(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script "
            "file, or operable program. Check the spelling of the name, or if a path was "
            "included, verify that the path is correct and try again.",
            exception_type="System.Management.Automation.CommandNotFoundException",
            category="ObjectNotFound", error_id="CommandNotFoundException", target=name)
    return command


# ---------------------------------------------------------------------------------------
# Exchange cmdlets


def get_auth_config(call: Call) -> list[Any]:
    auth = call.org.auth_config()
    return [objects.auth_config(call.context(), current=auth["current"],
                                next_thumbprint=auth["next"], previous=auth["previous"],
                                next_effective=auth["next_effective"],
                                changed=call.org.now())]


def _local_auth_cert(call: Call, thumbprint: str) -> str:
    """Set-AuthConfig reads the certificate from the server the cmdlet runs on."""
    thumb = thumbprint.strip().upper()
    server = call.session.server
    try:
        stored = call.org.find_certificate(server, thumb)
    except OrgError:
        raise call.fail(f"The certificate with thumbprint {thumb} couldn't be found on server "
                        f"{server.upper()}. Create or import it on this server first.",
                        category="ObjectNotFound", target=thumb) from None
    if not stored.has_private_key:
        raise call.fail(f"The certificate with thumbprint {thumb} on server {server.upper()} "
                        "has no private key.", target=thumb)
    if stored.material.not_after <= call.org.now():
        raise call.fail(f"The certificate with thumbprint {thumb} expired on "
                        f"{stored.material.not_after:%Y-%m-%d %H:%M:%S} UTC.", target=thumb)
    return thumb


def set_auth_config(call: Call) -> list[Any]:
    sets = [name for name in ("NewCertificateThumbprint", "PublishCertificate",
                              "ClearPreviousCertificate", "CertificateThumbprint")
            if call.get(name)]
    if call.has("NewCertificateEffectiveDate") and "NewCertificateThumbprint" not in sets:
        sets.append("NewCertificateEffectiveDate")
    if len(sets) != 1 or (sets == ["NewCertificateThumbprint"]
                          and not call.has("NewCertificateEffectiveDate")):
        raise _binding_error(call.command, "Parameter set cannot be resolved using the "
                                           "specified named parameters.", "AmbiguousParameterSet")
    org = call.org
    if sets == ["PublishCertificate"]:
        try:
            org.publish_next()
        except OrgError as error:
            raise call.org_failure(error) from None
        return []
    if sets == ["ClearPreviousCertificate"]:
        org.clear_previous()
        return []
    if sets == ["CertificateThumbprint"]:
        org.set_current(_local_auth_cert(call, call.get("CertificateThumbprint")))
        return []
    thumb = _local_auth_cert(call, call.get("NewCertificateThumbprint"))
    effective: datetime = call.get("NewCertificateEffectiveDate")
    now = org.now()
    if effective <= now:
        raise call.fail(f"The new certificate effective date {effective:%Y-%m-%d %H:%M:%S} UTC "
                        f"is in the past. Specify a date later than {now:%Y-%m-%d %H:%M:%S} "
                        "UTC.", category="InvalidArgument")
    if effective < now + MIN_NOTICE and not call.get("Force"):
        raise call.prompt('The new certificate effective date is not at least "48" hours in '
                          "the future and may not be deployed on all necessary servers. Do you "
                          "wish to continue?")
    org.set_next(thumb, effective)
    return []


def get_exchange_server(call: Call) -> list[Any]:
    ctx, now = call.context(), call.org.now()
    identity = call.get("Identity")
    specs = call.org.servers()
    if identity is not None:
        name = call.org.resolve(str(identity))
        if name is None:
            raise call.fail(f"The operation couldn't be performed because object '{identity}' "
                            f"couldn't be found on 'DC-1.{ctx.domain}'.", category="NotSpecified",
                            exception_type="Microsoft.Exchange.Configuration.Tasks."
                                           "ManagementObjectNotFoundException", target=identity)
        specs = [s for s in specs if s.name == name]
    return [objects.exchange_server(spec, ctx, now) for spec in specs]


def get_hybrid_configuration(call: Call) -> list[Any]:
    if not call.org.hybrid():
        return []
    return [objects.hybrid_configuration(call.context(), call.org.servers(), call.org.now())]


def _thumbprint_arg(call: Call) -> str | None:
    """-Thumbprint, or an -Identity like "EX1\\<thumbprint>" / "<thumbprint>"."""
    value = call.get("Thumbprint") or call.get("Identity")
    if value is None:
        return None
    text = str(value).strip()
    if "\\" in text:
        server, _, text = text.rpartition("\\")
        if not call.has("Server"):
            call.args["Server"] = server
    return text.upper()


def _find(call: Call, server: str, thumbprint: str) -> Any:
    try:
        return call.org.find_certificate(server, thumbprint)
    except OrgError as error:
        raise call.fail(error.message, code="9D2A4D27", target=thumbprint) from None


def get_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    server = call.server()
    ctx = call.context()
    if thumbprint is not None:
        return [objects.exchange_certificate(_find(call, server, thumbprint).material, ctx)]
    return [objects.exchange_certificate(c.material, ctx) for c in call.org.store(server)]


def _services_prompt(call: Call, services: list[str], server: str) -> None:
    if "SMTP" in services and not call.get("Force"):
        raise call.prompt(f"Overwrite the existing default SMTP certificate? Current "
                          f"certificate on server {server.upper()} would be replaced.")


def new_exchange_certificate(call: Call) -> list[Any]:
    server = call.server()
    info = call.org.server_info(server)
    services = call.get("Services") if call.has("Services") else ["IMAP", "POP", "SMTP"]
    key_size = call.get("KeySize", 2048)
    if key_size not in KEY_SIZES:
        raise call.fail(f"The key size {key_size} isn't supported. Use one of "
                        f"{', '.join(map(str, KEY_SIZES))}.", category="InvalidArgument")
    subject = call.get("SubjectName") or f"CN={info['name']}"
    domains = call.get("DomainName") if call.has("DomainName") else (
        [] if call.get("SubjectName") else [info["name"], info["fqdn"]])
    _services_prompt(call, services, server)
    friendly = call.get("FriendlyName")
    if friendly is None:
        friendly = AUTH_FRIENDLY_NAME if is_auth_subject(subject) else BACKEND_FRIENDLY_NAME
    try:
        stored = call.org.new_certificate(
            server, subject=subject, friendly_name=friendly, domains=domains,
            key_size=key_size, exportable=bool(call.get("PrivateKeyExportable", False)),
            services=services)
    except OrgError as error:
        raise call.org_failure(error) from None
    return [objects.exchange_certificate(stored.material, call.context())]


def remove_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None:
        raise _missing(call.command, "Thumbprint")
    server = call.server()
    _find(call, server, thumbprint)
    if call.get("Confirm", True):
        raise call.prompt(f"Remove certificate with thumbprint {thumbprint} from server "
                          f"{server.upper()}?")
    call.org.remove_certificate(server, thumbprint)
    return []


def export_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None:
        raise _missing(call.command, "Thumbprint")
    if call.has("FileName"):
        raise call.fail("The FileName parameter is no longer supported. Use the FileData "
                        "output and write it to a file yourself.", category="InvalidArgument")
    server = call.server()
    stored = _find(call, server, thumbprint)
    password = call.get("Password")
    if password is not None:
        if not stored.has_private_key or not stored.exportable:
            raise call.fail(f"A special Rpc error occurs on server {server.upper()}: The private "
                            "key couldn't be exported as PKCS-12. It either couldn't be "
                            "accessed or isn't exportable.", target=thumbprint)
        data = export_pfx(stored.material, password, stored.friendly_name)
    else:
        data = stored.material.der
    file_data: Any = data if call.get("BinaryEncoded") else base64.b64encode(data).decode()
    return [objects.binary_file_data(file_data, call.context())]


def import_exchange_certificate(call: Call) -> list[Any]:
    data = call.get("FileData")
    if data is None:
        raise _missing(call.command, "FileData")
    server = call.server()
    try:
        material, friendly = import_pfx(data, call.get("Password"))
    except ValueError:
        raise call.fail(f"A special Rpc error occurs on server {server.upper()}: Cannot import "
                        "certificate. The password is incorrect or the data is not a "
                        "certificate.", category="InvalidData") from None
    try:
        stored = call.org.import_certificate(
            server, material, exportable=bool(call.get("PrivateKeyExportable", False)),
            friendly_name=call.get("FriendlyName") or friendly)
    except OrgError as error:
        raise call.org_failure(error) from None
    return [objects.exchange_certificate(stored.material, call.context())]


def enable_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None or not call.has("Services"):
        raise _missing(call.command, "Thumbprint", "Services")
    server = call.server()
    _find(call, server, thumbprint)
    services = call.get("Services")
    _services_prompt(call, services, server)
    call.org.enable_certificate(server, thumbprint, services)
    return []


def get_exchange_diagnostic_info(call: Call) -> list[Any]:
    server = call.server()
    process = call.get("Process") or "Microsoft.Exchange.ServiceHost"
    last_run = call.org.auth_admin_last_run(server) \
        if process.lower() == "microsoft.exchange.servicehost" else None
    if process.lower() not in ("microsoft.exchange.servicehost", "msexchangeservicehost"):
        raise call.fail(f"Process {process} isn't running on server {server.upper()}.",
                        category="ObjectNotFound")
    return [objects.diagnostic_info(server, process, last_run, call.context())]


# ---------------------------------------------------------------------------------------
# Host commands


def _site(call: Call, name: Any, *, required: bool) -> str | None:
    if name is None:
        if required:
            raise _missing(call.command, "Name")
        return None
    site = next((s for s in SITES if s.lower() == str(name).strip().lower()), None)
    if site is None:
        raise call.fail(f"Web site '{name}' does not exist.", category="ObjectNotFound",
                        exception_type="System.ArgumentException", code="SiteNotFound")
    return site


def get_web_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=False)
    port = call.get("Port")
    out = []
    for binding in call.org.bindings(call.session.server):
        if site is not None and binding.site != site:
            continue
        if call.has("Protocol") and binding.protocol.lower() != call.get("Protocol").lower():
            continue
        if port is not None and binding.binding_information.split(":")[1:2] != [str(port)]:
            continue
        out.append(objects.web_binding(binding.site, binding.protocol,
                                       binding.binding_information, binding.certificate_hash,
                                       binding.store_name))
    return out


def get_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    out = []
    for binding in call.org.bindings(call.session.server):
        if binding.site != site:
            continue
        if call.has("Protocol") and binding.protocol.lower() != call.get("Protocol").lower():
            continue
        if call.has("BindingInformation") and \
                binding.binding_information != call.get("BindingInformation"):
            continue
        out.append(objects.site_binding(binding.protocol, binding.binding_information,
                                        binding.certificate_hash, binding.store_name))
    return out


def _store_name(call: Call) -> str:
    location = str(call.get("CertStoreLocation") or CERT_STORE).rstrip("\\")
    prefix = "cert:\\localmachine\\"
    if not location.lower().startswith(prefix):
        raise call.fail(f"Cannot find path '{location}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound",
                        exception_type="System.Management.Automation.ItemNotFoundException")
    return location[len(prefix):]


def new_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    assert site is not None
    information = call.get("BindingInformation")
    if not information or information.count(":") < 2:
        raise call.fail(f"The binding information '{information}' is not valid; use "
                        "\"<ip>:<port>:<host>\", e.g. \"*:444:\".", category="InvalidArgument",
                        exception_type="System.ArgumentException", code="InvalidBinding")
    protocol = (call.get("Protocol") or "http").lower()
    thumbprint = (call.get("CertificateThumbPrint") or "").strip().upper()
    store = _store_name(call) if thumbprint else ""
    if protocol == "https":
        if not thumbprint:
            raise call.fail("A certificate thumbprint is required for an https binding.",
                            category="InvalidArgument", exception_type="System.ArgumentException",
                            code="CertificateRequired")
        try:
            call.org.find_certificate(call.session.server, thumbprint)
        except OrgError:
            raise call.fail(f"The certificate with thumbprint '{thumbprint}' was not found in "
                            f"'{CERT_STORE}'.", category="ObjectNotFound",
                            exception_type="System.ArgumentException",
                            code="CertificateNotFound") from None
    try:
        call.org.add_binding(call.session.server,
                             Binding(site, information, thumbprint, store, protocol=protocol),
                             force=bool(call.get("Force")))
    except OrgError as error:
        raise call.fail(error.message, category="ResourceExists", code="BindingExists",
                        exception_type="System.ArgumentException") from None
    if call.get("Passthru"):
        return [objects.site_binding(protocol, information, thumbprint, store)]
    return []


def remove_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    assert site is not None
    information = call.get("BindingInformation") or ""
    protocol = (call.get("Protocol") or "http").lower()
    if call.get("Confirm", True) and not call.get("Force"):
        raise call.prompt(f"Are you sure you want to remove the binding '{information}' "
                          f"({protocol}) of site '{site}'?")
    try:
        call.org.remove_binding(call.session.server, site, information, protocol)
    except OrgError as error:
        raise call.fail(error.message, category="ObjectNotFound", code="BindingNotFound",
                        exception_type="System.ArgumentException") from None
    return []


def get_child_item(call: Call) -> list[Any]:
    path = str(call.get("Path") or call.get("LiteralPath") or "").strip().rstrip("\\")
    base = CERT_STORE.lower()
    thumbprint = None
    if path.lower().startswith(base + "\\"):
        thumbprint = path[len(base) + 1:].upper()
    elif path.lower() != base:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    out = []
    for stored in call.org.store(call.session.server):
        if thumbprint is None or stored.thumbprint == thumbprint:
            out.append(objects.store_certificate(stored.material))
    if thumbprint is not None and not out:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    return out


def get_date(call: Call) -> list[Any]:
    """The server's clock, which in the lab is the virtual clock (moved by /_lab/clock).

    `-Format o` is the round-trip format Windows PowerShell 5.1 prints: local time with 7
    fractional digits and the offset; the lab's servers run on UTC. Without -Format a
    DateTime object comes back, as from the real cmdlet.
    """
    now = call.org.now().astimezone(UTC)
    fmt = call.get("Format")
    if fmt is None:
        return [now]
    if str(fmt) not in ("o", "O"):
        raise call.fail(f"Get-Date: the lab knows -Format o, not '{fmt}'.",
                        category="InvalidArgument", code="FormatNotSupported")
    return [now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"]


def restart_web_app_pool(call: Call) -> list[Any]:
    name = call.get("Name")
    pool = next((p for p in POOLS if p.lower() == str(name or "").strip().lower()), None)
    if pool is None:
        raise call.fail(f"Cannot find an application pool named '{name}'.",
                        category="ObjectNotFound", code="PoolNotFound",
                        exception_type="System.ArgumentException", target=str(name))
    call.org.restart_pool(call.session.server, pool)
    return []


def restart_service(call: Call) -> list[Any]:
    names = call.get("Name") or []
    if not names:
        raise _missing(call.command, "Name")
    for name in names:
        service = next((s for s in KNOWN_SERVICES if s.lower() == name.strip().lower()), None)
        if service is None:
            raise call.fail(f"Cannot find any service with service name '{name}'.",
                            category="ObjectNotFound", code="NoServiceFoundForGivenName",
                            exception_type="Microsoft.PowerShell.Commands."
                                           "ServiceCommandException", target=name)
        call.org.restart_service(call.session.server, service)
    return []


def iisreset(call: Call) -> list[Any]:
    option = " ".join(str(call.get(k) or "") for k in ("Option", "Option2")).strip().lower()
    if option not in ("", "/noforce", "/restart", "/restart /noforce", "/noforce /restart"):
        raise call.fail(f"iisreset: unsupported option '{option}' (the lab knows /noforce).",
                        category="InvalidArgument", code="NativeCommandError")
    call.org.iisreset(call.session.server)
    return ["", "Attempting stop...", "Internet services successfully stopped",
            "Attempting start...", "Internet services successfully restarted"]


def add_ps_snapin(call: Call) -> list[Any]:
    names = call.get("Name") or []
    for name in names:
        if not any(name.strip().lower() == s.lower() for s in SNAPINS):
            raise call.fail(f"The Windows PowerShell snap-in '{name}' is not installed on this "
                            "computer.", category="InvalidArgument", code="AddPSSnapInRead",
                            exception_type="System.Management.Automation."
                                           "PSArgumentException", target=name)
    call.session.snapin_loaded = True
    return []


# ---------------------------------------------------------------------------------------
# Commands on every endpoint


def select_object(call: Call) -> list[Any]:
    """Select-Object over the previous command's output, as PowerShell runs it.

    -Property makes a `Selected.<type>` PSCustomObject per input with the chosen properties
    as note properties: names match case-insensitively and take the object's spelling,
    wildcards expand in the object's order, a name the object lacks comes out $null.
    -ExpandProperty emits the property's value(s) instead. -Skip, -First and -Last pick
    inputs (-Skip counts from the end when -Last is given).
    """
    items = list(call.input)
    skip, first, last = (call.get(n) for n in ("Skip", "First", "Last"))
    if any(n is not None and n < 0 for n in (skip, first, last)):
        raise _binding_error(call.command, "Cannot validate argument: the value must be "
                                           "zero or positive.", "ParameterArgumentValidationError")
    if last is not None:
        items = items[: len(items) - (skip or 0)] if skip else items
        items = items[len(items) - last:] if last else []
    else:
        items = items[skip or 0:]
    if first is not None:
        items = items[:first]
    expand = call.get("ExpandProperty")
    if expand is not None:
        if call.has("Property"):
            raise call.fail("The lab's Select-Object does not combine -ExpandProperty with "
                            "-Property.", category="NotImplemented", code="LabNotModelled")
        return [v for item in items for v in _expanded(call, item, expand)]
    wanted = call.get("Property")
    if not wanted:
        return items
    excluded = call.get("ExcludeProperty") or []

    def select(item: Any) -> Any:
        return objects.selected(objects.first_type_name(item),
                                _chosen(objects.properties_of(item), wanted, excluded))

    patterns = [*wanted, *excluded]
    if not all(isinstance(p, str) for p in patterns):
        return [select(item) for item in items]
    # The same selection of the same object comes out the same: make it once (perf only).
    how = ("Select-Object", tuple(wanted), tuple(excluded))
    return [objects.derived(item, how, select) for item in items]


def _chosen(available: list[tuple[str, Any]], wanted: list[str],
            excluded: list[str]) -> list[tuple[str, Any]]:
    chosen: dict[str, tuple[str, Any]] = {}
    for pattern in wanted:
        if any(ch in pattern for ch in "*?["):
            matches = [(n, v) for n, v in available if fnmatch.fnmatchcase(n.lower(),
                                                                           pattern.lower())]
        else:
            found = next(((n, v) for n, v in available if n.lower() == pattern.lower()), None)
            matches = [found or (pattern, None)]
        for name, value in matches:
            chosen.setdefault(name.lower(), (name, objects.flattened(value)))
    return [(name, value) for key, (name, value) in chosen.items()
            if not any(fnmatch.fnmatchcase(key, x.lower()) for x in excluded)]


def _expanded(call: Call, item: Any, name: str) -> list[Any]:
    found = next((v for n, v in objects.properties_of(item) if n.lower() == name.lower()),
                 _MISSING)
    if found is _MISSING:
        raise call.fail(f'Property "{name}" cannot be found.', category="InvalidArgument",
                        code="ExpandPropertyNotFound", target=name,
                        exception_type="System.Management.Automation.PSArgumentException")
    if isinstance(found, list | tuple):
        return list(found)
    return [] if found is None else [found]


_MISSING = object()


def _commands() -> dict[str, Command]:
    exchange = "exchange"
    host = "host"
    table = [
        Command("Get-AuthConfig", exchange, {}, get_auth_config),
        Command("Set-AuthConfig", exchange, {
            "NewCertificateThumbprint": "str", "NewCertificateEffectiveDate": "date",
            "PublishCertificate": "switch", "ClearPreviousCertificate": "switch",
            "CertificateThumbprint": "str", "SkipImmediateCertificateDeployment": "switch",
            "Force": "switch"}, set_auth_config, changes=True),
        Command("Get-ExchangeServer", exchange, {"Identity": "str", "Status": "switch"},
                get_exchange_server, ("Identity",)),
        Command("Get-HybridConfiguration", exchange, {}, get_hybrid_configuration),
        Command("Get-ExchangeCertificate", exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str"},
            get_exchange_certificate, ("Thumbprint",)),
        Command("New-ExchangeCertificate", exchange, {
            "Server": "str", "Services": "services", "Force": "switch", "DomainName": "list",
            "KeySize": "int", "SubjectName": "str", "FriendlyName": "str",
            "PrivateKeyExportable": "bool"}, new_exchange_certificate, changes=True),
        Command("Remove-ExchangeCertificate", exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str"},
            remove_exchange_certificate, ("Thumbprint",), changes=True),
        Command("Export-ExchangeCertificate", exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str", "BinaryEncoded": "switch",
            "Password": "secure", "FileName": "str"}, export_exchange_certificate,
            ("Thumbprint",)),
        Command("Import-ExchangeCertificate", exchange, {
            "Server": "str", "FileData": "bytes", "Password": "secure",
            "PrivateKeyExportable": "bool", "FriendlyName": "str"},
            import_exchange_certificate, changes=True),
        Command("Enable-ExchangeCertificate", exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str", "Services": "services",
            "Force": "switch", "DoNotRequireSsl": "switch"}, enable_exchange_certificate,
            ("Thumbprint",), changes=True),
        Command("Get-ExchangeDiagnosticInfo", exchange, {
            "Server": "str", "Process": "str", "Component": "str", "Argument": "str"},
            get_exchange_diagnostic_info),
        Command("Get-WebBinding", host, {
            "Name": "str", "Protocol": "str", "Port": "int", "IPAddress": "str",
            "HostHeader": "str"}, get_web_binding, ("Name",)),
        Command("Get-IISSiteBinding", host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str"},
            get_iis_site_binding, ("Name", "BindingInformation", "Protocol")),
        Command("New-IISSiteBinding", host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str",
            "CertificateThumbPrint": "str", "CertStoreLocation": "str", "SslFlag": "str",
            "Force": "switch", "Passthru": "switch"}, new_iis_site_binding,
            ("Name", "BindingInformation", "Protocol"), changes=True),
        Command("Remove-IISSiteBinding", host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str",
            "RemoveConfigOnly": "switch", "Force": "switch"}, remove_iis_site_binding,
            ("Name", "BindingInformation", "Protocol"), changes=True),
        Command("Get-ChildItem", host, {"Path": "str", "LiteralPath": "str"},
                get_child_item, ("Path",)),
        Command("Get-Date", host, {"Format": "str"}, get_date),
        Command("Restart-WebAppPool", host, {"Name": "str"}, restart_web_app_pool, ("Name",),
                changes=True),
        Command("Restart-Service", host, {"Name": "list", "Force": "switch"},
                restart_service, ("Name",), changes=True),
        Command("iisreset", host, {"Option": "str", "Option2": "str"}, iisreset,
                ("Option", "Option2"), changes=True),
        Command("Add-PSSnapin", host, {"Name": "list"}, add_ps_snapin, ("Name",)),
        Command("Select-Object", "any", {
            "Property": "names", "ExcludeProperty": "names", "ExpandProperty": "str",
            "First": "int", "Last": "int", "Skip": "int"}, select_object, ("Property",),
            takes_input=True),
    ]
    return {c.name.lower(): c for c in table}


COMMANDS = _commands()
