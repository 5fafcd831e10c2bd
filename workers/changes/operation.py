"""Operations: the persisted plan of one change to an org, step by step, as typed objects.

An operation is one JSON document at `exauth:op:<id>` so that a worker killed mid-step, a
restarted bot or a wait of days (`resume_at`) can pick it up where it stopped. Indexes:
`exauth:ops:<org>` (open operations of an org; create refuses a second one, atomically),
`exauth:open_ops` (all open ones) and `exauth:resume` (sorted by resume time).

`Operation` (with its `Step`s) is the document as an object that loads, saves and
serializes itself, as rq's Job does: `Operation.fetch(conn, id)`, `op.save(conn)`,
`op.to_dict()`. A job loads it once and changes it in memory; every write is a
compare-and-set on its `version` (checked and written in one Lua call) and raises
StaleOperation when someone saved in between, so two writers never silently overwrite each
other. `op.change(conn, mutate)` is the retrying form: on a lost race it reloads the object
and applies `mutate` again. `op.record` is the idempotency primitive built on it: a value
(the new certificate's thumbprint, written BEFORE staging it) is set once, and every later
caller gets the first value back.

The stored format is the one main wrote before these models (field names, JSON, key):
`to_dict` gives back exactly the fields a document has (fields it never had stay absent),
unknown fields are kept, and steps stored before steps had kinds get theirs on load
(`_with_kinds`). Checks of a document before it is written: workers.changes.document_checks.

The module functions (`load`, `require`, `update`, `record`, `set_step`, `close`, ...) are
the one-shot form for callers that hold only an id (a button in the bot, the CLI, tests);
each loads the document once and works on it as above.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers import redis_keys
from workers.audit import contains_secret, is_secret_key, scrub_text
from workers.changes.change_states import (
    CLOSED_STATES,
    FINISHED_STEP_STATES,
    OPEN_STATES,
    STEP_STATES,
    OperationState,
    StepState,
)
from workers.changes.document_checks import (  # noqa: F401  (the names callers know)
    ATTEMPTS,
    ENDPOINTS,
    KINDS,
    SECRET_REF,
    OperationBusy,
    OperationError,
    StaleOperation,
    _iso,
    _parse,
    check,
    check_parameters,
    check_step,
    is_secret_ref,
    new_step,
    op_key,
    org_index,
    step_ref,
)
from workers.changes.step_kind import StepKind, legacy_kind
from workers.redis_scripts import LuaScript

__all__ = [
    "CLOSED_STATES", "OPEN_STATES", "STEP_STATES", "Operation", "OperationBusy",
    "OperationError", "OperationState", "StaleOperation", "Step", "StepState",
]


class _Document(BaseModel):
    """A part of the stored JSON: unknown fields are kept, and only the fields it has (was
    loaded with, or was given since) are written back."""

    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class Step(_Document):
    """One stored step. `kind` decides what it does; `title` is text for people."""

    index: int
    title: str
    kind: StepKind
    server: str = ""
    endpoint: str = ""
    cmdlet: str = ""
    parameters: Any = Field(default_factory=list)  # [[name, value], ...] (or a mapping)
    changes_state: bool
    note: str = ""
    state: StepState = StepState.PENDING
    outcome: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Of a state-changing step, once its approval is requested:
    fingerprint: dict[str, Any] | None = None  # the facts it is approved on
    request_id: str | None = None  # the approval round (workers.changes.approval)
    expires_at: str | None = None
    batch: list[int] | None = None  # the steps one approval covers
    denied: dict[str, str] | None = None  # {by, reason}, kept for the card

    def param(self, name: str) -> Any:
        """The value of parameter `name` (None when the step has none)."""
        for key, value in self.param_pairs():
            if key == name:
                return value
        return None

    def param_pairs(self) -> list[tuple[str, Any]]:
        raw = self.parameters or []
        return list(raw.items()) if isinstance(raw, dict) else [(p[0], p[1]) for p in raw]


class Operation(_Document):
    """One operation document; see the module docstring for how it is read and written."""

    id: str
    org: str
    kind: str  # one of KINDS
    requester: str
    created_at: str
    updated_at: str | None = None
    closed_at: str | None = None
    state: OperationState
    steps: list[Step]
    recorded: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] | None = None
    resume_at: str | None = None
    version: int
    # Set when it starts (workers.changes.lifecycle.start):
    targets: list[str] = Field(default_factory=list)
    reason: str = ""
    override: bool = False
    status_checked_at: str | None = None
    fingerprint: dict[str, Any] | None = None
    stores_before: dict[str, list[str]] = Field(default_factory=dict)
    hybrid: bool = False
    waiting_for: str | None = None

    # --- loading -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Operation:
        """The object of a stored (or stored-format) document; OperationError if it is not
        one. Steps without a kind get the one they had in the old format."""
        try:
            return cls.model_validate(_with_kinds(copy.deepcopy(dict(doc))))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "operation"
            raise OperationError(f"operation {doc.get('id')!r}: {where}: {first['msg']}"
                                 ) from None

    @classmethod
    def of(cls, op: Operation | Mapping[str, Any]) -> Operation:
        """An object over a document someone hands over (a card to render, a summary to
        make): itself if it is one; a plain document as it is, not checked again (loading
        from Redis checks, `fetch`), its states and kinds as enums where they are ones."""
        if isinstance(op, Operation):
            return op
        fields = dict(op)
        fields["state"] = _enum(OperationState, fields.get("state"))
        fields["steps"] = [
            Step.model_construct(**{**s, "kind": _enum(StepKind, s.get("kind")),
                                    "state": _enum(StepState, s.get("state"))})
            for s in fields.get("steps") or []]
        return cls.model_construct(**fields)

    @classmethod
    def fetch(cls, conn: redis.Redis, op_id: str) -> Operation | None:
        raw = conn.get(op_key(op_id))
        return cls.from_dict(json.loads(raw)) if raw is not None else None

    @classmethod
    def require(cls, conn: redis.Redis, op_id: str) -> Operation:
        """The stored operation; OperationError naming the id when there is none."""
        op = cls.fetch(conn, op_id)
        if op is None:
            raise OperationError(f"operation {op_id} does not exist")
        return op

    @classmethod
    def fetch_many(cls, conn: redis.Redis, ids: list[str]) -> list[Operation]:
        if not ids:
            return []
        raws = conn.mget([op_key(i) for i in ids])
        return [cls.from_dict(json.loads(r)) for r in raws if r is not None]

    def reload(self, conn: redis.Redis) -> None:
        """Become what is stored now (after a lost race)."""
        self._adopt(Operation.require(conn, self.id))

    # --- creating and saving ---------------------------------------------------------------

    @classmethod
    def create(
        cls, conn: redis.Redis, org: str, kind: str, requester: str, steps: Iterable[Any],
        now: datetime | None = None, *, card: Mapping[str, str] | None = None,
        resume_at: datetime | None = None, **fields: Any,
    ) -> Operation:
        """Persist a new open operation (with any further top-level `fields`, written in
        the same call); OperationBusy when the org already has one open."""
        if not requester:
            raise OperationError("an operation needs a requester")
        when = _utc(now)
        doc = check({
            "id": secrets.token_hex(6), "org": org, "kind": kind, "requester": requester,
            "created_at": _iso(when), "updated_at": _iso(when), "closed_at": None,
            "state": "open", "steps": [new_step(i, s) for i, s in enumerate(steps)],
            "recorded": {}, "card": dict(card) if card else None,
            "resume_at": _iso(resume_at) if resume_at else None, "version": 1, **fields,
        })
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
        return cls.from_dict(doc)

    def save(self, conn: redis.Redis, *, now: datetime | None = None) -> Operation:
        """Write this object back; StaleOperation (and nothing written, the object as it
        was) when someone saved since it was loaded. On success its version moves on."""
        doc = check(self.to_dict())
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
        self._adopt(Operation.from_dict(doc))
        return self

    def change(self, conn: redis.Redis, mutate: Callable[[Operation], None], *,
               now: datetime | None = None) -> Operation:
        """Apply `mutate` and save; after a lost race, reload and apply it again. The object
        is changed only by a save that succeeded (a `mutate` that raises leaves it as it
        was)."""
        for _ in range(ATTEMPTS):
            draft = self.model_copy(deep=True)
            mutate(draft)
            try:
                draft.save(conn, now=now)
            except StaleOperation:
                self.reload(conn)
                continue
            self._adopt(draft)
            return self
        raise OperationError(f"operation {self.id} is being changed by too many writers; "
                             "try again")

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form (also what callbacks and the bot read)."""
        return super().to_dict()

    def _adopt(self, other: Operation) -> None:
        for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
            object.__setattr__(self, name, getattr(other, name))

    # --- reading ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def next_index(self) -> int | None:
        """The first step not done or skipped (None: every step is)."""
        for step in self.steps:
            if step.state not in FINISHED_STEP_STATES:
                return step.index
        return None

    def step(self, index: int) -> Step:
        if not 0 <= index < len(self.steps):
            raise OperationError(f"operation {self.id} has no step {index}")
        return self.steps[index]

    # --- changing (each one save, retried on a lost race) -------------------------------

    def mark_step(self, index: int, state: str, *, outcome: str | None = None,
                  now: datetime | None = None) -> Step:
        """In memory: move one step to `state`, stamping started_at/finished_at (saved by
        the caller's `change`, or use `set_step`).

        `outcome` is often an error line from Exchange; it is scrubbed of secret-shaped text
        rather than refused, so reporting a failure can never fail itself.
        """
        if state not in STEP_STATES:
            raise OperationError(f"step state must be one of {', '.join(STEP_STATES)}")
        step = self.step(index)
        step.state = StepState(state)
        if outcome is not None:
            step.outcome = scrub_text(outcome)
        stamp = _iso(_utc(now))
        if state == StepState.RUNNING:
            step.started_at = stamp
        elif state in (StepState.DONE, StepState.FAILED, StepState.SKIPPED):
            step.finished_at = stamp
        return step

    def end(self, state: str, *, now: datetime | None = None) -> None:
        """In memory: close an open operation as `state` (saved by the caller's `change`,
        or use `close`)."""
        if state not in CLOSED_STATES:
            raise OperationError(f"an operation closes as one of {', '.join(CLOSED_STATES)}")
        if not self.is_open:
            raise OperationError(f"operation {self.id} is already {self.state}")
        self.state = OperationState(state)
        self.closed_at = _iso(_utc(now))
        self.resume_at = None

    def set_step(self, conn: redis.Redis, index: int, state: str, *,
                 outcome: str | None = None, now: datetime | None = None) -> Operation:
        """`mark_step` and save it (one write)."""
        if state not in STEP_STATES:
            raise OperationError(f"step state must be one of {', '.join(STEP_STATES)}")
        return self.change(
            conn, lambda op: op.mark_step(index, state, outcome=outcome, now=now), now=now)

    def record(self, conn: redis.Redis, key: str, value: Any, *,
               now: datetime | None = None) -> Any:
        """Set `recorded[key]` unless it is set already; returns the stored (first) value.

        A worker records the new thumbprint before staging it; a retry calls record again
        with whatever it would create and gets the first value back, so it reuses that
        instead. Recording on a closed operation is allowed: what was created must not be
        forgotten.
        """
        plain = _recordable(key, value)
        for _ in range(ATTEMPTS):
            if key in self.recorded:
                return self.recorded[key]
            draft = self.model_copy(deep=True)
            draft.recorded[key] = plain
            try:
                draft.save(conn, now=now)
            except StaleOperation:
                self.reload(conn)
                continue
            self._adopt(draft)
            return plain
        raise OperationError(f"operation {self.id} is being changed by too many writers; "
                             "try again")

    def close(self, conn: redis.Redis, state: str, *, now: datetime | None = None
              ) -> Operation:
        """End it (done, failed or cancelled); frees the org for the next one."""
        if state not in CLOSED_STATES:
            raise OperationError(f"an operation closes as one of {', '.join(CLOSED_STATES)}")
        if self.state == state:
            return self

        def end(draft: Operation) -> None:
            if draft.state != state:  # another writer may have closed it meanwhile
                draft.end(state, now=now)

        return self.change(conn, end, now=now)


