"""Binding an invocation's parameters to a command, the way PowerShell binds them.

The lab must refuse what PowerShell refuses, in the same words: parameter names match
case-insensitively and by unique prefix, positional arguments fill the command's positional
parameters in order, switches take `-Name` or `-Name:$false`, and a value that does not
convert to the parameter's type fails with PowerShell's ParameterBindingException text. A
password is never echoed back, and the call log never holds a secret or a blob.

Also here: the types a bound command is run with (`Session`, `Invocation`, `Command`,
`Call`) and the error every command fails with (`CommandError`).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lab import objects
from lab.clock import parse_time
from lab.org import Org, OrgError
from lab.scenario import SERVICES

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


def binding_error(command: Command, message: str, error_id: str) -> CommandError:
    return CommandError(message,
                        exception_type="System.Management.Automation.ParameterBindingException",
                        category="InvalidArgument", error_id=f"{error_id},{command.error_suffix}")


def missing_mandatory(command: Command, *names: str) -> CommandError:
    return binding_error(command, "Cannot process command because of one or more missing "
                                   f"mandatory parameters: {' '.join(names)}.",
                          "MissingMandatoryParameter")


def bind(command: Command, invocation: Invocation) -> dict[str, Any]:
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
                raise binding_error(
                    command, f"Parameter cannot be processed because the parameter name "
                             f"'{name}' is ambiguous. Possible matches include: "
                             + " ".join(f"-{m}" for m in matches) + ".", "AmbiguousParameter")
            if not matches:
                raise binding_error(
                    command, f"A parameter cannot be found that matches parameter name "
                             f"'{name}'.", "NamedParameterNotFound")
            canonical = matches[0]
        if canonical in args:
            raise binding_error(
                command, f"Cannot bind parameter because parameter '{canonical}' is specified "
                         "more than once.", "ParameterAlreadyBound")
        args[canonical] = _convert(command, canonical, known[canonical], value)
    free = [p for p in command.positional if p not in args]
    for value in positional:
        if not free:
            raise binding_error(
                command, f"A positional parameter cannot be found that accepts argument "
                         f"'{_text(value)}'.", "PositionalParameterNotFound")
        name = free.pop(0)
        args[name] = _convert(command, name, known[name], value)
    return args


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return f"System.Byte[] ({len(value)} bytes)"
    return str(value)


@dataclass
class _Argument:
    """One value being converted to its parameter's kind."""

    command: Command
    name: str
    kind: str
    value: Any

    def bad(self, target: str) -> CommandError:
        """PowerShell's "Cannot convert value" error (a password is never echoed)."""
        shown = "***" if self.kind == "secure" else _text(self.value)
        return binding_error(
            self.command, f"Cannot process argument transformation on parameter "
                          f"'{self.name}'. Cannot convert value \"{shown}\" to type "
                          f"\"{target}\".", "ParameterArgumentTransformationError")


def _convert(command: Command, name: str, kind: str, value: Any) -> Any:
    converter = _CONVERTERS.get(kind)
    return value if converter is None else converter(_Argument(command, name, kind, value))


def _switch(arg: _Argument) -> bool:
    value = arg.value
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ("$false", "false", "0", "")
    return bool(value)


def _bool(arg: _Argument) -> bool:
    value = arg.value
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("$true", "true", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("$false", "false", "0"):
        return False
    if isinstance(value, int):
        return bool(value)
    raise arg.bad("System.Boolean")


def _int(arg: _Argument) -> int:
    if isinstance(arg.value, bool):
        raise arg.bad("System.Int32")
    try:
        return int(str(arg.value).strip())
    except ValueError:
        raise arg.bad("System.Int32") from None


def _str(arg: _Argument) -> str | None:
    value = arg.value
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple):
        raise arg.bad("System.String")
    return str(value)


def _list(arg: _Argument) -> list[str]:
    value = arg.value
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _names(arg: _Argument) -> list[str]:
    value = arg.value
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        # A hashtable here is a calculated property: legal in PowerShell, not modelled.
        raise binding_error(
            arg.command, f"Cannot bind parameter '{arg.name}': the lab takes property names "
                         f"only (got \"{_text(value)}\").", "CannotConvertArgument")
    return [v.strip() for v in items]


def _bytes(arg: _Argument) -> bytes:
    value = arg.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        try:
            return bytes(value)
        except ValueError:
            raise arg.bad("System.Byte[]") from None
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise arg.bad("System.Byte[]") from None
    raise arg.bad("System.Byte[]")


def _secure(arg: _Argument) -> str:
    # Like PowerShell: a plain string does not convert to SecureString, so a client
    # must send it encrypted with the session key.
    decrypt = getattr(arg.value, "decrypt", None)
    if callable(decrypt):
        return str(decrypt())
    raise arg.bad("System.Security.SecureString")


def _date(arg: _Argument) -> datetime:
    if isinstance(arg.value, datetime | str):
        try:
            return parse_time(arg.value)
        except ValueError:
            raise arg.bad("System.DateTime") from None
    raise arg.bad("System.DateTime")


def _services(arg: _Argument) -> list[str]:
    value = arg.value
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    services: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            match = next((s for s in SERVICES if s.lower() == part.lower()), None)
            if match is None:
                raise binding_error(
                    arg.command, f"Cannot process argument transformation on parameter "
                                 f"'{arg.name}'. Cannot convert value \"{_text(value)}\" to "
                                 f"type \"{EXCHANGE_NS}.AllowedServices\". Error: \"Unable to "
                                 f"match the identifier name {part} to a valid enumerator name. "
                                 f"Specify one of the following enumerator names and try again:"
                                 f" {', '.join(SERVICES)}\"",
                    "ParameterArgumentTransformationError")
            if match != "None" and match not in services:
                services.append(match)
    return services


# A parameter's kind (in the command table) -> how a value converts to it.
_CONVERTERS: dict[str, Callable[[_Argument], Any]] = {
    "switch": _switch, "bool": _bool, "int": _int, "str": _str, "list": _list,
    "names": _names, "bytes": _bytes, "secure": _secure, "date": _date,
    "services": _services,
}


def recorded(parameters: list[tuple[str | None, Any]]) -> dict[str, Any]:
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
