"""Every job ends in time with a reason: a time limit the job cannot swallow, and an end
for jobs whose worker died.

Time limit. rq stops a job at its timeout by raising JobTimeoutException from a SIGALRM
handler, wherever the job happens to be. That class is an `Exception`, and the job's own
error handling caught it: each Exchange call turns any exception into "this server could
not be reached" and the read goes on with the next server, so a status job with a 300 s
limit ran on and reported "OK" long after it, or a server as unreachable that was only
slow. `JobDeadline` derives from BaseException, as KeyboardInterrupt and asyncio's
CancelledError do for the same reason: `finally` blocks and context managers still run
(locks are released), no `except Exception` stops it, and rq's worker, which catches
everything around a job, fails the job with it so the failure callback says why. Only the
job function gets it: a callback past its own limit gets rq's usual exception, which the
callbacks' own guards log (they must never turn a finished job into a failed one).

Dead workers. A worker that dies mid-job (SIGKILL, out of memory, a lost host) runs no
failure callback. rq finds such a job once its StartedJobRegistry entry has expired (the
job's timeout + 60 s for a SimpleWorker) and someone cleans that registry; rq 3 then runs
the job's failure callback with AbandonedJobError, and retries or fails it. rq's workers
clean only every few minutes, and only while one is alive and idle, so `exauth cron` (the
one scheduler, always running) calls the same cleanup on every tick: the placeholder
turns into one line within seconds of the entry's expiry, however many workers there are
or are not. The queue's maintenance lock, which rq's workers take for the same cleanup,
keeps the callback from running twice.

Jobs no worker takes. When no worker runs at all (all of them stopped, or none started),
a read job waits in its queue, or as a scheduled retry, for ever, and the person who asked
looks at "Checking contoso..." for ever. A read job that no worker has started within
NOT_STARTED_AFTER (its own time limit) is taken off the queue by `exauth cron` and failed
with NotStarted through its failure callback: one line saying no worker took it. A late
report would be stale anyway, so it is not retried. The claim is one LREM / ZREM, which only
one of cron and a worker taking the job at that moment can win, so a job is never both
run and reported as not started. Change jobs (approved steps) are left waiting: a step is
never dropped on a timer.
"""

from __future__ import annotations

import logging
import time
from types import FrameType
from typing import Any

from redis import Redis
from rq import SimpleWorker, get_current_job
from rq.callbacks import execute_failure_callback
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.timeouts import TimerDeathPenalty, UnixSignalDeathPenalty

from config.errors import ExauthError
from workers.jobs.queues import QUEUE_NAMES, READ_QUEUE, READ_TIMEOUT, SERIALIZER, queue
from workers.jobs.registry import RegisteredJob

log = logging.getLogger(__name__)

NOT_STARTED_AFTER = READ_TIMEOUT  # seconds a read job may wait for a worker
NOT_STARTED_SCAN = 200  # queued read jobs looked at per tick, oldest first


class JobDeadline(BaseException):
    """The running job passed its time limit (BaseException: see the module docstring).

    The one product exception outside config.errors.ExauthError, on purpose: an
    `except ExauthError` or `except Exception` must not stop it."""


class NotStarted(ExauthError):
    """No worker started the job within NOT_STARTED_AFTER; a late report would be stale."""

    permanent = True

    def __init__(self, waited: float) -> None:
        super().__init__(f"no exauth worker took it within {round(waited / 60)} minutes; "
                         "is `exauth worker` running?")


class DeadlinePenalty(UnixSignalDeathPenalty):
    """rq's SIGALRM time limit, raising JobDeadline while the job function runs."""

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> Any:
        if get_current_job() is None:  # a callback, not the job: rq's usual exception
            return super().handle_death_penalty(signum, frame)
        raise JobDeadline(f"Task exceeded maximum timeout value ({self._timeout} seconds)")


class Worker(SimpleWorker):
    """The exauth worker class (workers.jobs.worker_process says why SimpleWorker), with
    JobDeadline."""

    death_penalty_class = DeadlinePenalty
    job_class = RegisteredJob  # only the registry's functions run (workers.jobs.registry)


def reap_abandoned(connection: Redis) -> None:
    """Fail or retry, with their failure callbacks, the jobs whose worker died.

    The callbacks run here, in whichever thread calls this (`exauth cron`'s loop), so
    their time limit is a timer rather than SIGALRM (main thread only)."""
    for name in QUEUE_NAMES:
        target = queue(name, connection)
        if not target.acquire_maintenance_lock():
            continue  # a worker is cleaning this queue right now
        try:
            StartedJobRegistry(name, connection=connection, serializer=SERIALIZER,
                               job_class=RegisteredJob,
                               death_penalty_class=TimerDeathPenalty).cleanup()
        finally:
            target.release_maintenance_lock()


def expire_unstarted(connection: Redis, now: float | None = None) -> list[str]:
    """Fail, through their failure callbacks, the read jobs no worker started in time.

    Queued jobs count from when they were enqueued, scheduled retries from when they were
    due. Returns the ids of the jobs failed here."""
    now = time.time() if now is None else now
    cutoff = now - NOT_STARTED_AFTER
    read = queue(READ_QUEUE, connection)
    claimed: list[tuple[str, float]] = []
    for job_id in read.get_job_ids(0, NOT_STARTED_SCAN):
        job = read.fetch_job(job_id)
        enqueued = job.enqueued_at.timestamp() if job and job.enqueued_at else now
        if enqueued > cutoff:
            break  # oldest first: the rest waited less
        if connection.lrem(read.key, 1, job_id):
            claimed.append((job_id, now - enqueued))
    scheduled = ScheduledJobRegistry(READ_QUEUE, connection=connection, serializer=SERIALIZER,
                                     job_class=RegisteredJob)
    for raw, due in connection.zrangebyscore(scheduled.key, 0, cutoff, withscores=True):
        job_id = raw.decode()
        if connection.zrem(scheduled.key, job_id):
            claimed.append((job_id, now - due))
    for job_id, waited in claimed:
        _not_started(connection, job_id, waited)
    return [job_id for job_id, _ in claimed]


def _not_started(connection: Redis, job_id: str, waited: float) -> None:
    try:
        job = RegisteredJob.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return
    job.set_status(JobStatus.CANCELED)
    error = NotStarted(waited)
    log.warning("job %s: %s", job_id, error)
    try:
        execute_failure_callback(job, TimerDeathPenalty, NotStarted, error, None)
    except Exception as exc:  # the callback logs its own; never stop the cron loop
        log.warning("job %s: failure callback failed: %s", job_id, type(exc).__name__)
