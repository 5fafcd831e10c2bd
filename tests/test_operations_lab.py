"""Operations end to end against the lab: real Redis, real pypsrp client, the lab's clock.

Each test starts an operation from the status the lab shows, approves every
state-changing step as an approver would (approval.decide), runs it as the worker does
(workers.jobs.change_jobs), advances the lab clock through the waits, and then checks the lab's
own state and call log: what Exchange would look like afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import SimpleWorker

from config.load import load_settings
from config.schema import OrgSettings
from lab.serve import LabHandle, write_config
from tests.race import race
from workers import audit, redis_keys
from workers.changes import approval, execute, lifecycle, operation
from workers.clock import SYSTEM_CLOCK, CallableClock, Clock, FixedClock
from workers.jobs import change_jobs
from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue
from workers.status.report_model import OrgStatus

APPROVER = "U0BOB"
REQUESTER = "U0ALICE"
AUTH_SUBJECT = "cn=Microsoft Exchange Server Auth Certificate"


@dataclass
class Env:
    handle: LabHandle
    org: OrgSettings
    conn: redis.Redis
    config: Path
    clock: Clock = SYSTEM_CLOCK  # ours, handed to the job functions (the lab's, by default)


def make_config(handle: LabHandle, path: Path, redis_url: str, **org: str) -> Path:
    write_config(handle.info, path, writer=handle.writer)
    extra = {"channel": '"C0OPS"', "approvers": f'["{APPROVER}", "S0ADMINS"]', **org}
    lines = "\n".join(f"{k} = {v}" for k, v in extra.items())
    text = path.read_text().replace('channel = ""\n', lines + "\n")
    path.write_text(text + f'\n[redis]\nurl = "{redis_url}"\n')
    return path


@pytest.fixture()
def env_for(
    make_lab: Callable[..., LabHandle], redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Env]]:
    def _make(scenario: str, **org: str) -> Env:
        handle = make_lab(scenario)
        config = make_config(handle, tmp_path / "exauth.toml", redis_url, **org)
        monkeypatch.setenv("EXAUTH_CONFIG", str(config))
        monkeypatch.setenv("REDIS_URL", redis_url)
        settings = load_settings()
        return Env(handle, settings.orgs[0], redis.Redis.from_url(redis_url), config,
                   CallableClock(handle.org.now))

    yield _make


def start(env: Env, kind: str | None = None, **kw: Any) -> str:
    result = change_jobs.start_operation_job(env.org.name, kind, REQUESTER, clock=env.clock, **kw)
    return str(result["op_id"])


def pending_step(env: Env, op_id: str) -> dict[str, Any]:
    op = operation.load(env.conn, op_id)
    assert op is not None
    index = lifecycle.next_index(op)
    assert index is not None, op
    step = op["steps"][index]
    assert step["state"] == "awaiting_approval", (step, op.get("waiting_for"))
    return step


def approve(env: Env, op_id: str, user: str = APPROVER) -> dict[str, Any]:
    step = pending_step(env, op_id)
    decision = approval.decide(env.conn, op_id, step["index"], user=user, decision="approve",
                               approvers=env.org.approvers, request_id=step["request_id"])
    assert decision.ok, decision.message
    return step


def approve_and_run(env: Env, op_id: str) -> dict[str, Any]:
    step = approve(env, op_id)
    return change_jobs.run_step_job(op_id, step["index"], step["request_id"], clock=env.clock)


def drive(env: Env, op_id: str, limit: int = 120) -> dict[str, Any]:
    """Approve and run every step, advancing the lab clock through every wait."""
    for _ in range(limit):
        op = operation.load(env.conn, op_id)
        assert op is not None
        if op["state"] in operation.CLOSED_STATES:
            return op
        if op["state"] == "waiting":
            due = datetime.fromisoformat(op["resume_at"])
            ahead = due - env.handle.org.now()
            env.handle.org.advance(max(ahead, timedelta(0)) + timedelta(minutes=1))
            change_jobs.resume_due_job(clock=env.clock)
            continue
        approve_and_run(env, op_id)
    raise AssertionError(f"operation {op_id} did not finish: {operation.load(env.conn, op_id)}")


def auth_creations(handle: LabHandle) -> list[dict[str, Any]]:
    return [c for c in handle.org.calls() if c["command"] == "New-ExchangeCertificate"
            and str(c["parameters"].get("SubjectName", "")).lower() == AUTH_SUBJECT.lower()
            and not c["outcome"].startswith("error")]


def all_pools_work(handle: LabHandle) -> bool:
    pools = handle.org.state()["pools"]
    return all(p["works"] for server in pools.values() for p in server.values())


# --- the four procedures -----------------------------------------------------------------


def test_staged_rotation_on_expiring_sha1(env_for: Callable[..., Env]) -> None:
    env = env_for("expiring-sha1")
    old = env.handle.org.state()["auth_config"]["current"]
    op_id = start(env)
    op = drive(env, op_id)

    assert op["state"] == "done", [(s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    assert op["kind"] == "stage_new"
    state = env.handle.org.state()
    new = op["recorded"]["new_thumbprint"]
    assert state["auth_config"]["current"] == new != old
    assert state["auth_config"]["previous"] == ""
    for name, store in state["stores"].items():
        thumbs = {c["thumbprint"]: c for c in store}
        assert new in thumbs, name
        assert old not in thumbs, f"old certificate still on {name}"
    assert len(auth_creations(env.handle)) == 1
    assert all_pools_work(env.handle)
    recycles = [c for c in env.handle.org.calls() if c["command"] == "Restart-WebAppPool"]
    assert {(c["server"], c["parameters"]["Name"]) for c in recycles} >= {
        (s, p) for s in ("ex1", "ex2", "ex3")
        for p in ("MSExchangeOWAAppPool", "MSExchangeECPAppPool")}
    # The old certificate went only after the new one had been current for 24 h.
    published = datetime.fromisoformat(op["recorded"]["published_at"])
    removals = [c for c in env.handle.org.calls() if c["command"] == "Remove-ExchangeCertificate"]
    assert removals and all(
        datetime.fromisoformat(c["time"].replace("Z", "+00:00")) >= published + timedelta(hours=24)
        for c in removals)
    # The new certificate is SHA-256 and the status now has nothing to do.
    _, status = execute.observe(env.org, change_jobs.ExchangeClient(env.org))
    assert status.auth.current is not None and status.auth.current.signature_hash == "sha256"
    assert [a.kind for a in status.actions] == ["none"]
    actions = [e["action"] for e in audit.entries(env.conn, env.org.name, limit=500)]
    assert "operation.start" in actions and "operation.close" in actions


def test_a_lab_clock_moved_ahead_is_followed_by_a_worker_that_keeps_wall_time(
        env_for: Callable[..., Env]) -> None:
    """As with `exauth lab serve` and separate bot and worker processes: nothing here knows
    the lab's clock but what the lab itself says (its writer's Get-Date)."""
    env = replace(env_for("expiring-sha1"), clock=SYSTEM_CLOCK)  # this process keeps wall time
    env.handle.org.advance(timedelta(days=30))  # 10 days left on the lab's clock
    before = status_now(env)
    assert before.auth.current is not None and (before.auth.current.days_left or 0) <= 10
    op_id = start(env)
    op = drive(env, op_id)

    assert op["kind"] == "stage_new" and op["state"] == "done", [
        (s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    staged = [c for c in env.handle.org.calls() if c["command"] == "Set-AuthConfig"
              and "NewCertificateEffectiveDate" in c["parameters"]]
    assert len(staged) == 1 and staged[0]["outcome"] == "ok", staged
    effective = datetime.fromisoformat(
        str(staged[0]["parameters"]["NewCertificateEffectiveDate"]).replace("Z", "+00:00"))
    called = datetime.fromisoformat(staged[0]["time"].replace("Z", "+00:00"))
    assert effective > called > datetime.now(UTC) + timedelta(days=29)  # the lab's future
    assert env.handle.org.state()["auth_config"]["current"] == op["recorded"]["new_thumbprint"]


def test_the_books_follow_the_clock_passed_in_and_decisions_the_orgs(
        env_for: Callable[..., Env]) -> None:
    """Our clock (handed to the job) stamps the operation; what it plans is judged on the
    org's clock (the lab's Get-Date), whatever clock the worker keeps."""
    books = FixedClock(datetime(2031, 5, 6, 7, 8, tzinfo=UTC))
    env = replace(env_for("expiring-sha1"), clock=books)
    op = operation.load(env.conn, start(env))
    assert op is not None
    assert datetime.fromisoformat(op["created_at"]) == books.at
    assert datetime.fromisoformat(op["updated_at"]) == books.at
    judged = datetime.fromisoformat(op["status_checked_at"])
    assert abs(judged - env.handle.org.now()) < timedelta(minutes=1)


def status_now(env: Env) -> OrgStatus:
    _, status = execute.observe(env.org, change_jobs.ExchangeClient(env.org))
    return status


def test_emergency_replacement_on_expired(env_for: Callable[..., Env]) -> None:
    env = env_for("expired")
    assert not all_pools_work(env.handle)
    op_id = start(env)
    op = drive(env, op_id)

    assert op["kind"] == "replace_now" and op["state"] == "done", op
    assert len(auth_creations(env.handle)) == 1
    state = env.handle.org.state()
    assert state["auth_config"]["current"] == op["recorded"]["new_thumbprint"]
    assert state["auth_config"]["previous"] == ""
    env.handle.org.advance("25h")  # cross-site replication reaches Site-B within a day
    assert all_pools_work(env.handle)
    restarts = [c for c in env.handle.org.calls() if c["command"] == "Restart-Service"]
    assert [c["server"] for c in restarts] == ["ex1"]


def test_import_on_missing_on_server(env_for: Callable[..., Env]) -> None:
    env = env_for("missing-on-server")
    current = env.handle.org.state()["auth_config"]["current"]
    op_id = start(env)
    op = drive(env, op_id)

    assert op["kind"] == "import_current", op["kind"]
    assert op["state"] == "done", [(s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    ex3 = {c["thumbprint"] for c in env.handle.org.state()["stores"]["ex3"]}
    assert current in ex3
    imports = [c for c in env.handle.org.calls() if c["command"] == "Import-ExchangeCertificate"]
    assert [c["server"] for c in imports] == ["ex3"]
    assert imports[0]["parameters"]["Password"] == "***"
    assert not auth_creations(env.handle)
    assert all_pools_work(env.handle)
    assert not list(env.conn.scan_iter(match=redis_keys.secret("*", "*"))), "secret outlived op"


def test_backend_repair_on_backend_deleted(env_for: Callable[..., Env]) -> None:
    env = env_for("backend-deleted")
    op_id = start(env)
    op = drive(env, op_id)

    assert op["kind"] == "repair_backend" and op["state"] == "done", op
    new = op["recorded"]["backend_cert:ex2.contoso.lab"]
    binding = env.handle.org.state()["bindings"]["ex2"]
    assert binding["backend"]["certificate_hash"] == new
    assert binding["backend"]["in_store"]
    assert binding["backend_effective"]["certificate_hash"] == new  # iisreset applied it
    creations = [c for c in env.handle.org.calls() if c["command"] == "New-ExchangeCertificate"]
    assert len(creations) == 1 and creations[0]["parameters"]["Server"] == "ex2.contoso.lab"
    assert [c["server"] for c in env.handle.org.calls() if c["command"] == "iisreset"] == ["ex2"]
    assert not [c for c in env.handle.org.calls() if c["command"] == "Enable-ExchangeCertificate"]


# --- safety ------------------------------------------------------------------------------


def test_authconfig_change_between_approval_and_run_stops_the_step(
        env_for: Callable[..., Env]) -> None:
    env = env_for("expiring-sha1")
    op_id = start(env)
    step = approve(env, op_id)
    assert step["cmdlet"] == "New-ExchangeCertificate"
    # Someone stages another certificate by hand after the approval.
    other = env.handle.org.new_certificate(
        "ex2", subject="CN=Microsoft Exchange Server Auth Certificate",
        friendly_name="by hand", domains=[], key_size=2048, exportable=True, services=[])
    env.handle.org.set_next(other.thumbprint, env.handle.org.now() + timedelta(days=30))

    result = change_jobs.run_step_job(op_id, step["index"], step["request_id"], clock=env.clock)

    op = operation.load(env.conn, op_id)
    assert op is not None
    assert op["steps"][step["index"]]["state"] == "failed"
    assert "world changed since approval" in op["steps"][step["index"]]["outcome"]
    assert "next" in op["steps"][step["index"]]["outcome"]
    assert op["state"] == "failed" and result["state"] == "failed"
    assert not auth_creations(env.handle)


def test_worker_killed_after_create_resumes_without_second_certificate(
        env_for: Callable[..., Env], monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated kill: the certificate is created, then the worker dies before recording."""
    env = env_for("expiring-sha1")
    op_id = start(env)
    step = approve(env, op_id)

    class Killed(BaseException):
        pass

    def die(op_id: str, index: int) -> None:
        raise Killed()

    monkeypatch.setattr(execute, "_before_record", die)
    with pytest.raises(Killed):
        change_jobs.run_step_job(op_id, step["index"], step["request_id"], clock=env.clock)
    monkeypatch.setattr(execute, "_before_record", lambda op_id, index: None)
    op = operation.load(env.conn, op_id)
    assert op is not None and op["steps"][step["index"]]["state"] == "running"
    assert "new_thumbprint" not in op["recorded"]
    assert len(auth_creations(env.handle)) == 1

    # A redelivery of the same job does nothing; the resume adopts the created certificate.
    again = change_jobs.run_step_job(op_id, step["index"], step["request_id"], clock=env.clock)
    assert again["events"][0]["state"] == "skipped"
    resumed = change_jobs.resume_job(op_id, "U0ALICE", clock=env.clock)
    op = operation.load(env.conn, op_id)
    assert op is not None
    assert op["steps"][step["index"]]["state"] == "done"
    assert "adopted" in op["steps"][step["index"]]["outcome"]
    assert resumed["next_step"] == step["index"] + 1
    approve_and_run(env, op_id)  # staging uses the adopted certificate
    op = operation.load(env.conn, op_id)
    assert op is not None
    assert env.handle.org.state()["auth_config"]["next"] == op["recorded"]["new_thumbprint"]
    assert len(auth_creations(env.handle)) == 1


