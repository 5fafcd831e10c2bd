"""Change safety under faults, with real processes (issue 11).

A real `exauth worker` killed by PID mid-step, a real `redis-server` stopped and started
mid-step, a real `exauth cron`, the lab with latency faults, the bot's bolt app taking
signed commands and clicks, the Slack Web API mock. Each test asserts: at most one new
Auth Certificate, no state-changing command ran twice, the operation ends in a named
state, the card and its thread said what happened, and the audit log has it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from lab.serve import LabHandle
from tests.fixtures_lab import server_entry
from tests.process_stack import ProcessStack, RedisProcess, wait_until
from tests.slack_mock import SlackMock
from tests.test_operations_lab import auth_creations
from workers.changes import writer_lock
from workers.changes.lock_keeper import STEP_LOCK_TTL


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server this test alone uses, so it can stop or pause it."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def stack_with(make_lab: Callable[..., LabHandle], slack: SlackMock, own_redis: RedisProcess,
               tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[Callable[..., ProcessStack]]:
    """`stack_with(scenario)`: a lab, the bot app and the test's own Redis."""
    stacks: list[ProcessStack] = []

    def _make(scenario: str) -> ProcessStack:
        stack = ProcessStack(make_lab(scenario), own_redis.url, slack, tmp_path,
                             monkeypatch.setenv)
        stacks.append(stack)
        return stack

    yield _make
    for stack in stacks:
        stack.close()


def slow_writer(stack: ProcessStack, latency_ms: int) -> None:
    """Every answer of the writer's Exchange endpoint comes late: a step is still waiting
    for New-ExchangeCertificate's answer when the fault hits."""
    name = server_entry(stack.handle, stack.handle.writer)["name"]
    stack.handle.org.add_fault({"server": name, "endpoint": "exchange", "kind": "latency",
                                "latency_ms": latency_ms})


def writer_store(stack: ProcessStack) -> set[str]:
    """Thumbprints in the writer's certificate store, as the lab has them."""
    name = server_entry(stack.handle, stack.handle.writer)["name"]
    return {c["thumbprint"] for c in stack.handle.org.state()["stores"][name]}


def first_approval(stack: ProcessStack) -> tuple[str, str, int]:
    """`/exauth fix` on the expired lab: (operation id, Approve value, step) of the
    certificate creation it asks for first."""
    stack.slash("fix")
    value = wait_until(stack.approve_value, 60, "the card asks for the first approval")
    op = stack.the_op()
    index = json.loads(value)["step"]
    assert (op["kind"], op["steps"][index]["cmdlet"]) == ("replace_now",
                                                           "New-ExchangeCertificate")
    return op["id"], value, index


def test_killed_worker_is_reported_interrupted_and_resume_adopts_its_certificate(
        stack_with: Callable[..., ProcessStack], own_redis: RedisProcess) -> None:
    stack = stack_with("expired")
    worker = stack.exauth("worker")
    stack.exauth("cron")
    op_id, value, index = first_approval(stack)
    slow_writer(stack, 1000)
    stack.approve(value)
    wait_until(lambda: stack.step_state(op_id, index) == "running", 60, "the step runs")
    # From now on Redis takes no writes for a moment (this test's own server): the worker
    # cannot record the certificate it creates, and is killed right then - the worst
    # moment, created and not recorded.
    stack.conn.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
    wait_until(lambda: auth_creations(stack.handle), 60, "New-ExchangeCertificate ran")
    stack.kill(worker)  # SIGKILL: created, not recorded
    stack.conn.execute_command("CLIENT", "UNPAUSE")
    assert stack.step_state(op_id, index) == "running"
    assert stack.the_op()["recorded"] == {}

    # The step's lock is short; a dead worker renews nothing (before: 1,800 s).
    held = stack.lock_holder()
    assert held is not None and held["expires_in_s"] <= STEP_LOCK_TTL
    stack.conn.delete(writer_lock.lock_key(stack.org.name))  # let that minute pass now
    card = wait_until(lambda: [c for c in stack.cards()
                               if "interrupted at step 2" in stack.card_text(c)], 60,
                      "the card says interrupted (exauth cron noticed the dead step)")[0]
    assert f"/exauth resume {op_id}" in stack.card_text(card)
    said = wait_until(lambda: [t for t in stack.thread() if "interrupted" in t], 10)
    assert "stopped before it finished" in said[0] and f"/exauth resume {op_id}" in said[0]
    assert [e["target"] for e in stack.audit() if e["action"] == "operation.interrupted"] == [
        f"{op_id}/2"]

    # `/exauth resume` carries on at once: the created certificate is adopted.
    stack.handle.org.clear_faults()
    stack.exauth("worker")  # what the container restart policy does
    stack.slash(f"resume {op_id}")
    wait_until(lambda: stack.step_state(op_id, index) == "done", 60, "resume adopted")
    resumed = stack.the_op()
    assert len(auth_creations(stack.handle)) == 1
    assert resumed["recorded"]["new_thumbprint"] in writer_store(stack)
    assert resumed["steps"][index]["outcome"].startswith("already done") is False
    assert "adopted" in resumed["steps"][index]["outcome"]
    assert resumed.get("interrupted") is None
    wait_until(lambda: "interrupted at step" not in stack.card_text(stack.cards()[-1]), 30,
               "the card no longer says interrupted")

    final = stack.drive(op_id, {value})
    assert final["state"] == "done", [(s["title"], s["state"], s["outcome"])
                                      for s in final["steps"]]
    stack.assert_safe(final)
    assert len(auth_creations(stack.handle)) == 1
    assert stack.handle.org.state()["auth_config"]["current"] == final["recorded"][
        "new_thumbprint"]
    wait_until(lambda: "done" in stack.cards()[-1].params["text"], 30, "the card says done")
    assert any("adopted" in t for t in stack.thread())
    assert ("operation.resume", "resumed") in [(e["action"], e["outcome"]) for e in stack.audit()]
    wait_until(lambda: ("operation.close", "done") in [(e["action"], e["outcome"])
                                                       for e in stack.audit()], 10, "audited")


