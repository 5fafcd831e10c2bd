"""Every Redis key exauth writes comes from workers.redis_keys, and its string never changes.

The strings are the stored format: an upgrade must still find what the previous release
wrote (open operations, approvals, locks, warning state, the audit log), so each one is
pinned here byte for byte, and no other module may spell an `exauth:` key itself.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from workers import audit, redis_keys
from workers.changes import approval, execute, operation, writer_lock
from workers.jobs import cron
from workers.warnings import warning_state

ROOT = Path(__file__).resolve().parent.parent

PINNED = [
    (redis_keys.writer_lock("contoso"), "exauth:lock:contoso"),
    (redis_keys.writer_lock("_cron"), "exauth:lock:_cron"),
    (redis_keys.lockless("4f2a9c", 1), "exauth:lockless:4f2a9c:1"),
    (redis_keys.secret("a1b2c3", "pfx-password"), "exauth:secret:a1b2c3:pfx-password"),
    (redis_keys.secrets_of("a1b2c3"), "exauth:secret:a1b2c3:*"),
    (redis_keys.cron_slot("contoso", "20250301T0800Z"), "exauth:cron:slot:contoso:20250301T0800Z"),
    (redis_keys.operation("a1b2c3"), "exauth:op:a1b2c3"),
    (redis_keys.OPERATION_PREFIX, "exauth:op:"),
    (redis_keys.org_operations("contoso"), "exauth:ops:contoso"),
    (redis_keys.open_operations(), "exauth:open_ops"),
    (redis_keys.resume_schedule(), "exauth:resume"),
    (redis_keys.approval("a1b2c3", 0), "exauth:approval:a1b2c3:0"),
    (redis_keys.warning_state("contoso", "auth:current:AB"),
     "exauth:warn:contoso:s:auth:current:AB"),
    (redis_keys.warning_index("contoso"), "exauth:warn:contoso:index"),
    (redis_keys.warning_claim("contoso", "auth:current:AB"),
     "exauth:warn:contoso:claim:auth:current:AB"),
    (redis_keys.warning_clock("contoso"), "exauth:warn:contoso:clock"),
    (redis_keys.audit_stream(), "exauth:audit"),
    (redis_keys.org_audit_stream("contoso"), "exauth:audit:contoso"),
    (redis_keys.slack_delivery("1234.5678.abcd"), "exauth:dedupe:1234.5678.abcd"),
    (redis_keys.rehearsal("contoso", "stage_new"), "exauth:rehearsal:contoso:stage_new"),
    (redis_keys.last_status("contoso"), "exauth:status:contoso"),
    (redis_keys.job_durations("status"), "exauth:metrics:jobs:status"),
    (redis_keys.job_duration_kinds(), "exauth:metrics:job_kinds"),
    (redis_keys.slack_errors(), "exauth:metrics:slack_errors"),
    (redis_keys.home_viewers(), "exauth:home:viewers"),
]


@pytest.mark.parametrize(("built", "stored"), PINNED, ids=[s for _, s in PINNED])
def test_every_key_string_is_pinned(built: str, stored: str) -> None:
    assert built == stored


def test_every_key_function_is_pinned() -> None:
    """A key added to redis_keys without a pin above fails here."""
    functions = {name for name, value in vars(redis_keys).items()
                 if callable(value) and not name.startswith("_")
                 and getattr(value, "__module__", "") == redis_keys.__name__}
    source = Path(__file__).read_text()
    assert functions and all(f"redis_keys.{name}(" in source for name in functions), functions


def test_the_modules_build_their_keys_from_redis_keys() -> None:
    slot = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert writer_lock.lock_key("contoso") == "exauth:lock:contoso"
    assert cron.LOCK_KEY == "exauth:lock:_cron"
    assert cron.slot_key("contoso", slot) == "exauth:cron:slot:contoso:20250301T0800Z"
    assert execute.secret_key("a1b2c3", "pfx") == "exauth:secret:a1b2c3:pfx"
    assert operation.op_key("a1b2c3") == "exauth:op:a1b2c3"
    assert operation.org_index("contoso") == "exauth:ops:contoso"
    assert approval.approval_key("a1b2c3", 2) == "exauth:approval:a1b2c3:2"
    assert warning_state.state_key("contoso", "k") == "exauth:warn:contoso:s:k"
    assert warning_state.index_key("contoso") == "exauth:warn:contoso:index"
    assert warning_state.claim_key("contoso", "k") == "exauth:warn:contoso:claim:k"
    assert warning_state.clock_key("contoso") == "exauth:warn:contoso:clock"
    assert audit.org_stream("contoso") == "exauth:audit:contoso"


def _key_literals(path: Path) -> list[str]:
    """String constants (f-string parts too) that start like a key: `exauth:x`, no space."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("exauth:") and node.value[7:8].strip()):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_spells_a_key_itself() -> None:
    spelled = [hit for package in ("bot", "workers", "config")
               for path in sorted((ROOT / package).rglob("*.py"))
               if path.name != "redis_keys.py"
               for hit in _key_literals(path)]
    assert spelled == []


def test_data_stored_under_the_old_strings_is_found(conn: redis.Redis) -> None:
    """What today's release wrote, at the literal keys it used, is read by the new code."""
    doc = {
        "id": "0123456789ab", "org": "contoso", "kind": "cleanup", "requester": "UREQ",
        "created_at": "2025-03-01T12:00:00+00:00", "updated_at": "2025-03-01T12:00:00+00:00",
        "closed_at": None, "state": "open", "steps": [], "recorded": {}, "card": None,
        "resume_at": None, "version": 1,
    }
    conn.set("exauth:op:0123456789ab", json.dumps(doc, sort_keys=True))
    conn.sadd("exauth:ops:contoso", "0123456789ab")
    conn.sadd("exauth:open_ops", "0123456789ab")
    assert operation.load(conn, "0123456789ab") == doc
    assert [d["id"] for d in operation.open_ops(conn)] == ["0123456789ab"]
    assert [d["id"] for d in operation.open_ops(conn, "contoso")] == ["0123456789ab"]
    with pytest.raises(operation.OperationBusy):
        operation.create(conn, "contoso", "cleanup", "UREQ", [])

    conn.hset("exauth:approval:0123456789ab:0", mapping={"state": "pending", "step": "0"})
    assert (approval.get(conn, "0123456789ab", 0) or {}).get("state") == "pending"

    conn.set("exauth:lock:contoso", json.dumps(
        {"token": "f" * 32, "owner": "old-worker", "acquired_at": "2025-03-01T12:00:00+00:00"}),
        px=30_000)
    with (
        pytest.raises(writer_lock.LockBusy, match="old-worker holds its writer lock"),
        writer_lock.held(conn, "contoso", "new-worker", 30),
    ):
        pass  # pragma: no cover - never entered

    conn.xadd("exauth:audit:contoso", {"org": "contoso", "action": "fix", "detail": "{}"})
    assert [e["action"] for e in audit.entries(conn, "contoso")] == ["fix"]
