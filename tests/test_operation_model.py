"""Operations, steps and approvals as typed objects over the stored format main wrote.

The documents under tests/fixtures/operations/ were captured through the lab from main at
e638855, before these models existed (see the README there): they must load, keep every
field through a save, and an operation loaded once must never overwrite a newer save.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.race import race
from workers import redis_keys
from workers.changes import approval, operation
from workers.changes.change_states import ApprovalState, OperationState, StepState
from workers.changes.operation import Operation, StaleOperation, Step
from workers.changes.step_kind import StepKind

FIXTURES = Path(__file__).parent / "fixtures" / "operations"
DOCUMENTS = ("stage_new-waiting", "import_current-cancelled")
T1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def document(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def store(conn: redis.Redis, doc: dict[str, Any]) -> None:
    """As main's create did: the JSON at the key, and the indexes of an open operation."""
    conn.set(redis_keys.operation(doc["id"]), json.dumps(doc, sort_keys=True))
    if doc["state"] in ("open", "waiting"):
        conn.sadd(redis_keys.org_operations(doc["org"]), doc["id"])
        conn.sadd(redis_keys.open_operations(), doc["id"])


@pytest.fixture()
def conn(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_document_written_by_main_loads_typed_and_serializes_back_unchanged(
        name: str) -> None:
    doc = document(name)
    op = Operation.from_dict(doc)
    assert isinstance(op.state, OperationState) and op.state == doc["state"]
    assert all(isinstance(s, Step) and isinstance(s.kind, StepKind)
               and isinstance(s.state, StepState) for s in op.steps)
    assert [s.kind.value for s in op.steps] == [s["kind"] for s in doc["steps"]]
    assert op.to_dict() == doc  # no field added, dropped or reshaped


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_document_from_before_step_kinds_gets_the_kinds_the_plan_gave(name: str) -> None:
    doc = document(name)
    older = json.loads(json.dumps(doc))
    for step in older["steps"]:
        del step["kind"]
    assert Operation.from_dict(older).to_dict() == doc


def test_fetched_from_main_s_key_changed_and_saved_every_field_is_kept(
        conn: redis.Redis) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)
    op = Operation.fetch(conn, doc["id"])
    assert op is not None and op.waiting_for and op.recorded["new_thumbprint"]
    op.set_step(conn, 4, "done", outcome="reached", now=T1)
    stored = json.loads(conn.get(redis_keys.operation(doc["id"])) or b"null")
    assert stored["version"] == doc["version"] + 1 == op.version
    assert stored["steps"][4]["state"] == "done" and stored["steps"][4]["outcome"] == "reached"
    assert stored["updated_at"] == T1.isoformat()
    unchanged = {k: v for k, v in doc.items() if k not in ("version", "updated_at", "steps")}
    assert {k: stored[k] for k in unchanged} == unchanged
    assert stored["steps"][:4] == doc["steps"][:4] and stored["steps"][5:] == doc["steps"][5:]
    assert operation.load(conn, doc["id"]) == stored  # the id-based form reads the same


def test_a_copy_loaded_before_another_save_raises_stale_and_writes_nothing(
        conn: redis.Redis) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)
    mine = Operation.require(conn, doc["id"])
    theirs = Operation.require(conn, doc["id"])
    mine.step(4).outcome = "mine"
    mine.save(conn, now=T1)
    before = conn.get(redis_keys.operation(doc["id"]))
    theirs.step(4).outcome = "theirs"
    with pytest.raises(StaleOperation, match="changed since it was loaded"):
        theirs.save(conn, now=T1)
    assert conn.get(redis_keys.operation(doc["id"])) == before
    assert theirs.version == doc["version"]  # the loser is left as it was, to reload


def test_change_reloads_and_applies_again_after_a_lost_race(conn: redis.Redis) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)
    op = Operation.require(conn, doc["id"])
    Operation.require(conn, doc["id"]).record(conn, "elsewhere", "x", now=T1)  # someone else
    applied: list[int] = []

    def mutate(draft: Operation) -> None:
        applied.append(draft.version)
        draft.step(5).outcome = "checked"

    op.change(conn, mutate, now=T1)
    assert applied == [doc["version"], doc["version"] + 1]
    stored = operation.require(conn, doc["id"])
    assert stored["recorded"]["elsewhere"] == "x" and stored["steps"][5]["outcome"] == "checked"
    assert op.to_dict() == stored


def test_a_mutation_that_raises_leaves_the_object_and_the_store_as_they_were(
        conn: redis.Redis) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)
    op = Operation.require(conn, doc["id"])

    def bad(draft: Operation) -> None:
        draft.step(4).outcome = "half"
        draft.step(99)

    with pytest.raises(operation.OperationError, match="has no step 99"):
        op.change(conn, bad, now=T1)
    assert op.to_dict() == doc == operation.require(conn, doc["id"])


def test_objects_loaded_once_by_many_writers_lose_no_write(conn: redis.Redis,
                                                          redis_url: str) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)

    def write(client: redis.Redis, i: int) -> None:
        op = Operation.require(client, doc["id"])  # each loads once, then races
        op.record(client, f"writer-{i}", i, now=T1)

    race(8, redis_url, write)
    stored = operation.require(conn, doc["id"])
    assert {f"writer-{i}" for i in range(8)} <= set(stored["recorded"])
    assert stored["version"] == doc["version"] + 8


def test_closing_a_loaded_operation_frees_the_org(conn: redis.Redis) -> None:
    doc = document("stage_new-waiting")
    store(conn, doc)
    op = Operation.require(conn, doc["id"])
    op.close(conn, "cancelled", now=T1)
    assert op.state is OperationState.CANCELLED and not op.is_open
    assert not conn.smembers(redis_keys.org_operations(doc["org"]))
    with pytest.raises(operation.OperationError, match="cannot be reopened"):
        op.state = OperationState.OPEN
        op.save(conn, now=T1)


def test_an_approval_hash_written_by_main_loads_as_an_approval(conn: redis.Redis) -> None:
    hashes = json.loads((FIXTURES / "stage_new-waiting.approvals.json").read_text())
    op_id = document("stage_new-waiting")["id"]
    for step, fields in hashes.items():
        conn.hset(redis_keys.approval(op_id, int(step)), mapping=fields)
        record = approval.Approval.fetch(conn, op_id, int(step))
        assert record is not None and record.state is ApprovalState.DONE
        assert record.step == int(step) and record.decided_by == "U0BOB"
        assert record.to_dict() == approval.get(conn, op_id, int(step))
        assert approval.job_id(record.to_dict()).startswith(f"exauth-{op_id}-{step}-")
        assert not record.claim_for_run(conn)  # done: never run again
        assert record.state is ApprovalState.DONE


def test_an_approval_is_claimed_once_and_finished_as_an_object(conn: redis.Redis) -> None:
    approval.request(conn, "op1", 0, requester="UREQ", ttl_minutes=60, now=T1)
    approval.decide(conn, "op1", 0, user="UBOB", decision="approve", approvers={"UBOB"},
                    now=T1)
    first = approval.Approval.fetch(conn, "op1", 0)
    second = approval.Approval.fetch(conn, "op1", 0)
    assert first is not None and second is not None
    assert first.state is ApprovalState.APPROVED
    assert first.claim_for_run(conn, now=T1) and first.state is ApprovalState.RUNNING
    assert not second.claim_for_run(conn, now=T1)
    assert first.finish(conn, "done", detail="ok", now=T1)
    assert first.state is ApprovalState.DONE and first.detail == "ok"
    assert approval.get(conn, "op1", 0) == first.to_dict()
