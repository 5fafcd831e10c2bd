"""`exauth cron` (workers.jobs.cron): one sweep per org per slot, one active scheduler.

Two schedulers run in threads with their own Redis connections on a shared fake clock
(moving a day takes milliseconds); one test starts two real `exauth cron` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from config.load import load_settings
from config.schema import Settings
from workers.jobs.cron import LOCK_KEY, SweepScheduler, enqueue_slot, run
from workers.jobs.queues import SWEEP_QUEUE, queue

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 7, 59, 50, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


def write_config(tmp_path: Path, redis_url: str, crons: dict[str, str]) -> Path:
    (tmp_path / "pw").write_text("x")
    orgs = "".join(
        f'\n[[org]]\nname = "{name}"\nchannel = "C{i}"\nwriter = "ex1.{name}.lab"\n'
        f'[org.exchange]\nurl = "https://ex1.{name}.lab/PowerShell"\nusername = "u"\n'
        f'password_file = "{tmp_path / "pw"}"\n[org.warnings]\ncron = "{cron}"\n'
        for i, (name, cron) in enumerate(crons.items()))
    path = tmp_path / "exauth.toml"
    path.write_text(f'[redis]\nurl = "{redis_url}"\n{orgs}')
    return path


def run_ids(conn: redis.Redis) -> list[str]:
    return [str(job.meta["org"]) + "@" + str(job.meta["run_id"])
            for job in queue(SWEEP_QUEUE, conn).get_jobs()]


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Pair:
    """Two schedulers on one fake clock, each with its own Redis connection, and a third
    connection (`conn`) to look at the queues with."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        self.clock = FakeClock(T0)
        self.said: list[str] = []
        self.first, self.second = (
            SweepScheduler(redis.Redis.from_url(redis_url), settings, clock=self.clock,
                           say=self.said.append, lock_ttl=timedelta(seconds=1),
                           tick=timedelta(milliseconds=20),
                           standby_poll=timedelta(milliseconds=20))
            for _ in range(2))
        self.conn = redis.Redis.from_url(redis_url)
        self._threads: list[threading.Thread] = []

    def start(self, sched: SweepScheduler) -> None:
        thread = threading.Thread(target=sched.start, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        for sched in (self.first, self.second):
            sched.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.conn.close()


@pytest.fixture()
def schedulers(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    settings = load_settings(write_config(tmp_path, redis_url,
                                          {"alpha": "0 8 * * *", "beta": "30 8 * * *"}))
    pair = Pair(redis_url, settings)
    yield pair
    pair.stop()
    monkeypatch.delenv("TZ")
    time.tzset()


def test_two_schedulers_never_both_enqueue_a_sweep(schedulers: Pair) -> None:
    clock, first, second, said, conn = (schedulers.clock, schedulers.first, schedulers.second,
                                        schedulers.said, schedulers.conn)
    schedulers.start(first)
    wait_until(lambda: first.leading)
    schedulers.start(second)
    wait_until(lambda: any("standing by" in line for line in said))
    assert not second.leading

    for _ in range(3):  # three days, two orgs: six slots
        for step in (timedelta(minutes=1), timedelta(minutes=30), timedelta(hours=23, minutes=29)):
            clock.advance(step)
            time.sleep(0.15)
    ids = run_ids(conn)
    assert sorted(ids) == sorted(set(ids)), ids  # no slot twice
    assert len(ids) == 6
    assert "alpha@20250301T0800Z" in ids and "beta@20250303T0830Z" in ids

    # the active one stops: the other takes over without repeating a slot
    first.stop_event.set()
    wait_until(lambda: second.leading)
    clock.advance(timedelta(days=1))
    wait_until(lambda: len(run_ids(conn)) == 8)
    time.sleep(0.2)
    ids = run_ids(conn)
    assert len(ids) == len(set(ids)) == 8


def test_a_slot_is_enqueued_once_even_by_two_leaders(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    slot = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    results = []
    barrier = threading.Barrier(8)

    def race() -> None:
        own = redis.Redis.from_url(redis_url)
        barrier.wait()
        results.append(enqueue_slot(own, "alpha", slot))
        own.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([r for r in results if r is not None]) == 1
    assert run_ids(conn) == ["alpha@20250301T0800Z"]
    conn.close()


def test_no_orgs_is_refused_in_one_line(tmp_path: Path, redis_url: str) -> None:
    said: list[str] = []
    settings = load_settings(write_config(tmp_path, redis_url, {}))
    assert run(settings, say=said.append) == 2
    assert said == ["exauth cron: no [[org]] configured; nothing to schedule."]


def test_two_cron_processes_one_active_one_standing_by(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url, {"alpha": "* * * * *"})
    code = ("import sys; from config.load import load_settings; from workers.jobs.cron import run;"
            f" sys.exit(run(load_settings({str(config)!r})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                      stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      text=True))
        time.sleep(0.3)
    conn = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: conn.get(LOCK_KEY) is not None, timeout=20)
        wait_until(lambda: len(run_ids(conn)) >= 1, timeout=20)  # the catch-up slot
        time.sleep(1.5)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=20)[1] for proc in procs]
    ids = run_ids(conn)
    assert len(ids) == len(set(ids)) and all(i.startswith("alpha@") for i in ids)
    assert sum("active as" in out for out in outputs) == 1, outputs
    assert sum("another scheduler is active" in out for out in outputs) == 1, outputs
    assert all(proc.returncode == 0 for proc in procs)
    assert conn.get(LOCK_KEY) is None  # released on the way out
    conn.close()


def resume_jobs(conn: redis.Redis) -> list[str]:
    from workers.jobs.queues import CHANGE_QUEUE

    return [str(job.meta["run_id"]) for job in queue(CHANGE_QUEUE, conn).get_jobs()
            if job.func_name == "workers.jobs.change_jobs.resume_due_job"]


def test_open_operations_are_resumed_every_quarter_hour_once(schedulers: Pair) -> None:
    schedulers.start(schedulers.first)
    schedulers.start(schedulers.second)
    wait_until(lambda: schedulers.first.leading or schedulers.second.leading)
    for _ in range(4):  # an hour in 15-minute steps
        schedulers.clock.advance(timedelta(minutes=15))
        time.sleep(0.15)
    ids = resume_jobs(schedulers.conn)
    assert len(ids) == len(set(ids)) >= 4, ids  # each quarter hour once (plus a catch-up)
    assert "20250301T0815Z" in ids and "20250301T0845Z" in ids
