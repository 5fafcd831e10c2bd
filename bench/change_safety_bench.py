"""Change safety timings with real processes (issue 11).

Prints:
  1. seconds from a worker's SIGKILL mid-step (New-ExchangeCertificate in flight) to the
     operation card saying "interrupted at step N"; aim <= 120 s (it was about 1,800 s:
     the writer lock lasted the job time limit). Nothing is shortened here: the step's
     lock lapses on its own and `exauth cron` notices.
  2. seconds from Redis answering again after an outage mid-step (`--outage-s`, default
     70 s: longer than the step's 60 s lock) to the step's outcome recorded in the
     operation; aim <= 10 s. The worker process must still be alive.
No assertions: figures to watch. Uses its own redis-server on a free port, the lab, the
Slack mock, real `exauth worker` and `exauth cron` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.serve import start  # noqa: E402
from tests.fixtures_lab import server_entry  # noqa: E402
from tests.process_stack import ProcessStack, RedisProcess, wait_until  # noqa: E402
from tests.slack_mock import SlackMock  # noqa: E402

AIM_INTERRUPTED_S = 120
AIM_RECORDED_S = 10


def setenv(name: str, value: str) -> None:
    os.environ[name] = value


def stack_on(workdir: Path, slack: SlackMock) -> tuple[ProcessStack, RedisProcess]:
    (workdir / "redis").mkdir()
    server = RedisProcess(workdir / "redis")
    server.start()
    return ProcessStack(start("expired"), server.url, slack, workdir, setenv), server


def approve_creation(stack: ProcessStack) -> tuple[str, int]:
    stack.slash("fix")
    value = wait_until(stack.approve_value, 60, "the card asks for the first approval")
    op_id, index = stack.the_op()["id"], json.loads(value)["step"]
    writer = server_entry(stack.handle, stack.handle.writer)["name"]
    stack.handle.org.add_fault({"server": writer, "endpoint": "exchange", "kind": "latency",
                                "latency_ms": 1500})
    stack.approve(value)
    wait_until(lambda: stack.step_state(op_id, index) == "running", 60, "the step runs")
    return op_id, index


def killed_worker(workdir: Path, slack: SlackMock) -> float:
    stack, server = stack_on(workdir, slack)
    try:
        worker = stack.exauth("worker")
        stack.exauth("cron")
        approve_creation(stack)
        killed = time.monotonic()
        stack.kill(worker)
        wait_until(lambda: any("interrupted at step" in stack.card_text(c)
                               for c in stack.cards()), 600, "the card says interrupted")
        return time.monotonic() - killed
    finally:
        stack.close()
        stack.handle.stop()
        server.stop()


def redis_outage(workdir: Path, slack: SlackMock, outage_s: float) -> tuple[float, bool]:
    stack, server = stack_on(workdir, slack)
    try:
        worker = stack.exauth("worker")
        stack.exauth("cron")
        op_id, index = approve_creation(stack)
        server.stop()
        time.sleep(outage_s)
        server.start()
        back = time.monotonic()
        wait_until(lambda: stack.step_state(op_id, index) in ("done", "failed"), 600,
                   "the outcome is recorded")
        return time.monotonic() - back, worker.poll() is None
    finally:
        stack.close()
        stack.handle.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=70.0)
    args = parser.parse_args()
    slack = SlackMock().start()
    try:
        with tempfile.TemporaryDirectory(prefix="exauth-bench-") as tmp:
            (Path(tmp) / "kill").mkdir()
            interrupted = killed_worker(Path(tmp) / "kill", slack)
            print(f"SIGKILL mid-step -> card says interrupted: {interrupted:6.1f} s "
                  f"(aim <= {AIM_INTERRUPTED_S} s)", flush=True)
            slack.calls.clear()
            (Path(tmp) / "outage").mkdir()
            recorded, alive = redis_outage(Path(tmp) / "outage", slack, args.outage_s)
            print(f"Redis back after {args.outage_s:.0f} s -> outcome recorded: "
                  f"{recorded:6.1f} s (aim <= {AIM_RECORDED_S} s); worker "
                  f"{'still running' if alive else 'EXITED'}", flush=True)
    finally:
        slack.stop()


if __name__ == "__main__":
    main()
