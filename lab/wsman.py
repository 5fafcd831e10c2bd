"""WS-Management SOAP messages of the WinRM shell protocol, parsed and built without I/O.

Only what a PowerShell Remoting client (pypsrp) exchanges with WinRM is covered: Create
(a shell carrying `creationXml`), Command, Send, Receive, Signal, Delete and Get on a
shell, plus the faults WinRM answers with. Keeping this free of sockets lets the server
and the tests share one definition of the wire format.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS: dict[str, str] = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
POWERSHELL_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"

# wsa:Action URI -> short verb the server dispatches on.
ACTIONS: dict[str, str] = {
    f"{TRANSFER}/Create": "Create",
    f"{TRANSFER}/Delete": "Delete",
    f"{TRANSFER}/Get": "Get",
    f"{SHELL}/Command": "Command",
    f"{SHELL}/Send": "Send",
    f"{SHELL}/Receive": "Receive",
    f"{SHELL}/Signal": "Signal",
}
RESPONSE_ACTIONS: dict[str, str] = {
    "Create": f"{TRANSFER}/CreateResponse",
    "Delete": f"{TRANSFER}/DeleteResponse",
    "Get": f"{TRANSFER}/GetResponse",
    "Command": f"{SHELL}/CommandResponse",
    "Send": f"{SHELL}/SendResponse",
    "Receive": f"{SHELL}/ReceiveResponse",
    "Signal": f"{SHELL}/SignalResponse",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

COMMAND_DONE = f"{SHELL}/CommandState/Done"
COMMAND_RUNNING = f"{SHELL}/CommandState/Running"

# WinRM error codes the client library looks at (pypsrp compares the numbers).
ERROR_OPERATION_TIMEDOUT = 0x80338029  # long-poll Receive with nothing to say
ERROR_UNEXPECTED_SELECTORS = 0x8033805B  # shell id unknown (pypsrp: pool is gone)
ERROR_INVALID_RESOURCE_URI = 0x80338012  # no such session configuration
ERROR_ACTION_NOT_SUPPORTED = 0x8033801D
ERROR_INVALID_MESSAGE = 0x80338043
E_FAIL = 0x80004005

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


@dataclass(frozen=True)
class Fault:
    """A WS-Man fault; `status` is the HTTP status WinRM sends it with."""

    code: int
    subcode: str  # e.g. "w:TimedOut"
    reason: str
    machine: str = "localhost"
    status: int = 500


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


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _envelope(action: str, relates_to: str | None) -> tuple[ET.Element, ET.Element]:
    envelope = ET.Element(_q("s", "Envelope"))
    header = ET.SubElement(envelope, _q("s", "Header"))
    ET.SubElement(header, _q("wsa", "Action")).text = action
    ET.SubElement(header, _q("wsa", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, _q("wsa", "To")).text = ANONYMOUS
    if relates_to:
        ET.SubElement(header, _q("wsa", "RelatesTo")).text = relates_to
    body = ET.SubElement(envelope, _q("s", "Body"))
    return envelope, body


_PREFIXES: dict[str, str] = {uri: prefix for prefix, uri in NS.items()}
_CDATA = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIB = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                         "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"})


def _serialize(envelope: ET.Element) -> bytes:
    """The bytes `ET.tostring(envelope, encoding="utf-8")` gives, at a fraction of its cost.

    Every Receive answer goes through here. Envelopes only use the prefixes of NS, have no
    tails and no default namespace, so ElementTree's output reduces to: namespaces declared
    on the root sorted by prefix, attributes in insertion order, `<x />` when empty.
    """
    used: set[str] = set()
    parts: list[str] = []
    _write_element(envelope, parts, used)
    declarations = "".join(f' xmlns:{prefix}="{NS[prefix].translate(_ATTRIB)}"'
                           for prefix in sorted(used) if prefix != "xml")
    parts.insert(1, declarations)
    return "".join(parts).encode("utf-8")


_QUALIFIED: dict[str, tuple[str | None, str]] = {}  # "{uri}local" -> (prefix, "prefix:local")


def _qualified(name: str, used: set[str]) -> str:
    known = _QUALIFIED.get(name)
    if known is None:
        if name.startswith("{"):
            uri, _, local = name[1:].partition("}")
            known = (_PREFIXES[uri], f"{_PREFIXES[uri]}:{local}")
        else:
            known = (None, name)
        _QUALIFIED[name] = known
    prefix, qualified = known
    if prefix is not None:
        used.add(prefix)
    return qualified


def _write_element(element: ET.Element, parts: list[str], used: set[str]) -> None:
    tag = _qualified(element.tag, used)
    parts.append(f"<{tag}")
    parts.append("".join(f' {_qualified(k, used)}="{v.translate(_ATTRIB)}"'
                         for k, v in element.attrib.items()))
    if element.text or len(element):
        parts.append(">")
        if element.text:
            parts.append(element.text.translate(_CDATA))
        for child in element:
            _write_element(child, parts, used)
        parts.append(f"</{tag}>")
    else:
        parts.append(" />")


def _response(request: Request) -> tuple[ET.Element, ET.Element]:
    return _envelope(RESPONSE_ACTIONS[request.action], request.message_id)


def create_response(
    request: Request,
    *,
    shell_id: str,
    address: str,
    input_streams: str,
    output_streams: str,
    owner: str,
    client_ip: str,
) -> bytes:
    envelope, body = _response(request)
    created = ET.SubElement(body, _q("wst", "ResourceCreated"))
    ET.SubElement(created, _q("wsa", "Address")).text = address
    params = ET.SubElement(created, _q("wsa", "ReferenceParameters"))
    ET.SubElement(params, _q("wsman", "ResourceURI")).text = request.resource_uri
    selectors = ET.SubElement(params, _q("wsman", "SelectorSet"))
    ET.SubElement(selectors, _q("wsman", "Selector"), Name="ShellId").text = shell_id
    _shell_element(
        body,
        shell_id=shell_id,
        resource_uri=request.resource_uri,
        owner=owner,
        client_ip=client_ip,
        state=None,
        input_streams=input_streams,
        output_streams=output_streams,
    )
    return _serialize(envelope)


def _shell_element(
    parent: ET.Element,
    *,
    shell_id: str,
    resource_uri: str,
    owner: str,
    client_ip: str,
    state: str | None,
    input_streams: str,
    output_streams: str,
) -> None:
    shell = ET.SubElement(parent, _q("rsp", "Shell"))
    ET.SubElement(shell, _q("rsp", "ShellId")).text = shell_id
    ET.SubElement(shell, _q("rsp", "ResourceUri")).text = resource_uri
    ET.SubElement(shell, _q("rsp", "Owner")).text = owner
    ET.SubElement(shell, _q("rsp", "ClientIP")).text = client_ip
    if state is not None:
        ET.SubElement(shell, _q("rsp", "State")).text = state
    ET.SubElement(shell, _q("rsp", "IdleTimeOut")).text = "PT7200.000S"
    ET.SubElement(shell, _q("rsp", "InputStreams")).text = input_streams
    ET.SubElement(shell, _q("rsp", "OutputStreams")).text = output_streams
    ET.SubElement(shell, _q("rsp", "ShellRunTime")).text = "P0DT0H0M0S"
    ET.SubElement(shell, _q("rsp", "ShellInactivity")).text = "P0DT0H0M0S"


def get_shell_response(
    request: Request,
    *,
    shell_id: str,
    resource_uri: str,
    owner: str,
    client_ip: str,
    state: str,
    input_streams: str,
    output_streams: str,
) -> bytes:
    envelope, body = _response(request)
    _shell_element(
        body,
        shell_id=shell_id,
        resource_uri=resource_uri,
        owner=owner,
        client_ip=client_ip,
        state=state,
        input_streams=input_streams,
        output_streams=output_streams,
    )
    return _serialize(envelope)


def command_response(request: Request, command_id: str) -> bytes:
    envelope, body = _response(request)
    response = ET.SubElement(body, _q("rsp", "CommandResponse"))
    ET.SubElement(response, _q("rsp", "CommandId")).text = command_id
    return _serialize(envelope)


def empty_response(request: Request) -> bytes:
    """SendResponse / SignalResponse / DeleteResponse: an acknowledgement only."""
    envelope, body = _response(request)
    if request.action == "Send":
        ET.SubElement(body, _q("rsp", "SendResponse"))
    elif request.action == "Signal":
        ET.SubElement(body, _q("rsp", "SignalResponse"))
    return _serialize(envelope)


def receive_response(
    request: Request,
    *,
    stream: str,
    command_id: str | None,
    data: bytes,
    done: bool,
) -> bytes:
    """One Receive answer. `done` marks a command whose output is complete."""
    envelope, body = _response(request)
    response = ET.SubElement(body, _q("rsp", "ReceiveResponse"))
    attrib = {"Name": stream}
    if command_id is not None:
        attrib["CommandId"] = command_id
    ET.SubElement(response, _q("rsp", "Stream"), attrib).text = base64.b64encode(data).decode()
    if command_id is not None:
        state_attrib = {"CommandId": command_id, "State": COMMAND_DONE if done else COMMAND_RUNNING}
        state = ET.SubElement(response, _q("rsp", "CommandState"), state_attrib)
        if done:
            ET.SubElement(state, _q("rsp", "ExitCode")).text = "0"
    return _serialize(envelope)


def fault_response(fault: Fault, request: Request | None = None) -> bytes:
    """A SOAP fault in the shape WinRM sends (pypsrp reads the WSManFault Code and Message)."""
    envelope, body = _envelope(FAULT_ACTION, request.message_id if request else None)
    soap_fault = ET.SubElement(body, _q("s", "Fault"))
    code = ET.SubElement(soap_fault, _q("s", "Code"))
    ET.SubElement(code, _q("s", "Value")).text = "s:Receiver"
    subcode = ET.SubElement(code, _q("s", "Subcode"))
    ET.SubElement(subcode, _q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(soap_fault, _q("s", "Reason"))
    ET.SubElement(reason, _q("s", "Text"), {_q("xml", "lang"): "en-US"}).text = fault.reason
    detail = ET.SubElement(soap_fault, _q("s", "Detail"))
    wsman_fault = ET.SubElement(
        detail,
        _q("wsmanfault", "WSManFault"),
        {"Code": str(fault.code), "Machine": fault.machine},
    )
    ET.SubElement(wsman_fault, _q("wsmanfault", "Message")).text = fault.reason
    return _serialize(envelope)


def timed_out(machine: str) -> Fault:
    return Fault(
        code=ERROR_OPERATION_TIMEDOUT,
        subcode="w:TimedOut",
        reason="The WS-Management service cannot complete the operation within the time "
        "specified in OperationTimeout.",
        machine=machine,
    )


def shell_not_found(machine: str, shell_id: str | None) -> Fault:
    return Fault(
        code=ERROR_UNEXPECTED_SELECTORS,
        subcode="w:InvalidSelectors",
        reason=f"The request for the Windows Remote Shell with ShellId {shell_id or '(none)'} "
        "failed because the shell was not found on the server. Possible causes are: the "
        "specified ShellId is incorrect or the shell no longer exists on the server. Provide "
        "the correct ShellId or create a new shell and retry the operation.",
        machine=machine,
    )


def unknown_configuration(machine: str, resource_uri: str) -> Fault:
    name = resource_uri.removeprefix(POWERSHELL_RESOURCE_PREFIX) or resource_uri
    return Fault(
        code=ERROR_INVALID_RESOURCE_URI,
        subcode="w:InvalidResourceURI",
        reason=f"The WS-Management service cannot process the request. Cannot find the {name} "
        f"session configuration in the WSMan: drive on the {machine} computer.",
        machine=machine,
    )


def action_not_supported(machine: str, action: str) -> Fault:
    return Fault(
        code=ERROR_ACTION_NOT_SUPPORTED,
        subcode="a:ActionNotSupported",
        reason=f"The action {action!r} is not supported by the service.",
        machine=machine,
    )


def invalid_message(machine: str, what: str) -> Fault:
    return Fault(
        code=ERROR_INVALID_MESSAGE,
        subcode="w:SchemaValidationError",
        reason=f"The WS-Management service cannot process the request: {what}",
        machine=machine,
        status=400,
    )


def generic(machine: str, message: str) -> Fault:
    """Any other server-side failure, e.g. the Exchange front end failing to reach its back end."""
    return Fault(code=E_FAIL, subcode="w:InternalError", reason=message, machine=machine)
