"""RQ wiring: serializer, retry policy, error lines, and the non-forking worker."""

from __future__ import annotations

import os

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from config.errors import ConfigError
from config.load import settings_from_dict
from workers.exchange.errors import (
    ExchangeAuthFailed,
    ExchangeEndpointBroken,
    ExchangeFailed,
    ExchangeObjectMissing,
    ExchangeUnreachable,
    NoLanguageRefused,
)
from workers.jobs import registry
from workers.jobs.deadline import NotStarted
from workers.jobs.queues import (
    CHANGE_QUEUE,
    QUEUE_NAMES,
    READ_QUEUE,
    READ_RETRY_INTERVALS,
    SERIALIZER,
    SWEEP_QUEUE,
    enqueue_change,
    enqueue_read,
    queue,
    read_retry,
)
from workers.jobs.read_jobs import failure_reason, is_permanent
from workers.jobs.worker_process import run

READ_JOBS = "workers.jobs.read_jobs"
CALLBACKS = "bot.callbacks.job_results"


def test_queues_use_json_never_pickle(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    assert SERIALIZER is JSONSerializer
    for name in QUEUE_NAMES:
        assert queue(name, connection).serializer is JSONSerializer


def test_read_jobs_retry_and_change_jobs_do_not(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    read = enqueue_read(connection, READ_JOBS + ".status_job", "contoso", meta={"kind": "status"},
                        on_success=CALLBACKS + ".status_ready",
                        on_failure=CALLBACKS + ".job_failed")
    change = enqueue_change(connection, READ_JOBS + ".status_job", ("contoso",),
                            meta={"kind": "change"}, on_success=CALLBACKS + ".status_ready",
                            on_failure=CALLBACKS + ".job_failed")
    read = Job.fetch(read.id, connection=connection, serializer=SERIALIZER)
    change = Job.fetch(change.id, connection=connection, serializer=SERIALIZER)
    assert read.origin == READ_QUEUE and change.origin == CHANGE_QUEUE
    assert read.retries_left == len(READ_RETRY_INTERVALS) == 3
    assert read.retry_intervals == [5, 15, 30]
    assert change.retries_left is None
    assert read.timeout == 300 and change.timeout == 1800
    # Callbacks are stored by name and resolved by the worker: workers/ never imports bot/.
    assert read.success_callback is not None and read.success_callback.__module__ == CALLBACKS
    assert read.failure_callback is not None and read.failure_callback.__name__ == "job_failed"
    assert read_retry().max == 3


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (ExchangeAuthFailed("ex1.contoso.com", "opening", "HTTP 401"), True),
        (NoLanguageRefused("ex1.contoso.com", "Get-X", "syntax"), True),
        (ExchangeFailed("ex1.contoso.com", "Get-X", "denied"), True),
        (ExchangeObjectMissing("ex1.contoso.com", "Get-X", "was not found"), True),
        (ExchangeUnreachable("ex1.contoso.com", "opening", "refused"), False),
        (ExchangeEndpointBroken("ex1.contoso.com", "opening", "Cafe"), False),
        (ConfigError("exauth.toml", "org", 'no org named "x"'), True),
        (NotStarted(600), True),
        (ConnectionError("reset"), False),
        (RuntimeError("something odd"), False),
    ],
    ids=["auth", "nolanguage", "cmdlet-error", "missing", "unreachable", "endpoint-broken",
         "config", "not-started", "connection", "unexpected"],
)
def test_permanent_errors_are_not_retried(exc: BaseException, permanent: bool) -> None:
    assert is_permanent(exc) is permanent


def test_failure_reasons_are_one_line() -> None:
    auth = ExchangeAuthFailed("ex1.contoso.com", "opening the Exchange endpoint", "HTTP 401")
    assert failure_reason(type(auth), auth) == str(auth)
    assert "\n" not in str(auth)
    assert failure_reason(JobTimeoutException, JobTimeoutException("x"), 300) == (
        "the check took longer than its 300 s time limit and was stopped")
    assert failure_reason(ConnectionError, ConnectionError("reset by peer\nmore")) == (
        "network error: reset by peer")
    odd = ValueError("bad value\n  File 'x.py', line 3")
    assert failure_reason(ValueError, odd) == "ValueError: bad value"
    assert failure_reason(KeyError, KeyError()) == "KeyError"
    config = ConfigError("exauth.toml", "org", 'no org named "x" (configured: lab)')
    assert failure_reason(ConfigError, config) == str(config)
    assert failure_reason(None, None) == "the worker stopped without saying why"


def test_worker_runs_jobs_in_its_own_process(redis_url: str, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """SimpleWorker: no fork per job, so the Exchange session cache survives between jobs."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    # os.getpid is no exauth job: registered for this test only (workers.jobs.registry).
    monkeypatch.setitem(registry.JOBS, "os.getpid", "os.getpid")
    settings = settings_from_dict({}, source="test.toml")
    connection = redis.Redis.from_url(redis_url)
    jobs = [queue(READ_QUEUE, connection).enqueue("os.getpid") for _ in range(2)]
    jobs.append(queue(CHANGE_QUEUE, connection).enqueue("os.getpid"))
    assert run(settings, burst=True) == 0
    for job in jobs:
        job = Job.fetch(job.id, connection=connection, serializer=SERIALIZER)
        assert job.return_value() == os.getpid()


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://exauth:pw@cache.contoso.com/2", "rediss://exauth:***@cache.contoso.com/2"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_a_redis_url_in_a_message_never_shows_its_password(url: str, expected: str) -> None:
    from workers.audit import scrub_text
    from workers.jobs.queues import unreachable

    assert scrub_text(url) == expected
    assert unreachable(url, OSError(f"cannot connect to {url}")) == (
        f"Redis at {expected} is not reachable (cannot connect to {expected})")


def test_a_worker_takes_changes_then_what_people_asked_then_sweeps(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweeps queued first still run after a status asked for later: a person never waits
    behind a fleet's sweep (the order is the worker's queue order, not arrival)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setitem(registry.JOBS, "time.time_ns", "time.time_ns")
    settings = settings_from_dict({}, source="test.toml")
    connection = redis.Redis.from_url(redis_url)
    sweeps = [queue(SWEEP_QUEUE, connection).enqueue("time.time_ns") for _ in range(3)]
    status = queue(READ_QUEUE, connection).enqueue("time.time_ns")
    change = queue(CHANGE_QUEUE, connection).enqueue("time.time_ns")
    assert run(settings, burst=True) == 0
    ran = {}
    for name, job in [("change", change), ("status", status)] + [
            (f"sweep{i}", job) for i, job in enumerate(sweeps)]:
        ran[name] = Job.fetch(job.id, connection=connection, serializer=SERIALIZER).return_value()
    assert sorted(ran, key=ran.__getitem__) == ["change", "status", "sweep0", "sweep1", "sweep2"]
