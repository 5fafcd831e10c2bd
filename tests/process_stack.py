"""Real processes for fault tests and benchmarks: `exauth worker` / `exauth cron` started
as their own process groups (killed by PID), a `redis-server` of the test's own that can be
stopped and started again with its data (append-only file), the bot's bolt app in this
process driven by signed slash commands and clicks, the lab and the Slack mock.

Used by tests/test_change_safety.py and bench/change_safety_bench.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from slack_bolt import App
from slack_sdk import WebClient

from bot.app import create_app
from bot.render import operation_card
from config.load import load_settings
from lab.serve import LabHandle
from tests.conftest import _free_port
from tests.slack_mock import BOT_TOKEN, SIGNING_SECRET, Call, SlackMock
from tests.test_approvals_slack import CHANNEL, click, slash, wait_until
from tests.test_operations_lab import APPROVER, auth_creations, make_config
from workers import audit
from workers.changes import operation, writer_lock
from workers.jobs.cron import enqueue_resume_due

ROOT = Path(__file__).resolve().parent.parent
# Cmdlets that change Exchange: each (server, cmdlet, parameters) must run at most once.
CHANGING = ("New-ExchangeCertificate", "Set-AuthConfig", "Import-ExchangeCertificate",
            "Remove-ExchangeCertificate", "Restart-Service", "Restart-WebAppPool",
            "New-IISSiteBinding", "Remove-IISSiteBinding", "iisreset")
VOLATILE = ("NewCertificateEffectiveDate", "FileData", "Password")


class RedisProcess:
    """A redis-server of one test, on its own port, keeping its data across a stop and a
    start (append-only file, fsync'd on every write) as a restarted production Redis does."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("needs `redis-server` on PATH (apt-get install redis-server)")
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, f"redis-server on port {self.port} answers")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a clean shutdown, the AOF is complete
            self.proc.wait(timeout=15)
        self.proc = None

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False


