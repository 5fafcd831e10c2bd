"""No job ends in silence: a job past its time limit and a job whose worker was killed turn
the message the person who asked is looking at into one line saying why.

Real parts throughout: the bot over signed HTTP (tests.test_jobs_status's stack), Redis, RQ
with the JSON serializer, the lab over WS-Man/PSRP with latency faults, the Slack Web API
mock. The time limits are made short by setting them where the bot enqueues (they travel
with the job); the killed worker is a real `exauth worker` process, and the job is reaped
by a real `exauth cron` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

import workers.jobs.queues
import workers.warnings.sweep
from tests.test_approvals_slack import wait_until
from tests.test_jobs_status import CHANNEL, Stack, texts
from tests.test_jobs_status import stack_for as stack_for  # the fixture
from workers.jobs.deadline import NOT_STARTED_AFTER, expire_unstarted
from workers.jobs.queues import READ_QUEUE, SERIALIZER, queue

ROOT = Path(__file__).resolve().parent.parent


def slow_lab(stack: Stack, latency_ms: int) -> None:
    """Every answer of every server of the lab comes `latency_ms` late."""
    for server in stack.lab.info["servers"]:
        stack.lab.org.add_fault({"server": server["name"], "endpoint": "any",
                                 "kind": "latency", "latency_ms": latency_ms})


def test_status_past_its_time_limit_is_stopped_and_says_so(
        stack_for: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's own error handling (per-server fallbacks) must not swallow the limit:
    before, the 2 s job ran on for tens of seconds and reported "OK"."""
    stack = stack_for("healthy")
    slow_lab(stack, 1500)
    monkeypatch.setattr(workers.jobs.queues, "READ_TIMEOUT", 2)
    assert stack.command("status").status_code == 200
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    job = stack.enqueued()[0]
    started = time.monotonic()
    stack.work()
    elapsed = time.monotonic() - started

    [update] = stack.updates()  # one word, not a late "OK" as well
    assert update.params["ts"] == placeholder.response["ts"]
    assert update.params["text"] == (
        "Checking lab... attempt 1 failed (the check took longer than its 2 s time limit "
        "and was stopped); retrying in 5 s.")
    assert elapsed < 20, elapsed  # stopped at its limit, not after reading every server
    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED  # a read job is tried again later

    # The same worker process (its Exchange sessions were cut mid-call) reads on fine.
    stack.lab.org.clear_faults()
    scheduled = ScheduledJobRegistry(READ_QUEUE, connection=job.connection,
                                     serializer=SERIALIZER)
    scheduled.schedule(job, datetime.now(UTC))
    stack.work()
    final = stack.updates()[-1]
    assert final.params["ts"] == placeholder.response["ts"]
    assert texts(final)[0] == ":white_check_mark: lab: OK"


