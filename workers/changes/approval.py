"""Approvals: who may let a state-changing step run, and making sure it runs once.

One Redis hash per (operation, step), `exauth:approval:<op id>:<step>`, moves through

    pending -> approved | denied | expired
    approved -> enqueued -> running -> done | failed      (enqueued is optional)

and every move is a compare-and-set inside one Lua call: the state is read and written in
the same atomic step, so any number of concurrent clicks, Slack retries or RQ redeliveries
see exactly one winner. A refusal changes nothing, except that a click after the TTL marks
the request `expired` (which it already is; that only makes it visible).

Each request carries a random `request_id`; a card built for an earlier request of the same
step can pass it to `decide` and is refused as out of date instead of approving the newer
request. A denied, expired or failed step can be requested again (a new round, a new id).

Who may approve is a pure rule (`is_allowed_approver`); Slack user-group membership is
looked up by the caller through `GroupCache`, fresh at most 60 s old. A group Slack cannot
list fails closed for that group only (`GroupCache.membership`): someone listed by user ID,
or found in another listed group, is not refused because of it; anyone else is refused
with the groups that could not be checked named (`decide(unchecked_groups=...)`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from config.errors import ExauthError
from workers import redis_keys
from workers.changes.change_states import ApprovalState
from workers.redis_scripts import LuaScript

log = logging.getLogger(__name__)

DECISIONS = ("approve", "deny")
MAX_TTL_MINUTES = 7 * 24 * 60
MAX_REASON = 500
# states from which a step may be requested again
RETRYABLE = (ApprovalState.DENIED, ApprovalState.EXPIRED, ApprovalState.FAILED)


class ApprovalError(ExauthError):
    """A request that cannot be made; the message is one line for the user."""


@dataclass(frozen=True)
class Decision:
    """The outcome of one click: `ok` only for the single click that decided the step."""

    ok: bool
    code: str  # approved, denied, not_approver, self_approval, expired, already_decided,
    # stale, not_found, reason_required, invalid, groups_unchecked
    message: str
    record: dict[str, Any] | None

    @property
    def state(self) -> str | None:
        return self.record["state"] if self.record else None


def is_allowed_approver(user: str, user_groups: Iterable[str], approvers: Iterable[str]) -> bool:
    """Listed by user ID, or member of a listed user group. Nobody listed means nobody."""
    allowed = set(approvers)
    return user in allowed or not allowed.isdisjoint(user_groups)


@dataclass(frozen=True)
class Membership:
    """The listed user groups a user is in, and the listed groups Slack could not list."""

    groups: frozenset[str]
    unchecked: tuple[str, ...] = ()

    def allows(self, user: str, listed: Iterable[str]) -> bool:
        return is_allowed_approver(user, self.groups, listed)


class GroupCache:
    """Slack user-group members, asked fresh through `fetch` and kept at most `ttl_s`.

    Membership changes (someone leaves the approvers group) must take effect within a
    minute, so the TTL cannot exceed 60 s. Failed lookups are not cached: the next click asks
    again, and the caller refuses the click meanwhile (fail closed).
    """

    def __init__(
        self,
        fetch: Callable[[str], Iterable[str]],
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ttl_s <= 60:
            raise ValueError("GroupCache: ttl_s must be between 0 and 60 seconds")
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, frozenset[str]]] = {}

    def members(self, group_id: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            cached = self._entries.get(group_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        fresh = frozenset(self._fetch(group_id))
        with self._lock:
            self._entries[group_id] = (now, fresh)
        return fresh

    def membership(self, user: str, listed: Iterable[str]) -> Membership:
        """The listed user groups (IDs starting with "S") `user` is in. A group whose lookup
        fails is reported, not raised, so it decides nothing for a user listed by ID (not
        looked up at all) or found in another group."""
        listed = list(listed)
        if user in listed:
            return Membership(frozenset())
        found: set[str] = set()
        unchecked: list[str] = []
        for group in (g for g in listed if g.startswith("S")):
            try:
                if user in self.members(group):
                    found.add(group)
            except Exception as exc:  # Slack refused or is down: this group only fails closed
                log.warning("Slack user group %s could not be listed: %s", group,
                            type(exc).__name__)
                unchecked.append(group)
        return Membership(frozenset(found), tuple(unchecked))

    def invalidate(self, group_id: str | None = None) -> None:
        with self._lock:
            if group_id is None:
                self._entries.clear()
            else:
                self._entries.pop(group_id, None)


class Approval(BaseModel):
    """One approval round of one step: the hash at `exauth:approval:<op id>:<step>` as an
    object. `fetch` loads it and `to_dict` gives the plain record the module functions
    return. It is written only through its transitions (`request`, `decide`,
    `mark_enqueued`, `claim_for_run`, `finish`), each a compare-and-set in one Lua call;
    there is no free-form save, which could undo another click's decision."""

    model_config = ConfigDict(extra="allow")

    op_id: str
    step: int
    state: ApprovalState
    request_id: str = ""
    requester: str = ""
    requested_at: str | None = None
    expires_at: str | None = None
    expires_ms: int | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    job_id: str | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    detail: str | None = None
    expired_at: str | None = None

    @classmethod
    def fetch(cls, conn: redis.Redis, op_id: str, step: int) -> Approval | None:
        record = get(conn, op_id, step)
        return cls.model_validate(record) if record else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def claim_for_run(self, conn: redis.Redis, *, now: datetime | None = None) -> bool:
        """approved/enqueued -> running; True for exactly one caller (then this object is
        the running record)."""
        return self._move(conn, (ApprovalState.APPROVED, ApprovalState.ENQUEUED),
                          {"state": "running", "started_at": _utc(now).isoformat()})

    def finish(self, conn: redis.Redis, outcome: str, *, detail: str = "",
               now: datetime | None = None) -> bool:
        """running -> done | failed."""
        if outcome not in ("done", "failed"):
            raise ValueError("approval: outcome must be 'done' or 'failed'")
        return self._move(conn, (ApprovalState.RUNNING,),
                          {"state": outcome, "finished_at": _utc(now).isoformat(),
                           "detail": detail[:MAX_REASON]})

    def _move(self, conn: redis.Redis, from_states: tuple[str, ...], fields: dict[str, str]
              ) -> bool:
        code, record = _move_record(conn, self.op_id, self.step, from_states, fields)
        if code == "moved":
            moved = Approval.model_validate(record)
            for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
                object.__setattr__(self, name, getattr(moved, name))
        return code == "moved"


