"""Each server's WS-Man endpoints: `/<fqdn>/PowerShell` (Exchange) and `/<fqdn>/wsman` (host).

A request passes the org's transport faults (unreachable, auth failure), authentication
(Basic, or Negotiate with message encryption over http: `negotiate_auth`) and the
configured latency, then acts on a `psrp.Shell`; every failure is answered with the
fault WinRM would send. A long-poll Receive waits at most MAX_RECEIVE_WAIT on its thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Literal

from lab import cmdlets, psrp, wsman
from lab.http import message_encryption
from lab.http.negotiate_auth import AuthRefused, parse_token, token_header

if TYPE_CHECKING:
    from lab.http.request_handler import LabRequestHandler

Endpoint = Literal["exchange", "host"]

CONFIGURATIONS: dict[Endpoint, str] = {
    "exchange": "http://schemas.microsoft.com/powershell/Microsoft.Exchange",
    "host": "http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
}
ENDPOINT_PATHS: dict[str, Endpoint] = {"powershell": "exchange", "wsman": "host"}
log = logging.getLogger(__name__)

UNENCRYPTED_REFUSED = (
    "The WinRM service refuses unencrypted traffic (AllowUnencrypted = false): after "
    "Negotiate over http every message must be encrypted; use message encryption or https."
)
DEFAULT_OPERATION_TIMEOUT = 20.0  # pypsrp's default; used when a request names none
MAX_RECEIVE_WAIT = 60.0  # a long poll never holds a thread longer than this


class DropConnection(Exception):
    """Close the connection without answering (a down host)."""


def serve_wsman(handler: LabRequestHandler, path: str, body: bytes) -> None:
    """Answer one request to a server's endpoint, after its transport faults and latency."""
    parts = [p for p in path.split("/") if p]
    endpoint = ENDPOINT_PATHS.get(parts[1].lower()) if len(parts) == 2 else None
    org = handler.server.org
    server_name = org.resolve(parts[0]) if endpoint else None
    if endpoint is None or server_name is None:
        handler.reply(404, b"Not Found", "text/plain")
        return
    fault_kind = org.transport_fault(server_name, endpoint)
    if fault_kind == "unreachable":
        raise DropConnection
    fqdn = org.server_info(server_name)["fqdn"]
    if fault_kind == "auth_failure":
        handler.reply_unauthorized(handler.server.authenticator.challenge())
        return
    plain = _authenticate(handler, endpoint, body, fqdn)
    if plain is None:
        return
    if handler.command != "POST":
        handler.reply(405, b"", "text/plain", {"Allow": "POST"})
        return
    if not plain and handler.negotiated:
        # The empty POST a client sends to set up the context for message encryption.
        handler.reply(200, b"", "application/soap+xml;charset=UTF-8")
        return
    body = plain
    delay_ms = handler.server.latency_ms + int(org.latency_ms(server_name, endpoint) or 0)
    try:
        request = wsman.parse_request(body)
    except wsman.WSManError as exc:
        _fault(handler, wsman.invalid_message(fqdn, str(exc)), None)
        return
    if request.action == "Create":
        delay_ms += handler.server.open_ms
    if delay_ms:
        time.sleep(delay_ms / 1000)
    try:
        _act(handler, request, server_name, fqdn, endpoint)
    except wsman.WSManError as exc:
        _fault(handler, wsman.invalid_message(fqdn, str(exc)), request)
    except psrp.ShellClosed:
        _fault(handler, wsman.shell_not_found(fqdn, request.shell_id), request)
    except psrp.UnknownCommand as exc:
        unknown = f"The command with CommandId {exc.args[0]} was not found."
        _fault(handler, wsman.generic(fqdn, unknown), request)
    except psrp.ProtocolError as exc:
        rejected = f"PowerShell Remoting data was rejected: {exc}"
        _fault(handler, wsman.generic(fqdn, rejected), request)


def _authenticate(
    handler: LabRequestHandler, endpoint: Endpoint, body: bytes, fqdn: str
) -> bytes | None:
    """The request's plain body once it is authenticated (and decrypted), else None after
    answering it: 401 with the challenge, 400 for a broken envelope, 500 for a plain body
    on a Negotiate connection over http."""
    auth = handler.server.authenticator
    if not auth.negotiate:
        if handler.authorized():
            return body
        handler.reply_unauthorized(auth.challenge())
        return None
    token = parse_token(handler.headers.get("Authorization", ""))
    if token is not None:
        if handler.negotiate_context is None or handler.negotiated:
            handler.negotiate_context = auth.new_context()
            handler.negotiated = False
        context = handler.negotiate_context
        try:
            out = auth.step(context, token[1])
        except AuthRefused as exc:
            log.debug("Negotiate refused from %s: %s", handler.client_address[0], exc)
            handler.negotiate_context = None
            handler.reply_unauthorized(auth.challenge())
            return None
        if not context.complete:
            handler.reply(401, b"", "text/plain", {"WWW-Authenticate": token_header(out or b"")})
            return None
        if not auth.allowed(context, endpoint):
            handler.negotiate_context = None
            handler.reply_unauthorized(auth.challenge())
            return None
        handler.negotiated = True
        auth.completed()
        if out:
            handler.auth_headers = {"WWW-Authenticate": token_header(out)}
    elif handler.negotiate_context is None or not handler.negotiated:
        handler.reply_unauthorized(auth.challenge())
        return None
    context = handler.negotiate_context
    content_type = handler.headers.get("Content-Type", "")
    if message_encryption.is_encrypted(content_type):
        try:
            plain, protocol = message_encryption.unwrap(body, content_type, context)
        except message_encryption.EnvelopeError as exc:
            handler.reply(400, str(exc).encode(), "text/plain")
            return None
        handler.seal = lambda answer: message_encryption.wrap(answer, context, protocol)
        return plain
    if body and handler.server.ssl_context is None:
        _fault(handler, wsman.generic(fqdn, UNENCRYPTED_REFUSED), None)
        return None
    return body


