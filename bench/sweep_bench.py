"""Warnings sweep at scale: 200 configured orgs (all on one lab), 2 RQ workers.

Prints:
  1. wall time for the sweeps of every org with 2 worker processes (`exauth worker
     --burst` equivalents), first run (every org posts its warnings to a local Slack mock
     through the RQ callback) and second run (nothing new to say); aim: well inside the
     daily window, < 300 s for 200 orgs;
  2. the Redis memory the warning state takes per org (MEMORY USAGE of every
     exauth:warn:<org>:* key, summed); aim: < 4 KiB per org.
No assertions: these are figures to watch. Uses a throwaway redis-server on a free port
(so no shared database is touched); `--orgs N` for a smaller run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from lab.serve import config_toml, start  # noqa: E402
from tests.slack_mock import BOT_TOKEN, SlackMock  # noqa: E402
from workers import warning_state  # noqa: E402
from workers.warnings.sweep import enqueue_sweep  # noqa: E402

WORKERS = 2
LATENCY_MS = 5
AIM_SECONDS = 300
AIM_BYTES_PER_ORG = 4096
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


def run_workers(env: dict[str, str]) -> float:
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER_CODE], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(WORKERS)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - began


def sweep_all(conn: redis.Redis, names: list[str], env: dict[str, str], run: str) -> float:
    for name in names:
        enqueue_sweep(conn, name, run_id=f"{run}-{name}")
    return run_workers(env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=200)
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

        first = sweep_all(conn, names, env, "first")
        posted_first = len(slack.calls_of("chat.postMessage"))
        second = sweep_all(conn, names, env, "second")
        posted_second = len(slack.calls_of("chat.postMessage")) - posted_first
        sizes = [warning_state.memory_bytes(conn, name) for name in names]

        print(f"sweep bench: {args.orgs} orgs on one lab ({LATENCY_MS} ms per request), "
              f"{WORKERS} workers")
        for label, took, posted in (("first run ", first, posted_first),
                                    ("second run", second, posted_second)):
            print(f"  {label}: {took:7.1f} s total, {1000 * took / args.orgs:6.0f} ms per org, "
                  f"{posted} Slack posts   (aim: < {AIM_SECONDS} s)")
        print(f"  warning state per org: mean {statistics.mean(sizes):.0f} B, "
              f"max {max(sizes)} B, all orgs {sum(sizes) / 1024:.1f} KiB   "
              f"(aim: < {AIM_BYTES_PER_ORG} B per org)")
        print(f"  expected posts: first run {args.orgs} (one warning per org), second run 0")
        conn.close()
    finally:
        slack.stop()
        lab.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
