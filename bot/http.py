"""HTTP mode: POST /slack/events into bolt, served by waitress.

bolt's own development server handles one connection at a time with a listen backlog of
5, too little for 50 concurrent commands; a thread per connection (stdlib
ThreadingHTTPServer) lets 50 threads fight for the GIL, and CPython hands the GIL over in
no particular order, so under load a few requests waited 0.5 s while others took 10 ms.
waitress has the shape that keeps acks in order: one I/O thread reads and parses every
socket and queues whole requests first in, first out to a few worker threads that run bolt
(a few, so a listener that blocks - e.g. views.open on Deny - stalls no one else; more only
add GIL contention). It answers a connection's pipelined requests one at a time, in order.
Its cost on 2 shared cores (bench/slack_ack_bench.py, 50 concurrent): the I/O thread
takes the GIL two or three times per request (read; the worker's wake-up; the write) and
accepts one new connection per loop, so a burst on fresh connections waits longest.

Before bolt sees a request, bot.request_check verifies its v0 signature and 5-minute
timestamp window over the raw bytes (401), and only then that the body is a form or an
Events API envelope as Slack sends it (400): bolt parses the body before it verifies, so a
body it cannot parse was a 500 even unsigned. bolt then verifies again with the same secret,
and answers.
Each request counts in ACKS_IN_FLIGHT from the moment the WSGI app is called until it
returns its (already whole) body, so after-ack work (bot.listeners.after_ack) waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from waitress import wasyncore
from waitress.server import create_server

from bot.listeners.after_ack import ACKS_IN_FLIGHT, AcksInFlight
from bot.metrics import METRICS_PATH, count_refused, render
from bot.request_check import Refusal, body_refusal, signature_refusal

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
HTTP_THREADS = 3  # bolt runs here; 3 beat 2 and 4 in bench/slack_ack_bench.py
HTTP_BACKLOG = 128
CONNECTION_LIMIT = 500  # Slack opens a few; well under the default 1024 file descriptors
CHANNEL_TIMEOUT_SECONDS = 60  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024  # Slack payloads are a few KB; views can reach ~100 KB
STOP_TIMEOUT_SECONDS = 5


def slack_wsgi(app: App, acks: AcksInFlight = ACKS_IN_FLIGHT, *,
               signing_secret: str | None = None,
               metrics: CollectorRegistry | None = None) -> WSGIApplication:
    """The WSGI app: POST /slack/events to bolt, GET /healthz answers "ok", GET /metrics
    the Prometheus figures (bot.metrics; when given), the rest 404.

    `signing_secret` defaults to the one the bolt App verifies with, so both checks agree.
    A scrape is not an ack: it does not count in `acks`.
    """
    secret = signing_secret if signing_secret is not None else _bolt_secret(app)

    def application(environ: WSGIEnvironment,
                    start_response: StartResponse) -> Iterable[bytes]:
        if metrics is not None and (environ.get("REQUEST_METHOD"),
                                    environ.get("PATH_INFO")) == ("GET", METRICS_PATH):
            return _metrics(metrics, start_response)
        with acks:
            route = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            try:
                if route == ("POST", EVENTS_PATH):
                    return _to_bolt(app, secret, environ, start_response)
                if route == ("GET", HEALTH_PATH):
                    return _text(start_response, "200 OK", "ok")
                return _text(start_response, "404 Not Found", "not found")
            except Exception as exc:  # bolt answers listener errors itself; this is the rest
                log.warning("HTTP request failed: %s: %s", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
                return _text(start_response, "500 Internal Server Error", "internal error")

    return application


def _bolt_secret(app: App) -> str:
    """The secret bolt's RequestVerification uses; bolt keeps it on the App and nowhere
    public. A stand-in without one gets "", which verifies nothing (every request 401)."""
    return str(getattr(app, "_signing_secret", "") or "")


def _to_bolt(app: App, secret: str, environ: WSGIEnvironment,
             start_response: StartResponse) -> Iterable[bytes]:
    """Check the request (signature first, then the body), then let bolt answer it.

    Does what bolt's WSGI adapter does, with the checks in front and a request bolt cannot
    build (a payload of a shape it does not expect) answered 400 instead of 500.
    """
    body = _read_body(environ)
    if body is None:
        return _refuse(start_response, Refusal(400, "unreadable Content-Length"))
    refusal = signature_refusal(secret, environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP"),
                                environ.get("HTTP_X_SLACK_SIGNATURE"), body, time.time())
    if refusal is None:
        refusal = body_refusal(environ.get("CONTENT_TYPE"), body)
    if refusal is not None:
        return _refuse(start_response, refusal)
    try:
        request = BoltRequest(body=body.decode("utf-8"), query=environ.get("QUERY_STRING", ""),
                              headers=WsgiHttpRequest(environ).get_headers())
    except Exception as exc:  # bolt reading fields of a shape it does not expect
        return _refuse(start_response, Refusal(400, f"unreadable request ({type(exc).__name__})"))
    answer = app.dispatch(request)
    response = WsgiHttpResponse(status=answer.status, headers=answer.headers, body=answer.body)
    start_response(response.status, response.get_headers())
    return response.get_body()


def _read_body(environ: WSGIEnvironment) -> bytes | None:
    """The whole body (waitress has it already, within MAX_BODY_BYTES), or None."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length < 0 or length > MAX_BODY_BYTES:
        return None
    return bytes(environ["wsgi.input"].read(length)) if length else b""


