"""Many workers, one truth: three real `exauth worker` processes on one Redis.

Three worker processes stand in for three hosts. While they run, this test drives, all at
once: an operation whose every approval is enqueued three times (a double click, a Slack
retry, a second bot replica), every sweep slot of several orgs claimed by three cron
processes racing, and an approval on an org whose writer lock another host holds. Then it
looks at what Exchange (the lab's call log), Redis and Slack (the mock) say happened: one
execution per approved step, one sweep per org per slot, no change while the lock was
held by someone else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.registry import FinishedJobRegistry

from config.load import load_settings
from config.schema import OrgSettings
from lab.serve import LabHandle, write_config
from tests.slack_mock import BOT_TOKEN, SlackMock
from workers import audit
from workers.changes import approval, lifecycle, operation, writer_lock
from workers.jobs import change_jobs, cron
from workers.jobs.queues import SERIALIZER, SWEEP_QUEUE

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 3
APPROVER = "U0BOB"
REQUESTER = "U0ALICE"
SWEPT = ["s1", "s2", "s3", "s4"]
WORKER_CODE = ("import sys; from config.load import load_settings; "
               "from workers.jobs.worker_process import run; sys.exit(run(load_settings()))")
CHANGING = ("New-", "Set-", "Remove-", "Import-", "Enable-", "Export-", "Restart-", "iisreset")


def org_block(handle: LabHandle, workdir: Path, name: str, channel: str) -> str:
    """One [[org]] of the config, on that lab, named and channelled as asked."""
    one = write_config(handle.info, workdir / f"{name}.toml", writer=handle.writer).read_text()
    return (one.replace('name = "lab"', f'name = "{name}"')
               .replace('channel = ""', f'channel = "{channel}"\n'
                                        f'approvers = ["{APPROVER}"]'))


@pytest.fixture()
def fleet(make_lab: Callable[..., LabHandle], redis_url: str, slack: SlackMock,
          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    main = make_lab("missing-on-server")
    busy = make_lab("missing-on-server")
    blocks = [org_block(main, tmp_path, "lab", "C0LAB"),
              org_block(busy, tmp_path, "busy", "C0BUSY")]
    # The swept orgs read the lab nothing changes (its writer lock is held): each has the
    # same warning to give, whenever its sweep runs.
    blocks += [org_block(busy, tmp_path, name, f"C0{name.upper()}") for name in SWEPT]
    config = tmp_path / "exauth.toml"
    config.write_text(f'[slack]\napi_url = "{slack.api_url}"\n\n' + "\n".join(blocks)
                      + f'\n[redis]\nurl = "{redis_url}"\n', encoding="utf-8")
    monkeypatch.setenv("EXAUTH_CONFIG", str(config))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER_CODE], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(WORKERS)]
    conn = redis.Redis.from_url(redis_url)
    try:
        yield {"main": main, "busy": busy, "conn": conn, "settings": load_settings(),
               "slack": slack}
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        conn.close()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (released together), their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def approve_thrice(conn: redis.Redis, org: OrgSettings, op_id: str) -> dict[str, Any]:
    """Approve the pending step once and enqueue its job from three places at once."""
    op = operation.require(conn, op_id)
    index = lifecycle.next_index(op)
    assert index is not None, op
    step = op["steps"][index]
    assert step["state"] == "awaiting_approval", step
    decision = approval.decide(conn, op_id, index, user=APPROVER, decision="approve",
                               approvers=org.approvers, request_id=step["request_id"])
    assert decision.ok, decision.message
    record = dict(decision.record or {})
    in_threads(*[lambda: change_jobs.enqueue_step(conn, record)] * 3)
    return record


def settled(conn: redis.Redis, op_id: str, index: int) -> bool:
    record = approval.get(conn, op_id, index) or {}
    return record.get("state") in ("done", "failed")


def drive_through_workers(fleet: dict[str, Any]) -> dict[str, Any]:
    """The operation on "lab", every approval enqueued thrice; the workers run them."""
    conn, handle = fleet["conn"], fleet["main"]
    org = fleet["settings"].org("lab")
    op_id = str(change_jobs.start_operation_job("lab", None, REQUESTER)["op_id"])
    for _ in range(40):
        op = operation.require(conn, op_id)
        if op["state"] in operation.CLOSED_STATES:
            return op
        if op["state"] == "waiting":
            due = datetime.fromisoformat(op["resume_at"])
            handle.org.advance(max(due - handle.org.now(), timedelta(0)) + timedelta(minutes=1))
            change_jobs.resume_due_job()
            continue
        index = int(approve_thrice(conn, org, op_id)["step"])
        wait_until(lambda i=index: settled(conn, op_id, i), f"step {index} of {op_id} ran")
        # The worker that ran it carries the operation on to its next approval.
        wait_until(lambda i=index: _moved_on(conn, op_id, i),
                   f"{op_id} moved on after step {index}")
    raise AssertionError(f"operation {op_id} did not finish")


def _moved_on(conn: redis.Redis, op_id: str, index: int) -> bool:
    op = operation.require(conn, op_id)
    following = lifecycle.next_index(op)
    return op["state"] in operation.CLOSED_STATES or op["state"] == "waiting" or (
        following is not None and following != index
        and op["steps"][following]["state"] == "awaiting_approval")


def race_sweep_slots(fleet: dict[str, Any], slot: datetime) -> list[Any]:
    """Three cron processes claim every org's slot at once; the jobs they enqueued."""
    conn = fleet["conn"]
    claimed: list[Any] = []
    for name in SWEPT:
        jobs = in_threads(*[lambda n=name: cron.enqueue_slot(conn, n, slot)] * 3)
        claimed += [job for job in jobs if job is not None]
    return claimed


