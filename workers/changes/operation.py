"""Operations: the persisted plan of one change to an org, step by step.

An operation is one JSON document at `exauth:op:<id>` so that a worker killed mid-step, a
restarted bot or a wait of days (`resume_at`) can pick it up where it stopped. Indexes:
`exauth:ops:<org>` (open operations of an org; create refuses a second one, atomically),
`exauth:open_ops` (all open ones) and `exauth:resume` (sorted by resume time).

Writes are optimistic: the document has a `version`; `save` only succeeds when the stored
version is the one that was loaded (checked and written in one Lua call) and raises
StaleOperation otherwise, so two writers never silently overwrite each other. `record` is
the idempotency primitive built on it: a value (the new certificate's thumbprint, written
BEFORE staging it) is set once, and every later caller gets the first value back.

Step parameters are shown on Slack cards and travel in job arguments, so they are checked
to be JSON and free of secrets: a parameter named like a secret may only carry a reference
placeholder (`<secret:pfx-password>`, or {"secret_ref": "pfx-password"}) or a bool/None.

Every step carries its `kind` (workers.changes.step_kind), which decides what it does. Documents
stored before steps had kinds are upgraded as they are loaded (`_with_kinds`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from config.errors import ExauthError
from workers import redis_keys
from workers.audit import contains_secret, is_secret_key, scrub_text
from workers.changes.step_kind import StepKind, legacy_kind
from workers.redis_scripts import LuaScript

KINDS = (
    "stage_new",
    "replace_now",
    "publish_next",
    "import_current",
    "import_next",
    "cleanup",
    "repair_backend",
    "upload_hybrid_key",
)
OPEN_STATES = ("open", "waiting")
CLOSED_STATES = ("done", "failed", "cancelled")
STEP_STATES = ("pending", "awaiting_approval", "approved", "running", "done", "failed", "skipped")
# "" = a step with no remote command (a reminder); "graph" = Microsoft Graph (the dedicated
# hybrid application's keys), not PowerShell.
ENDPOINTS = ("exchange", "host", "graph", "")
SECRET_REF = re.compile(r"^<[^<>\r\n]{1,200}>$")
ATTEMPTS = 200  # optimistic retries before giving up on a hot document

_STEP_FIELDS = (
    "index",
    "title",
    "server",
    "endpoint",
    "cmdlet",
    "parameters",
    "changes_state",
    "state",
    "outcome",
    "started_at",
    "finished_at",
)


class OperationError(ExauthError):
    """A refused operation change; the message is one line naming what is wrong."""


class OperationBusy(OperationError):
    """The org already has an open operation (one per org at a time)."""

    def __init__(self, org: str, op_ids: list[str]) -> None:
        super().__init__(
            f"org {org} already has an open operation ({', '.join(op_ids)}); "
            "finish or cancel it first"
        )
        self.op_ids = op_ids


class StaleOperation(OperationError):
    """The document changed since it was loaded; reload and decide again."""


def op_key(op_id: str) -> str:
    if not isinstance(op_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", op_id):
        raise OperationError(f"not an operation id: {op_id!r}")
    return redis_keys.operation(op_id)


def step_ref(op_id: str, index: int) -> str:
    """A step as people refer to it (audit targets, messages): numbered from 1, as on the
    card and at the terminal, while `steps` is indexed from 0."""
    return f"{op_id}/{index + 1}"


def org_index(org: str) -> str:
    if not isinstance(org, str) or not org:
        raise OperationError("an operation needs a non-empty org name")
    return redis_keys.org_operations(org)


# --- validation (pure) -------------------------------------------------------------------


def is_secret_ref(value: object) -> bool:
    """A placeholder that names a secret the worker resolves at run time."""
    if isinstance(value, str):
        return bool(SECRET_REF.match(value))
    return (
        isinstance(value, Mapping)
        and set(value) == {"secret_ref"}
        and isinstance(value["secret_ref"], str)
        and bool(value["secret_ref"])
    )


def check_parameters(parameters: Any, where: str) -> Any:
    """JSON-safe copy of a step's parameters (a mapping or ordered [name, value] pairs)."""
    try:
        plain = json.loads(json.dumps(parameters, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OperationError(f"{where}: not JSON ({exc})") from None
    if isinstance(plain, dict):
        pairs = list(plain.items())
    elif isinstance(plain, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in plain
    ):
        pairs = [(p[0], p[1]) for p in plain]
    else:
        raise OperationError(f"{where}: must be a mapping or a list of [name, value] pairs")
    for name, value in pairs:
        _check_value(name, value, f"{where}.{name}")
    return plain


def _check_value(name: str, value: Any, where: str) -> None:
    if is_secret_ref(value):
        return
    if is_secret_key(name.lstrip("-")) and not (
        value is None or isinstance(value, bool) or is_secret_ref(value)
    ):
        raise OperationError(
            f"{where}: looks like a secret; pass a reference placeholder such as "
            "<secret:NAME>, never the value"
        )
    if isinstance(value, str) and contains_secret(value):
        raise OperationError(f"{where}: contains something shaped like a secret")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(key, item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(name, item, f"{where}[{i}]")


def new_step(index: int, raw: Any) -> dict[str, Any]:
    """A full step record from a plan step (a mapping or a dataclass such as plan.Step)."""
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        raise OperationError(f"steps[{index}]: must be a mapping")
    step = {
        "index": index,
        "state": "pending",
        "outcome": None,
        "started_at": None,
        "finished_at": None,
        "server": "",
        "endpoint": "",
        "cmdlet": "",
        "parameters": [],
        **dict(raw),
    }
    return check_step(index, step)


def check_step(index: int, step: Any) -> dict[str, Any]:
    where = f"steps[{index}]"
    if not isinstance(step, Mapping):
        raise OperationError(f"{where}: must be a mapping")
    missing = [f for f in _STEP_FIELDS if f not in step]
    if missing:
        raise OperationError(f"{where}: missing {', '.join(missing)}")
    if step["index"] != index:
        raise OperationError(f"{where}.index: is {step['index']!r}, expected {index}")
    for name in ("title", "server", "cmdlet"):
        if not isinstance(step[name], str):
            raise OperationError(f"{where}.{name}: must be text")
    if not step["title"]:
        raise OperationError(f"{where}.title: must not be empty")
    if step["endpoint"] not in ENDPOINTS:
        raise OperationError(f"{where}.endpoint: must be exchange, host or graph")
    if not isinstance(step["changes_state"], bool):
        raise OperationError(f"{where}.changes_state: must be true or false")
    if step["state"] not in STEP_STATES:
        raise OperationError(f"{where}.state: must be one of {', '.join(STEP_STATES)}")
    for name, value in step.items():
        if isinstance(value, str) and contains_secret(value):
            raise OperationError(f"{where}.{name}: contains something shaped like a secret")
    out = dict(step)
    out["parameters"] = check_parameters(step["parameters"], f"{where}.parameters")
    try:
        out["kind"] = StepKind(step.get("kind")).value
    except ValueError:
        raise OperationError(f"{where}.kind: {step.get('kind')!r} is not a step kind") from None
    return out


def check(op: Mapping[str, Any]) -> dict[str, Any]:
    """The document, validated; raises OperationError naming the first bad field."""
    doc = copy.deepcopy(dict(op))
    for name in ("id", "org", "kind", "requester", "created_at", "state", "steps", "version"):
        if name not in doc:
            raise OperationError(f"operation: missing {name}")
    op_key(doc["id"])
    org_index(doc["org"])
    if doc["kind"] not in KINDS:
        raise OperationError(f"operation.kind: must be one of {', '.join(KINDS)}")
    if doc["state"] not in OPEN_STATES + CLOSED_STATES:
        raise OperationError(
            f"operation.state: must be one of {', '.join(OPEN_STATES + CLOSED_STATES)}"
        )
    if not isinstance(doc["version"], int) or isinstance(doc["version"], bool):
        raise OperationError("operation.version: must be an integer")
    if not isinstance(doc["steps"], list):
        raise OperationError("operation.steps: must be a list")
    doc["steps"] = [check_step(i, s) for i, s in enumerate(doc["steps"])]
    doc.setdefault("recorded", {})
    if not isinstance(doc["recorded"], dict):
        raise OperationError("operation.recorded: must be a mapping")
    card = doc.setdefault("card", None)
    if card is not None and not (
        isinstance(card, dict) and all(isinstance(card.get(k), str) for k in ("channel", "ts"))
    ):
        raise OperationError("operation.card: must be {channel, ts} or null")
    resume = doc.setdefault("resume_at", None)
    if isinstance(resume, datetime):
        doc["resume_at"] = _iso(resume)
    elif resume is not None:
        _parse(resume, "operation.resume_at")
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OperationError(f"operation: not JSON ({exc})") from None
    return doc


# --- storage ----------------------------------------------------------------------------

_CREATE = LuaScript("""
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[4] .. id) == 0 then
    redis.call('SREM', KEYS[2], id)
    redis.call('SREM', KEYS[3], id)
  end
end
local busy = redis.call('SMEMBERS', KEYS[2])
if #busy > 0 then return {'busy', busy} end
if not redis.call('SET', KEYS[1], ARGV[2], 'NX') then return {'exists', {}} end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
return {'ok', {}}
""")

_SAVE = LuaScript("""
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing', ''} end
local cur = cjson.decode(raw)
if tonumber(cur['version']) ~= tonumber(ARGV[1]) then
  return {'stale', tostring(cur['version'])}
end
if cur['org'] ~= ARGV[4] or cur['kind'] ~= ARGV[7] then return {'immutable', ''} end
local was_open = cur['state'] == 'open' or cur['state'] == 'waiting'
if ARGV[5] == '1' and not was_open then return {'reopen', cur['state']} end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[3])
end
if ARGV[5] == '1' and ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
end
return {'ok', ''}
""")


def create(
    conn: redis.Redis,
    org: str,
    kind: str,
    requester: str,
    steps: Iterable[Any],
    now: datetime | None = None,
    *,
    card: Mapping[str, str] | None = None,
    resume_at: datetime | None = None,
) -> dict[str, Any]:
    """Persist a new open operation; OperationBusy when the org already has one open."""
    if not requester:
        raise OperationError("an operation needs a requester")
    when = _utc(now)
    doc = check(
        {
            "id": secrets.token_hex(6),
            "org": org,
            "kind": kind,
            "requester": requester,
            "created_at": _iso(when),
            "updated_at": _iso(when),
            "closed_at": None,
            "state": "open",
            "steps": [new_step(i, s) for i, s in enumerate(steps)],
            "recorded": {},
            "card": dict(card) if card else None,
            "resume_at": _iso(resume_at) if resume_at else None,
            "version": 1,
        }
    )
    code, busy = _CREATE(
        conn,
        [op_key(doc["id"]), org_index(org), redis_keys.open_operations(),
         redis_keys.resume_schedule()],
        [doc["id"], _dump(doc), _score(doc["resume_at"]), redis_keys.OPERATION_PREFIX],
    )
    if _str(code) == "busy":
        raise OperationBusy(org, sorted(_str(b) for b in busy))
    if _str(code) != "ok":
        raise OperationError(f"operation id {doc['id']} already exists; try again")
    return doc


def load(conn: redis.Redis, op_id: str) -> dict[str, Any] | None:
    raw = conn.get(op_key(op_id))
    return _with_kinds(json.loads(raw)) if raw is not None else None


def _with_kinds(doc: dict[str, Any]) -> dict[str, Any]:
    """The upgrade path for documents written before steps had a kind: each such step gets
    the one its title and cmdlet meant then (`step_kind.legacy_kind`); the next save keeps
    it, so it is derived once."""
    for step in doc.get("steps") or []:
        if isinstance(step, dict) and "kind" not in step:
            step["kind"] = legacy_kind(str(doc.get("kind") or ""), step).value
    return doc


def save(
    conn: redis.Redis, op: Mapping[str, Any], *, now: datetime | None = None
) -> dict[str, Any]:
    """Write back a loaded document; StaleOperation when someone saved in between."""
    doc = check(op)
    expected = doc["version"]
    doc["version"] = expected + 1
    doc["updated_at"] = _iso(_utc(now))
    is_open = doc["state"] in OPEN_STATES
    code, info = _SAVE(
        conn,
        [op_key(doc["id"]), org_index(doc["org"]), redis_keys.open_operations(),
         redis_keys.resume_schedule()],
        [expected, _dump(doc), doc["id"], doc["org"], "1" if is_open else "0",
         _score(doc["resume_at"]), doc["kind"]],
    )
    code = _str(code)
    if code == "stale":
        raise StaleOperation(
            f"operation {doc['id']} changed since it was loaded (version {expected}, "
            f"stored {_str(info)}); reload it and try again"
        )
    if code == "missing":
        raise OperationError(f"operation {doc['id']} does not exist")
    if code == "immutable":
        raise OperationError(f"operation {doc['id']}: org and kind cannot change")
    if code == "reopen":
        raise OperationError(f"operation {doc['id']} is {_str(info)}; it cannot be reopened")
    return doc


def update(
    conn: redis.Redis,
    op_id: str,
    mutate: Callable[[dict[str, Any]], None],
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Load, change in place with `mutate`, save; repeated on a conflicting write."""
    for _ in range(ATTEMPTS):
        doc = require(conn, op_id)
        mutate(doc)
        try:
            return save(conn, doc, now=now)
        except StaleOperation:
            continue
    raise OperationError(f"operation {op_id} is being changed by too many writers; try again")


def record(
    conn: redis.Redis, op_id: str, key: str, value: Any, *, now: datetime | None = None
) -> Any:
    """Set `recorded[key]` unless it is set already; returns the stored (first) value.

    A worker records the new thumbprint before staging it; a retry calls record again with
    whatever it would create and gets the first value back, so it reuses that instead.
    Recording on a closed operation is allowed: what was created must not be forgotten.
    """
    if not isinstance(key, str) or not key or is_secret_key(key):
        raise OperationError(f"cannot record under {key!r}: not a plain, non-secret name")
    try:
        plain = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OperationError(f"recorded {key}: not JSON ({exc})") from None
    if plain is None:
        raise OperationError(f"recorded {key}: a value is needed")
    if isinstance(plain, str) and contains_secret(plain):
        raise OperationError(f"recorded {key}: contains something shaped like a secret")
    for _ in range(ATTEMPTS):
        doc = require(conn, op_id)
        if key in doc["recorded"]:
            return doc["recorded"][key]
        doc["recorded"][key] = plain
        try:
            save(conn, doc, now=now)
            return plain
        except StaleOperation:
            continue
    raise OperationError(f"operation {op_id} is being changed by too many writers; try again")


def set_step(
    conn: redis.Redis,
    op_id: str,
    index: int,
    state: str,
    *,
    outcome: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Move one step to `state`, stamping started_at/finished_at; returns the saved doc.

    `outcome` is often an error line from Exchange; it is scrubbed of secret-shaped text
    rather than refused, so reporting a failure can never fail itself.
    """
    if outcome is not None:
        outcome = scrub_text(outcome)
    if state not in STEP_STATES:
        raise OperationError(f"step state must be one of {', '.join(STEP_STATES)}")
    stamp = _iso(_utc(now))

    def mutate(doc: dict[str, Any]) -> None:
        if not 0 <= index < len(doc["steps"]):
            raise OperationError(f"operation {op_id} has no step {index}")
        step = doc["steps"][index]
        step["state"] = state
        if outcome is not None:
            step["outcome"] = outcome
        if state == "running":
            step["started_at"] = stamp
        elif state in ("done", "failed", "skipped"):
            step["finished_at"] = stamp

    return update(conn, op_id, mutate, now=now)


def close(
    conn: redis.Redis, op_id: str, state: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """End an operation (done, failed or cancelled); frees the org for the next one."""
    if state not in CLOSED_STATES:
        raise OperationError(f"an operation closes as one of {', '.join(CLOSED_STATES)}")
    for _ in range(ATTEMPTS):
        doc = require(conn, op_id)
        if doc["state"] == state:
            return doc
        if doc["state"] not in OPEN_STATES:
            raise OperationError(f"operation {op_id} is already {doc['state']}")
        doc.update(state=state, closed_at=_iso(_utc(now)), resume_at=None)
        try:
            return save(conn, doc, now=now)
        except StaleOperation:
            continue
    raise OperationError(f"operation {op_id} is being changed by too many writers; try again")


def open_ops(conn: redis.Redis, org: str | None = None) -> list[dict[str, Any]]:
    """Open or waiting operations (of one org, or all), oldest first."""
    ids = conn.smembers(redis_keys.open_operations() if org is None else org_index(org))
    docs = _load_many(conn, sorted(_str(i) for i in ids))
    return sorted((d for d in docs if d["state"] in OPEN_STATES), key=lambda d: d["created_at"])


def due_for_resume(conn: redis.Redis, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open operations whose `resume_at` has come (the sweep re-enqueues them)."""
    when = _utc(now)
    return [d for d in _resumable(conn, when.timestamp())
            if _parse(d["resume_at"], "resume_at") <= when]


def waiting(conn: redis.Redis) -> list[dict[str, Any]]:
    """Open operations with a `resume_at`, due or not (each org's clock decides which are)."""
    return _resumable(conn, "+inf")


def _resumable(conn: redis.Redis, until: float | str) -> list[dict[str, Any]]:
    ids = conn.zrangebyscore(redis_keys.resume_schedule(), "-inf", until)
    docs = _load_many(conn, [_str(i) for i in ids])
    return [d for d in docs if d["state"] in OPEN_STATES and d.get("resume_at")]


def _load_many(conn: redis.Redis, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    raws = conn.mget([op_key(i) for i in ids])
    return [_with_kinds(json.loads(r)) for r in raws if r is not None]


def require(conn: redis.Redis, op_id: str) -> dict[str, Any]:
    """The stored document; OperationError naming the id when there is none."""
    doc = load(conn, op_id)
    if doc is None:
        raise OperationError(f"operation {op_id} does not exist")
    return doc


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, allow_nan=False)


def _score(resume_at: str | None) -> str:
    return repr(_parse(resume_at, "resume_at").timestamp()) if resume_at else ""


def _parse(text: Any, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise OperationError(f"{where}: not an ISO time: {text!r}") from None
    if when.tzinfo is None:
        raise OperationError(f"{where}: needs a timezone")
    return when


def _utc(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise OperationError("`now` must be timezone-aware")
    return when.astimezone(UTC)


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise OperationError("times must be timezone-aware")
    return when.astimezone(UTC).isoformat()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
