"""What both lab ports share: a thread per request, TLS on that thread, and a stop that
also ends keep-alive connections.

The WS-Man port (lab.http.lab_server) and the Graph stand-in's port
(lab.http.graph_listener) differ in what they serve, not in how they hold connections, so
that lives here once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class ThreadedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its open connections and can wrap them in TLS."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's listen backlog is 5: when a client opens sessions to dozens of servers
    # at once (a status of a large org) the kernel drops the connections beyond it and the
    # client's TCP retries them a second later, a stall no real IIS (backlog in the
    # thousands) shows.
    request_queue_size = 128
    thread_name = "exauth-lab"
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, handler)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None

    def end_connections(self) -> None:
        """Keep-alive connections would otherwise go on being served by their threads."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()

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