def busy_step(fleet: dict[str, Any]) -> tuple[str, int, int]:
    """An approval of a changing step on "busy" while another host holds its writer lock:
    the step must not touch Exchange. Returns (op id, step, changing calls meanwhile)."""
    conn, handle = fleet["conn"], fleet["busy"]
    org = fleet["settings"].org("busy")
    op_id = str(change_jobs.start_operation_job("busy", None, REQUESTER)["op_id"])
    token = writer_lock.acquire(conn, "busy", "another exauth host", 600)
    assert token is not None
    try:
        before = len(changing_calls(handle))
        record = approve_thrice(conn, org, op_id)
        index = int(record["step"])
        wait_until(lambda: settled(conn, op_id, index), "the busy step settled")
        during = len(changing_calls(handle)) - before
    finally:
        writer_lock.release(conn, "busy", token)
    return op_id, index, during


def changing_calls(handle: LabHandle) -> list[dict[str, Any]]:
    return [c for c in handle.org.calls() if c["command"].startswith(CHANGING)]


def test_three_workers_keep_every_guarantee(fleet: dict[str, Any]) -> None:
    conn, slack = fleet["conn"], fleet["slack"]
    slot = datetime.now(UTC).replace(second=0, microsecond=0)
    op, claimed, (busy_op, busy_index, busy_calls) = in_threads(
        lambda: drive_through_workers(fleet),
        lambda: race_sweep_slots(fleet, slot),
        lambda: busy_step(fleet),
    )

    # One execution per approved step: each step ran (and was audited) once, and Exchange
    # saw each change once - the import exports the certificate again in memory (secrets
    # never rest in Redis), so Export-ExchangeCertificate comes twice, once per step.
    assert op["state"] == "done", [(s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    runs = Counter(e["target"].split()[0] for e in audit.entries(conn, "lab", limit=500)
                   if e["action"].startswith("step:"))
    assert runs and all(n == 1 for n in runs.values()), runs
    calls = Counter((c["server"], c["command"], c["parameters"].get("Name"))
                    for c in changing_calls(fleet["main"]) if not c["outcome"].startswith("error"))
    expected = {key: 2 if key[1] == "Export-ExchangeCertificate" else 1 for key in calls}
    assert calls and calls == expected, calls
    assert calls[("ex3", "Import-ExchangeCertificate", None)] == 1
    for index in range(len(op["steps"])):
        record = approval.get(conn, op["id"], index)
        if record is not None:  # each approval ran once, by one worker
            assert record["state"] == "done", (index, record)

    # One sweep per org per slot, whoever claimed it; each warning said once per org.
    assert sorted(job.meta["org"] for job in claimed) == SWEPT
    wait_until(lambda: all(job.get_status(refresh=True) == "finished" for job in claimed),
               "every sweep finished")
    channels = {f"C0{n.upper()}" for n in SWEPT}
    wait_until(lambda: channels <= {c.params.get("channel")
                                    for c in slack.calls_of("chat.postMessage")},
               "every swept org's warning posted")
    finished = FinishedJobRegistry(SWEEP_QUEUE, connection=conn, serializer=SERIALIZER)
    swept = [Job.fetch(i, connection=conn, serializer=SERIALIZER).meta["org"]
             for i in finished.get_job_ids()]
    assert sorted(swept) == SWEPT
    posts = Counter((c.params.get("channel"), c.params.get("text"))
                    for c in slack.calls_of("chat.postMessage")
                    if str(c.params.get("channel", "")).upper() in {f"C0{n.upper()}"
                                                                    for n in SWEPT})
    assert {channel for channel, _ in posts} == {f"C0{n.upper()}" for n in SWEPT}
    assert all(n == 1 for n in posts.values()), posts

    # The writer lock held by another host: the approved step ran once, touched nothing.
    assert busy_calls == 0
    busy = operation.require(conn, busy_op)
    assert busy["steps"][busy_index]["state"] == "failed"
    assert "writer lock" in str(busy["steps"][busy_index]["outcome"])
    record = approval.get(conn, busy_op, busy_index)
    assert record is not None and record["state"] == "failed"
