"""The RQ job functions: what a worker runs for a Slack request.

A job gets only an org name (no secrets, no settings in Redis) and loads its own settings,
so a Redis reader learns nothing and a config change is picked up without a redeploy.
Read jobs are enqueued with retries (workers.jobs.queues); an error that another attempt
cannot fix (bad password, bad config, unknown org) switches the remaining retries off, so
the user hears the reason at once and a wrong password is not replayed into an account
lockout.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from config.errors import ConfigError, ExauthError
from config.load import load_settings
from config.schema import OrgSettings
from workers.exchange.errors import ExchangeError
from workers.jobs.deadline import JobDeadline, NotStarted

log = logging.getLogger(__name__)


def status_job(org_name: str) -> dict[str, Any]:
    """The status JSON of DESIGN.md for one org (RQ's JSON serializer stores the document;
    the callbacks read it back with workers.status.report_model.parse_status)."""
    from workers.status.collect import status

    org = _org(org_name)
    return _stored(org.name, _guard_read(org.name, status, org).to_json())


def plan_job(org_name: str) -> dict[str, Any]:
    """A fresh status plus the steps each recommended action would run (nothing is run).

    Same document as `exauth plan --json` for one org, plus `status` so the message can
    show the state the plan was made from.
    """
    from workers.changes.plan import plan
    from workers.status.collect import status
    from workers.status.report import checked_at

    org = _org(org_name)
    result = _guard_read(org.name, status, org)
    document = _stored(org.name, result.to_json())
    # Plan against the time the org was read, so dates in the steps match the status.
    actions = _guard(plan, result, writer=org.writer or "", now=checked_at(result),
                     lifetime_days=org.rotation.lifetime_days)
    return {"org": org.name, "checked_at": result.checked_at, "actions": actions,
            "status": document}


def rehearse_job(org_name: str) -> dict[str, Any]:
    """`/exauth rehearse`: the recommended change tried on a fresh replica of the org
    (workers.rehearsal.run_through); the only calls to the org itself are the snapshot's
    reads. Its operation lives and ends under the replica's own name."""
    from workers.jobs.queues import connect
    from workers.rehearsal.run_through import rehearse

    org = _org(org_name)
    conn = connect(load_settings().redis.url)
    return dict(_guard(rehearse, org, conn, requester="exauth"))


def failure_reason(exc_type: type[BaseException] | None, exc: BaseException | None,
                   timeout: int | None = None) -> str:
    """One readable line for a failed job; the user never sees a traceback."""
    if exc_type is not None and issubclass(exc_type, (JobTimeoutException, JobDeadline)):
        limit = f" {timeout} s" if timeout else ""
        return f"the check took longer than its{limit} time limit and was stopped"
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        return "the worker running it stopped before it finished (killed or restarted)"
    if exc is None:
        return "the worker stopped without saying why"
    text = _first_line(str(exc))
    if isinstance(exc, (ExchangeError, ConfigError, LookupError, NotStarted)):
        return text or type(exc).__name__
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"network error: {text or type(exc).__name__}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help (and may hurt, e.g. lockouts on a bad password).

    Each exauth exception class says so itself (config.errors.ExauthError.permanent); a
    LookupError (no such org or job) is permanent too."""
    return (isinstance(exc, ExauthError) and exc.permanent) or isinstance(exc, LookupError)


def _org(org_name: str) -> OrgSettings:
    try:
        return load_settings().org(org_name)
    except Exception as exc:
        _stop_retries(exc)
        raise


def _guard(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        _stop_retries(exc)
        raise


def _guard_read(org_name: str, func: Any, *args: Any) -> Any:
    """_guard for the Exchange read, noting a failed one as the org's last check outcome
    (workers.status.last_check; the last good status stays)."""
    try:
        return _guard(func, *args)
    except Exception as exc:
        from workers.status import last_check

        last_check.store_quietly(_job_connection(), org=org_name,
                                 error=failure_reason(type(exc), exc))
        raise


def _stored(org_name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a fresh status as the org's last check, for /metrics and the Home tab; when it
    changed, say so in the job's meta (`status_changed`) so its callback refreshes Home."""
    from workers.status import last_check

    job = get_current_job()
    if last_check.store_quietly(_job_connection(), result, org=org_name) and job is not None:
        try:
            job.meta["status_changed"] = True
            job.save_meta()
        except Exception as exc:
            log.warning("job %s: meta not saved: %s", job.id, type(exc).__name__)
    return result


def _job_connection() -> Any:
    """The Redis connection of the RQ job running this code (None inline, e.g. the CLI)."""
    job = get_current_job()
    return job.connection if job is not None else None


def _stop_retries(exc: BaseException) -> None:
    """Zero the retries of the running job for a permanent error.

    RQ decides about a retry after the job raised, from `job.retries_left` of the very
    Job object that `get_current_job()` returns here, so setting it to 0 is enough.
    """
    if not is_permanent(exc):
        return
    job = get_current_job()
    if job is not None and job.retries_left:
        log.info("job %s: permanent error, not retrying", job.id)
        job.retries_left = 0


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""