def _metrics(source: CollectorRegistry, start_response: StartResponse) -> list[bytes]:
    try:
        body, content_type = render(source)
    except Exception as exc:
        log.warning("metrics failed: %s", type(exc).__name__)
        return _text(start_response, "500 Internal Server Error", "metrics failed")
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _refuse(start_response: StartResponse, refusal: Refusal) -> list[bytes]:
    count_refused(refusal.status)
    log.info("refused a request to %s: %s (HTTP %d)", EVENTS_PATH, refusal.reason,
             refusal.status)
    status = "401 Unauthorized" if refusal.status == 401 else "400 Bad Request"
    return _text(start_response, status, "invalid request" if refusal.status == 401
                 else f"bad request: {refusal.reason}")


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


class SlackHttpServer:
    """`slack_wsgi(app)` on waitress, on `host:port` (port 0: any free port, see .port).

    The thread that calls serve_forever() becomes waitress's I/O thread; stop() (from any
    other thread) closes the port and every connection and ends the worker threads.
    """

    def __init__(self, app: App, host: str = "0.0.0.0", port: int = 3000, *,
                 threads: int = HTTP_THREADS, signing_secret: str | None = None,
                 metrics: CollectorRegistry | None = None) -> None:
        # A few requests waiting for a worker is how this server takes a burst, not news.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._map: dict[int, Any] = {}
        self._server = create_server(
            slack_wsgi(app, signing_secret=signing_secret, metrics=metrics), map=self._map,
            host=host, port=port, threads=threads,
            backlog=HTTP_BACKLOG, connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT_SECONDS, max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=MAX_BODY_BYTES, asyncore_use_poll=True,
            expose_tracebacks=False, clear_untrusted_proxy_headers=False, ident="exauth")
        self._lock = threading.Lock()
        self._serving = False
        self._closed = False
        self._done = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="exauth-http", daemon=True)
        thread.start()
        return thread

    def serve_forever(self) -> None:
        """Serve until stop(); waitress ends the loop once its socket map is empty."""
        with self._lock:
            if self._closed:
                return
            self._serving = True
        try:
            self._server.run()
        finally:
            self._done.set()

    def stop(self) -> None:
        """Close the port and all connections, then end the worker threads (idempotent).

        The sockets belong to the I/O thread, so while it runs they are closed there (a
        trigger thunk); an empty map then ends its loop.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving
        if serving and not self._done.is_set():
            trigger = self._server.trigger
            # The I/O thread runs queued thunks under trigger.lock whenever it wakes, and
            # ours closes the trigger itself: holding the lock until the wake-up byte is
            # written keeps it from running (and closing the pipe) before that write.
            with trigger.lock:
                trigger.thunks.append(self._close_sockets)
                trigger.pull_trigger()
            self._done.wait(STOP_TIMEOUT_SECONDS)
        if not serving or self._done.is_set():
            self._close_sockets()  # nothing else touches the map any more
        self._server.task_dispatcher.shutdown(timeout=STOP_TIMEOUT_SECONDS)

    def _close_sockets(self) -> None:
        wasyncore.close_all(self._map, ignore_all=True)
