"""`exauth cron`: RQ's cron scheduler enqueuing one warnings sweep per org, exactly once.

Built on rq's CronScheduler/CronJob (rq 3), so `rq cron` monitoring sees the scheduler and
its jobs, with four changes that exauth needs and rq does not give:

- One active scheduler. rq's scheduler registry only records which schedulers are alive
  (names are unique per process); two processes would both enqueue every job. Here the
  scheduler first takes the workers.changes.writer_lock token lock named `LOCK_NAME` (expiry
  `LOCK_TTL`,
  renewed every `TICK`); a second instance says so in one line and stands by, taking over
  within `LOCK_TTL` when the active one stops or dies.
- Once per slot, whatever happens. Each due time of each org ("slot") is claimed with
  SET NX on `exauth:cron:slot:<org>:<time>` before its sweep is enqueued, so even a
  scheduler that lost its lock while paused, or two during a hand-over, enqueue a slot
  once. The slot is also the sweep's run id (a retried sweep counts an unreachable server
  once). A new leader catches up a slot missed in the last `CATCH_UP` (hand-over at 08:00).
- JSON, callbacks. rq's CronJob enqueues with the default (pickle) serializer and without
  callbacks; here every sweep goes through workers.warnings.sweep.enqueue_sweep (JSON serializer,
  Slack callbacks by dotted path).
- Jobs whose worker died end here. Every tick the active scheduler has rq fail (or retry)
  the jobs whose worker stopped mid-job, running their failure callbacks, so a placeholder
  never stays "Checking..." because a worker was killed, and a read job that no worker
  took within its time limit ends the same way (workers.jobs.deadline), and a change step
  whose worker died is declared "interrupted" on its card within about two minutes
  (workers.changes.interruption says how it is noticed).

Cron expressions are read in this process's local time zone (set TZ), as rq does.
Time comes from the `Clock` passed in (workers.clock) so tests can move it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from croniter import croniter
from rq.cron import CronJob, CronScheduler

from config.errors import ExauthError
from config.schema import Settings
from workers import log_filter, redis_keys
from workers.changes import writer_lock
from workers.clock import SYSTEM_CLOCK, Clock
from workers.jobs import change_jobs
from workers.jobs.deadline import expire_unstarted, reap_abandoned
from workers.jobs.interruption_notice import notice_interrupted
from workers.jobs.queues import (
    FAILURE_TTL,
    READ_TIMEOUT,
    RESULT_TTL,
    SWEEP_QUEUE,
    connect,
    connect_riding_out,
    unreachable,
)
from workers.warnings.sweep import SWEEP_FUNC, enqueue_sweep

log = logging.getLogger(__name__)

# A workers.changes.writer_lock name no org can have (org names cannot start with "_").
LOCK_NAME = "_cron"
LOCK_KEY = writer_lock.lock_key(LOCK_NAME)
LOCK_TTL = timedelta(seconds=60)
TICK = timedelta(seconds=10)  # longest sleep: renew the lock well within its TTL
STANDBY_POLL = timedelta(seconds=5)
CATCH_UP = timedelta(hours=1)
# Open operations are looked at every 15 minutes (slot name cannot clash with an org's:
# org names cannot start with "_").
RESUME_SLOT = "_operations"
RESUME_CRON = "*/15 * * * *"
RESUME_FUNC = "workers.jobs.change_jobs.resume_due_job"
SLOT_TTL = timedelta(days=3)

Enqueue = Callable[[redis.Redis, str], Any]  # (connection, run id) -> the enqueued job
Say = Callable[[str], None]


class CronConfigError(ExauthError, ValueError):
    """A cron expression croniter cannot use; one line naming the org."""


def next_fire(expression: str, after: datetime) -> datetime:
    """The first due time strictly after `after` (UTC), reading the expression in local time."""
    local = after.astimezone().replace(tzinfo=None)
    candidate = croniter(expression, local).get_next(datetime)
    return candidate.astimezone(UTC)


def previous_fire(expression: str, at: datetime) -> datetime:
    """The last due time at or before `at` (UTC)."""
    local = (at + timedelta(seconds=1)).astimezone().replace(tzinfo=None)
    candidate = croniter(expression, local).get_prev(datetime)
    return candidate.astimezone(UTC)


def slot_key(org: str, slot: datetime) -> str:
    return redis_keys.cron_slot(org, _slot_id(slot))


def enqueue_slot(conn: redis.Redis, org: str, slot: datetime,
                 enqueue: Enqueue | None = None) -> Any | None:
    """Enqueue the job of `org` (a sweep unless told) due at `slot`, unless someone already
    did; the job or None."""
    if not conn.set(slot_key(org, slot), "1", nx=True, px=SLOT_TTL):
        return None
    if enqueue is None:
        return enqueue_sweep(conn, org, run_id=_slot_id(slot))
    return enqueue(conn, _slot_id(slot))


def enqueue_resume_due(conn: redis.Redis, run_id: str) -> Any:
    """Operations waiting for a date (a 30-day effective date, replication, publication) or
    left running by a worker that died are carried on by this job."""
    return change_jobs.enqueue(conn, "resume_due_job", (), meta={"what": "resume-due",
                                                             "run_id": run_id},
                            on_success=change_jobs.ON_SWEEP)


class SweepCronJob(CronJob):
    """One org's sweep on the org's cron expression (rq CronJob, exauth clock and enqueue);
    also the operations' resume sweep, with its own enqueue under the RESUME_SLOT name."""

    def __init__(self, org: str, expression: str, clock: Clock,
                 enqueue: Enqueue | None = None, func_name: str = SWEEP_FUNC) -> None:
        self._clock = clock
        self._enqueue = enqueue
        self.org = org
        super().__init__(
            queue_name=SWEEP_QUEUE, func_name=func_name, args=(org,), cron=expression,
            job_timeout=READ_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
            name=f"exauth-sweep:{org}",
        )

    def get_next_enqueue_time(self) -> datetime:
        assert self.cron is not None
        return next_fire(self.cron, self.latest_enqueue_time or self._clock.now())

    def should_run(self) -> bool:
        return self.next_enqueue_time is not None and self._clock.now() >= self.next_enqueue_time

    def enqueue(self, connection: redis.Redis) -> Any:  # type: ignore[override]
        assert self.next_enqueue_time is not None
        return enqueue_slot(connection, self.org, self.next_enqueue_time, self._enqueue)

    def catch_up(self, connection: redis.Redis) -> Any | None:
        """Enqueue the last slot if it was due within CATCH_UP and nobody enqueued it."""
        assert self.cron is not None
        now = self._clock.now()
        slot = previous_fire(self.cron, now)
        if now - slot > CATCH_UP:
            return None
        return enqueue_slot(connection, self.org, slot, self._enqueue)