def approval_key(op_id: str, step: int) -> str:
    if not isinstance(op_id, str) or not op_id or ":" in op_id:
        raise ValueError("approval: op_id must be a non-empty id without ':'")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError("approval: step must be a non-negative integer")
    return redis_keys.approval(op_id, step)


def job_id(record: dict[str, Any]) -> str:
    """A unique RQ job id for one approved round of one step (RQ allows [A-Za-z0-9_-])."""
    return f"exauth-{record['op_id']}-{record['step']}-{record['request_id']}"


# Lua: every script returns {code, flat HGETALL of the record after the call}.

_REQUEST = LuaScript("""
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' then
  local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_ms'))
  if exp and exp > tonumber(ARGV[1]) then
    return {'existing', redis.call('HGETALL', KEYS[1])}
  end
elseif state and state ~= 'denied' and state ~= 'expired' and state ~= 'failed' then
  return {'busy', redis.call('HGETALL', KEYS[1])}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return {'created', redis.call('HGETALL', KEYS[1])}
""")

_DECIDE = LuaScript("""
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return {'not_found', rec} end
local user, decision, reason = ARGV[1], ARGV[2], ARGV[3]
local now_ms, now_iso = tonumber(ARGV[4]), ARGV[5]
local allow_self, is_approver, request_id = ARGV[6], ARGV[7], ARGV[8]
local state = redis.call('HGET', KEYS[1], 'state')
local requester = redis.call('HGET', KEYS[1], 'requester')
local withdraw = decision == 'deny' and user == requester
if not withdraw then
  if is_approver ~= '1' then return {'not_approver', rec} end
  if decision == 'approve' and user == requester and allow_self ~= '1' then
    return {'self_approval', rec}
  end
end
if state ~= 'pending' then return {'already_decided', rec} end
if request_id ~= '' and request_id ~= redis.call('HGET', KEYS[1], 'request_id') then
  return {'stale', rec}
end
if now_ms >= tonumber(redis.call('HGET', KEYS[1], 'expires_ms')) then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'expired_at', now_iso)
  return {'expired', redis.call('HGETALL', KEYS[1])}
end
local new_state = 'approved'
if decision == 'deny' then new_state = 'denied' end
redis.call('HSET', KEYS[1], 'state', new_state, 'decided_by', user, 'decided_at', now_iso,
           'reason', reason)
return {new_state, redis.call('HGETALL', KEYS[1])}
""")