def _fault(
    handler: LabRequestHandler, fault: wsman.Fault, request: wsman.Request | None
) -> None:
    body = wsman.fault_response(fault, request)
    handler.reply(fault.status, body, "application/soap+xml;charset=UTF-8")


def _ok(handler: LabRequestHandler, body: bytes) -> None:
    handler.reply(200, body, "application/soap+xml;charset=UTF-8")


def _act(
    handler: LabRequestHandler, request: wsman.Request, server_name: str, fqdn: str,
    endpoint: Endpoint,
) -> None:
    if request.action == "Create":
        _create(handler, request, server_name, fqdn, endpoint)
        return
    shell = handler.server.get_shell(request.shell_id)
    if shell is None or (shell.session.server, shell.session.endpoint) != (
        server_name,
        endpoint,
    ):
        _fault(handler, wsman.shell_not_found(fqdn, request.shell_id), request)
        return
    if request.action == "Receive":
        _receive(handler, request, shell, fqdn)
    elif request.action == "Command":
        line = wsman.parse_command(request)
        if not line.arguments:
            raise wsman.WSManError("Command carries no PowerShell data in rsp:Arguments")
        command_id = shell.command(line.command_id, line.arguments[0])
        _ok(handler, wsman.command_response(request, command_id))
    elif request.action == "Send":
        for stream in wsman.parse_send(request):
            shell.send(stream.command_id, stream.data)
        _ok(handler, wsman.empty_response(request))
    elif request.action == "Signal":
        signal = wsman.parse_signal(request)
        shell.signal(signal.command_id, signal.code)
        _ok(handler, wsman.empty_response(request))
    elif request.action == "Delete":
        shell.close()
        handler.server.remove_shell(shell.id)
        _ok(handler, wsman.empty_response(request))
    elif request.action == "Get":
        _ok(handler, wsman.get_shell_response(
            request,
            shell_id=shell.id,
            resource_uri=shell.resource_uri,
            owner=shell.owner,
            client_ip=shell.client_ip,
            state=shell.state,
            input_streams=shell.input_streams,
            output_streams=shell.output_streams,
        ))
    else:
        _fault(handler, wsman.action_not_supported(fqdn, request.action), request)


def _create(
    handler: LabRequestHandler, request: wsman.Request, server_name: str, fqdn: str,
    endpoint: Endpoint,
) -> None:
    if request.resource_uri.lower() != CONFIGURATIONS[endpoint].lower():
        _fault(handler, wsman.unknown_configuration(fqdn, request.resource_uri), request)
        return
    if endpoint == "exchange":
        failure = handler.server.org.exchange_endpoint_failure(server_name)
        if failure:
            _fault(handler, wsman.generic(fqdn, failure), request)
            return
    create = wsman.parse_create(request)
    if create.creation_xml is None:
        raise wsman.WSManError("Create of a PowerShell shell needs creationXml")
    shell = psrp.Shell(
        org=handler.server.org,
        session=cmdlets.Session(server=server_name, endpoint=endpoint),
        shell_id=create.shell_id or str(uuid.uuid4()),
        resource_uri=CONFIGURATIONS[endpoint],
        owner=handler.server.username,
        client_ip=handler.client_address[0],
        input_streams=create.input_streams,
        output_streams=create.output_streams,
    )
    shell.open(create.creation_xml)
    handler.server.add_shell(shell)
    path = "PowerShell" if endpoint == "exchange" else "wsman"
    _ok(handler, wsman.create_response(
        request,
        shell_id=shell.id,
        address=f"{handler.server.base_url}/{fqdn}/{path}",
        input_streams=shell.input_streams,
        output_streams=shell.output_streams,
        owner=shell.owner,
        client_ip=shell.client_ip,
    ))


def _receive(
    handler: LabRequestHandler, request: wsman.Request, shell: psrp.Shell, fqdn: str
) -> None:
    receive = wsman.parse_receive(request)
    wait = request.operation_timeout or DEFAULT_OPERATION_TIMEOUT
    if handler.server.stopping.is_set():
        raise psrp.ShellClosed(shell.id)
    result = shell.receive(receive.command_id, min(wait, MAX_RECEIVE_WAIT))
    if result is None:
        _fault(handler, wsman.timed_out(fqdn), request)
        return
    data, done = result
    stream = receive.streams[0] if receive.streams else "stdout"
    _ok(handler, wsman.receive_response(
        request, stream=stream, command_id=receive.command_id, data=data, done=done
    ))
