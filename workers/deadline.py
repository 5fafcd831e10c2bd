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
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from redis import Redis
from rq import SimpleWorker, get_current_job
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty, UnixSignalDeathPenalty

from workers.queues import QUEUE_NAMES, SERIALIZER, queue


class JobDeadline(BaseException):
    """The running job passed its time limit (BaseException: see the module docstring)."""


class DeadlinePenalty(UnixSignalDeathPenalty):
    """rq's SIGALRM time limit, raising JobDeadline while the job function runs."""

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> Any:
        if get_current_job() is None:  # a callback, not the job: rq's usual exception
            return super().handle_death_penalty(signum, frame)
        raise JobDeadline(f"Task exceeded maximum timeout value ({self._timeout} seconds)")


class Worker(SimpleWorker):
    """The exauth worker class (workers.worker says why SimpleWorker), with JobDeadline."""

    death_penalty_class = DeadlinePenalty


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
                               death_penalty_class=TimerDeathPenalty).cleanup()
        finally:
            target.release_maintenance_lock()
