"""Counts and timings every exauth process adds to Redis, so one scrape shows them all.

Jobs run in any number of workers, and RQ callbacks (which talk to Slack) run there too,
while Prometheus scrapes one place (the bot's `/metrics`, or `exauth metrics`). Keeping
these figures in each process's memory would need every worker scraped and summed, and a
restart would lose them; a few Redis increments per job instead make one scrape target
the whole truth (bot.metrics reads them). A tally that cannot be written is logged and
dropped: it never fails the job or the Slack call it describes.

- job run times: a Prometheus-style histogram per job kind (the job function's name:
  status, plan, sweep, run_step, ...) and outcome (ok / failed), cumulative buckets;
- Slack Web API errors: a count per (method, Slack's error code).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from workers import redis_keys

log = logging.getLogger(__name__)

# Seconds: a status is ~0.1-30 s, a change step up to CHANGE_TIMEOUT (30 min).
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
OUTCOMES = ("ok", "failed")


def job_kind(func_name: str | None) -> str:
    """`workers.jobs.read_jobs.status_job` -> `status`: the label of a job's kind (bounded
    by the job registry, so the label stays low-cardinality)."""
    name = (func_name or "unknown").rpartition(".")[2]
    return name.removesuffix("_job") or "unknown"


def observe_job(conn: redis.Redis, kind: str, outcome: str, seconds: float) -> None:
    """Add one job run to its kind's histogram (one pipeline)."""
    try:
        key = redis_keys.job_durations(kind)
        pipe = conn.pipeline(transaction=True)
        for bound in JOB_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(key, f"{outcome}:{bound}", 1)
        pipe.hincrby(key, f"{outcome}:count", 1)
        pipe.hincrbyfloat(key, f"{outcome}:sum", max(seconds, 0.0))
        pipe.sadd(redis_keys.job_duration_kinds(), kind)
        pipe.execute()
    except Exception as exc:
        log.warning("job time of %s not tallied: %s", kind, type(exc).__name__)


def count_slack_error(conn: redis.Redis, method: str, error: str) -> None:
    """One failed Slack Web API call."""
    try:
        conn.hincrby(redis_keys.slack_errors(), f"{method}|{error or 'unknown'}", 1)
    except Exception as exc:
        log.warning("Slack error of %s not tallied: %s", method, type(exc).__name__)


@dataclass(frozen=True)
class JobHistogram:
    kind: str
    outcome: str
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf excluded
    count: int
    total: float


def job_histograms(conn: redis.Redis) -> Iterator[JobHistogram]:
    """Every stored histogram, for the exporter."""
    kinds = sorted(_text(k) for k in conn.smembers(redis_keys.job_duration_kinds()))
    pipe = conn.pipeline(transaction=False)
    for kind in kinds:
        pipe.hgetall(redis_keys.job_durations(kind))
    for kind, raw in zip(kinds, pipe.execute(), strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        for outcome in OUTCOMES:
            count = int(float(fields.get(f"{outcome}:count", 0)))
            if not count:
                continue
            buckets = [(bound, int(fields.get(f"{outcome}:{bound}", 0))) for bound in JOB_BUCKETS]
            yield JobHistogram(kind, outcome, buckets, count,
                               float(fields.get(f"{outcome}:sum", 0.0)))


def slack_error_counts(conn: redis.Redis) -> dict[tuple[str, str], int]:
    """(method, error) -> count."""
    counts = {}
    for field, value in conn.hgetall(redis_keys.slack_errors()).items():
        method, _, error = _text(field).partition("|")
        counts[(method, error)] = int(_text(value))
    return counts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