class SweepScheduler(CronScheduler):
    """rq's CronScheduler with a leader lock in front of its loop."""

    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        say: Say | None = None,
        lock_ttl: timedelta = LOCK_TTL,
        tick: timedelta = TICK,
        standby_poll: timedelta = STANDBY_POLL,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(connection)
        self._clock = clock
        self._say = say or _stderr
        self._lock_ttl, self._tick, self._poll = lock_ttl, tick, standby_poll
        self.stop_event = stop or threading.Event()
        self._token: str | None = None  # the lock's, while leading
        self.leading = False
        for org in settings.orgs:
            try:
                self._cron_jobs.append(SweepCronJob(org.name, org.warnings.cron, clock))
            except (ValueError, KeyError) as exc:
                raise CronConfigError(
                    f'org "{org.name}": warnings.cron "{org.warnings.cron}" is not a usable '
                    f"cron expression ({exc})") from None
        self._cron_jobs.append(SweepCronJob(RESUME_SLOT, RESUME_CRON, clock,
                                            enqueue=enqueue_resume_due, func_name=RESUME_FUNC))

    # --- leadership ---------------------------------------------------------------------

    def try_lead(self) -> bool:
        self._token = writer_lock.acquire(self.connection, LOCK_NAME, self.name,
                                   self._lock_ttl.total_seconds(), now=self._clock.now())
        return self._token is not None

    def renew(self) -> bool:
        return self._token is not None and writer_lock.extend(
            self.connection, LOCK_NAME, self._token, self._lock_ttl.total_seconds())

    def resign(self) -> None:
        if self._token is not None:
            writer_lock.release(self.connection, LOCK_NAME, self._token)
            self._token = None

    def holder(self) -> str:
        held = writer_lock.holder(self.connection, LOCK_NAME)
        return str(held["owner"]) if held else "unknown"

    # --- rq loop parts, on the exauth clock ---------------------------------------------

    def enqueue_jobs(self) -> list[CronJob]:
        due_at = self._clock.now()
        done: list[CronJob] = []
        for job in self._cron_jobs:
            if job.should_run():
                if job.enqueue(self.connection) is not None:
                    log.info("enqueued the warnings sweep of %s", getattr(job, "org", job.name))
                job.set_enqueue_time(due_at)
                done.append(job)
        return done

    def calculate_sleep_interval(self) -> float:
        due = [job.next_enqueue_time for job in self._cron_jobs if job.next_enqueue_time]
        tick = self._tick.total_seconds()
        if not due:
            return tick
        return max(0.0, min((min(due) - self._clock.now()).total_seconds(), tick))

    def start(self) -> None:
        """Stand by until leading, then enqueue sweeps until stopped or the lock is lost."""
        announced = False
        try:
            while not self.stop_event.is_set():
                if not self.leading:
                    if not self.try_lead():
                        if not announced:
                            self._say(f"exauth cron: another scheduler is active "
                                      f"({self.holder()}); standing by to take over.")
                            announced = True
                        self.stop_event.wait(self._poll.total_seconds())
                        continue
                    self._become_leader()
                    announced = False
                if not self.renew():
                    self._say("exauth cron: lost the scheduler lock (paused too long?); "
                              "standing by.")
                    self._step_down()
                    continue
                if self.enqueue_jobs():
                    self.save()
                reap_abandoned(self.connection)  # jobs whose worker died: say so
                expire_unstarted(self.connection)  # read jobs no worker took: say so
                notice_interrupted(self.connection)  # steps whose worker died: say so
                self.heartbeat()
                self.stop_event.wait(self.calculate_sleep_interval())
        finally:
            if self.leading:
                self._step_down()

    def _become_leader(self) -> None:
        self.leading = True
        for job in self._cron_jobs:
            job.latest_enqueue_time = None
            job.next_enqueue_time = job.get_next_enqueue_time()
            if isinstance(job, SweepCronJob):
                job.catch_up(self.connection)
        self.register_birth()
        plan = ", ".join(f'{getattr(j, "org", j.name)} at "{j.cron}"' for j in self._cron_jobs)
        self._say(f"exauth cron: active as {self.name}; warnings sweeps: {plan}.")

    def _step_down(self) -> None:
        self.leading = False
        self.resign()
        with suppress(Exception):
            self.register_death()


def run(settings: Settings, *, say: Say | None = None) -> int:
    """`exauth cron`: schedule the sweeps until SIGTERM/SIGINT; exit code for the CLI."""
    tell = say or _stderr
    if not settings.orgs:
        tell("exauth cron: no [[org]] configured; nothing to schedule.")
        return 2
    first = connect(settings.redis.url)
    try:  # started without Redis: say so at once; running: ride out an outage
        first.ping()
    except redis.RedisError as exc:
        tell(f"exauth cron: {unreachable(settings.redis.url, exc)}.")
        return 1
    finally:
        first.close()
    connection = connect_riding_out(settings.redis.url)
    try:
        scheduler = SweepScheduler(connection, settings, say=tell)
    except CronConfigError as exc:
        tell(f"exauth cron: {exc}")
        return 2
    log_filter.install_for(settings)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: scheduler.stop_event.set())
    try:
        scheduler.start()
    finally:
        connection.close()
    return 0


def _slot_id(slot: datetime) -> str:
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%MZ")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
