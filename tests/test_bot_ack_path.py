"""The bot's ack path: its HTTP server (waitress), and the after-ack work that yields to acks.

The server is driven over raw sockets (pipelined keep-alive requests, malformed requests,
many connections at once) with a stand-in for the bolt app, so what is tested is the
server and its WSGI glue; tests/test_bot_http.py covers it with the real app. The
after-ack side runs against real Redis.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from rq.job import Job
from slack_bolt import BoltRequest, BoltResponse

from bot.http import SlackHttpServer
from bot.listeners.after_ack import (
    ACKS_IN_FLIGHT,
    AcksInFlight,
    AfterAck,
    ReadRequest,
    Started,
    enqueue_batch,
    first_deliveries,
)
from tests.slack_mock import SIGNING_SECRET, signed_headers
from workers import redis_keys
from workers.jobs.queues import READ_QUEUE, SERIALIZER, ReadJob, enqueue_reads, queue

READ_JOBS = "workers.jobs.read_jobs"
CALLBACKS = "bot.callbacks.job_results"


def http(text: str, *, path: str = "/slack/events", extra: str = "") -> bytes:
    """A signed request (the server checks that first) whose form carries `text`."""
    body = urlencode({"text": text})
    data = body.encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in signed_headers(body).items())
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n{headers}"
            f"{extra}\r\n").encode() + data


class EchoApp:
    """Answers each request with its text; a text of "block" waits until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[str] = []

    def dispatch(self, request: BoltRequest) -> BoltResponse:
        text = request.body["text"]
        self.seen.append(text)
        if text == "block":
            self.release.wait(10)
        return BoltResponse(status=200, body=text, headers={"content-type": "text/plain"})


def echo_server(app: EchoApp) -> SlackHttpServer:
    return SlackHttpServer(app, "127.0.0.1", 0,  # type: ignore[arg-type]
                           signing_secret=SIGNING_SECRET)


