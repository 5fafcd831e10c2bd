"""Prometheus metrics: `/metrics` on the bot's HTTP server, and `exauth metrics --port N`.

Everything a scrape shows is read from Redis at scrape time, never from Exchange: the last
stored check of each org (workers.status.last_check, written by every status/plan job and
sweep), the open operations and their pending approvals, and the tallies every worker and
bot process adds (workers.tallies: job run times, Slack API errors). So any process that can
read Redis shows the same figures, however many workers run: the bot in HTTP mode serves
them on its own port, and a Socket Mode deployment (no inbound port) runs `exauth metrics`
beside it. Not the worker: a worker's main thread runs jobs under SIGALRM time limits and
there may be several of them; one scrape target that holds the whole truth is simpler to
alert on. The one figure kept in process memory is the count of requests the HTTP server
refused (bot.http), since only that process sees them and only in HTTP mode.

Labels stay low-cardinality: org, server (fqdn), slot (current/next/previous), kind (job
or operation kind), state, outcome, and Slack's method and error code. Times are Unix
seconds so alert rules compare them with `time()` (examples: deploy/exauth-alerts.yml).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from redis import Redis

from config.schema import Settings
from workers import tallies
from workers.changes import approval, operation
from workers.status import last_check

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"

# Figures only this process knows (it refused these requests itself: bot.http).
PROCESS_METRICS = CollectorRegistry(auto_describe=True)
REFUSED_REQUESTS = Counter("exauth_refused_requests", "Requests to /slack/events the bot "
                           "refused before bolt saw them (bad signature, stale timestamp, "
                           "body not as Slack sends it).", ["status"],
                           registry=PROCESS_METRICS)


def count_refused(status: int) -> None:
    REFUSED_REQUESTS.labels(status=str(status)).inc()


class ExauthCollector:
    """Reads the figures from Redis at each scrape (a few round trips, no Exchange call)."""

    def __init__(self, settings: Settings, conn: Redis) -> None:
        self.orgs = [org.name for org in settings.orgs]
        self.conn = conn

    def describe(self) -> Iterable[Metric]:
        return []  # figures come and go with orgs and operations: no fixed description

    def collect(self) -> Iterator[Metric]:
        yield from PROCESS_METRICS.collect()
        redis_up = GaugeMetricFamily("exauth_metrics_redis_up", "1 when this scrape could "
                                     "read exauth's Redis (0: the other figures are missing).")
        try:
            families = list(self._from_redis())
        except Exception as exc:
            log.warning("metrics: Redis not readable: %s", type(exc).__name__)
            redis_up.add_metric([], 0)
            yield redis_up
            return
        redis_up.add_metric([], 1)
        yield redis_up
        yield from families

    def _from_redis(self) -> Iterator[Metric]:
        yield from org_families(last_check.load_many(self.conn, self.orgs))
        yield from operation_families(self.conn, self.orgs, time.time())
        yield from tally_families(self.conn)


def org_families(checks: list[last_check.LastCheck]) -> Iterator[Metric]:
    """The gauges of each org's last stored check."""
    auth = GaugeMetricFamily("exauth_auth_certificate_not_after_seconds",
                             "NotAfter of the Auth Certificate in each AuthConfig slot.",
                             labels=["org", "slot"])
    auth_days = GaugeMetricFamily("exauth_auth_certificate_days_left", "Whole days left of "
                                  "the Auth Certificate in each slot, at the last check.",
                                  labels=["org", "slot"])
    effective = GaugeMetricFamily("exauth_auth_next_effective_seconds", "When the staged "
                                  "next Auth Certificate becomes effective.", labels=["org"])
    backend = GaugeMetricFamily("exauth_backend_certificate_not_after_seconds", "NotAfter of "
                                "each server's back end (IIS port 444) certificate.",
                                labels=["org", "server"])
    backend_days = GaugeMetricFamily("exauth_backend_certificate_days_left", "Whole days left "
                                     "of each server's back end certificate.",
                                     labels=["org", "server"])
    backend_ok = GaugeMetricFamily("exauth_backend_ok", "1 when the server's back end binding "
                                   "and certificate have no problem.", labels=["org", "server"])
    reachable = GaugeMetricFamily("exauth_server_reachable", "1 when the server answered at "
                                  "the last check.", labels=["org", "server"])
    state = GaugeMetricFamily("exauth_org_state", "Overall state at the last good check: "
                              "0 ok, 1 warning, 2 critical, 3 unknown (as `exauth status`'s "
                              "exit code).", labels=["org"])
    findings = GaugeMetricFamily("exauth_findings", "Findings of the last good check by "
                                 "severity.", labels=["org", "severity"])
    checked = GaugeMetricFamily("exauth_last_successful_check_timestamp_seconds", "When the "
                                "org was last read completely.", labels=["org"])
    attempted = GaugeMetricFamily("exauth_last_check_timestamp_seconds", "When the last read "
                                  "of the org ended, good or not.", labels=["org"])
    outcome = GaugeMetricFamily("exauth_last_check_success", "1 when the last read of the "
                                "org succeeded, 0 when it failed.", labels=["org"])
    for check in checks:
        org = check.org
        if check.attempted_at is not None:
            attempted.add_metric([org], check.attempted_at.timestamp())
            outcome.add_metric([org], 1 if check.ok else 0)
        if check.succeeded_at is not None:
            checked.add_metric([org], check.succeeded_at.timestamp())
        status = check.status
        if status is None:
            continue
        for slot in last_check.SLOTS:
            cert = last_check.auth_cert(status, slot)
            not_after = last_check.cert_window(cert)[1]
            if cert is None or not_after is None:
                continue
            auth.add_metric([org, slot], not_after.timestamp())
            if cert.get("days_left") is not None:
                auth_days.add_metric([org, slot], float(cert["days_left"]))
        when = last_check.next_effective(status)
        if when is not None:
            effective.add_metric([org], when.timestamp())
        for entry in last_check.backends(status):
            server = str(entry.get("server") or "")
            backend_ok.add_metric([org, server], 0 if entry.get("problem") else 1)
            not_after = last_check.parse_time(entry.get("not_after"))
            if not_after is not None:
                backend.add_metric([org, server], not_after.timestamp())
            if entry.get("days_left") is not None:
                backend_days.add_metric([org, server], float(entry["days_left"]))
        for server in last_check.servers(status):
            reachable.add_metric([org, str(server.get("fqdn") or server.get("name"))],
                                 1 if server.get("reachable") else 0)
        state.add_metric([org], last_check.overall_state(status)[1])
        severities = [str(f.get("severity")) for f in last_check.findings_of(status)]
        for severity in ("info", "warning", "critical"):
            findings.add_metric([org, severity], severities.count(severity))
    yield from (auth, auth_days, effective, backend, backend_days, backend_ok, reachable,
                state, findings, checked, attempted, outcome)


