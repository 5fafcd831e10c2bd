"""Work a listener hands over after its ack, done when no ack is waiting, in batches.

Every thread of the bot shares one GIL, so the after-ack work (about 2 ms of CPU per
command: the placeholder post through slack_sdk, the RQ enqueue) would slow the acks it
ran beside. It therefore waits until no ack has been in flight for a moment (at most
AFTER_ACK_MAX_DEFER after its command, so a busy bot still posts placeholders), and goes
to Redis in batches: one pipeline drops duplicate deliveries, one enqueues the jobs.
Measured with bench/slack_ack_bench.py (500 commands, 50 concurrent, 2 cores), this took
ack p99 from ~230-500 ms to ~35-50 ms; a burst's placeholders land ~1-1.5 s later.

Duplicate deliveries enqueue nothing: a second request with a trigger_id already seen
(Redis SET NX with a TTL under `exauth:dedupe:`, atomic across bot replicas) is dropped.
When Redis does not answer that check (stopped, or hung past workers.jobs.queues.ANSWER_TIMEOUT),
every command of the batch gets the one ephemeral line saying so instead: nothing it asks
for can be done without the job queue, and asking Redis again would only make it wait.

The app owns one AfterAck (bot.app.create_app) and hands it to every registration: button
clicks and form submissions (`submit`) run on the same threads, after the same wait for
acks in flight, and every failure after an ack takes one path (`answer_failure`): one log
line, and for the person waiting one plain line (QUEUE_DOWN when Redis does not answer,
FAILED otherwise), never a traceback. `listener_error` is the app's `@app.error` for what
raises before an ack.

Why not bolt's lazy listeners: with process_before_response=True bolt starts them while
still answering, on the ack path: a deep copy of the request (`create_copy`) per listener,
then a submit to its executor where the work starts at once, beside the acks still in
flight, one Redis round trip per command. That is the shape measured above as slow; and
what a lazy function raises bolt logs only ("Failed to run an internal function"), the
person hears nothing. So the work stays here, and `@app.error` takes only what the
listeners raise before their ack.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from queue import SimpleQueue
from typing import Any

from redis import Redis
from slack_bolt import BoltRequest, BoltResponse, Respond
from slack_sdk import WebClient

from bot.render import messages
from workers import redis_keys
from workers.jobs.queues import QUEUE_DOWN, UNREACHABLE_ERRORS, ReadJob, enqueue_reads

log = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS = 3600  # a trigger_id is only usable for 30 minutes; keep it twice that
AFTER_ACK_THREADS = 8  # placeholder posts at once: Slack I/O (~100 ms each), little CPU
AFTER_ACK_BATCH = 25  # commands per dedupe / enqueue pipeline: ~10 ms of CPU, no more
AFTER_ACK_MAX_DEFER = 1.0  # seconds after-ack work yields to acks in flight, at most
AFTER_ACK_QUIET = 0.02  # seconds without an ack in flight before after-ack work goes on
FAILED = "Sorry, that did not work: something failed on my side (it is in the bot's log)."

Answer = Callable[[str], object]  # says one plain line to the person waiting


class AcksInFlight:
    """Requests this process is answering right now (`with acks:` around each answer)."""

    def __init__(self, quiet: float = AFTER_ACK_QUIET) -> None:
        self._count = 0
        self._last = 0.0  # when the last answer was ready (time.monotonic())
        self._quiet_for = quiet
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1
            self._last = time.monotonic()

    def wait_quiet(self, deadline: float) -> None:
        """Return once no ack was in flight for a moment, or at `deadline` (monotonic).

        A moment (AFTER_ACK_QUIET), not an instant: under a burst the count touches zero
        between requests, and work started then would still collide with the next acks.
        """
        while True:
            now = time.monotonic()
            with self._lock:
                busy, last = self._count > 0, self._last
            quiet_at = (now if busy else last) + self._quiet_for
            if now >= deadline or (not busy and now >= quiet_at):
                return
            time.sleep(min(quiet_at, deadline) - now)


ACKS_IN_FLIGHT = AcksInFlight()  # the HTTP server counts into it (bot.http)


def first_deliveries(redis: Redis, trigger_ids: list[str | None]) -> list[bool]:
    """True for each trigger_id seen for the first time; one round trip (SET NX each)."""
    pipe = redis.pipeline(transaction=False)
    for trigger_id in trigger_ids:
        if trigger_id:
            pipe.set(redis_keys.slack_delivery(trigger_id), "1", nx=True, ex=DEDUPE_TTL_SECONDS)
    answers = iter(pipe.execute())
    return [bool(next(answers)) if trigger_id else True for trigger_id in trigger_ids]


@dataclass
class Started:
    """A command acked but not yet acted on; `work(command, respond)` acts on it."""

    command: dict[str, Any]
    respond: Respond
    work: Callable[[dict[str, Any], Respond], None]
    received: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.received + AFTER_ACK_MAX_DEFER

    def answer(self, text: str) -> None:
        self.respond(text=text, response_type="ephemeral")

    @property
    def what(self) -> str:
        return f"/exauth {(self.command.get('text') or '').split(' ', 1)[0]}".rstrip()


@dataclass
class ReadRequest:
    """A read job to enqueue once its placeholder is in the channel (job.meta["reply"])."""

    job: ReadJob
    client: WebClient
    deadline: float = field(default_factory=lambda: time.monotonic() + AFTER_ACK_MAX_DEFER)


class AfterAck:
    """Everything a listener hands over after its ack, done when no ack is waiting.

    One thread takes the handed-over commands in batches and drops duplicates in one
    Redis round trip; a few threads run the work (Slack I/O, so several at once) - the
    commands' and the clicks' alike; one thread enqueues the read jobs that work asks for,
    one pipeline per batch.
    """

    def __init__(self, redis: Redis, *, acks: AcksInFlight = ACKS_IN_FLIGHT,
                 post_threads: int = AFTER_ACK_THREADS) -> None:
        self.redis = redis
        self.acks = acks
        self._started: SimpleQueue[Started] = SimpleQueue()
        self._reads: SimpleQueue[ReadRequest] = SimpleQueue()
        self._posts = ThreadPoolExecutor(max_workers=post_threads,
                                         thread_name_prefix="exauth-after-ack")
        for target, name in ((self._dedupe_loop, "exauth-dedupe"),
                             (self._enqueue_loop, "exauth-enqueue")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def hand_over(self, started: Started) -> None:
        """Called by a listener right after its ack: costs the ack path one queue put."""
        self._started.put(started)

    def submit(self, work: Callable[[], object], answer: Answer | None, what: str) -> None:
        """A click's or a form's work, called right after its ack; `answer` reaches the
        person waiting if the work raises (see `answer_failure`)."""
        self._posts.submit(self._run_quiet, time.monotonic() + AFTER_ACK_MAX_DEFER,
                           work, answer, what)

    def failed(self, exc: Exception, answer: Answer | None, what: str) -> None:
        """A failure caught on the ack path: its answer is sent from here, not there."""
        self._posts.submit(answer_failure, exc, answer, what)

    def enqueue_read(self, request: ReadRequest) -> None:
        self._reads.put(request)

    def listener_error(self, error: Exception, request: BoltRequest,
                       respond: Respond | None) -> BoltResponse | None:
        """bolt's `@app.error`: a listener raised before its ack. A slash command is
        answered in the HTTP response itself, a click through its response_url (then Slack
        gets a plain 200: the person has the line); bolt's 500 stays for the rest."""
        if request.body.get("command"):
            answer_failure(error, None, f"{request.body['command']} before its ack")
            return BoltResponse(status=200, body={"response_type": "ephemeral",
                                                  "text": FAILED})
        what = f"{request.body.get('type') or 'request'} before its ack"
        if respond is None or not respond.response_url:  # a form: bolt's 500 shows in it
            answer_failure(error, None, what)
            return None
        self.failed(error, partial(respond, response_type="ephemeral", replace_original=False),
                    what)
        return BoltResponse(status=200, body="")

    def _dedupe_loop(self) -> None:
        while True:
            batch = _drain(self._started)
            self.acks.wait_quiet(batch[0].deadline)
            try:
                fresh = first_deliveries(self.redis,
                                         [s.command.get("trigger_id") for s in batch])
            except UNREACHABLE_ERRORS as exc:
                log.warning("duplicate check failed, Redis is not reachable: %s",
                            type(exc).__name__)
                for started in batch:
                    self._posts.submit(say, started.answer, QUEUE_DOWN)
                continue
            except Exception as exc:  # Redis answered oddly: act anyway, the enqueue says
                log.warning("duplicate check failed: %s", type(exc).__name__)
                fresh = [True] * len(batch)
            for started, first in zip(batch, fresh, strict=True):
                if not first:
                    log.info("duplicate delivery of %s ignored",
                             started.command.get("trigger_id"))
                    continue
                self._posts.submit(self._run_quiet, started.deadline,
                                   partial(started.work, started.command, started.respond),
                                   started.answer, started.what)

    def _run_quiet(self, deadline: float, work: Callable[[], object], answer: Answer | None,
                   what: str) -> None:
        self.acks.wait_quiet(deadline)
        guarded(work, answer, what)

    def _enqueue_loop(self) -> None:
        while True:
            batch = _drain(self._reads)
            self.acks.wait_quiet(batch[0].deadline)
            guarded(partial(enqueue_batch, self.redis, batch), None, "read jobs' enqueue")


