"""The job registry: the only functions an exauth worker runs, by the names they are queued under.

RQ stores a job's function and callbacks as dotted paths and, left alone, imports and calls
whatever path a job names: anyone who can write a job hash to Redis could make a worker
call `os.system`. JSON storage does not stop that; this registry does. `RegisteredJob`
(the job class of every exauth queue and worker) resolves names here only, before anything
is imported, and refuses the rest: the job fails with one line naming the refused path.

The registry also carries the names that jobs already in Redis were queued under before
`workers/` and `bot/` became packages (`workers.jobs.status_job`, `bot.notify.status_ready`,
...), so a job queued by an older release runs after an upgrade (tests/test_job_registry.py).

Entries are strings, not functions: callbacks live in `bot/`, and `workers/` never imports
`bot/`; a path is imported only when a worker is about to run it.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from rq.job import Job

from config.errors import ExauthError

log = logging.getLogger(__name__)

# Job functions: the name a job is queued under -> where the function lives now.
JOBS: dict[str, str] = {
    name: name
    for name in (
        "workers.jobs.read_jobs.status_job",
        "workers.jobs.read_jobs.plan_job",
        "workers.jobs.read_jobs.rehearse_job",
        "workers.jobs.change_jobs.start_operation_job",
        "workers.jobs.change_jobs.run_step_job",
        "workers.jobs.change_jobs.advance_job",
        "workers.jobs.change_jobs.resume_job",
        "workers.jobs.change_jobs.resume_due_job",
        "workers.warnings.sweep.sweep_job",
    )
}

# Callbacks (they run in the worker and write to Slack).
CALLBACKS: dict[str, str] = {
    name: name
    for name in (
        "bot.callbacks.job_results.status_ready",
        "bot.callbacks.job_results.plan_ready",
        "bot.callbacks.job_results.rehearsal_ready",
        "bot.callbacks.job_results.job_failed",
        "bot.callbacks.operation_progress.operation_updated",
        "bot.callbacks.operation_progress.operation_job_failed",
        "bot.callbacks.operation_progress.sweep_done",
        "bot.callbacks.warning_posts.sweep_done",
        "bot.callbacks.warning_posts.sweep_failed",
        "bot.callbacks.home_tab.status_checked",
        "bot.callbacks.home_tab.check_failed",
        "bot.callbacks.home_tab.plan_ready",
        "bot.callbacks.home_tab.plan_failed",
    )
}

# Names queued by releases before the re-housing into packages.
_FORMER_MODULES = {
    "workers.jobs": "workers.jobs.read_jobs",
    "workers.ops_jobs": "workers.jobs.change_jobs",
    "workers.sweep": "workers.warnings.sweep",
    "bot.notify": "bot.callbacks.job_results",
    "bot.ops_notify": "bot.callbacks.operation_progress",
    "bot.warnings_notify": "bot.callbacks.warning_posts",
}


def _former_names(table: dict[str, str]) -> dict[str, str]:
    former = {}
    for old_module, new_module in _FORMER_MODULES.items():
        for path in table.values():
            module, _, name = path.rpartition(".")
            if module == new_module:
                former[f"{old_module}.{name}"] = path
    return former


JOBS.update(_former_names(JOBS))
CALLBACKS.update(_former_names(CALLBACKS))


class JobRefused(ExauthError):
    """A job or callback named a function outside the registry; nothing was imported."""

    permanent = True

    def __init__(self, what: str, name: str | None) -> None:
        self.name = name
        super().__init__(f"refused to run {what} {name!r}: not one of exauth's jobs")


def resolve(table: dict[str, str], name: str, what: str) -> Callable[..., Any]:
    """The registered function for `name`, imported only now; JobRefused for any other."""
    path = table.get(name)
    if path is None:
        raise JobRefused(what, name)
    module, _, attribute = path.rpartition(".")
    function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return function


class RegisteredJob(Job):
    """An RQ job whose function and callbacks come from the registry, never from any path.

    Its run time is tallied by kind and outcome for `/metrics` (workers.tallies)."""

    def perform(self) -> Any:
        from workers import tallies

        started = time.monotonic()
        outcome = "failed"
        try:
            result = super().perform()
            outcome = "ok"
            return result
        finally:
            tallies.observe_job(self.connection, tallies.job_kind(self.func_name), outcome,
                                time.monotonic() - started)

    @property
    def func(self) -> Callable[..., Any] | None:  # type: ignore[override]
        if self.func_name is None:
            return None
        try:
            return resolve(JOBS, self.func_name, "job function")
        except JobRefused:
            log.error("job %s: refused function %r (not in the job registry)",
                      self.id, self.func_name)
            self.retries_left = None  # another attempt would be refused the same way
            raise

    @property
    def success_callback(self) -> Callable[..., Any] | None:  # type: ignore[override]
        return self._callback("_success_callback")

    @property
    def failure_callback(self) -> Callable[..., Any] | None:  # type: ignore[override]
        return self._callback("_failure_callback")

    @property
    def stopped_callback(self) -> Callable[..., Any] | None:  # type: ignore[override]
        return self._callback("_stopped_callback")

    def _callback(self, attribute: str) -> Callable[..., Any] | None:
        """A callback named outside the registry is dropped (and logged), not run: the
        job's own outcome still counts, and nothing unknown is imported."""
        name: str | None = getattr(self, f"{attribute}_name", None)
        if not name:
            return None
        try:
            return resolve(CALLBACKS, name, "callback")
        except JobRefused as exc:
            log.error("job %s: %s", self.id, exc)
            return None
