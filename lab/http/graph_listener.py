"""The Graph stand-in's own HTTPS server: identity platform and Microsoft Graph on one port.

Separate from the WS-Man port because Graph is always HTTPS (with a lab CA of its own, see
`tls_certificate.make_certificates`) while the WS-Man port is plain HTTP unless asked. How it
holds connections is the WS-Man server's (lab.http.threaded_server); a lab bug is answered
with 500 rather than a dropped connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lab.http.graph_endpoint import Dropped, serve_graph
from lab.http.threaded_server import ThreadedServer
from lab.http.tls_certificate import make_certificates
from lab.org import Org

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


class GraphServer(ThreadedServer):
    """Serves `/{tenant}/...` (sign-in, discovery) and `/v1.0/...` (Graph) for one org."""

    thread_name = "exauth-lab-graph"

    def __init__(self, org: Org, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.org = org
        self._tmp = tempfile.TemporaryDirectory(prefix="exauth-lab-graph-")
        made = make_certificates(Path(self._tmp.name), host)
        self.ca_file = made.ca_file
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(made.cert_file, made.key_file)
        super().__init__((host, port), GraphRequestHandler)

    @property
    def base_url(self) -> str:
        host = str(self.server_address[0])
        return f"https://{host}:{int(self.server_address[1])}"

    @property
    def directory_path(self) -> Path:
        """The folder of the CA file (kept while the server runs)."""
        return Path(self._tmp.name)

    def stop(self) -> None:
        self.stop_accepting()
        self.end_connections()
        self._tmp.cleanup()


class GraphRequestHandler(BaseHTTPRequestHandler):
    server: GraphServer
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 300

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self.reply(413, b"", "text/plain")
                return
            body = self.rfile.read(length) if length else b""
            serve_graph(self, urlsplit(self.path), body)
        except Dropped:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a lab bug answers 500 instead of killing the connection
            log.exception("graph request %s %s failed", self.command, self.path)
            self.reply_json(500, {"error": {"code": "generalException",
                                            "message": f"Internal lab error: {exc}"}})

    def reply(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if body or status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def reply_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(value).encode(), "application/json; charset=utf-8",
                   headers)
