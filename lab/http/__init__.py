"""The lab's HTTP server: WinRM-style endpoints per server, their auth, the control API.

One port serves the whole org. `/<fqdn>/PowerShell` is that server's Exchange endpoint
(configuration Microsoft.Exchange, NoLanguage) and `/<fqdn>/wsman` its host endpoint
(Microsoft.PowerShell); `/_lab/...` is the control API. Every request runs on its own
thread, so a long-poll Receive never holds up another client.

`listener` is the server object (port, TLS, connections, open shells), `request_handler`
reads and routes each request, `wsman_endpoint` and `control_api` answer them. The control
API takes `basic_auth`; the WS-Man endpoints take what `negotiate_auth` says the lab's mode
offers (Basic, or Negotiate with NTLM/Kerberos and `message_encryption` over http);
`tls_certificate` makes the lab CA and the server certificate of HTTPS mode.
"""

from lab.http.control_api import ControlError, parse_advance
from lab.http.lab_server import LabServer

__all__ = ["ControlError", "LabServer", "parse_advance"]
