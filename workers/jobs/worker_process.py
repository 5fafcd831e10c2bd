"""`exauth worker`: one RQ worker process for every exauth queue.

Worker class: rq's `SimpleWorker`, which runs each job in the worker process itself.
RQ's default `Worker` forks a fresh child per job (and `SpawnWorker` starts a new
interpreter), so everything a job builds dies with it. workers/exchange/client.py keeps a
process-wide cache of open PowerShell Remoting sessions because opening one on real
Exchange costs seconds; only a worker that does not fork keeps that cache warm from one
job to the next. The price is that a job that crashes the interpreter takes the worker
with it; the container restart policy brings it back and RQ's abandoned-job handling
re-queues the job. Job timeouts still apply (SimpleWorker uses SIGALRM in the main thread;
workers.jobs.deadline makes them a JobDeadline that the job's own error handling cannot catch).

Queues in `WORKER_QUEUES` order: the change queue first so an approved rotation never
waits behind a burst of status checks, the sweep queue last so a person's status never
waits behind a fleet's warnings sweep. The scheduler is on because read-job retries are
scheduled with delays.
"""

from __future__ import annotations

import logging
import sys

from redis import RedisError
from rq.logutils import setup_loghandlers

from config.schema import Settings
from workers import log_filter
from workers.exchange.session import close_all
from workers.jobs.deadline import Worker
from workers.jobs.queues import (
    SERIALIZER,
    WORKER_QUEUES,
    connect,
    connect_riding_out,
    queue,
    unreachable,
)

log = logging.getLogger(__name__)

LOG_LEVEL = "INFO"


def run(settings: Settings, burst: bool = False) -> int:
    """Work the exauth queues; with `burst`, until they are empty (tests, one-shot runs)."""
    first = connect(settings.redis.url)
    try:  # a worker started without Redis says so at once ...
        first.ping()
    except RedisError as exc:
        print(f"exauth worker: {unreachable(settings.redis.url, exc)}.", file=sys.stderr,
              flush=True)
        return 1
    finally:
        first.close()
    # ... while a running one rides out an outage (workers.jobs.queues.connect_riding_out)
    connection = connect_riding_out(settings.redis.url)
    queues = [queue(name, connection) for name in WORKER_QUEUES]
    worker = Worker(queues, connection=connection, serializer=SERIALIZER)
    _process_logging(settings)
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level=LOG_LEVEL)
    finally:
        _close_sessions()
        connection.close()
    return 0


def _process_logging(settings: Settings) -> None:
    """rq's handlers made now, as `work()` would make them (same level and format; it then
    finds them and makes none), so that the secrets filter sits on them too."""
    for name in ("rq.worker", "rq.job"):
        setup_loghandlers(LOG_LEVEL, name=name)
    log_filter.install_for(settings)


def _close_sessions() -> None:
    """Close the Exchange sessions this process opened (they hold server-side shells)."""
    try:
        close_all()
    except Exception as exc:
        log.warning("closing Exchange sessions failed: %s", exc)