def operation_families(conn: Redis, orgs: list[str], now: float) -> Iterator[Metric]:
    """Open operations by org, kind and state; the oldest pending approval's age per org."""
    counts: dict[tuple[str, str, str], int] = {}
    oldest: dict[str, float] = dict.fromkeys(orgs, 0.0)
    for op in operation.open_ops(conn):
        key = (str(op["org"]), str(op["kind"]), str(op["state"]))
        counts[key] = counts.get(key, 0) + 1
        for index, step in enumerate(op.get("steps") or []):
            if step.get("state") != "awaiting_approval":
                continue
            record = approval.get(conn, op["id"], index) or {}
            requested = last_check.parse_time(record.get("requested_at"))
            if record.get("state") == "pending" and requested is not None:
                age = max(0.0, now - requested.timestamp())
                oldest[op["org"]] = max(oldest.get(op["org"], 0.0), age)
    ops = GaugeMetricFamily("exauth_open_operations", "Open operations.",
                            labels=["org", "kind", "state"])
    for (org, kind, state), count in sorted(counts.items()):
        ops.add_metric([org, kind, state], count)
    age = GaugeMetricFamily("exauth_oldest_pending_approval_age_seconds", "How long the "
                            "oldest approval request nobody has decided has waited (0: none).",
                            labels=["org"])
    for org, seconds in sorted(oldest.items()):
        age.add_metric([org], seconds)
    yield from (ops, age)


def tally_families(conn: Redis) -> Iterator[Metric]:
    """Job run times and Slack API errors, summed over every process (workers.tallies)."""
    jobs = HistogramMetricFamily("exauth_job_duration_seconds", "Run time of exauth jobs "
                                 "by kind and outcome, over every worker.",
                                 labels=["kind", "outcome"])
    for h in tallies.job_histograms(conn):
        buckets = [(floatToGoString(b), float(c)) for b, c in h.buckets]
        buckets.append(("+Inf", float(h.count)))
        jobs.add_metric([h.kind, h.outcome], buckets, h.total)
    errors = CounterMetricFamily("exauth_slack_api_errors", "Slack Web API calls that failed, "
                                 "by method and Slack's error code.", labels=["method", "error"])
    for (method, error), count in sorted(tallies.slack_error_counts(conn).items()):
        errors.add_metric([method, error], count)
    yield from (jobs, errors)


def registry(settings: Settings, conn: Redis) -> CollectorRegistry:
    """What `/metrics` renders."""
    found = CollectorRegistry(auto_describe=False)
    found.register(ExauthCollector(settings, conn))
    return found


def render(source: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(source), CONTENT_TYPE_LATEST


def metrics_wsgi(source: CollectorRegistry) -> WSGIApplication:
    """GET /metrics (and /healthz) alone: `exauth metrics`' whole web server."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO")
        if environ.get("REQUEST_METHOD") == "GET" and path == METRICS_PATH:
            body, content_type = render(source)
            status = "200 OK"
        elif environ.get("REQUEST_METHOD") == "GET" and path == "/healthz":
            body, content_type, status = b"ok", "text/plain; charset=utf-8", "200 OK"
        else:
            body, content_type, status = b"not found", "text/plain; charset=utf-8", \
                "404 Not Found"
        start_response(status, [("Content-Type", content_type),
                                ("Content-Length", str(len(body)))])
        return [body]

    return application


def serve(settings: Settings, host: str, port: int, *, ready: threading.Event | None = None,
          server_box: list[Any] | None = None) -> int:
    """`exauth metrics`: serve /metrics until stopped (SIGTERM / Ctrl-C)."""
    from waitress.server import create_server

    from workers.jobs.queues import ANSWER_TIMEOUT, connect

    conn = connect(settings.redis.url, timeout=ANSWER_TIMEOUT)
    server = create_server(metrics_wsgi(registry(settings, conn)), host=host, port=port,
                           threads=2, ident="exauth-metrics")
    log.info("exauth metrics: GET %s on %s:%d", METRICS_PATH, host,
             server.effective_port)
    print(f"exauth metrics: serving {METRICS_PATH} on port {server.effective_port}",
          flush=True)
    if server_box is not None:
        server_box.append(server)
    if ready is not None:
        ready.set()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
