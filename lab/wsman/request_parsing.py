"""Parsing of WS-Man request envelopes into the typed parts the server acts on.

A malformed request raises `WSManError`; the server answers it with a fault.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from lab.wsman.vocabulary import (
    ACTIONS,
    NS,
)

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class WSManError(ValueError):
    """A request that cannot be understood; the server answers it with a fault."""


@dataclass(frozen=True)
class Request:
    """The parts of a WS-Man request envelope the server acts on."""

    action: str  # short verb from ACTIONS, or the raw URI when unknown
    message_id: str
    resource_uri: str
    operation_timeout: float | None
    selectors: dict[str, str]
    options: dict[str, str]
    body: ET.Element

    @property
    def shell_id(self) -> str | None:
        return self.selectors.get("ShellId")


@dataclass(frozen=True)
class CreateShell:
    shell_id: str | None
    input_streams: str
    output_streams: str
    creation_xml: bytes | None  # decoded PSRP fragments the client opened the pool with


@dataclass(frozen=True)
class CommandLine:
    command_id: str | None
    command: str
    arguments: list[bytes]  # decoded; PSRP sends the first CreatePipeline fragment here


@dataclass(frozen=True)
class StreamData:
    name: str
    command_id: str | None
    data: bytes
    end: bool = False


@dataclass(frozen=True)
class ReceiveRequest:
    streams: list[str]
    command_id: str | None


@dataclass(frozen=True)
class SignalRequest:
    command_id: str | None
    code: str




def parse_duration(text: str | None) -> float | None:
    """xs:duration as WS-Man uses it ("PT20S", "PT1M30.5S") -> seconds."""
    if not text:
        return None
    match = _DURATION.match(text.strip())
    if match is None:
        raise WSManError(f"OperationTimeout {text!r} is not an xs:duration")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def _text(parent: ET.Element, path: str) -> str | None:
    element = parent.find(path, NS)
    return None if element is None else (element.text or "")


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WSManError(f"{what} is not valid base64") from exc


def parse_request(data: bytes) -> Request:
    """Parse a request envelope; a malformed one raises `WSManError`."""
    try:
        envelope = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManError(f"request is not XML: {exc}") from exc
    header = envelope.find("s:Header", NS)
    body = envelope.find("s:Body", NS)
    if header is None or body is None:
        raise WSManError("request is not a SOAP envelope with Header and Body")
    action_uri = _text(header, "wsa:Action")
    if not action_uri:
        raise WSManError("request has no wsa:Action")
    selectors = {
        s.attrib.get("Name", ""): (s.text or "")
        for s in header.findall("wsman:SelectorSet/wsman:Selector", NS)
    }
    options = {
        o.attrib.get("Name", ""): (o.text or "")
        for o in header.findall("wsman:OptionSet/wsman:Option", NS)
    }
    return Request(
        action=ACTIONS.get(action_uri.strip(), action_uri.strip()),
        message_id=(_text(header, "wsa:MessageID") or "").strip(),
        resource_uri=(_text(header, "wsman:ResourceURI") or "").strip(),
        operation_timeout=parse_duration(_text(header, "wsman:OperationTimeout")),
        selectors=selectors,
        options=options,
        body=body,
    )


def parse_create(request: Request) -> CreateShell:
    shell = request.body.find("rsp:Shell", NS)
    if shell is None:
        raise WSManError("Create has no rsp:Shell")
    creation = shell.find("pwsh:creationXml", NS)
    return CreateShell(
        shell_id=shell.attrib.get("ShellId"),
        input_streams=_text(shell, "rsp:InputStreams") or "stdin",
        output_streams=_text(shell, "rsp:OutputStreams") or "stdout",
        creation_xml=None if creation is None else _b64(creation.text, "creationXml"),
    )


def parse_command(request: Request) -> CommandLine:
    line = request.body.find("rsp:CommandLine", NS)
    if line is None:
        raise WSManError("Command has no rsp:CommandLine")
    return CommandLine(
        command_id=line.attrib.get("CommandId"),
        command=_text(line, "rsp:Command") or "",
        arguments=[_b64(a.text, "Arguments") for a in line.findall("rsp:Arguments", NS)],
    )


def parse_send(request: Request) -> list[StreamData]:
    send = request.body.find("rsp:Send", NS)
    if send is None:
        raise WSManError("Send has no rsp:Send")
    return [
        StreamData(
            name=s.attrib.get("Name", ""),
            command_id=s.attrib.get("CommandId"),
            data=_b64(s.text, "Stream"),
            end=s.attrib.get("End", "").lower() == "true",
        )
        for s in send.findall("rsp:Stream", NS)
    ]


def parse_receive(request: Request) -> ReceiveRequest:
    desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
    if desired is None:
        raise WSManError("Receive has no rsp:DesiredStream")
    return ReceiveRequest(
        streams=(desired.text or "stdout").split(),
        command_id=desired.attrib.get("CommandId"),
    )


def parse_signal(request: Request) -> SignalRequest:
    signal = request.body.find("rsp:Signal", NS)
    if signal is None:
        raise WSManError("Signal has no rsp:Signal")
    return SignalRequest(
        command_id=signal.attrib.get("CommandId"),
        code=(_text(signal, "rsp:Code") or "").strip(),
    )