def test_worker_rides_out_a_redis_outage_and_confirms_the_step_on_exchange(
        stack_with: Callable[..., ProcessStack], own_redis: RedisProcess) -> None:
    stack = stack_with("expired")
    worker = stack.exauth("worker")
    cron = stack.exauth("cron")
    op_id, value, index = first_approval(stack)
    slow_writer(stack, 1500)
    stack.approve(value)
    wait_until(lambda: stack.step_state(op_id, index) == "running", 60, "the step runs")
    own_redis.stop()  # Redis goes away while the certificate is being created
    wait_until(lambda: auth_creations(stack.handle), 60, "New-ExchangeCertificate ran")
    time.sleep(STEP_LOCK_TTL + 5)  # longer than the step's lock: it lapses meanwhile
    assert worker.poll() is None, stack.log_text()  # before: the worker exited (rc 3)
    assert cron.poll() is None, stack.log_text()
    cards_before = len(stack.cards())

    own_redis.start()
    wait_until(lambda: stack.step_state(op_id, index) == "done", 60,
               "the outcome is recorded after Redis returned")
    assert worker.poll() is None, stack.log_text()
    op = stack.the_op()
    outcome = op["steps"][index]["outcome"]
    assert len(auth_creations(stack.handle)) == 1
    assert op["recorded"]["new_thumbprint"] in writer_store(stack)
    assert "Redis was unreachable during the step" in outcome
    assert "is in the store of" in outcome  # read from Exchange after Redis returned
    assert op.get("interrupted") is None  # the worker took its lock back in the grace
    wait_until(lambda: len(stack.cards()) > cards_before, 30, "the card is updated")
    wait_until(lambda: [t for t in stack.thread() if "Redis was unreachable" in t], 30,
               "the thread says what happened")
    steps = [e for e in stack.audit() if e["action"] == "step:New-ExchangeCertificate"]
    assert [e["outcome"] for e in steps] == ["done"]

    stack.handle.org.clear_faults()
    final = stack.drive(op_id, {value})
    assert final["state"] == "done", [(s["title"], s["state"], s["outcome"])
                                      for s in final["steps"]]
    stack.assert_safe(final)
    assert len(auth_creations(stack.handle)) == 1
    wait_until(lambda: ("operation.close", "done") in [(e["action"], e["outcome"])
                                                       for e in stack.audit()], 10, "audited")