def _enum(enum: Any, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


def _with_kinds(doc: dict[str, Any]) -> dict[str, Any]:
    """The upgrade path for documents written before steps had a kind: each such step gets
    the one its title and cmdlet meant then (`step_kind.legacy_kind`); the next save keeps
    it, so it is derived once."""
    for step in doc.get("steps") or []:
        if isinstance(step, dict) and "kind" not in step:
            step["kind"] = legacy_kind(str(doc.get("kind") or ""), step).value
    return doc


def _recordable(key: str, value: Any) -> Any:
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
    return plain


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
local was_open = cur['state'] == 'open' or cur['state'] == 'waiting' or
  cur['state'] == 'blocked'
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


# --- the one-shot form, for callers holding an id (plain documents in and out) ----------


def create(conn: redis.Redis, org: str, kind: str, requester: str, steps: Iterable[Any],
           now: datetime | None = None, *, card: Mapping[str, str] | None = None,
           resume_at: datetime | None = None) -> dict[str, Any]:
    return Operation.create(conn, org, kind, requester, steps, now, card=card,
                            resume_at=resume_at).to_dict()


def load(conn: redis.Redis, op_id: str) -> dict[str, Any] | None:
    op = Operation.fetch(conn, op_id)
    return op.to_dict() if op is not None else None


def require(conn: redis.Redis, op_id: str) -> dict[str, Any]:
    return Operation.require(conn, op_id).to_dict()


def save(conn: redis.Redis, op: Mapping[str, Any], *, now: datetime | None = None
         ) -> dict[str, Any]:
    """Write back a loaded document; StaleOperation when someone saved in between."""
    return Operation.from_dict(check(op)).save(conn, now=now).to_dict()


def update(conn: redis.Redis, op_id: str, mutate: Callable[[dict[str, Any]], None], *,
           now: datetime | None = None) -> dict[str, Any]:
    """Load, change the plain document in place with `mutate`, save; repeated on a
    conflicting write."""
    for _ in range(ATTEMPTS):
        doc = require(conn, op_id)
        mutate(doc)
        try:
            return save(conn, doc, now=now)
        except StaleOperation:
            continue
    raise OperationError(f"operation {op_id} is being changed by too many writers; try again")


def record(conn: redis.Redis, op_id: str, key: str, value: Any, *,
           now: datetime | None = None) -> Any:
    _recordable(key, value)
    return Operation.require(conn, op_id).record(conn, key, value, now=now)


def set_step(conn: redis.Redis, op_id: str, index: int, state: str, *,
             outcome: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    if state not in STEP_STATES:
        raise OperationError(f"step state must be one of {', '.join(STEP_STATES)}")
    op = Operation.require(conn, op_id)
    return op.set_step(conn, index, state, outcome=outcome, now=now).to_dict()


def close(conn: redis.Redis, op_id: str, state: str, *, now: datetime | None = None
          ) -> dict[str, Any]:
    if state not in CLOSED_STATES:
        raise OperationError(f"an operation closes as one of {', '.join(CLOSED_STATES)}")
    return Operation.require(conn, op_id).close(conn, state, now=now).to_dict()


# --- indexes ------------------------------------------------------------------------------


def open_operations(conn: redis.Redis, org: str | None = None) -> list[Operation]:
    """Open or waiting operations (of one org, or all), oldest first."""
    ids = conn.smembers(redis_keys.open_operations() if org is None else org_index(org))
    ops = Operation.fetch_many(conn, sorted(_str(i) for i in ids))
    return sorted((o for o in ops if o.is_open), key=lambda o: o.created_at)


def open_ops(conn: redis.Redis, org: str | None = None) -> list[dict[str, Any]]:
    return [op.to_dict() for op in open_operations(conn, org)]


def due_for_resume(conn: redis.Redis, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open operations whose `resume_at` has come (the sweep re-enqueues them)."""
    when = _utc(now)
    return [o.to_dict() for o in _resumable(conn, when.timestamp())
            if _parse(o.resume_at, "resume_at") <= when]


def waiting_operations(conn: redis.Redis) -> list[Operation]:
    """Open operations with a `resume_at`, due or not (each org's clock decides which are)."""
    return _resumable(conn, "+inf")


def waiting(conn: redis.Redis) -> list[dict[str, Any]]:
    return [op.to_dict() for op in waiting_operations(conn)]


def _resumable(conn: redis.Redis, until: float | str) -> list[Operation]:
    ids = conn.zrangebyscore(redis_keys.resume_schedule(), "-inf", until)
    ops = Operation.fetch_many(conn, [_str(i) for i in ids])
    return [o for o in ops if o.is_open and o.resume_at]


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, allow_nan=False)


def _score(resume_at: str | None) -> str:
    return repr(_parse(resume_at, "resume_at").timestamp()) if resume_at else ""


def _utc(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise OperationError("`now` must be timezone-aware")
    return when.astimezone(UTC)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