def enqueue_batch(redis: Redis, batch: list[ReadRequest]) -> None:
    """Enqueue a batch of read jobs at once; if Redis fails, say so on each job's card."""
    try:
        enqueue_reads(redis, [request.job for request in batch])
    except Exception as exc:
        log.warning("enqueue failed: %s: %s", type(exc).__name__, exc)
        for request in batch:
            meta = request.job.meta
            failed = messages.failure_message(request.job.org, meta["kind"],
                                           "the job queue (Redis) is not reachable")
            reply = meta["reply"]
            guarded(partial(request.client.chat_update, channel=reply["channel"],
                            ts=reply["ts"], text=failed["text"], blocks=failed["blocks"]),
                    None, "card update")


# --- the one error path -----------------------------------------------------------------------


def guarded(work: Callable[[], object], answer: Answer | None, what: str) -> None:
    """Work after the ack has no caller to raise to: whatever it raises ends here."""
    try:
        work()
    except Exception as exc:
        answer_failure(exc, answer, what)


def answer_failure(exc: Exception, answer: Answer | None, what: str) -> None:
    """One log line (no traceback: the kind and first line say enough, and a traceback
    could carry a secret); one plain line to the person waiting, if anyone is."""
    if isinstance(exc, UNREACHABLE_ERRORS):
        log.warning("%s: Redis is not reachable: %s", what, type(exc).__name__)
        text = QUEUE_DOWN
    else:
        log.warning("%s failed: %s: %s", what, type(exc).__name__, first_line(exc))
        text = FAILED
    if answer is not None:
        say(answer, text)


def say(answer: Answer, text: str) -> None:
    """Answer the person waiting; if Slack does not take it, one log line."""
    try:
        answer(text)
    except Exception as exc:
        log.warning("the answer was not delivered: %s: %s", type(exc).__name__,
                    first_line(exc))


def first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def _drain(source: SimpleQueue[Any]) -> list[Any]:
    """Block for one item, then take whatever else is already waiting (up to a batch)."""
    batch = [source.get()]
    while len(batch) < AFTER_ACK_BATCH and not source.empty():
        batch.append(source.get())
    return batch
