"""WS-Management SOAP messages of the WinRM shell protocol, parsed and built without I/O.

Only what a PowerShell Remoting client (pypsrp) exchanges with WinRM is covered: Create
(a shell carrying `creationXml`), Command, Send, Receive, Signal, Delete and Get on a
shell, plus the faults WinRM answers with. Keeping this free of sockets lets the server
and the tests share one definition of the wire format.

`vocabulary` names the namespaces, actions and error codes; `request_parsing` reads a
request envelope; `envelope_writer` makes and serializes envelopes, which
`shell_responses` and `winrm_faults` fill in.
"""

from lab.wsman.request_parsing import (
    CommandLine,
    CreateShell,
    ReceiveRequest,
    Request,
    SignalRequest,
    StreamData,
    WSManError,
    parse_command,
    parse_create,
    parse_duration,
    parse_receive,
    parse_request,
    parse_send,
    parse_signal,
)
from lab.wsman.shell_responses import (
    command_response,
    create_response,
    empty_response,
    get_shell_response,
    receive_response,
)
from lab.wsman.vocabulary import (
    ERROR_INVALID_RESOURCE_URI,
    ERROR_OPERATION_TIMEDOUT,
    ERROR_UNEXPECTED_SELECTORS,
)
from lab.wsman.winrm_faults import (
    Fault,
    action_not_supported,
    fault_response,
    generic,
    invalid_message,
    shell_not_found,
    timed_out,
    unknown_configuration,
)

__all__ = [
    "ERROR_INVALID_RESOURCE_URI", "ERROR_OPERATION_TIMEDOUT", "ERROR_UNEXPECTED_SELECTORS",
    "CommandLine", "CreateShell", "Fault", "ReceiveRequest", "Request", "SignalRequest",
    "StreamData", "WSManError", "action_not_supported", "command_response", "create_response",
    "empty_response", "fault_response", "generic", "get_shell_response", "invalid_message",
    "parse_command", "parse_create", "parse_duration", "parse_receive", "parse_request",
    "parse_send", "parse_signal", "receive_response", "shell_not_found", "timed_out",
    "unknown_configuration",
]
