"""Only exauth's own jobs run, and jobs queued before the re-housing into packages still do.

The worker here is a real `exauth worker --burst` process; the jobs are written to Redis the
way an older release (or an attacker with Redis access) would write them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue
from slack_sdk import WebClient

from bot.render import messages
from lab.serve import LabHandle
from tests.slack_mock import BOT_TOKEN, SlackMock
from tests.test_config_processes import CHANNEL, Place, failed_jobs, worker_burst
from workers.jobs import registry
from workers.jobs.queues import READ_QUEUE, SERIALIZER, enqueue_read
from workers.jobs.registry import CALLBACKS, JOBS, JobRefused, RegisteredJob, resolve

# Dotted paths that today's jobs in Redis may carry, written by the release before packages.
FORMER = {
    "workers.jobs.status_job": "workers.jobs.read_jobs.status_job",
    "workers.jobs.plan_job": "workers.jobs.read_jobs.plan_job",
    "workers.ops_jobs.run_step_job": "workers.jobs.change_jobs.run_step_job",
    "workers.ops_jobs.start_operation_job": "workers.jobs.change_jobs.start_operation_job",
    "workers.ops_jobs.advance_job": "workers.jobs.change_jobs.advance_job",
    "workers.ops_jobs.resume_job": "workers.jobs.change_jobs.resume_job",
    "workers.ops_jobs.resume_due_job": "workers.jobs.change_jobs.resume_due_job",
    "workers.sweep.sweep_job": "workers.warnings.sweep.sweep_job",
}
FORMER_CALLBACKS = {
    "bot.notify.status_ready": "bot.callbacks.job_results.status_ready",
    "bot.notify.plan_ready": "bot.callbacks.job_results.plan_ready",
    "bot.notify.job_failed": "bot.callbacks.job_results.job_failed",
    "bot.ops_notify.operation_updated": "bot.callbacks.operation_progress.operation_updated",
    "bot.ops_notify.operation_job_failed":
        "bot.callbacks.operation_progress.operation_job_failed",
    "bot.ops_notify.sweep_done": "bot.callbacks.operation_progress.sweep_done",
    "bot.warnings_notify.sweep_done": "bot.callbacks.warning_posts.sweep_done",
    "bot.warnings_notify.sweep_failed": "bot.callbacks.warning_posts.sweep_failed",
}


def test_every_registered_name_resolves_to_a_function() -> None:
    for table, what in ((JOBS, "job function"), (CALLBACKS, "callback")):
        for name in table:
            function = resolve(table, name, what)
            assert callable(function), name


@pytest.mark.parametrize(("former", "now"), [*FORMER.items(), *FORMER_CALLBACKS.items()])
def test_a_former_name_runs_the_function_that_lives_elsewhere_now(former: str, now: str) -> None:
    table = JOBS if former in FORMER else CALLBACKS
    module, _, name = now.rpartition(".")
    function = resolve(table, former, "x")
    assert (function.__module__, function.__name__) == (module, name)


@pytest.mark.parametrize("name", ["os.makedirs", "builtins.eval", "workers.jobs.registry.resolve",
                                  "workers.jobs.read_jobs._org", "subprocess.run"])
def test_anything_else_is_refused_before_it_is_imported(name: str) -> None:
    with pytest.raises(JobRefused, match="not one of exauth's jobs"):
        resolve(JOBS, name, "job function")


def test_every_queue_and_the_worker_use_the_registered_job_class(redis_url: str) -> None:
    from workers.jobs.deadline import Worker
    from workers.jobs.queues import queue

    assert queue(READ_QUEUE, redis.Redis.from_url(redis_url)).job_class is RegisteredJob
    assert Worker.job_class is RegisteredJob


def test_a_worker_refuses_a_job_naming_any_other_function(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    place.write(make_lab("healthy"), redis_url, slack)
    target = tmp_path / "made-by-a-redis-write"
    # Written to Redis with plain rq, as anyone who can write to Redis could.
    Queue(READ_QUEUE, connection=redis.Redis.from_url(redis_url), serializer=SERIALIZER
          ).enqueue("os.makedirs", str(target))

    logged = worker_burst(place, place.relative)

    assert not target.exists()
    [failed] = failed_jobs(redis_url)
    assert failed.startswith("os.makedirs: ") and "not one of exauth's jobs" in failed, failed
    assert "refused function 'os.makedirs'" in logged


def test_a_status_job_queued_under_its_former_names_still_runs_and_reports(
        make_lab: Callable[..., LabHandle], slack: SlackMock, redis_url: str,
        tmp_path: Path) -> None:
    place = Place(tmp_path)
    place.write(make_lab("healthy"), redis_url, slack)
    placeholder = messages.placeholder_message("lab", "status")
    posted = WebClient(token=BOT_TOKEN, base_url=slack.api_url).chat_postMessage(
        channel=CHANNEL, text=placeholder["text"], blocks=placeholder["blocks"])
    enqueue_read(redis.Redis.from_url(redis_url), "workers.jobs.status_job", "lab",
                 meta={"org": "lab", "kind": "status", "requested_by": "U0ALICE",
                       "reply": {"channel": CHANNEL, "ts": posted["ts"]}},
                 on_success="bot.notify.status_ready", on_failure="bot.notify.job_failed")

    worker_burst(place, place.relative)

    assert failed_jobs(redis_url) == []
    [update] = slack.calls_of("chat.update")
    assert update.params["ts"] == posted["ts"]
    assert "lab" in update.params["text"] and "OK" in update.params["text"], update.params


def test_the_registry_module_is_the_one_place_jobs_are_named() -> None:
    # Every job function a module of exauth enqueues by name is a registered one.
    from bot.callbacks import job_results
    from bot.listeners.slash_command import READ_JOBS
    from workers.jobs import change_jobs, cron
    from workers.warnings import sweep

    named = {cron.RESUME_FUNC, sweep.SWEEP_FUNC}
    named |= {f"{f.__module__}.{f.__name__}" for f in READ_JOBS.values()}
    assert named <= set(JOBS)
    callbacks = {change_jobs.ON_SUCCESS, change_jobs.ON_FAILURE, change_jobs.ON_SWEEP,
                 sweep.NOTIFY_CALLBACK, sweep.FAILURE_CALLBACK, job_results.ON_FAILURE,
                 *job_results.ON_SUCCESS.values()}
    assert callbacks <= set(CALLBACKS)
    assert registry.JOBS is JOBS
