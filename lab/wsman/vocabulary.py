"""The WS-Management vocabulary: XML namespaces, action URIs and WinRM error codes.

One place for the names both the parser and the response builders use, so a request and
its answer cannot disagree on a URI.
"""

from __future__ import annotations

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