def test_operation_start_past_its_time_limit_says_so_in_the_channel(
        stack_for: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    stack = stack_for("expiring-sha1")
    slow_lab(stack, 1500)
    monkeypatch.setattr(workers.jobs.queues, "CHANGE_TIMEOUT", 2)
    assert stack.command("fix").status_code == 200
    stack.slack.wait_for("response")  # "Reading lab and preparing ...; the card follows here."
    stack.work()

    posts = [c for c in stack.slack.calls_of("chat.postMessage")
             if c.params.get("channel") == CHANNEL]
    assert [c.params["text"] for c in posts] == [
        ":x: exauth fix: the check took longer than its 2 s time limit and was stopped"]
    assert not stack.updates()


def test_warnings_sweep_past_its_time_limit_says_so_in_the_org_channel(
        stack_for: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody asked for a sweep, but the channel relies on it: before, a sweep past its
    limit ran on (or failed into the log only) and the channel heard nothing."""
    stack = stack_for("healthy")
    slow_lab(stack, 1500)
    monkeypatch.setattr(workers.warnings.sweep, "READ_TIMEOUT", 2)
    conn = redis.Redis.from_url(stack.redis_url)
    job = workers.warnings.sweep.enqueue_sweep(conn, "lab", run_id="slot-1")
    stack.work()

    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    [said] = stack.slack.calls_of("chat.postMessage")
    assert said.params["channel"] == CHANNEL
    assert said.params["text"] == (
        ":warning: exauth could not run the warnings check of lab: the check took longer "
        "than its 2 s time limit and was stopped. It runs again at its next scheduled time; "
        "`/exauth status lab` checks now.")
    conn.close()


# --- a worker killed mid-job --------------------------------------------------------------


@pytest.fixture()
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, each in its own process group (the worker's rq scheduler
    is a child of it); all of them are stopped after the test."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def exauth(stack: Stack, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`exauth <args>` as its own process, configured like the stack's bot."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(EXAUTH_CONFIG=str(stack.config), REDIS_URL=stack.redis_url,
               PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_killed_worker_turns_the_placeholder_into_one_line(
        stack_for: Callable[..., Stack], processes: list[subprocess.Popen[str]],
        tmp_path: Path) -> None:
    stack = stack_for("healthy")
    slow_lab(stack, 3000)  # the check is still running when the worker is killed
    conn = redis.Redis.from_url(stack.redis_url)
    worker = exauth(stack, tmp_path, "worker")
    processes.append(worker)
    assert stack.command("status").status_code == 200
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    started = StartedJobRegistry(READ_QUEUE, connection=conn, serializer=SERIALIZER)
    [entry] = wait_until(lambda: conn.zrange(started.key, 0, -1), 30,
                         "the worker started the status job")
    job = Job.fetch(entry.decode().split(":", 1)[0], connection=conn, serializer=SERIALIZER)
    # rq records the job in the registry a moment before it marks the job started.
    wait_until(lambda: job.get_status() == JobStatus.STARTED, 10, "the job marked started")

    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its scheduler, mid-job
    worker.wait(timeout=10)
    # rq counts a job as abandoned once its time limit plus a grace has passed without
    # word from its worker; let that time pass now instead of in six minutes.
    conn.zadd(started.key, {entry: time.time() - 1})

    processes.append(exauth(stack, tmp_path, "cron"))
    update = stack.slack.wait_for("chat.update", timeout=30)[0]
    assert update.params["ts"] == placeholder.response["ts"]
    assert update.params["text"] == (
        "Checking lab... attempt 1 failed (the worker running it stopped before it finished "
        "(killed or restarted)); retrying in 5 s.")
    assert "Traceback" not in " ".join(texts(update))
    scheduled = ScheduledJobRegistry(READ_QUEUE, connection=conn, serializer=SERIALIZER)
    # and the check is tried again (rq schedules it just after the callback)
    wait_until(lambda: scheduled.get_job_ids() == [job.id], 10, "the retry is scheduled")
    conn.close()


# --- a check no worker takes ----------------------------------------------------------------


def test_a_check_no_worker_takes_ends_in_one_line(
        stack_for: Callable[..., Stack], processes: list[subprocess.Popen[str]],
        tmp_path: Path) -> None:
    stack = stack_for("healthy")
    conn = redis.Redis.from_url(stack.redis_url)
    assert stack.command("status").status_code == 200  # and no worker runs at all
    placeholder = stack.slack.wait_for("chat.postMessage")[0]
    [job] = stack.enqueued(1)
    # Let the check's time limit pass now instead of in five minutes.
    waited = datetime.now(UTC) - timedelta(seconds=NOT_STARTED_AFTER + 60)
    conn.hset(job.key, "enqueued_at", utcformat(waited))

    processes.append(exauth(stack, tmp_path, "cron"))
    update = stack.slack.wait_for("chat.update", timeout=30)[0]
    assert update.params["ts"] == placeholder.response["ts"]
    assert update.params["text"] == ("Could not check lab: no exauth worker took it within 6 "
                                     "minutes; is `exauth worker` running?")
    # taken off the queue, not retried: a late report would be stale
    assert queue(READ_QUEUE, conn).get_job_ids() == []
    assert job.get_status(refresh=True) == JobStatus.CANCELED


def test_a_retry_no_worker_moves_is_ended_and_fresh_jobs_are_left(
        stack_for: Callable[..., Stack]) -> None:
    stack = stack_for("healthy")
    conn = redis.Redis.from_url(stack.redis_url)
    for _ in range(2):
        assert stack.command("status").status_code == 200
    stack.slack.wait_for("chat.postMessage", count=2)
    retried, fresh = stack.enqueued(2)
    # `retried` failed once and waits as a retry due long ago that no worker moved back.
    read = queue(READ_QUEUE, conn)
    conn.lrem(read.key, 1, retried.id)
    scheduled = ScheduledJobRegistry(READ_QUEUE, connection=conn, serializer=SERIALIZER)
    conn.zadd(scheduled.key, {retried.id: time.time() - NOT_STARTED_AFTER - 5})

    assert expire_unstarted(conn) == [retried.id]
    assert scheduled.get_job_ids() == [] and read.get_job_ids() == [fresh.id]
    [update] = stack.slack.wait_for("chat.update")
    assert update.params["text"].startswith("Could not check lab: no exauth worker took it")
    assert expire_unstarted(conn) == []  # said once
