"""A Redis that fails over: master, replica and three Sentinels; exauth on redis+sentinel://.

Two `exauth worker` processes and one `exauth cron` run on a `redis+sentinel://` URL, as
does this test's own client (standing in for the bot). With an operation waiting for its
approval and warnings sweeps running, the master is killed; the Sentinels promote the
replica. Then: the pending approval is still there and is approved on the new master, each
step runs once, every swept org says its warning once, and every process is still there,
connected to the new master by itself.

Redis replicates asynchronously, so a write the master acknowledged in its last moment can
be lost with it (README: Running at scale); the test waits for the replica (`WAIT`) before
it kills the master, so what it shows is exauth's part: nothing duplicated, nothing stuck.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.registry import StartedJobRegistry

from lab.serve import LabHandle, write_config
from tests.sentinel_cluster import REDIS_SENTINEL, REDIS_SERVER, SentinelCluster
from tests.slack_mock import BOT_TOKEN, SlackMock
from workers import audit
from workers.changes import approval, lifecycle, operation
from workers.jobs import change_jobs, cron
from workers.jobs.queues import ANSWER_TIMEOUT, SERIALIZER, SWEEP_QUEUE, connect

pytestmark = pytest.mark.skipif(
    not (REDIS_SERVER and REDIS_SENTINEL),
    reason="needs redis-server and redis-sentinel on PATH (.ci/run installs Debian's)")

ROOT = Path(__file__).resolve().parents[1]
APPROVER = "U0BOB"
REQUESTER = "U0ALICE"
SWEPT = ["s1", "s2", "s3", "s4", "s5", "s6"]
CLI = "from bot.cli import main; main()"


@pytest.fixture()
def cluster() -> Iterator[SentinelCluster]:
    started = SentinelCluster().start()
    try:
        yield started
    finally:
        started.stop()


def org_block(handle: LabHandle, workdir: Path, name: str, channel: str) -> str:
    one = write_config(handle.info, workdir / f"{name}.toml", writer=handle.writer).read_text()
    return (one.replace('name = "lab"', f'name = "{name}"')
               .replace('channel = ""', f'channel = "{channel}"\n'
                                        f'approvers = ["{APPROVER}"]'))


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except redis.ConnectionError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def pending(conn: redis.Redis, op_id: str) -> dict[str, Any] | None:
    op = operation.require(conn, op_id)
    index = lifecycle.next_index(op)
    if index is None or op["steps"][index]["state"] != "awaiting_approval":
        return None
    return dict(op["steps"][index])


def approve(bot: redis.Redis, op_id: str, approvers: list[str]) -> int:
    """A person approves the pending step; a click during the failover gets QUEUE_DOWN from
    the bot and is simply made again, as a person would."""
    def once() -> int | None:
        step = pending(bot, op_id)
        if step is None:
            return None
        decision = approval.decide(bot, op_id, step["index"], user=APPROVER,
                                   decision="approve", approvers=approvers,
                                   request_id=step["request_id"])
        assert decision.ok, decision.message
        change_jobs.enqueue_step(bot, dict(decision.record or {}))
        change_jobs.enqueue_step(bot, dict(decision.record or {}))  # a double click
        return int(step["index"])
    return int(wait_until(once, f"a step of {op_id} approved", timeout=60))


def blocked_on(port: int) -> int:
    """Clients blocked waiting for a job (RQ workers' BLPOP) on the Redis at `port`."""
    clients = redis.Redis(port=port, socket_timeout=1).client_list()
    return sum(1 for c in clients if c.get("cmd") in ("blpop", "blmove", "brpoplpush"))


def test_a_failover_mid_sweep_and_mid_approval_loses_and_repeats_nothing(
        cluster: SentinelCluster, make_lab: Callable[..., LabHandle], slack: SlackMock,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = make_lab("missing-on-server")
    swept_lab = make_lab("missing-on-server", latency_ms=40)  # sweeps slow enough to catch
    blocks = [org_block(main, tmp_path, "lab", "C0LAB")]
    blocks += [org_block(swept_lab, tmp_path, name, f"C0{name.upper()}") for name in SWEPT]
    config = tmp_path / "exauth.toml"
    config.write_text(f'[slack]\napi_url = "{slack.api_url}"\n\n' + "\n".join(blocks)
                      + f'\n[redis]\nurl = "{cluster.url}"\n', encoding="utf-8")
    monkeypatch.setenv("EXAUTH_CONFIG", str(config))
    monkeypatch.setenv("REDIS_URL", cluster.url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.delenv("SLACK_API_URL", raising=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = {
        name: subprocess.Popen([sys.executable, "-c", CLI, *command], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, command in (("worker-1", ["worker"]), ("worker-2", ["worker"]),
                              ("cron", ["cron"]))}
    conn = connect(cluster.url)  # as the CLI and workers connect
    bot = connect(cluster.url, timeout=ANSWER_TIMEOUT)  # as the bot connects
    try:
        old = cluster.master_port()
        assert old is not None
        wait_until(lambda: blocked_on(old) == 2, "both workers waiting for jobs")
        wait_until(lambda: conn.exists(cron.LOCK_KEY), "cron active")
        op_id = str(change_jobs.start_operation_job("lab", None, REQUESTER)["op_id"])
        assert pending(conn, op_id) is not None
        slot = datetime.now(UTC).replace(second=0, microsecond=0)
        claimed = [cron.enqueue_slot(conn, name, slot) for name in SWEPT]
        started = StartedJobRegistry(SWEEP_QUEUE, connection=conn, serializer=SERIALIZER)
        wait_until(lambda: started.count > 0, "a sweep running")

        # Mid-sweep, mid-approval: the master dies once the replica has what it acked.
        assert conn.wait(1, 5000) == 1
        cluster.kill_master()
        new = cluster.wait_for_failover(old)

        approvers = ["U0BOB"]
        for _ in range(20):
            op = operation.require(conn, op_id)
            if op["state"] in operation.CLOSED_STATES:
                break
            index = approve(bot, op_id, approvers)
            wait_until(lambda i=index: (approval.get(conn, op_id, i) or {}).get("state")
                       in ("done", "failed"), f"step {index} ran")
            wait_until(lambda i=index: _moved_on(conn, op_id, i), f"{op_id} moved on")
        wait_until(lambda: all(job.get_status(refresh=True) == "finished" for job in claimed),
                   "every sweep finished")
        wait_until(lambda: {f"C0{n.upper()}" for n in SWEPT} <= {
            c.params.get("channel") for c in slack.calls_of("chat.postMessage")},
            "every swept org's warning posted")

        # No lost approval, no step run twice.
        op = operation.require(conn, op_id)
        assert op["state"] == "done", [(s["title"], s["state"], s["outcome"])
                                       for s in op["steps"]]
        runs = Counter(e["target"].split()[0] for e in audit.entries(conn, "lab", limit=500)
                       if e["action"].startswith("step:"))
        assert runs and all(n == 1 for n in runs.values()), runs
        imports = [c for c in main.org.calls() if c["command"] == "Import-ExchangeCertificate"]
        assert len(imports) == 1

        # No duplicate warning: each swept org said each of its warnings once.
        posts = Counter((c.params.get("channel"), c.params.get("text"))
                        for c in slack.calls_of("chat.postMessage")
                        if str(c.params.get("channel")) in {f"C0{n.upper()}" for n in SWEPT})
        assert all(n == 1 for n in posts.values()), posts

        # Every process reconnected by itself: alive, the workers blocked on the new
        # master waiting for jobs, cron renewing its lock there.
        assert all(proc.poll() is None for proc in processes.values()), {
            name: proc.poll() for name, proc in processes.items()}
        wait_until(lambda: blocked_on(new) == 2, "both workers waiting on the new master")
        ttl = conn.pttl(cron.LOCK_KEY)
        wait_until(lambda: conn.pttl(cron.LOCK_KEY) > ttl, "cron renewed its lock",
                   timeout=cron.TICK.total_seconds() * 3)
        assert bot.ping()
    finally:
        for proc in processes.values():
            proc.terminate()
        for proc in processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        conn.close()
        bot.close()


def _moved_on(conn: redis.Redis, op_id: str, index: int) -> bool:
    op = operation.require(conn, op_id)
    following = lifecycle.next_index(op)
    return op["state"] in operation.CLOSED_STATES or op["state"] == "waiting" or (
        following is not None and following != index
        and op["steps"][following]["state"] == "awaiting_approval")
