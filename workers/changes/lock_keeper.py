"""A short writer lock kept alive by the step that holds it.

Why short: the writer lock (workers.changes.writer_lock) used to last the whole job time
limit (1,800 s), so a worker killed mid-step left its org locked for half an hour and
`/exauth resume` answered "LockBusy" all that time. Now a step takes the lock for
STEP_LOCK_TTL seconds and a keep-alive thread extends it (redis-py's `Lock.extend`, only
for the holder of the token) every third of that. A dead worker extends nothing, so its
lock lapses on its own within a minute; that lapse is also how a dead step is noticed
(workers.changes.interruption).

Why a separate connection with no retries for the keep-alive: the worker's own connection
rides out a Redis outage by retrying for minutes (workers.jobs.queues.connect_riding_out);
the keep-alive must instead *notice* the outage at once, because a lock whose Redis was
gone may have lapsed meanwhile and someone else may have taken it. It records the outage
(`outage_seen`), retries every second, and when Redis answers again extends the lock - or,
when it lapsed, takes it back with the same token if nobody else took it (`lost` when
someone did). The step asks `still_held()` before anything it writes or runs, and after an
outage it reads Exchange before it trusts what it did (workers.changes.execute).
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from workers.changes import writer_lock

log = logging.getLogger(__name__)

STEP_LOCK_TTL = 60.0  # seconds a step's lock outlives its worker
OUTAGE_POLL = 1.0  # seconds between keep-alive tries while Redis does not answer
QUICK_TIMEOUT = 2.0  # the keep-alive's connect/read limit: an outage is seen, not waited out
DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def quick_connection(conn: redis.Redis) -> redis.Redis:
    """A client on the same server as `conn` that fails fast instead of retrying (behind
    Sentinel: on the same service's current master)."""
    pool = conn.connection_pool
    manager, service = getattr(pool, "sentinel_manager", None), getattr(pool, "service_name",
                                                                        None)
    if manager is not None and service:
        quick: redis.Redis = manager.master_for(
            service, socket_timeout=QUICK_TIMEOUT, socket_connect_timeout=QUICK_TIMEOUT,
            retry=Retry(NoBackoff(), 0))
        return quick
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(socket_timeout=QUICK_TIMEOUT, socket_connect_timeout=QUICK_TIMEOUT,
                  retry=Retry(NoBackoff(), 0))
    pool = redis.ConnectionPool(connection_class=conn.connection_pool.connection_class,
                                **kwargs)
    return redis.Redis(connection_pool=pool)


class KeptLock:
    """`with KeptLock(conn, org, owner):` - the org's writer lock, kept alive meanwhile.

    LockBusy on entry when someone else holds it. Thread-safe: the keep-alive thread and
    the step share only the flags and the token."""

    def __init__(self, conn: redis.Redis, org: str, owner: str, *,
                 ttl_s: float = STEP_LOCK_TTL) -> None:
        self.conn, self.org, self.owner, self.ttl_s = conn, org, owner, ttl_s
        self.every_s = ttl_s / 3
        self.token: str | None = None
        self.outage_seen = False  # Redis did not answer at some point while held
        self.lost = False  # the lock lapsed and someone else took it
        self._down = False  # Redis is not answering right now
        self._confirmed_at = 0.0  # monotonic time the lock was last taken or extended
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._quick = quick_connection(conn)

    def __enter__(self) -> KeptLock:
        self.token = writer_lock.acquire(self.conn, self.org, self.owner, self.ttl_s)
        if self.token is None:
            current = writer_lock.holder(self.conn, self.org)
            who = current["owner"] if current else "someone"
            self._quick.close()
            raise writer_lock.LockBusy(f"org {self.org} is busy: {who} holds its writer lock")
        self._confirmed_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"lock-keeper {self.org}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=QUICK_TIMEOUT * 3)
        if self.token is not None and not self.lost:
            try:  # the riding-out connection: a lock is freed even after an outage
                writer_lock.release(self.conn, self.org, self.token)
            except DOWN as err:  # it lapses on its own within ttl_s
                log.warning("writer lock of %s not released (%s); it lapses by itself",
                            self.org, type(err).__name__)
        self._quick.close()

    # --- keeping it ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(OUTAGE_POLL if self._down else self.every_s):
            self.beat()

    def beat(self) -> bool:
        """Extend the lock once (or take it back after a lapse); True while it is ours."""
        with self._guard:
            if self.lost or self.token is None:
                return False
            try:
                if writer_lock.extend(self._quick, self.org, self.token, self.ttl_s):
                    self._down = False
                    self._confirmed_at = time.monotonic()
                    return True
                # It lapsed (an outage longer than ttl_s): ours again if nobody took it.
                again = writer_lock.writer_lock(self._quick, self.org, self.ttl_s)
                self._down = False
                if again.acquire(token=self.token):
                    self._confirmed_at = time.monotonic()
                    log.warning("writer lock of %s lapsed during a Redis outage; taken back",
                                self.org)
                    return True
                self.lost = True
                log.warning("writer lock of %s lapsed and was taken by %s", self.org,
                            (writer_lock.holder(self._quick, self.org) or {}).get("owner"))
                return False
            except DOWN:
                if not self._down:
                    log.warning("Redis is not answering; keeping the writer lock of %s as "
                                "soon as it does", self.org)
                self._down = self.outage_seen = True
                return False

    def still_held(self) -> bool:
        """Whether the step may go on writing: the lock is ours (checked now, waiting for
        Redis while it is down). False only when someone else has the org now.

        A lock taken or extended less than a third of its TTL ago (the keep-alive's period)
        is ours without asking Redis again: it has at least two thirds of its TTL left."""
        fresh = time.monotonic() - self._confirmed_at < self.every_s
        if fresh and not (self._down or self.lost):
            return True
        while not self._stop.is_set():
            if self.beat():
                return True
            if self.lost:
                return False
            self._stop.wait(OUTAGE_POLL)
        return False
