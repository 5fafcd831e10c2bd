"""The lab's HTTP server: WinRM-style endpoints per server, Basic auth, the control API.

One port serves the whole org. `/<fqdn>/PowerShell` is that server's Exchange endpoint
(configuration Microsoft.Exchange, NoLanguage) and `/<fqdn>/wsman` its host endpoint
(Microsoft.PowerShell); `/_lab/...` is the control API. Every request runs on its own
thread, so a long-poll Receive never holds up another client.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import socket
import ssl
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lab import cmdlets, psrp, wsman
from lab.clock import DurationTooLong, NotADuration, read_duration
from lab.org import Org

log = logging.getLogger(__name__)

Endpoint = Literal["exchange", "host"]

CONFIGURATIONS: dict[Endpoint, str] = {
    "exchange": "http://schemas.microsoft.com/powershell/Microsoft.Exchange",
    "host": "http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
}
ENDPOINT_PATHS: dict[str, Endpoint] = {"powershell": "exchange", "wsman": "host"}
DEFAULT_OPERATION_TIMEOUT = 20.0  # pypsrp's default; used when a request names none
MAX_RECEIVE_WAIT = 60.0  # a long poll never holds a thread longer than this
IDLE_CONNECTION_TIMEOUT = 300  # seconds a keep-alive connection may sit unused
IDLE_SHELL_TIMEOUT = 7200.0  # WinRM's default shell IdleTimeOut: forgotten shells go away
MAX_BODY = 16 * 1024 * 1024
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
_SIMPLE_METHODS = frozenset({"GET", "POST"})



class ControlError(ValueError):
    """Bad input to the control API; answered with 400 and the message."""


def parse_advance(text: Any) -> timedelta:
    """"49h", "30m", "2d", "90s" (or several: "1d12h") -> timedelta, at most MAX_DAYS."""
    if not isinstance(text, str) or not text.strip():
        raise ControlError(
            '"advance" must be a duration string such as "49h", "30m", "2d" or "90s"'
        )
    try:
        return read_duration(text, units="smhd", signed=False, several=True)
    except NotADuration:
        raise ControlError(
            f'"advance" {text!r} is not a duration; use a number with s, m, h or d, e.g. "49h"'
        ) from None
    except DurationTooLong as exc:
        raise ControlError(f'"advance" {exc}') from None


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost; the cert file doubles as CA bundle."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exauth lab")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "lab-cert.pem"
    key_file = directory / "lab-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


class LabServer(ThreadingHTTPServer):
    """The server object: the org, credentials, timing knobs and the open shells."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        org: Org,
        *,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        open_ms: int = 0,
        tls: bool = False,
    ) -> None:
        self.org = org
        self.username = username
        self.password = password
        self.latency_ms = max(0, int(latency_ms))
        self.open_ms = max(0, int(open_ms))
        self.shells: dict[str, psrp.Shell] = {}
        self.shells_lock = threading.Lock()
        self.stopping = threading.Event()
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()
        self.ssl_context: ssl.SSLContext | None = None
        self.cert_file: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="exauth-lab-tls-")
            self.cert_file, key_file = make_self_signed(Path(self._tmp.name))
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(self.cert_file, key_file)
        super().__init__((host, port), LabRequestHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    @property
    def base_url(self) -> str:
        host = str(self.server_address[0])
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="exauth-lab", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end every shell (waking long polls) and free the port."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self.shells_lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.close()
        # Keep-alive connections would otherwise go on being served by their threads.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, on the request's own thread, so a slow or
        # broken client cannot stall the accept loop.
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def add_shell(self, shell: psrp.Shell) -> None:
        now = time.monotonic()
        with self.shells_lock:
            idle = [s for s in self.shells.values() if now - s.last_used > IDLE_SHELL_TIMEOUT]
            for stale in idle:
                del self.shells[stale.id]
            self.shells[shell.id] = shell
        for stale in idle:
            stale.close()

    def get_shell(self, shell_id: str | None) -> psrp.Shell | None:
        if not shell_id:
            return None
        with self.shells_lock:
            return self.shells.get(shell_id.upper())

    def remove_shell(self, shell_id: str) -> None:
        with self.shells_lock:
            self.shells.pop(shell_id.upper(), None)


class _Drop(Exception):
    """Close the connection without answering (a down host)."""


class LabRequestHandler(BaseHTTPRequestHandler):
    server: LabServer
    protocol_version = "HTTP/1.1"  # keep-alive: pypsrp reuses one connection per pool
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    wbufsize = -1  # headers and body leave in one write ...
    disable_nagle_algorithm = True  # ... and are not held back by Nagle
    timeout = IDLE_CONNECTION_TIMEOUT

    def parse_request(self) -> bool:
        """The request line and headers of a plain HTTP/1.1 request, read without `email`.

        The standard library hands headers to the `email` package, which cost more than
        the rest of a WS-Man request in the lab. Clients here send plain `Name: value`
        lines, so those are read directly; any other request line goes the standard way.
        """
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] != "HTTP/1.1" or words[0] not in _SIMPLE_METHODS:
            return super().parse_request()
        self.requestline = line
        self.command, self.path, self.request_version = words
        if self.path.startswith("//"):  # as http.server does: no scheme-relative paths
            self.path = "/" + self.path.lstrip("/")
        headers = HTTPMessage()
        for count in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(raw) > MAX_HEADER_LINE:
                self.close_connection = True
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            # RFC 9112 5.2: a folded (obsolete) line may be refused with 400
            if not colon or not name.strip() or name[:1] in (" ", "\t"):
                self.close_connection = True
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            headers[name.strip()] = value.strip()
            if count == MAX_HEADERS:
                self.close_connection = True
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
                return False
        self.headers = headers
        self.close_connection = headers.get("Connection", "").lower() == "close"
        if headers.get("Expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):  # every response logs; format only when shown
            log.debug("%s - %s", self.address_string(), format % args)

    # -- HTTP plumbing -----------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
            path = urlsplit(self.path).path
            if path.startswith("/_lab/") or path == "/_lab":
                self._control(path, body)
            else:
                self._wsman(path, body)
        except _Drop:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a lab bug answers 500 instead of killing the connection
            log.exception("lab request %s %s failed", self.command, self.path)
            text = f"Internal lab error: {type(exc).__name__}: {exc}"
            if self.path.startswith("/_lab"):
                self._send_json(500, {"error": text})
            else:
                fault = wsman.fault_response(wsman.generic("localhost", text))
                self._send(500, fault, "application/soap+xml;charset=UTF-8")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0 or size > MAX_BODY:
            self.close_connection = True
            self._send(400, b"bad Content-Length", "text/plain")
            raise _Drop
        return self.rfile.read(size)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: Any) -> None:
        body = json.dumps(value, default=str).encode()
        self._send(status, body, "application/json")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(user.lower().encode(), self.server.username.lower().encode())
        password_ok = hmac.compare_digest(password.encode(), self.server.password.encode())
        return user_ok and password_ok

    def _unauthorized(self) -> None:
        self._send(401, b"", "text/plain", {"WWW-Authenticate": 'Basic realm="WSMAN"'})

    # -- WS-Man endpoints --------------------------------------------------------------

    def _wsman(self, path: str, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        endpoint = ENDPOINT_PATHS.get(parts[1].lower()) if len(parts) == 2 else None
        org = self.server.org
        server_name = org.resolve(parts[0]) if endpoint else None
        if endpoint is None or server_name is None:
            self._send(404, b"Not Found", "text/plain")
            return
        fault_kind = org.transport_fault(server_name, endpoint)
        if fault_kind == "unreachable":
            raise _Drop
        if not self._authorized() or fault_kind == "auth_failure":
            self._unauthorized()
            return
        if self.command != "POST":
            self._send(405, b"", "text/plain", {"Allow": "POST"})
            return
        delay_ms = self.server.latency_ms + int(org.latency_ms(server_name, endpoint) or 0)
        fqdn = org.server_info(server_name)["fqdn"]
        try:
            request = wsman.parse_request(body)
        except wsman.WSManError as exc:
            self._fault(wsman.invalid_message(fqdn, str(exc)), None)
            return
        if request.action == "Create":
            delay_ms += self.server.open_ms
        if delay_ms:
            time.sleep(delay_ms / 1000)
        try:
            self._wsman_action(request, server_name, fqdn, endpoint)
        except wsman.WSManError as exc:
            self._fault(wsman.invalid_message(fqdn, str(exc)), request)
        except psrp.ShellClosed:
            self._fault(wsman.shell_not_found(fqdn, request.shell_id), request)
        except psrp.UnknownCommand as exc:
            self._fault(
                wsman.generic(fqdn, f"The command with CommandId {exc.args[0]} was not found."),
                request,
            )
        except psrp.ProtocolError as exc:
            rejected = f"PowerShell Remoting data was rejected: {exc}"
            self._fault(wsman.generic(fqdn, rejected), request)

    def _fault(self, fault: wsman.Fault, request: wsman.Request | None) -> None:
        body = wsman.fault_response(fault, request)
        self._send(fault.status, body, "application/soap+xml;charset=UTF-8")

    def _ok(self, body: bytes) -> None:
        self._send(200, body, "application/soap+xml;charset=UTF-8")

    def _wsman_action(
        self, request: wsman.Request, server_name: str, fqdn: str, endpoint: Endpoint
    ) -> None:
        if request.action == "Create":
            self._create(request, server_name, fqdn, endpoint)
            return
        shell = self.server.get_shell(request.shell_id)
        if shell is None or (shell.session.server, shell.session.endpoint) != (
            server_name,
            endpoint,
        ):
            self._fault(wsman.shell_not_found(fqdn, request.shell_id), request)
            return
        if request.action == "Receive":
            self._receive(request, shell, fqdn)
        elif request.action == "Command":
            line = wsman.parse_command(request)
            if not line.arguments:
                raise wsman.WSManError("Command carries no PowerShell data in rsp:Arguments")
            command_id = shell.command(line.command_id, line.arguments[0])
            self._ok(wsman.command_response(request, command_id))
        elif request.action == "Send":
            for stream in wsman.parse_send(request):
                shell.send(stream.command_id, stream.data)
            self._ok(wsman.empty_response(request))
        elif request.action == "Signal":
            signal = wsman.parse_signal(request)
            shell.signal(signal.command_id, signal.code)
            self._ok(wsman.empty_response(request))
        elif request.action == "Delete":
            shell.close()
            self.server.remove_shell(shell.id)
            self._ok(wsman.empty_response(request))
        elif request.action == "Get":
            self._ok(
                wsman.get_shell_response(
                    request,
                    shell_id=shell.id,
                    resource_uri=shell.resource_uri,
                    owner=shell.owner,
                    client_ip=shell.client_ip,
                    state=shell.state,
                    input_streams=shell.input_streams,
                    output_streams=shell.output_streams,
                )
            )
        else:
            self._fault(wsman.action_not_supported(fqdn, request.action), request)

    def _create(
        self, request: wsman.Request, server_name: str, fqdn: str, endpoint: Endpoint
    ) -> None:
        if request.resource_uri.lower() != CONFIGURATIONS[endpoint].lower():
            self._fault(wsman.unknown_configuration(fqdn, request.resource_uri), request)
            return
        if endpoint == "exchange":
            failure = self.server.org.exchange_endpoint_failure(server_name)
            if failure:
                self._fault(wsman.generic(fqdn, failure), request)
                return
        create = wsman.parse_create(request)
        if create.creation_xml is None:
            raise wsman.WSManError("Create of a PowerShell shell needs creationXml")
        shell = psrp.Shell(
            org=self.server.org,
            session=cmdlets.Session(server=server_name, endpoint=endpoint),
            shell_id=create.shell_id or str(uuid.uuid4()),
            resource_uri=CONFIGURATIONS[endpoint],
            owner=self.server.username,
            client_ip=self.client_address[0],
            input_streams=create.input_streams,
            output_streams=create.output_streams,
        )
        shell.open(create.creation_xml)
        self.server.add_shell(shell)
        path = "PowerShell" if endpoint == "exchange" else "wsman"
        self._ok(
            wsman.create_response(
                request,
                shell_id=shell.id,
                address=f"{self.server.base_url}/{fqdn}/{path}",
                input_streams=shell.input_streams,
                output_streams=shell.output_streams,
                owner=shell.owner,
                client_ip=shell.client_ip,
            )
        )

    def _receive(self, request: wsman.Request, shell: psrp.Shell, fqdn: str) -> None:
        receive = wsman.parse_receive(request)
        wait = request.operation_timeout or DEFAULT_OPERATION_TIMEOUT
        if self.server.stopping.is_set():
            raise psrp.ShellClosed(shell.id)
        result = shell.receive(receive.command_id, min(wait, MAX_RECEIVE_WAIT))
        if result is None:
            self._fault(wsman.timed_out(fqdn), request)
            return
        data, done = result
        stream = receive.streams[0] if receive.streams else "stdout"
        self._ok(
            wsman.receive_response(
                request, stream=stream, command_id=receive.command_id, data=data, done=done
            )
        )

    # -- control API -------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> None:
        if not self._authorized():
            self._unauthorized()
            return
        route = path.removeprefix("/_lab").strip("/")
        routes = {
            ("GET", "state"): self._get_state,
            ("GET", "calls"): self._get_calls,
            ("POST", "clock"): self._post_clock,
            ("POST", "faults"): self._post_faults,
            ("POST", "reset"): self._post_reset,
        }
        handler = routes.get((self.command, route))
        if handler is None:
            known = {name for _, name in routes}
            if route in known:
                self._send_json(405, {"error": f"{self.command} is not allowed on /_lab/{route}"})
            else:
                self._send_json(404, {"error": f"no control route /_lab/{route}"})
            return
        try:
            payload = self._json_body(body) if self.command == "POST" else None
            self._send_json(200, handler(payload))
        except ControlError as exc:
            self._send_json(400, {"error": str(exc)})

    @staticmethod
    def _json_body(body: bytes) -> Any:
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ControlError(f"body is not JSON: {exc}") from exc

    def _get_state(self, _: Any) -> Any:
        return self.server.org.state()

    def _get_calls(self, _: Any) -> Any:
        return self.server.org.calls()

    def _post_clock(self, payload: Any) -> Any:
        if not isinstance(payload, dict) or "advance" not in payload:
            raise ControlError('body must be a JSON object like {"advance": "49h"}')
        unknown = sorted(set(payload) - {"advance"})
        if unknown:
            raise ControlError(f"unknown key(s) {', '.join(unknown)}; only \"advance\" is accepted")
        delta = parse_advance(payload["advance"])
        if delta <= timedelta(0):
            raise ControlError('"advance" must be a positive duration')
        try:
            self.server.org.advance(delta)
        except ValueError as exc:  # past the clock's end: the lab's time range is finite
            raise ControlError(f'"advance" {payload["advance"]!r}: {exc}') from exc
        return {"clock": self.server.org.clock_state()}

    def _post_faults(self, payload: Any) -> Any:
        org = self.server.org
        if isinstance(payload, dict) and "clear" in payload:
            if payload.get("clear") is not True or len(payload) != 1:
                raise ControlError('to clear faults send exactly {"clear": true}')
            org.clear_faults()
            return {"cleared": True}
        faults = payload if isinstance(payload, list) else [payload]
        if not faults or not all(isinstance(f, dict) for f in faults):
            raise ControlError(
                "body must be a fault object, a list of fault objects, or {\"clear\": true}"
            )
        for index, fault in enumerate(faults):
            try:
                org.add_fault(fault)
            except (ValueError, KeyError, TypeError) as exc:
                where = f"fault[{index}]: " if isinstance(payload, list) else ""
                raise ControlError(f"{where}{exc}") from exc
        return {"added": len(faults)}

    def _post_reset(self, _: Any) -> Any:
        self.server.org.reset()
        return {"reset": True, "clock": self.server.org.clock_state()}
