"""Warnings sweep at scale: 500 configured orgs (all on one lab), 4 RQ worker processes.

Prints, from one run:
  1. wall time for the sweeps of every org with 4 worker processes (`exauth worker
     --burst` equivalents), first run (every org posts its warning to a local Slack mock
     through the RQ callback) and second run (nothing new to say); aim: <= 60 s for 500
     orgs at 5 ms latency per request;
  2. the Redis memory the warning state takes per org (MEMORY USAGE of every
     exauth:warn:<org>:* key, summed); aim: <= 1 KiB per org;
  3. a person's `/exauth status` while the first run's sweeps are queued and running: a
     status job is enqueued the way the bot enqueues it (read queue, read policy, Slack
     callbacks) every `--ask-every` seconds, and the time from enqueue until the job has
     finished (its callback has updated Slack) is its latency; aim: p99 <= 2 s. Sweeps sit
     on their own queue, which every worker takes from last (workers.jobs.queues).
All orgs point at the same lab, so a worker's Exchange sessions are opened once and reused
by every org it sweeps (a real fleet opens one set per org, once per worker process).
No assertions: these are figures to watch. Uses a throwaway redis-server on a free port
(so no shared database is touched); `--orgs N` for a smaller run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from lab.serve import config_toml, start  # noqa: E402
from tests.slack_mock import BOT_TOKEN, SlackMock  # noqa: E402
from workers.jobs.queues import SWEEP_QUEUE, ReadJob, enqueue_reads, queue  # noqa: E402
from workers.warnings import warning_state  # noqa: E402
from workers.warnings.sweep import enqueue_sweep  # noqa: E402

WORKERS = 4
LATENCY_MS = 5
AIM_SECONDS = 60
AIM_BYTES_PER_ORG = 1024
AIM_P99_SECONDS = 2.0
PERSON_CHANNEL = "CPERSON"
STATUS_JOB = "workers.jobs.read_jobs.status_job"
STATUS_READY = "bot.callbacks.job_results.status_ready"
JOB_FAILED = "bot.callbacks.job_results.job_failed"
HEALTHY = ROOT / "lab" / "built_in_scenarios" / "healthy.toml"
WORKER_CODE = ("import sys; from config.load import load_settings; "
               "from workers.jobs.worker_process import run; "
               "sys.exit(run(load_settings(), burst=True))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("sweep_bench: needs `redis-server` on PATH (a throwaway one is started)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("sweep_bench: the throwaway redis-server did not answer")


def write_config(workdir: Path, info: dict, password: str, writer: str, orgs: int,
                 api_url: str) -> Path:
    secret = workdir / "lab.password"
    secret.write_text(password)
    one = config_toml(info, str(secret), writer=writer)
    parts = [f'[slack]\napi_url = "{api_url}"\n']
    for i in range(orgs):
        parts.append(one.replace('name = "lab"', f'name = "org{i:03d}"')
                        .replace('channel = ""', f'channel = "C{i:05d}"'))
    path = workdir / "exauth.toml"
    path.write_text("\n".join(parts))
    return path


def run_workers(env: dict[str, str], during: threading.Event | None = None) -> float:
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER_CODE], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(WORKERS)]
    for proc in procs:
        proc.wait()
    took = time.perf_counter() - began
    if during is not None:
        during.set()
    return took


def sweep_all(conn: redis.Redis, names: list[str], env: dict[str, str], run: str,
              person: Person | None = None) -> float:
    for name in names:
        enqueue_sweep(conn, name, run_id=f"{run}-{name}")
    if person is None:
        return run_workers(env)
    stop = threading.Event()
    asker = threading.Thread(target=person.ask_until, args=(stop,), daemon=True)
    asker.start()
    took = run_workers(env, stop)
    asker.join()
    return took


class Person:
    """Asks `/exauth status` for one org every `every` seconds while the sweeps run, the way
    the bot enqueues it, and keeps how long each answer took (enqueue -> job finished,
    its Slack callback done)."""

    def __init__(self, url: str, org: str, every: float) -> None:
        self.conn = redis.Redis.from_url(url)
        self.org = org
        self.every = every
        self.sweeps = queue(SWEEP_QUEUE, self.conn)
        self.latencies: list[float] = []
        self.unanswered = 0

    def ask_until(self, stop: threading.Event) -> None:
        waiting: list[tuple[float, Any]] = []
        next_ask = time.perf_counter() + self.every
        while not stop.is_set() or waiting:
            now = time.perf_counter()
            # Asked only while sweeps are still queued: burst workers leave once every
            # queue is empty, and a question after that would wait for no one.
            if not stop.is_set() and now >= next_ask and self.sweeps.count > 0:
                meta = {"org": self.org, "kind": "status",
                        "reply": {"channel": PERSON_CHANNEL, "ts": None},
                        "requested_by": "U0BENCH"}
                [job] = enqueue_reads(self.conn, [ReadJob(STATUS_JOB, self.org, meta,
                                                          STATUS_READY, JOB_FAILED)])
                waiting.append((now, job))
                next_ask = now + self.every
            still = []
            for asked, job in waiting:
                status = job.get_status(refresh=True)
                if status in ("finished", "failed", "canceled"):
                    self.latencies.append(time.perf_counter() - asked)
                elif stop.is_set():
                    self.unanswered += 1  # the burst workers left without answering
                else:
                    still.append((asked, job))
            waiting = still
            time.sleep(0.01)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=500)
    parser.add_argument("--ask-every", type=float, default=0.5,
                        help="seconds between a person's status requests during the sweep")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="exauth-sweep-bench-"))
    redis_proc, url = start_redis(workdir)
    scenario = workdir / "auth20.toml"  # every org has one warning to post: 20 days left
    scenario.write_text(HEALTHY.read_text().replace("days_left = 1100", "days_left = 20"))
    lab = start(str(scenario), latency_ms=LATENCY_MS)
    slack = SlackMock().start()
    try:
        config = write_config(workdir, lab.info, lab.password, lab.writer, args.orgs,
                              slack.api_url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EXAUTH_CONFIG": str(config),
               "REDIS_URL": url, "SLACK_BOT_TOKEN": BOT_TOKEN}
        env.pop("SLACK_API_URL", None)
        conn = redis.Redis.from_url(url)
        names = [f"org{i:03d}" for i in range(args.orgs)]
        person = Person(url, names[0], args.ask_every)

        first = sweep_all(conn, names, env, "first", person)
        posted_first = _sweep_posts(slack)
        second = sweep_all(conn, names, env, "second")
        posted_second = _sweep_posts(slack) - posted_first
        sizes = [warning_state.memory_bytes(conn, name) for name in names]

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"sweep bench: {args.orgs} orgs on one lab ({LATENCY_MS} ms per request), "
              f"{WORKERS} worker processes; machine: {os.cpu_count()} CPUs, load average "
              f"{load}")
        for label, took, posted in (("first run ", first, posted_first),
                                    ("second run", second, posted_second)):
            print(f"  {label}: {took:7.1f} s total, {1000 * took / args.orgs:6.0f} ms per org, "
                  f"{posted} Slack posts   aim: <= {AIM_SECONDS} s")
        print(f"  warning state per org: mean {statistics.mean(sizes):.0f} B, "
              f"max {max(sizes)} B, all orgs {sum(sizes) / 1024:.1f} KiB   "
              f"aim: <= {AIM_BYTES_PER_ORG} B per org")
        print(f"  expected posts: first run {args.orgs} (one warning per org), second run 0")
        lat = person.latencies
        if lat:
            print(f"  a person's status during the first run: {len(lat)} asked, p50 "
                  f"{statistics.median(lat):.2f} s, p99 {person.p99():.2f} s, max "
                  f"{max(lat):.2f} s, {person.unanswered} unanswered   "
                  f"aim: p99 <= {AIM_P99_SECONDS:g} s")
        else:
            print("  a person's status during the first run: none asked (the run was too short)")
        conn.close()
        person.conn.close()
    finally:
        slack.stop()
        lab.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _sweep_posts(slack: SlackMock) -> int:
    """Warnings posted by sweeps (a person's answers go to their own channel)."""
    return sum(1 for call in slack.calls_of("chat.postMessage")
               if call.params.get("channel") != PERSON_CHANNEL)


if __name__ == "__main__":
    raise SystemExit(main())