def test_concurrent_approvals_run_the_step_once(env_for: Callable[..., Env],
                                                 redis_url: str) -> None:
    """20 approve clicks at once through the real RQ worker: one job, one certificate."""
    env = env_for("expiring-sha1")
    op_id = start(env)
    step = pending_step(env, op_id)
    wins: list[Any] = []

    def click(conn: redis.Redis, _: int) -> None:
        decision = approval.decide(conn, op_id, step["index"], user=APPROVER,
                                   decision="approve", approvers=env.org.approvers,
                                   request_id=step["request_id"])
        if decision.ok:
            wins.append(change_jobs.enqueue_step(conn, decision.record or {}, meta={},
                                              on_success="tests.test_operations_lab.noop",
                                              on_failure="tests.test_operations_lab.noop"))
        else:
            # A losing click may still try to enqueue (a buggy handler); the job id stops it.
            record = approval.get(conn, op_id, step["index"]) or {}
            if record.get("state") in ("approved", "enqueued", "running", "done"):
                queue(CHANGE_QUEUE, conn).enqueue_call(
                    "workers.jobs.change_jobs.run_step_job",
                    args=(op_id, step["index"], step["request_id"]),
                    job_id=approval.job_id(record))

    race(20, redis_url, click)
    assert len(wins) == 1
    worker = SimpleWorker([queue(CHANGE_QUEUE, env.conn)], connection=env.conn,
                          serializer=SERIALIZER)
    worker.work(burst=True)
    assert len(auth_creations(env.handle)) == 1
    op = operation.load(env.conn, op_id)
    assert op is not None and op["steps"][step["index"]]["state"] == "done"