@pytest.fixture()
def echo() -> Iterator[tuple[SlackHttpServer, EchoApp]]:
    app = EchoApp()
    server = echo_server(app)
    server.start_background()
    yield server, app
    app.release.set()
    server.stop()


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[str, str]:
    """(status line, body) of the next response on `sock`; what follows stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        receive(sock, buffer)
    head_end = buffer.index(b"\r\n\r\n")
    head = bytes(buffer[:head_end])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    body_start = head_end + 4
    while len(buffer) < body_start + length:
        receive(sock, buffer)
    body = bytes(buffer[body_start:body_start + length])
    del buffer[:body_start + length]
    return head.split(b"\r\n")[0].decode(), body.decode()


def receive(sock: socket.socket, buffer: bytearray) -> None:
    chunk = sock.recv(4096)
    if not chunk:
        raise ConnectionError("closed")
    buffer += chunk


def connect(server: SlackHttpServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


# --- the server ----------------------------------------------------------------------------


def test_pipelined_requests_on_one_connection_are_answered_in_order(
        echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, _ = echo
    with connect(server) as sock:
        sock.sendall(http("first") + http("second") + http("third"))
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in range(3)]
    assert answers == [("HTTP/1.1 200 OK", "first"), ("HTTP/1.1 200 OK", "second"),
                       ("HTTP/1.1 200 OK", "third")]


def test_many_connections_at_once_all_answered_and_kept_alive(
        echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, app = echo
    socks = [connect(server) for _ in range(50)]
    try:
        for round_ in range(2):  # the second round reuses every connection
            for n, sock in enumerate(socks):
                sock.sendall(http(f"{round_}-{n}"))
            answers = [read_response(sock, bytearray())[1] for sock in socks]
            assert answers == [f"{round_}-{n}" for n in range(50)]
    finally:
        for sock in socks:
            sock.close()
    assert len(app.seen) == 100


def test_a_blocked_listener_does_not_stall_other_connections(
        echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, app = echo
    with connect(server) as blocked, connect(server) as other:
        blocked.sendall(http("block"))
        deadline = time.monotonic() + 5
        while "block" not in app.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        other.sendall(http("quick"))
        assert read_response(other, bytearray())[1] == "quick"
        app.release.set()
        assert read_response(blocked, bytearray())[1] == "block"


@pytest.mark.parametrize(("raw", "status"), [
    (b"GARBAGE\r\n\r\n", "400 Bad Request"),
    (b"POST /slack/events HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
     "413 Request Entity Too Large"),  # over MAX_BODY_BYTES: refused before it is read
])
def test_refused_request_gets_its_status_and_the_connection_closes(
        raw: bytes, status: str, echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, app = echo
    with connect(server) as sock:
        sock.sendall(raw)
        assert read_response(sock, bytearray())[0].endswith(status)
        assert sock.recv(1) == b""
    assert app.seen == []


def test_health_unknown_path_and_connection_close(
        echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, app = echo
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock, buffer) == ("HTTP/1.1 200 OK", "ok")
        sock.sendall(http("x", path="/other"))
        assert read_response(sock, buffer)[0] == "HTTP/1.1 404 Not Found"
        sock.sendall(http("bye", extra="Connection: close\r\n"))
        assert read_response(sock, buffer)[1] == "bye"
        assert sock.recv(1) == b""
    assert app.seen == ["bye"]


def test_a_request_counts_as_an_ack_in_flight_until_its_answer_is_ready(
        echo: tuple[SlackHttpServer, EchoApp]) -> None:
    server, app = echo
    with connect(server) as sock:
        sock.sendall(http("block"))
        deadline = time.monotonic() + 5
        while "block" not in app.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        ACKS_IN_FLIGHT.wait_quiet(started + 0.3)
        assert time.monotonic() - started >= 0.3  # in bolt: after-ack work waits
        app.release.set()
        assert read_response(sock, bytearray())[1] == "block"
    started = time.monotonic()
    ACKS_IN_FLIGHT.wait_quiet(started + 5)
    assert time.monotonic() - started < 1  # answered: after-ack work goes on


def test_stop_closes_the_port_and_open_connections() -> None:
    server = echo_server(EchoApp())
    thread = server.start_background()
    port = server.port
    with connect(server) as idle:
        idle.sendall(http("hello"))
        assert read_response(idle, bytearray())[1] == "hello"  # kept alive, then idle
        server.stop()
        assert idle.recv(1) == b""
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    server.stop()  # a second stop is harmless


def test_stop_before_serving_frees_the_port() -> None:
    server = echo_server(EchoApp())
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


# --- after the ack -------------------------------------------------------------------------


def test_wait_quiet_waits_for_acks_but_not_past_the_deadline() -> None:
    acks = AcksInFlight(quiet=0.01)
    started = time.monotonic()
    acks.wait_quiet(started + 5)
    assert time.monotonic() - started < 1  # nothing in flight: goes on at once
    with acks:
        started = time.monotonic()
        acks.wait_quiet(started + 0.2)
        assert time.monotonic() - started >= 0.2  # bounded by the deadline
    threading.Timer(0.1, acks.__exit__).start()
    acks.__enter__()
    started = time.monotonic()
    acks.wait_quiet(started + 5)
    assert 0.1 <= time.monotonic() - started < 2


def test_first_deliveries_in_one_batch(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    assert first_deliveries(conn, ["t1", None, "t1", "t2"]) == [True, True, False, True]
    assert first_deliveries(conn, ["t2", "t3"]) == [False, True]
    assert 0 < conn.ttl(redis_keys.slack_delivery("t1")) <= 3600


def test_after_ack_work_waits_for_the_acks_in_flight(redis_url: str) -> None:
    acks = AcksInFlight(quiet=0.01)
    after_ack = AfterAck(redis.Redis.from_url(redis_url), acks=acks, post_threads=2)
    done = threading.Event()
    ran: list[dict[str, Any]] = []

    def work(command: dict[str, Any], respond: Any) -> None:
        ran.append(command)
        done.set()

    with acks:
        after_ack.hand_over(Started({"trigger_id": "w1"}, lambda **_: None, work))
        after_ack.hand_over(Started({"trigger_id": "w1"}, lambda **_: None, work))  # dup
        assert not done.wait(0.3)  # an ack is in flight: the work waits
    assert done.wait(5)
    time.sleep(0.2)
    assert ran == [{"trigger_id": "w1"}]  # the duplicate was dropped


class RecordingClient:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def chat_update(self, **params: Any) -> None:
        self.updates.append(params)


def read_request(org: str, ts: str, client: RecordingClient) -> ReadRequest:
    meta = {"org": org, "kind": "status", "reply": {"channel": "C1", "ts": ts},
            "requested_by": "U1"}
    job = ReadJob(READ_JOBS + ".status_job", org, meta, on_success=CALLBACKS + ".status_ready",
                  on_failure=CALLBACKS + ".job_failed")
    return ReadRequest(job, client)  # type: ignore[arg-type]


def test_enqueue_batch_puts_a_batch_in_one_go(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    client = RecordingClient()
    enqueue_batch(conn, [read_request("contoso", "1.1", client),
                         read_request("fabrikam", "2.2", client)])
    jobs = queue(READ_QUEUE, conn).get_jobs()
    assert [(job.args[0], job.meta["reply"]["ts"]) for job in jobs] == [
        ("contoso", "1.1"), ("fabrikam", "2.2")]
    assert all(job.timeout == 300 and job.retries_left == 3 for job in jobs)
    assert client.updates == []


def test_enqueue_batch_without_redis_says_so_on_each_card() -> None:
    conn = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    client = RecordingClient()
    enqueue_batch(conn, [read_request("contoso", "1.1", client),
                         read_request("contoso", "2.2", client)])
    assert [u["ts"] for u in client.updates] == ["1.1", "2.2"]
    assert all("not reachable" in u["text"] for u in client.updates)


def test_enqueue_reads_gives_every_job_of_a_batch_the_read_policy(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    batch = [ReadJob(f"{READ_JOBS}.{kind}_job", org, {"kind": kind},
                     on_success=f"{CALLBACKS}.{kind}_ready", on_failure=CALLBACKS + ".job_failed")
             for kind, org in (("plan", "contoso"), ("status", "fabrikam"))]
    enqueued = enqueue_reads(conn, batch)
    stored = [Job.fetch(job.id, connection=conn, serializer=SERIALIZER) for job in enqueued]
    assert queue(READ_QUEUE, conn).job_ids == [job.id for job in enqueued]
    assert [(job.func_name, job.args, job.description) for job in stored] == [  # JSON: lists
        (READ_JOBS + ".plan_job", ["contoso"], READ_JOBS + ".plan_job(contoso)"),
        (READ_JOBS + ".status_job", ["fabrikam"], READ_JOBS + ".status_job(fabrikam)")]
    for job in stored:
        assert (job.timeout, job.result_ttl, job.failure_ttl) == (300, 24 * 3600, 7 * 24 * 3600)
        assert (job.retries_left, job.retry_intervals) == (3, [5, 15, 30])
        assert job.success_callback is not None and job.success_callback.__module__ == CALLBACKS
        assert job.failure_callback is not None and job.failure_callback.__name__ == "job_failed"
    assert stored[0].success_callback.__name__ == "plan_ready"
