"""Operations: one open per org, optimistic saves, first-writer-wins records, no secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.race import race
from workers import redis_keys
from workers.changes import operation

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WRITER = "ex1.contoso.com"


@dataclass(frozen=True)
class PlanStep:
    """The shape of workers.changes.plan.Step (a frozen dataclass with ordered parameter pairs)."""

    title: str
    server: str
    endpoint: str
    cmdlet: str
    parameters: tuple[tuple[str, Any], ...]
    changes_state: bool
    note: str = ""
    kind: str = "command"


def stage_steps() -> list[Any]:
    return [
        PlanStep("Re-read the auth configuration", WRITER, "exchange", "Get-AuthConfig", (), False,
                 kind="reread_auth_config"),
        {
            "title": "Create the new auth certificate on the writer",
            "kind": "create_auth_cert",
            "server": WRITER,
            "endpoint": "exchange",
            "cmdlet": "New-ExchangeCertificate",
            "parameters": [
                ["Server", WRITER],
                ["KeySize", 2048],
                ["PrivateKeyExportable", True],
                ["SubjectName", "cn=Microsoft Exchange Server Auth Certificate"],
                ["DomainName", []],
                ["Services", "None"],
            ],
            "changes_state": True,
        },
        PlanStep(
            "Export for import",
            WRITER,
            "exchange",
            "Export-ExchangeCertificate",
            (
                ("Thumbprint", "<new thumbprint>"),
                ("BinaryEncoded", True),
                ("Password", "<secret:pfx-password>"),
            ),
            True,
            kind="export_cert",
        ),
    ]


def snapshot(conn: redis.Redis) -> dict[bytes, Any]:
    """Every exauth key with its value, to prove a refusal changed nothing."""
    out: dict[bytes, Any] = {}
    for key in sorted(conn.keys("exauth:*")):
        kind = conn.type(key)
        if kind == b"string":
            out[key] = conn.get(key)
        elif kind == b"set":
            out[key] = sorted(conn.smembers(key))
        elif kind == b"zset":
            out[key] = conn.zrange(key, 0, -1, withscores=True)
    return out


def new_op(conn: redis.Redis, org: str = "contoso", **kw: Any) -> dict[str, Any]:
    return operation.create(conn, org, "stage_new", "UREQ", stage_steps(), T0, **kw)


def test_create_stores_the_document(conn: redis.Redis) -> None:
    op = new_op(conn, card={"channel": "C1", "ts": "1.2"})
    stored = operation.load(conn, op["id"])
    assert stored == op
    assert stored["state"] == "open"
    assert stored["version"] == 1
    assert stored["created_at"] == T0.isoformat()
    assert [s["index"] for s in stored["steps"]] == [0, 1, 2]
    assert {s["state"] for s in stored["steps"]} == {"pending"}
    assert stored["steps"][0]["note"] == ""  # extra plan fields are kept
    assert stored["steps"][2]["parameters"][2] == ["Password", "<secret:pfx-password>"]
    assert stored["steps"][1]["changes_state"] is True
    assert stored["recorded"] == {}
    assert stored["card"] == {"channel": "C1", "ts": "1.2"}
    assert [o["id"] for o in operation.open_ops(conn, "contoso")] == [op["id"]]


def test_a_second_open_operation_for_the_org_is_refused(conn: redis.Redis) -> None:
    first = new_op(conn)
    before = snapshot(conn)
    with pytest.raises(operation.OperationBusy, match=first["id"]) as err:
        operation.create(conn, "contoso", "cleanup", "UOTHER", [], T0)
    assert err.value.op_ids == [first["id"]]
    assert snapshot(conn) == before
    assert new_op(conn, "fabrikam")  # another org is free
    operation.close(conn, first["id"], "done", now=T0)
    assert new_op(conn)  # and the org is free once the first one is closed


def test_concurrent_creates_leave_one_open_operation(conn: redis.Redis, redis_url: str) -> None:
    outcomes: list[str] = []

    def create(client: redis.Redis, _: int) -> None:
        try:
            operation.create(client, "contoso", "replace_now", "UREQ", [], T0)
            outcomes.append("created")
        except operation.OperationBusy:
            outcomes.append("busy")

    race(10, redis_url, create)
    assert outcomes.count("created") == 1
    assert outcomes.count("busy") == 9
    assert len(operation.open_ops(conn)) == 1
    assert len(conn.keys(redis_keys.operation("*"))) == 1


@pytest.mark.parametrize(
    ("steps", "kind", "fragment"),
    [
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Export",
                    "parameters": [["Password", "Hunter2!"]],
                    "changes_state": True,
                }
            ],
            "import_next",
            "steps[0].parameters.Password",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Import",
                    "parameters": {"FileData": "MIIKHwIBAzCCCdsGCSqGSIb3DQEHAaCCCcwE"},
                    "changes_state": True,
                }
            ],
            "import_next",
            "steps[0].parameters.FileData",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Import",
                    "parameters": {"Options": {"pfx_password": "abc"}},
                    "changes_state": True,
                }
            ],
            "import_next",
            "steps[0].parameters.Options.pfx_password",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Import",
                    "parameters": {"FileData": b"\x30\x82"},
                    "changes_state": True,
                }
            ],
            "import_next",
            "not JSON",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Set",
                    "parameters": {"Note": "-----BEGIN RSA PRIVATE KEY-----\nAAAA"},
                    "changes_state": True,
                }
            ],
            "stage_new",
            "shaped like a secret",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "exchange",
                    "cmdlet": "Set",
                    "parameters": {},
                }
            ],
            "stage_new",
            "missing changes_state",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "ftp",
                    "cmdlet": "Set",
                    "parameters": {},
                    "changes_state": False,
                }
            ],
            "stage_new",
            "endpoint",
        ),
        (
            [
                {
                    "title": "x",
                    "server": WRITER,
                    "endpoint": "host",
                    "cmdlet": "Set",
                    "parameters": {},
                    "changes_state": False,
                    "index": 3,
                }
            ],
            "stage_new",
            "index",
        ),
        ([], "wait_replication", "operation.kind"),
    ],
    ids=[
        "password-value",
        "filedata-value",
        "nested-secret",
        "bytes",
        "pem-in-text",
        "no-changes-state",
        "bad-endpoint",
        "bad-index",
        "not-an-operation-kind",
    ],
)
def test_bad_operations_are_refused_and_nothing_is_stored(
    conn: redis.Redis, steps: list[Any], kind: str, fragment: str
) -> None:
    with pytest.raises(
        operation.OperationError, match=fragment.replace("[", r"\[").replace("]", r"\]")
    ) as err:
        operation.create(conn, "contoso", kind, "UREQ", steps, T0)
    assert "\n" not in str(err.value)
    assert "Hunter2" not in str(err.value)
    assert snapshot(conn) == {}


def test_save_with_optimistic_concurrency(conn: redis.Redis) -> None:
    op = new_op(conn)
    mine = operation.load(conn, op["id"])
    theirs = operation.load(conn, op["id"])
    assert mine is not None and theirs is not None

    mine["steps"][0]["state"] = "done"
    saved = operation.save(conn, mine, now=T0)
    assert saved["version"] == 2

    before = snapshot(conn)
    theirs["steps"][0]["state"] = "failed"
    with pytest.raises(operation.StaleOperation, match="reload"):
        operation.save(conn, theirs, now=T0)
    assert snapshot(conn) == before
    assert operation.load(conn, op["id"])["steps"][0]["state"] == "done"  # type: ignore[index]


def test_save_refuses_invalid_or_immutable_changes(conn: redis.Redis) -> None:
    op = new_op(conn)
    before = snapshot(conn)
    bad_secret = operation.load(conn, op["id"])
    bad_secret["steps"][2]["parameters"][2][1] = "RealPassw0rd"  # type: ignore[index]
    with pytest.raises(operation.OperationError, match="Password"):
        operation.save(conn, bad_secret)  # type: ignore[arg-type]
    moved = operation.load(conn, op["id"])
    moved["org"] = "fabrikam"  # type: ignore[index]
    with pytest.raises(operation.OperationError, match="cannot change"):
        operation.save(conn, moved)  # type: ignore[arg-type]
    bad_state = operation.load(conn, op["id"])
    bad_state["steps"][0]["state"] = "half-done"  # type: ignore[index]
    with pytest.raises(operation.OperationError, match="state"):
        operation.save(conn, bad_state)  # type: ignore[arg-type]
    assert snapshot(conn) == before


def test_record_is_first_writer_wins_under_concurrency(conn: redis.Redis, redis_url: str) -> None:
    op = new_op(conn)
    returned: list[str] = []

    def stage(client: redis.Redis, i: int) -> None:
        returned.append(operation.record(client, op["id"], "new_thumbprint", f"{i:040X}"))

    race(20, redis_url, stage)
    stored = operation.load(conn, op["id"])
    assert stored is not None
    winner = stored["recorded"]["new_thumbprint"]
    assert returned == [winner] * 20  # every caller learns the one recorded value
    assert stored["version"] == 2  # recorded once, never overwritten
    assert operation.record(conn, op["id"], "new_thumbprint", "F" * 40) == winner


def test_record_refuses_secret_names_and_missing_operations(conn: redis.Redis) -> None:
    op = new_op(conn)
    before = snapshot(conn)
    with pytest.raises(operation.OperationError):
        operation.record(conn, op["id"], "pfx_password", "x")
    with pytest.raises(operation.OperationError):
        operation.record(conn, op["id"], "thumb", None)
    with pytest.raises(operation.OperationError, match="does not exist"):
        operation.record(conn, "ffffffffffff", "new_thumbprint", "A" * 40)
    assert snapshot(conn) == before


def test_a_stale_copy_cannot_erase_a_recorded_value(conn: redis.Redis) -> None:
    op = new_op(conn)
    stale = operation.load(conn, op["id"])
    operation.record(conn, op["id"], "new_thumbprint", "A" * 40)
    with pytest.raises(operation.StaleOperation):
        operation.save(conn, stale)  # type: ignore[arg-type]
    assert operation.load(conn, op["id"])["recorded"] == {  # type: ignore[index]
        "new_thumbprint": "A" * 40
    }


def test_set_step_and_update(conn: redis.Redis) -> None:
    op = new_op(conn)
    operation.set_step(conn, op["id"], 1, "running", now=T0)
    doc = operation.set_step(
        conn, op["id"], 1, "done", outcome="created A...", now=T0 + timedelta(minutes=2)
    )
    step = doc["steps"][1]
    assert (step["state"], step["outcome"]) == ("done", "created A...")
    assert step["started_at"] == T0.isoformat()
    assert step["finished_at"] == (T0 + timedelta(minutes=2)).isoformat()
    with pytest.raises(operation.OperationError, match="no step 9"):
        operation.set_step(conn, op["id"], 9, "done")


def test_waits_of_days_come_back_when_due(conn: redis.Redis) -> None:
    op = new_op(conn)
    other = new_op(conn, "fabrikam", resume_at=T0 + timedelta(days=30))

    def wait(doc: dict[str, Any]) -> None:
        doc["state"] = "waiting"
        doc["resume_at"] = T0 + timedelta(hours=49)

    operation.update(conn, op["id"], wait)
    assert operation.due_for_resume(conn, T0 + timedelta(hours=48)) == []
    due = operation.due_for_resume(conn, T0 + timedelta(hours=49))
    assert [d["id"] for d in due] == [op["id"]]
    later = operation.due_for_resume(conn, T0 + timedelta(days=31))
    assert {d["id"] for d in later} == {op["id"], other["id"]}
    operation.close(conn, op["id"], "cancelled", now=T0)
    assert [d["id"] for d in operation.due_for_resume(conn, T0 + timedelta(days=31))] == [
        other["id"]
    ]


def test_each_org_s_waits_are_due_on_that_org_s_clock(conn: redis.Redis) -> None:
    from workers.changes.lifecycle import due

    contoso = new_op(conn, "contoso", resume_at=T0 + timedelta(hours=49))
    lab = new_op(conn, "lab", resume_at=T0 + timedelta(hours=49))
    asked: list[str] = []

    def org_now(name: str) -> datetime:  # the lab's clock runs 3 days ahead of contoso's
        asked.append(name)
        return T0 + (timedelta(days=3) if name == "lab" else timedelta(hours=1))

    assert [d.id for d in due(conn, org_now)] == [lab["id"]]
    assert sorted(asked) == ["contoso", "lab"]  # once per org with an operation waiting
    operation.close(conn, lab["id"], "done", now=T0)
    asked.clear()
    assert due(conn, org_now) == [] and asked == ["contoso"]
    assert [d.id for d in due(conn, lambda _: T0 + timedelta(hours=49))] == [contoso["id"]]


def test_close_frees_the_org_and_cannot_be_reopened(conn: redis.Redis) -> None:
    op = new_op(conn)
    closed = operation.close(conn, op["id"], "done", now=T0)
    assert closed["state"] == "done"
    assert closed["closed_at"] == T0.isoformat()
    assert operation.open_ops(conn, "contoso") == []
    assert operation.open_ops(conn) == []
    assert operation.close(conn, op["id"], "done")["version"] == closed["version"]  # idempotent
    before = snapshot(conn)
    with pytest.raises(operation.OperationError, match="already done"):
        operation.close(conn, op["id"], "cancelled")
    reopened = operation.load(conn, op["id"])
    reopened["state"] = "open"  # type: ignore[index]
    with pytest.raises(operation.OperationError, match="cannot be reopened"):
        operation.save(conn, reopened)  # type: ignore[arg-type]
    assert snapshot(conn) == before


def test_a_dangling_index_entry_does_not_block_the_org(conn: redis.Redis) -> None:
    op = new_op(conn)
    conn.delete(operation.op_key(op["id"]))  # e.g. removed by hand
    assert new_op(conn)["state"] == "open"


def test_documents_are_plain_json(conn: redis.Redis) -> None:
    op = new_op(conn)
    raw = conn.get(operation.op_key(op["id"]))
    assert raw is not None
    assert json.loads(raw)["steps"][2]["parameters"][1] == ["BinaryEncoded", True]


def test_outcome_lines_are_scrubbed_not_refused(conn: redis.Redis) -> None:
    op = new_op(conn)
    doc = operation.set_step(conn, op["id"], 2, "failed", outcome="Export failed: password=S3cr3t!")
    assert doc["steps"][2]["outcome"] == "Export failed: password=***"


def test_a_step_runs_once_through_the_whole_flow(conn: redis.Redis) -> None:
    """How bot and worker use the primitives together for one state-changing step."""
    from workers import audit
    from workers.changes import approval, writer_lock

    op = new_op(conn)
    step = 1
    req = approval.request(conn, op["id"], step, requester="UREQ", ttl_minutes=60, now=T0)
    operation.set_step(conn, op["id"], step, "awaiting_approval", now=T0)
    decided = approval.decide(
        conn,
        op["id"],
        step,
        user="UALICE",
        decision="approve",
        reason="",
        approvers={"UALICE"},
        user_groups=set(),
        allow_self_approval=False,
        now=T0 + timedelta(minutes=1),
        request_id=req["request_id"],
    )
    assert decided.ok
    audit.record(
        conn,
        org="contoso",
        actor="UALICE",
        action="approve",
        target=f"{op['id']}/{step}",
        outcome=decided.code,
        now=T0,
    )
    assert approval.mark_enqueued(conn, op["id"], step, approval.job_id(decided.record or {}))

    runs = 0
    for _delivery in range(3):  # the job is delivered three times (redelivery, retries)
        if not approval.claim_for_run(conn, op["id"], step):
            continue
        with writer_lock.held(conn, "contoso", f"job-{op['id']}", 60):
            runs += 1
            operation.set_step(conn, op["id"], step, "running", now=T0)
            thumb = operation.record(conn, op["id"], "new_thumbprint", "AB" * 20)
            operation.set_step(conn, op["id"], step, "done", outcome=f"created {thumb}", now=T0)
        approval.finish(conn, op["id"], step, "done")
        audit.record(
            conn,
            org="contoso",
            actor="worker",
            action="run",
            target=f"{op['id']}/{step}",
            outcome="done",
            now=T0,
        )
    assert runs == 1
    final = operation.load(conn, op["id"])
    assert final is not None
    assert final["steps"][step]["state"] == "done"
    assert final["recorded"] == {"new_thumbprint": "AB" * 20}
    assert [e["action"] for e in audit.entries(conn, org="contoso")] == ["run", "approve"]
    assert writer_lock.holder(conn, "contoso") is None