def test_the_next_rotation_reuses_the_certificate_of_one_that_failed(
        stack_with: Callable[..., ProcessStack]) -> None:
    """Before: after a failure at Set-AuthConfig, `/exauth fix` created another one."""
    stack = stack_with("expired")
    stack.exauth("worker")
    first_id, value, index = first_approval(stack)
    stack.approve(value)
    wait_until(lambda: stack.step_state(first_id, index) == "done", 60, "created")
    made = stack.the_op()["recorded"]["new_thumbprint"]
    writer = server_entry(stack.handle, stack.handle.writer)["name"]
    stack.handle.org.add_fault({"server": writer, "endpoint": "any", "kind": "error",
                                "cmdlet": "Set-AuthConfig", "message": "AD is read-only"})
    second = wait_until(lambda: stack.approve_value({value}), 60, "Set-AuthConfig is asked")
    stack.approve(second)
    wait_until(lambda: stack.the_op()["state"] == "failed", 60, "the first operation failed")
    wait_until(lambda: "failed" in stack.cards()[-1].params["text"], 30, "the card says so")

    stack.handle.org.clear_faults()
    stack.slash("fix")
    wait_until(lambda: len(stack.ops()) == 2, 60, "a second operation")
    op_id = stack.ops()[-1]["id"]
    third = wait_until(lambda: stack.approve_value({value, second}), 60, "the create step")
    stack.approve(third)
    wait_until(lambda: stack.step_state(op_id, json.loads(third)["step"]) == "done", 60,
               "the create step is done")
    op = stack.ops()[-1]
    assert op["recorded"]["new_thumbprint"] == made
    outcome = op["steps"][json.loads(third)["step"]]["outcome"]
    assert f"reused {made}, made by earlier operation {first_id}" in outcome
    assert len(auth_creations(stack.handle)) == 1  # not a second one
    wait_until(lambda: [t for t in stack.thread() if f"reused {made}" in t], 30, "said")

    final = stack.drive(op_id, {value, second, third})
    assert final["state"] == "done", [(s["title"], s["state"], s["outcome"])
                                      for s in final["steps"]]
    stack.assert_safe(final)
    assert stack.handle.org.state()["auth_config"]["current"] == made
    steps = [e for e in stack.audit() if e["action"] == "step:New-ExchangeCertificate"]
    assert sorted(e["outcome"] for e in steps) == ["done", "done"]  # created, then reused
    assert any(made in json.dumps(e["detail"]) and "reused" in json.dumps(e["detail"])
               for e in steps)


def test_an_unreachable_server_blocks_the_step_until_resume(
        stack_with: Callable[..., ProcessStack]) -> None:
    """Before: the status said blocked, yet New-ExchangeCertificate ran, and then the
    org-wide Set-AuthConfig, without any override."""
    stack = stack_with("expired")
    stack.exauth("worker")
    op_id, value, index = first_approval(stack)
    stack.handle.org.add_fault({"server": "ex3", "endpoint": "any", "kind": "unreachable"})
    stack.approve(value)
    wait_until(lambda: stack.the_op()["state"] == "blocked", 60, "the operation is blocked")
    assert auth_creations(stack.handle) == []  # nothing ran
    op = stack.the_op()
    assert op["steps"][index]["state"] == "pending"
    assert "ex3.contoso.lab could not be asked" in op["steps"][index]["outcome"]
    card = wait_until(lambda: [c for c in stack.cards()[-1:]
                               if "Blocked at step 2" in stack.card_text(c)], 30, "card")[0]
    assert f"/exauth resume {op_id}" in stack.card_text(card)
    assert "Approve" not in stack.card_text(card)  # no button while blocked
    wait_until(lambda: [t for t in stack.thread() if "ex3.contoso.lab could not be asked"
                        in t], 30, "the thread says so")
    assert [(e["action"], e["outcome"]) for e in stack.audit()
            if e["action"] == "operation.blocked"] == [("operation.blocked", "blocked")]

    stack.handle.org.clear_faults()  # ex3 is back
    stack.slash(f"resume {op_id}")
    again = wait_until(lambda: stack.approve_value({value}), 60, "asked again")
    assert json.loads(again)["step"] == index
    final = stack.drive(op_id, {value})
    assert final["state"] == "done", [(s["title"], s["state"], s["outcome"])
                                      for s in final["steps"]]
    stack.assert_safe(final)
    assert len(auth_creations(stack.handle)) == 1


def test_a_stale_plan_is_superseded_when_the_clock_moved(
        stack_with: Callable[..., ProcessStack]) -> None:
    """Before: 41 days between the card and the click (the current certificate expired
    meanwhile), and the stage_new plan still created a certificate."""
    stack = stack_with("expiring-sha1")
    stack.exauth("worker")
    stack.slash("fix")
    value = wait_until(stack.approve_value, 60, "the card asks for the first approval")
    op = stack.the_op()
    assert op["kind"] == "stage_new"
    stack.handle.org.advance(timedelta(days=41))
    stack.approve(value)
    wait_until(lambda: stack.the_op()["state"] == "superseded", 60, "superseded")
    assert auth_creations(stack.handle) == []  # nothing ran
    op = stack.the_op()
    index = json.loads(value)["step"]
    assert op["steps"][index]["state"] == "skipped"
    assert "no longer call for stage_new" in op["steps"][index]["outcome"]
    assert "Recommended now: replace_now" in op["steps"][index]["outcome"]
    card = wait_until(lambda: [c for c in stack.cards()[-1:]
                               if "Superseded at step 2" in stack.card_text(c)], 30, "card")[0]
    assert "replace_now" in stack.card_text(card) and "superseded" in card.params["text"]
    wait_until(lambda: [t for t in stack.thread() if "Recommended now: replace_now" in t], 30,
               "the thread says what is recommended now")
    assert [(e["action"], e["outcome"]) for e in stack.audit()
            if e["action"] == "operation.close"] == [("operation.close", "superseded")]
    stack.assert_safe(op)