_MOVE = LuaScript("""
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found', {}} end
for i = 1, tonumber(ARGV[1]) do
  if state == ARGV[1 + i] then
    redis.call('HSET', KEYS[1], unpack(ARGV, 2 + tonumber(ARGV[1])))
    return {'moved', redis.call('HGETALL', KEYS[1])}
  end
end
return {'refused', redis.call('HGETALL', KEYS[1])}
""")


def request(
    conn: redis.Redis,
    op_id: str,
    step: int,
    *,
    requester: str,
    ttl_minutes: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Open the approval for a step (idempotent while it is pending and fresh).

    Raises ApprovalError when the step is already approved, enqueued, running or done.
    """
    if not requester:
        raise ApprovalError("an approval request needs a requester")
    if not 0 < ttl_minutes <= MAX_TTL_MINUTES:
        raise ApprovalError(
            f"approval TTL must be more than 0 and at most {MAX_TTL_MINUTES} minutes"
        )
    when = _utc(now)
    expires = when + timedelta(minutes=ttl_minutes)
    fields = {
        "op_id": op_id,
        "step": str(step),
        "state": "pending",
        "request_id": secrets.token_hex(8),
        "requester": requester,
        "requested_at": when.isoformat(),
        "expires_at": expires.isoformat(),
        "expires_ms": str(_ms(expires)),
    }
    argv = [str(_ms(when)), *(part for pair in fields.items() for part in pair)]
    code, record = _run(conn, _REQUEST, approval_key(op_id, step), argv)
    if code == "busy":
        raise ApprovalError(
            f"step {step + 1} of operation {op_id} is already {record['state']}; "
            "it cannot be requested again"
        )
    return record


def decide(
    conn: redis.Redis,
    op_id: str,
    step: int,
    *,
    user: str,
    decision: str,
    reason: str = "",
    approvers: Iterable[str],
    user_groups: Iterable[str] = (),
    allow_self_approval: bool = False,
    now: datetime | None = None,
    request_id: str | None = None,
    unchecked_groups: Iterable[str] = (),
) -> Decision:
    """Apply one click. Exactly one click per request can return ok=True.

    The requester may always deny (withdraw) their own request; everything else needs an
    allowed approver, and approving one's own request needs `allow_self_approval`. A user
    who is not an approver by what could be checked, while `unchecked_groups` (listed groups
    Slack could not list) remain, is refused as `groups_unchecked`, naming them.
    """
    key = approval_key(op_id, step)
    what = f"step {step + 1} of operation {op_id}"  # numbered from 1, as on the card
    if decision not in DECISIONS:
        return Decision(False, "invalid", f"unknown decision {decision!r}", get(conn, op_id, step))
    reason = " ".join(reason.split())[:MAX_REASON]
    if decision == "deny" and not reason:
        return Decision(False, "reason_required", "a denial needs a reason", get(conn, op_id, step))
    when = _utc(now)
    argv = [
        user,
        decision,
        reason,
        str(_ms(when)),
        when.isoformat(),
        "1" if allow_self_approval else "0",
        "1" if is_allowed_approver(user, user_groups, approvers) else "0",
        request_id or "",
    ]
    code, record = _run(conn, _DECIDE, key, argv)
    unchecked = ", ".join(unchecked_groups)
    if code == "not_approver" and unchecked:
        code = "groups_unchecked"
    messages = {
        "approved": f"{what} approved by {user}",
        "denied": f"{what} denied by {user}: {reason}",
        "not_approver": f"{user} is not an approver for this org",
        "groups_unchecked": f"{user} is not listed as an approver by user ID, and Slack user "
        f"group(s) {unchecked} could not be checked just now; try again in a minute",
        "self_approval": "you requested this step; this org does not allow self-approval",
        "already_decided": f"{what} is already {record.get('state')}"
        + (f" by {record['decided_by']}" if record.get("decided_by") else ""),
        "stale": f"this card is out of date: {what} was requested again; use the newest card",
        "expired": f"the request for {what} expired at {record.get('expires_at')}; "
        "request it again",
        "not_found": f"there is no approval request for {what}",
    }
    return Decision(code in ("approved", "denied"), code, messages[code], record or None)


def get(conn: redis.Redis, op_id: str, step: int) -> dict[str, Any] | None:
    raw = conn.hgetall(approval_key(op_id, step))
    return _record([part for pair in raw.items() for part in pair]) if raw else None


def mark_enqueued(
    conn: redis.Redis, op_id: str, step: int, job: str, *, now: datetime | None = None
) -> bool:
    """approved -> enqueued, remembering the job id (`job_id(record)`).

    Only the click that won `decide` enqueues, so this is bookkeeping: False just means the
    worker has already claimed the step (it was quick) or the step is not approved.
    """
    return _move(
        conn,
        op_id,
        step,
        ("approved",),
        {"state": "enqueued", "job_id": job, "enqueued_at": _utc(now).isoformat()},
    )


def claim_for_run(conn: redis.Redis, op_id: str, step: int, *, now: datetime | None = None) -> bool:
    """approved/enqueued -> running; True for exactly one caller, so a redelivered job skips."""
    return _move(
        conn,
        op_id,
        step,
        ("approved", "enqueued"),
        {"state": "running", "started_at": _utc(now).isoformat()},
    )


def finish(
    conn: redis.Redis,
    op_id: str,
    step: int,
    outcome: str,
    *,
    detail: str = "",
    now: datetime | None = None,
) -> bool:
    """running -> done | failed. A step found running after a worker died is finished as
    failed by the recovery path and may then be requested again."""
    if outcome not in ("done", "failed"):
        raise ValueError("approval: outcome must be 'done' or 'failed'")
    return _move(
        conn,
        op_id,
        step,
        ("running",),
        {"state": outcome, "finished_at": _utc(now).isoformat(), "detail": detail[:MAX_REASON]},
    )


def _move(
    conn: redis.Redis, op_id: str, step: int, from_states: tuple[str, ...], fields: dict[str, str]
) -> bool:
    return _move_record(conn, op_id, step, from_states, fields)[0] == "moved"


def _move_record(
    conn: redis.Redis, op_id: str, step: int, from_states: tuple[str, ...], fields: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    argv = [
        str(len(from_states)),
        *from_states,
        *(part for pair in fields.items() for part in pair),
    ]
    return _run(conn, _MOVE, approval_key(op_id, step), argv)


def _run(conn: redis.Redis, script: LuaScript, key: str, argv: list[str]
         ) -> tuple[str, dict[str, Any]]:
    code, flat = script(conn, [key], argv)
    return _str(code), _record(flat)


def _record(flat: list[Any]) -> dict[str, Any]:
    record: dict[str, Any] = {_str(flat[i]): _str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    for name in ("step", "expires_ms"):
        if name in record:
            record[name] = int(record[name])
    return record


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _utc(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("approval: `now` must be timezone-aware")
    return when.astimezone(UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
