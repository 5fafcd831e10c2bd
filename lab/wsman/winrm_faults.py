"""WinRM faults: the `Fault` values the server answers with, and their SOAP envelope.

pypsrp reads the WSManFault Code and Message, so each fault carries the code and text
real WinRM sends for the same condition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from lab.wsman.envelope_writer import new_envelope, qname, serialize_envelope
from lab.wsman.request_parsing import Request
from lab.wsman.vocabulary import (
    E_FAIL,
    ERROR_ACTION_NOT_SUPPORTED,
    ERROR_INVALID_MESSAGE,
    ERROR_INVALID_RESOURCE_URI,
    ERROR_OPERATION_TIMEDOUT,
    ERROR_UNEXPECTED_SELECTORS,
    FAULT_ACTION,
    POWERSHELL_RESOURCE_PREFIX,
)


@dataclass(frozen=True)
class Fault:
    """A WS-Man fault; `status` is the HTTP status WinRM sends it with."""

    code: int
    subcode: str  # e.g. "w:TimedOut"
    reason: str
    machine: str = "localhost"
    status: int = 500



def fault_response(fault: Fault, request: Request | None = None) -> bytes:
    """A SOAP fault in the shape WinRM sends (pypsrp reads the WSManFault Code and Message)."""
    envelope, body = new_envelope(FAULT_ACTION, request.message_id if request else None)
    soap_fault = ET.SubElement(body, qname("s", "Fault"))
    code = ET.SubElement(soap_fault, qname("s", "Code"))
    ET.SubElement(code, qname("s", "Value")).text = "s:Receiver"
    subcode = ET.SubElement(code, qname("s", "Subcode"))
    ET.SubElement(subcode, qname("s", "Value")).text = fault.subcode
    reason = ET.SubElement(soap_fault, qname("s", "Reason"))
    ET.SubElement(reason, qname("s", "Text"), {qname("xml", "lang"): "en-US"}).text = fault.reason
    detail = ET.SubElement(soap_fault, qname("s", "Detail"))
    wsman_fault = ET.SubElement(
        detail,
        qname("wsmanfault", "WSManFault"),
        {"Code": str(fault.code), "Machine": fault.machine},
    )
    ET.SubElement(wsman_fault, qname("wsmanfault", "Message")).text = fault.reason
    return serialize_envelope(envelope)


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