class ProcessStack:
    """One lab org, its config, the bot app, and the exauth processes a test starts."""

    def __init__(self, handle: LabHandle, redis_url: str, slack: SlackMock, workdir: Path,
                 setenv: Callable[[str, str], None]) -> None:
        self.handle, self.redis_url, self.slack, self.workdir = (
            handle, redis_url, slack, workdir)
        self.config = make_config(handle, workdir / "exauth.toml", redis_url)
        for name, value in {"EXAUTH_CONFIG": str(self.config), "REDIS_URL": redis_url,
                            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                            "SLACK_API_URL": slack.api_url}.items():
            setenv(name, value)
        slack.usergroups.setdefault("S0ADMINS", [])
        self.settings = load_settings()
        self.org = self.settings.orgs[0]
        self.app: App = create_app(self.settings, client=WebClient(token=BOT_TOKEN,
                                                                   base_url=slack.api_url))
        self.conn = redis.Redis.from_url(redis_url)
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []

    # --- processes ------------------------------------------------------------------------

    def exauth(self, *args: str) -> subprocess.Popen[str]:
        """`exauth <args>` as its own process group (a worker's rq scheduler is its child)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        log = self.workdir / f"{args[0]}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bot.cli", *args], cwd=self.workdir,
                                    env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.conn.close()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs)

    # --- Slack -----------------------------------------------------------------------------

    def slash(self, text: str) -> None:
        assert slash(self.app, self.slack, text) == 200

    def approve(self, value: str) -> None:
        assert click(self.app, APPROVER, operation_card.APPROVE_ACTION, value) == 200

    def approve_value(self, clicked: set[str] | frozenset[str] = frozenset()) -> str | None:
        """The Approve button of the newest card version, unless clicked already."""
        cards = self.cards()
        if not cards:
            return None
        blocks = cards[-1].params.get("blocks") or []
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        for block in blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == operation_card.APPROVE_ACTION:
                    value = str(element["value"])
                    return value if value not in clicked else None
        return None

    def cards(self) -> list[Call]:
        """Every version of the operation card Slack was given (posts and updates), oldest
        first (a warnings sweep `exauth cron` catches up may post in the channel too)."""
        return [c for c in self.slack.calls if c.method in ("chat.postMessage", "chat.update")
                and c.params.get("channel") == CHANNEL and not c.params.get("thread_ts")
                and str(c.params.get("text", "")).startswith("exauth ")
                and c.response.get("ok")]

    def card_text(self, call: Call) -> str:
        blocks = call.params.get("blocks") or []
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        return call.params.get("text", "") + "\n" + json.dumps(blocks)

    def thread(self) -> list[str]:
        return [c.params["text"] for c in self.slack.calls_of("chat.postMessage")
                if c.params.get("thread_ts")]

    # --- the operation ---------------------------------------------------------------------

    def ops(self) -> list[dict[str, Any]]:
        """Every operation, oldest first."""
        ids = [i.decode().removeprefix("exauth:op:") for i in self.conn.keys("exauth:op:*")]
        docs = [operation.load(self.conn, i) for i in ids]
        return sorted((d for d in docs if d), key=lambda d: d["created_at"])

    def the_op(self) -> dict[str, Any]:
        ops = self.ops()
        assert len(ops) == 1, [o["id"] for o in ops]
        return ops[0]

    def step_state(self, op_id: str, index: int) -> str:
        op = operation.load(self.conn, op_id)
        return str(op["steps"][index]["state"]) if op else ""

    def lock_holder(self) -> dict[str, Any] | None:
        return writer_lock.holder(self.conn, self.org.name)

    def audit(self) -> list[dict[str, Any]]:
        return audit.entries(self.conn, self.org.name, 1000)

    def drive(self, op_id: str, clicked: set[str], rounds: int = 60) -> dict[str, Any]:
        """Approve every step (the running worker runs them) and move the lab clock through
        every wait (what `exauth cron` enqueues every 15 minutes), until the op closes."""
        for round_ in range(rounds):
            op = operation.load(self.conn, op_id)
            assert op is not None
            if op["state"] in operation.CLOSED_STATES:
                return op
            if op["state"] == "waiting":
                due = datetime.fromisoformat(op["resume_at"]) - self.handle.org.now()
                self.handle.org.advance(max(due, timedelta(0)) + timedelta(minutes=1))
                enqueue_resume_due(self.conn, f"drive-{op_id}-{round_}")
                wait_until(lambda op=op: _moved(self.conn, op), 60, "the resume job ran")
                continue
            value = wait_until(lambda op=op: self.approve_value(clicked) or _moved(self.conn, op),
                               60, f"a new approval or a change of {op_id}")
            if isinstance(value, str):
                clicked.add(value)
                self.approve(value)
                wait_until(lambda op=op: _moved(self.conn, op), 60, "the approved step ran")
        raise AssertionError(f"operation {op_id} did not close")

    def assert_safe(self, op: dict[str, Any]) -> None:
        """What every fault test asserts about Exchange: at most one new Auth Certificate,
        no state-changing command ran twice."""
        assert len(auth_creations(self.handle)) <= 1, auth_creations(self.handle)
        runs = Counter(_signature(c) for c in self.handle.org.calls()
                       if c["command"] in CHANGING and not c["outcome"].startswith("error"))
        assert [sig for sig, n in runs.items() if n > 1] == [], runs


def _moved(conn: redis.Redis, before: Mapping[str, Any]) -> bool:
    now = operation.load(conn, str(before["id"]))
    return now is not None and now["version"] != before["version"] and not any(
        s["state"] in ("approved", "running") for s in now["steps"])


def _signature(call: Mapping[str, Any]) -> str:
    params = {k: v for k, v in call["parameters"].items() if k not in VOLATILE}
    return json.dumps([call["server"], call["command"], params], sort_keys=True, default=str)
