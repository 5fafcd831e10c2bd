"""Queue names, serializer, timeouts and retry policy: the one place RQ is configured.

Both sides of Redis (the bot enqueuing, the worker dequeuing) import these names so they
can never drift apart. Jobs are stored with RQ's JSON serializer, never pickle: whoever can
write to Redis must not be able to make a worker execute code. Job arguments are plain
names (org name) and the Slack reply target lives in job meta; secrets never enter Redis,
the worker loads its own settings.

Callbacks are passed as dotted-path strings (e.g. "bot.callbacks.job_results.status_ready") by the
caller,
so this package never imports `bot/`: the worker resolves them by name when a job ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.queue import EnqueueData
from rq.serializers import JSONSerializer

from workers.audit import scrub_text
from workers.jobs import sentinel
from workers.jobs.registry import RegisteredJob

READ_QUEUE = "exauth-read"  # status, plan: safe to repeat
CHANGE_QUEUE = "exauth-change"  # rotations and repairs: never retried blindly
# The warnings sweeps (workers.warnings.sweep): a whole fleet at once from `exauth cron`, so
# a queue of their own that every worker takes from last - a person's /exauth status never
# waits behind hundreds of queued sweeps, only (at most) behind the one sweep per worker
# already running.
SWEEP_QUEUE = "exauth-sweep"
QUEUE_NAMES = (READ_QUEUE, CHANGE_QUEUE, SWEEP_QUEUE)
# The order a worker takes jobs in (rq asks its queues in order every time it takes one):
# an approved change first, then what a person asked for, then sweeps.
WORKER_QUEUES = (CHANGE_QUEUE, READ_QUEUE, SWEEP_QUEUE)

SERIALIZER = JSONSerializer

# A status of a 60-server org with slow WinRM takes tens of seconds; 5 minutes means "stuck".
READ_TIMEOUT = 300
# A rotation waits on IIS resets and service restarts; longer, but still bounded.
CHANGE_TIMEOUT = 1800
CALLBACK_TIMEOUT = 60  # a callback only talks to Slack (which may ask us to wait)
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600

# Read jobs only: a transient network problem deserves another go, a change does not
# (a change is re-validated and re-approved instead). Seconds between attempts.
READ_RETRY_INTERVALS = (5, 15, 30)


def read_retry() -> Retry:
    return Retry(max=len(READ_RETRY_INTERVALS), interval=list(READ_RETRY_INTERVALS))


# Whoever answers a person (the bot: acks, ephemeral answers) waits on Redis at most this
# long per connect and per read, and never retries: a hung Redis must cost one short wait,
# not redis-py's default (5 s per read, retried ten times), so Slack's 3 s still hold.
ANSWER_TIMEOUT = 1.0
# What a Redis that is stopped, hung or refusing us raises (redis-py wraps socket errors).
UNREACHABLE_ERRORS = (RedisConnectionError, RedisTimeoutError)
# The one line a person in Slack gets when the job queue cannot be reached.
QUEUE_DOWN = "The job queue (Redis) is not reachable right now; try again in a minute."


# Behind Sentinel, workers, cron and the CLI wait out a failover (the Sentinels notice the
# master is down, elect, promote: seconds) by retrying with backoff, up to about a minute.
FAILOVER_RETRIES = 30
FAILOVER_BACKOFF_BASE = 0.2  # seconds: the first wait
FAILOVER_BACKOFF_CAP = 2.0  # seconds: the longest wait


def connect(url: str, *, timeout: float | None = None) -> Redis:
    """A Redis client: the one way every exauth process (bot, worker, cron, CLI) connects.

    `url` is redis://, rediss://, unix:// or redis+sentinel:// (workers.jobs.sentinel).
    Workers, cron and the CLI keep redis-py's defaults (they may wait), and behind Sentinel
    retry through a failover; `timeout` (ANSWER_TIMEOUT for the bot) bounds connect and each
    read, with no retry: a person gets QUEUE_DOWN during a failover, and the next request
    finds the new master."""
    if sentinel.is_sentinel(url):
        if timeout is None:
            backoff = ExponentialWithJitterBackoff(cap=FAILOVER_BACKOFF_CAP,
                                                   base=FAILOVER_BACKOFF_BASE)
            retry = RedisRetry(backoff, FAILOVER_RETRIES)
            return sentinel.client(url, retry=retry)
        return sentinel.client(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                               retry=RedisRetry(NoBackoff(), 0))
    if timeout is None:
        return Redis.from_url(url)
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                          retry=RedisRetry(NoBackoff(), 0))


# A worker or `exauth cron` rides out a Redis outage of this long (a restart, a failover):
# every command is retried with a backoff capped at RIDE_OUT_POLL seconds, so a step in the
# middle of changing Exchange waits for Redis to come back instead of dying with its
# outcome unrecorded (a SimpleWorker quits on most Redis errors outside its dequeue).
RIDE_OUT_S = 15 * 60
RIDE_OUT_POLL = 1.0


def connect_riding_out(url: str) -> Redis:
    """A Redis client for workers and cron: waits out an outage of up to RIDE_OUT_S (a
    Sentinel failover included)."""
    retry = RedisRetry(ExponentialBackoff(cap=RIDE_OUT_POLL, base=0.05),
                       int(RIDE_OUT_S / RIDE_OUT_POLL))
    if sentinel.is_sentinel(url):
        return sentinel.client(url, retry=retry)
    return Redis.from_url(url, retry=retry,
                          retry_on_error=[RedisConnectionError, RedisTimeoutError])


def unreachable(url: str, exc: BaseException) -> str:
    """The one line a process says when Redis does not answer (a password in the URL is
    masked the way the audit log masks it)."""
    return scrub_text(f"Redis at {url} is not reachable ({exc})")


def queue(name: str, connection: Redis) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=RegisteredJob)


@dataclass(frozen=True)
class ReadJob:
    """One read job (status/plan) for one org, as data, so a burst can go in one pipeline."""

    func: Callable[..., Any] | str
    org: str
    meta: Mapping[str, Any]
    on_success: str  # dotted paths, resolved by the worker (see the module docstring)
    on_failure: str


def enqueue_read(
    connection: Redis,
    func: Callable[..., Any] | str,
    org: str,
    *,
    meta: Mapping[str, Any],
    on_success: str,
    on_failure: str,
) -> Job:
    """Enqueue a read job (status/plan) for one org, with retries and dotted-path callbacks."""
    return enqueue_reads(connection, [ReadJob(func, org, meta, on_success, on_failure)])[0]


def enqueue_reads(connection: Redis, jobs: Sequence[ReadJob]) -> list[Job]:
    """Enqueue read jobs in one Redis round trip (one pipeline), all with the read policy.

    The bot acks a burst of slash commands before it enqueues anything; one pipeline per
    burst keeps the CPU it spends on Redis (which competes with its acks) small.
    """
    read_queue = queue(READ_QUEUE, connection)
    with connection.pipeline() as pipe:
        enqueued = read_queue.enqueue_many([_read_job_data(job) for job in jobs], pipeline=pipe)
        pipe.execute()
    return enqueued


def _read_job_data(job: ReadJob) -> EnqueueData:
    """The read policy: timeout, TTLs, retries, callbacks, a description naming the org."""
    return Queue.prepare_data(
        job.func,
        args=(job.org,),
        timeout=READ_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        meta=dict(job.meta),
        retry=read_retry(),
        on_success=Callback(job.on_success, timeout=CALLBACK_TIMEOUT),
        on_failure=Callback(job.on_failure, timeout=CALLBACK_TIMEOUT),
        description=f"{_name(job.func)}({job.org})",
    )


def enqueue_change(
    connection: Redis,
    func: Callable[..., Any] | str,
    args: tuple[Any, ...],
    *,
    meta: Mapping[str, Any],
    on_success: str,
    on_failure: str,
    job_id: str | None = None,
) -> Job:
    """Enqueue a state-changing job: no retry, longer timeout (see CHANGE_TIMEOUT). A fixed
    job_id makes a second enqueue of the same work the same job (approved steps)."""
    return queue(CHANGE_QUEUE, connection).enqueue_call(
        func,
        args=args,
        job_id=job_id,
        timeout=CHANGE_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        meta=dict(meta),
        on_success=Callback(on_success, timeout=CALLBACK_TIMEOUT),
        on_failure=Callback(on_failure, timeout=CALLBACK_TIMEOUT),
    )


def _name(func: Callable[..., Any] | str) -> str:
    return func if isinstance(func, str) else getattr(func, "__name__", repr(func))