def noop(*args: Any) -> None:
    """Callback stand-in for tests that have no Slack."""


def test_sweep_offers_post_publish_steps_once_the_staged_cert_is_published(
    env_for: Callable[..., Env],
) -> None:
    """Issue 6: the daily sweep follows up open operations; after AuthAdmin published the
    staged certificate, the post-publish steps come up for approval on the card."""
    from rq import SimpleWorker

    from workers.jobs.queues import CHANGE_QUEUE, SERIALIZER, queue
    from workers.warnings.sweep import sweep

    env = env_for("expiring-sha1")
    op_id = start(env)
    for _ in range(40):  # approve and run until the operation waits for publication
        op = operation.load(env.conn, op_id)
        assert op is not None and op["state"] not in operation.CLOSED_STATES
        index = lifecycle.next_index(op)
        if op["state"] == "waiting" and op["steps"][index]["title"] == "Watch for publication":
            break
        if op["state"] == "waiting":
            env.handle.org.advance(datetime.fromisoformat(op["resume_at"])
                                   - env.handle.org.now() + timedelta(minutes=1))
            change_jobs.resume_due_job(clock=env.clock)
            continue
        approve_and_run(env, op_id)
    else:
        raise AssertionError("the operation never reached the publication wait")
    staged = op["recorded"]["new_thumbprint"]

    # Before publication the sweep only nudges the wait along.
    early = sweep(env.org, env.conn, now=env.handle.org.now(), run_id="s0")
    assert early["follow_ups"] == [{"operation": op_id, "offer": "resume"}]
    queue(CHANGE_QUEUE, env.conn).empty()

    env.handle.org.advance(timedelta(days=30, hours=13))  # effective date + an AuthAdmin run
    assert env.handle.org.state()["auth_config"]["current"] == staged
    result = sweep(env.org, env.conn, now=env.handle.org.now(), run_id="s1")
    assert result["follow_ups"] == [{"operation": op_id, "offer": "post_publish"}]
    SimpleWorker([queue(CHANGE_QUEUE, env.conn)], connection=env.conn,
                 serializer=SERIALIZER).work(burst=True)
    step = pending_step(env, op_id)
    assert step["cmdlet"] == "Set-AuthConfig"
    assert [name for name, _ in step["parameters"]] == ["ClearPreviousCertificate", "Confirm"]
