"""HTTP serving for the lab: reading a request, routing it, writing the answer.

`/<fqdn>/PowerShell` and `/<fqdn>/wsman` go to the WS-Man endpoints (`wsman_endpoint`),
`/_lab/...` to the control API (`control_api`). Headers are read without the `email`
package (see `parse_request`); a lab bug answers 500 rather than killing the connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lab import wsman
from lab.http import basic_auth
from lab.http.control_api import serve_control
from lab.http.wsman_endpoint import DropConnection, serve_wsman

if TYPE_CHECKING:
    from lab.http.lab_server import LabServer

log = logging.getLogger(__name__)

IDLE_CONNECTION_TIMEOUT = 300  # seconds a keep-alive connection may sit unused
MAX_BODY = 16 * 1024 * 1024
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
_SIMPLE_METHODS = frozenset({"GET", "POST"})


class LabRequestHandler(BaseHTTPRequestHandler):
    server: LabServer
    protocol_version = "HTTP/1.1"  # keep-alive: pypsrp reuses one connection per pool
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    wbufsize = -1  # headers and body leave in one write ...
    disable_nagle_algorithm = True  # ... and are not held back by Nagle
    timeout = IDLE_CONNECTION_TIMEOUT
    # Negotiate is per connection (this handler object lives as long as the connection):
    # the acceptor context, and whether its handshake has completed.
    negotiate_context: Any = None
    negotiated = False
    # Per request: how to seal the answer (set when the request came encrypted) and the
    # headers the handshake adds to it (Kerberos' mutual-auth token).
    seal: Callable[[bytes], tuple[str, bytes]] | None = None
    auth_headers: dict[str, str] | None = None

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

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.seal = None
        self.auth_headers = None
        try:
            body = self._read_body()
            path = urlsplit(self.path).path
            if path.startswith("/_lab/") or path == "/_lab":
                serve_control(self, path, body)
            else:
                serve_wsman(self, path, body)
        except DropConnection:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a lab bug answers 500 instead of killing the connection
            log.exception("lab request %s %s failed", self.command, self.path)
            text = f"Internal lab error: {type(exc).__name__}: {exc}"
            if self.path.startswith("/_lab"):
                self.reply_json(500, {"error": text})
            else:
                fault = wsman.fault_response(wsman.generic("localhost", text))
                self.reply(500, fault, "application/soap+xml;charset=UTF-8")

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
            self.reply(400, b"bad Content-Length", "text/plain")
            raise DropConnection
        return self.rfile.read(size)

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.seal is not None and content_type.startswith("application/soap+xml"):
            content_type, body = self.seal(body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**(self.auth_headers or {}), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, value: Any) -> None:
        body = json.dumps(value, default=str).encode()
        self.reply(status, body, "application/json")

    def authorized(self) -> bool:
        return basic_auth.is_authorized(self.headers.get("Authorization", ""),
                                        self.server.username, self.server.password)

    def reply_unauthorized(self, challenge: dict[str, str] | None = None) -> None:
        self.reply(401, b"", "text/plain", challenge or basic_auth.CHALLENGE)
