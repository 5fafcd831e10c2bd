"""Operations from start to end: which action, its steps, and what happens after each step.

`start` turns one action of a fresh status into a persisted operation (workers.changes.operation:
one open operation per org). `advance` is the follow-up logic, run by the worker after
every step and by the resume sweep: read-only steps (re-reads, verification, watching for
publication) run by themselves; a wait of hours or days (replication, the 30-day effective
date, the 24 h before old certificates may go) leaves the operation `waiting` with
`resume_at`; the next state-changing step gets an approval request and stops there, with
the fingerprint of the status it is being approved on.

`resume` is the way back after a worker died mid-step: with the writer lock free (nobody is
running it), a step left `running` is re-validated - its effect already visible, or the
certificate it created adoptable, makes it done; otherwise it goes back to a fresh
approval - and the operation continues. No step is ever re-run without a new approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from config.errors import ExauthError
from config.schema import OrgSettings
from workers import audit
from workers.changes import approval, execute, operation, writer_lock
from workers.changes import plan as plan_module
from workers.changes.change_states import OperationState, StepState
from workers.changes.operation import Operation, Step
from workers.changes.plan import NEW_THUMBPRINT
from workers.changes.plan import steps as plan_steps
from workers.changes.step_kind import StepKind
from workers.clock import SYSTEM_CLOCK, Clock
from workers.exchange.client import ExchangeClient
from workers.jobs.queues import CHANGE_TIMEOUT
from workers.status.observation import OrgObs
from workers.status.report import checked_at
from workers.status.report_model import Action, ActionKind, OrgStatus

CHANGE_KINDS = operation.KINDS
OLD_CERT_GRACE = timedelta(hours=24)  # DOMAIN 5.7: the new cert current for 24 h first
MAX_READ_STEPS = 200  # one advance never loops forever
BATCHED = (StepKind.RECYCLE_APP_POOL, StepKind.REMOVE_OLD_AUTH_CERT)


class NothingToDo(ExauthError):
    """The status recommends no change (or only waiting); the message says why."""


# --- choosing and starting ---------------------------------------------------------------


def choose_action(
    status: OrgStatus, kind: str | None = None, servers: list[str] | None = None
) -> Action:
    """The action to start: the named kind, else the first changing action of the status."""
    actions = status.actions
    servers = _fqdns(status, servers) if servers else None
    if kind is None:
        for item in actions:
            if item.kind == ActionKind.BLOCKED:
                raise NothingToDo("blocked: " + item.reason)
            if item.kind in CHANGE_KINDS:
                return item
        reasons = "; ".join(a.reason for a in actions) or "nothing to do"
        raise NothingToDo(reasons)
    if kind not in CHANGE_KINDS:
        raise NothingToDo(f"{kind} is not an operation (one of {', '.join(CHANGE_KINDS)})")
    wanted = ActionKind(kind)
    blocked = [a for a in actions if a.kind == ActionKind.BLOCKED]
    if blocked:
        raise NothingToDo("blocked: " + blocked[0].reason)
    for item in actions:
        if item.kind == wanted and (not servers or set(servers) <= set(item.servers)):
            return item.model_copy(update={"servers": servers or item.servers})
    if wanted == ActionKind.STAGE_NEW:
        writer = [s.fqdn for s in status.servers]
        return Action(kind=wanted, servers=writer[:1],
                      reason="Rotation requested by an operator (staged, 30-day effective date).")
    if wanted == ActionKind.REPAIR_BACKEND and servers:
        return Action(kind=wanted, servers=servers,
                      reason="Back end renewal requested by an operator for "
                      + ", ".join(servers))
    raise NothingToDo(f"the status does not call for {kind} now")


def _fqdns(status: OrgStatus, names: list[str]) -> list[str]:
    """Server names or fqdns as typed -> the fqdns Exchange knows (unknown ones refused)."""
    known = {}
    for server in status.servers:
        known[server.fqdn.lower()] = server.fqdn
        known[server.name.lower()] = server.fqdn
    out = []
    for name in names:
        fqdn = known.get(name.strip().lower())
        if fqdn is None:
            raise NothingToDo(f"no Exchange server named {name[:80]!r} in this org")
        out.append(fqdn)
    return out


def start(
    conn: redis.Redis,
    org: OrgSettings,
    obs: OrgObs,
    status: OrgStatus,
    action: Action,
    requester: str,
    *,
    override: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> Operation:
    """Persist a new operation for `action` (OperationBusy when the org has one open), with
    everything it starts with in the one write that creates it."""
    moment = clock.now()
    built = plan_steps(status, action, writer=org.writer, now=checked_at(status),
                       lifetime_days=org.rotation.lifetime_days)
    targets = list(action.servers)
    watched = (targets if action.kind == ActionKind.REPAIR_BACKEND
               else [_writer_fqdn(status, org)])
    op = Operation.create(
        conn, org.name, action.kind.value, requester,
        [{**_stored(s), "fingerprint": None, "request_id": None, "expires_at": None}
         for s in built],
        moment,
        targets=targets,
        reason=action.reason,
        override=override,
        status_checked_at=status.checked_at,
        fingerprint=execute.facts(status, action.kind.value, targets),
        stores_before={
            s.fqdn.lower(): [c.thumbprint for c in s.certificates or ()]
            for s in obs.servers if s.fqdn.lower() in watched
        },
        hybrid=status.hybrid,
    )
    audit.record(conn, org=org.name, actor=requester, action="operation.start",
                 target=op.id, outcome="open",
                 detail={"kind": op.kind, "servers": targets, "override": override,
                         "reason": op.reason})
    return op


def _stored(step: plan_module.Step) -> dict[str, Any]:
    """A plan step as stored: without its rendered line (a rendered `-Password (Read-Host
    ...)` looks like a secret to the operation's checks); `command(step)` renders it."""
    out = step.to_dict()
    out.pop("command", None)
    return out


def command(op: Operation | Mapping[str, Any], step: Step | Mapping[str, Any]) -> str:
    """The exact PowerShell line of a stored step, the recorded thumbprint filled in."""
    op = _operation(op)
    if not isinstance(step, Step):
        step = Operation.of({"steps": [step]}).steps[0]
    params = []
    for name, value in step.param_pairs():
        if value == NEW_THUMBPRINT:
            value = execute.recorded_thumbprint(op, step) or value
        params.append((name, tuple(value) if isinstance(value, list) else value))
    # Only rendered: the line depends on the cmdlet and parameters, never on the kind.
    return plan_module.Step(step.title, step.server, step.endpoint, step.cmdlet,
                            tuple(params), step.changes_state, kind=StepKind.COMMAND).render()


def _operation(op: Operation | Mapping[str, Any]) -> Operation:
    """An operation object (the bot and tests may hold the plain document)."""
    return Operation.of(op)


def _writer_fqdn(status: OrgStatus, org: OrgSettings) -> str:
    server = status.server(org.writer) if org.writer else None
    return server.fqdn.lower() if server is not None else org.writer.lower()


# --- following up ------------------------------------------------------------------------


def next_index(op: Operation | Mapping[str, Any]) -> int | None:
    """The first step not done or skipped (of an object or a plain document)."""
    return _operation(op).next_index()


def advance(
    conn: redis.Redis, org: OrgSettings, op: Operation, *, client: ExchangeClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Carry the operation as far as it goes without a person; returns a summary with the
    events of this run (for the card's thread). `op` is changed in place as it goes."""
    client = client or ExchangeClient(org)
    events: list[dict[str, Any]] = []
    status: OrgStatus | None = None
    for _ in range(MAX_READ_STEPS):
        if not op.is_open:
            break
        index = op.next_index()
        if index is None:
            _close(conn, org, op, "done", "every step is done", clock)
            events.append({"step": None, "state": "done", "detail": "operation complete"})
            break
        step = op.step(index)
        if step.state == StepState.RUNNING:
            if not is_stale(step, clock):
                break
            events += resume(conn, org, op, actor="exauth", client=client,
                             clock=clock)["events"]
            continue
        if step.state in (StepState.AWAITING_APPROVAL, StepState.APPROVED, StepState.FAILED):
            break
        if status is None:
            _, status = execute.observe(org, client, clock=clock)
        if not step.changes_state:
            outcome = execute.read_step(conn, op, step, status, client)
            if outcome.state == "wait":
                _wait(conn, op, index, outcome, clock)
                events.append({"step": index, "state": "waiting", "detail": outcome.detail})
                break
            execute.finish_step(conn, org, op, index, outcome, actor="exauth", clock=clock)
            events.append({"step": index, "state": outcome.state, "detail": outcome.detail})
            if outcome.state == "skipped" and index == 0:
                _close(conn, org, op, "done", outcome.detail, clock)
                break
            continue
        gate = _gate(op, step, status)
        if gate is not None:
            if gate.state == "skipped":
                execute.finish_step(conn, org, op, index, gate, actor="exauth", clock=clock)
                events.append({"step": index, "state": "skipped", "detail": gate.detail})
                continue
            _wait(conn, op, index, gate, clock)
            events.append({"step": index, "state": "waiting", "detail": gate.detail})
            break
        request(conn, org, op, index, status, clock=clock)
        events.append({"step": index, "state": "awaiting_approval", "detail": step.title})
        break
    return summary(op, events)


def request(
    conn: redis.Redis, org: OrgSettings, op: Operation, index: int, status: OrgStatus, *,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Ask for the approval of one state-changing step, on the facts of `status`."""
    record = approval.request(conn, op.id, index, requester=op.requester,
                              ttl_minutes=org.approval_ttl_minutes)
    stamp = execute.fingerprint(status, op)
    members = batch(op, index)

    def mutate(draft: Operation) -> None:
        step = draft.step(index)
        step.state = StepState.AWAITING_APPROVAL
        step.request_id = record["request_id"]
        step.expires_at = record["expires_at"]
        step.fingerprint = stamp
        step.batch = members
        draft.state, draft.resume_at = OperationState.OPEN, None

    op.change(conn, mutate, now=clock.now())
    audit.record(conn, org=org.name, actor=op.requester, action="approval.request",
                 target=operation.step_ref(op.id, index), outcome="pending",
                 detail={"command": command(op, op.step(index)),
                         "expires_at": record["expires_at"]})
    return record


def batch(op: Operation, index: int) -> list[int]:
    """The steps one approval covers: a run of the same harmless, repeated command (pool
    recycles on every server, removal of the old certificate from every server), each
    still shown with its exact command on the card. Everything else: one step."""
    kind = op.step(index).kind
    if kind not in BATCHED:
        return [index]
    out = [index]
    for step in op.steps[index + 1:]:
        if step.kind is not kind or step.state != StepState.PENDING:
            break
        out.append(step.index)
    return out


def _gate(op: Operation, step: Step, status: OrgStatus) -> execute.Outcome | None:
    """A state-changing step that must not be asked for yet (or is pointless)."""
    if step.kind is StepKind.REMOVE_STALE_HYBRID_KEYS:
        section = status.hybrid_app
        if section is not None and section.read and not section.stale():
            return _after_publication(op, status) or execute.Outcome(
                "skipped", "the hybrid application holds no stale key")
        return _after_publication(op, status)
    if step.kind is not StepKind.REMOVE_OLD_AUTH_CERT:
        return None
    thumbprint = step.param("Thumbprint")
    current = status.auth.current.thumbprint if status.auth.current else None
    if thumbprint == current:
        return execute.Outcome("skipped", "never remove the current Auth Certificate")
    return _after_publication(op, status)


def _after_publication(op: Operation, status: OrgStatus) -> execute.Outcome | None:
    """Old certificates and their keys go only once the new one has been current 24 h."""
    published = op.recorded.get(execute.PUBLISHED_AT_KEY)
    if published:
        ready = datetime.fromisoformat(published) + OLD_CERT_GRACE  # on the org's clock
        if checked_at(status) < ready:
            return execute.Outcome("wait", f"the old certificate may go at {ready.isoformat()} "
                                           "(24 h after the new one became current)", ready)
    return None


def _wait(conn: redis.Redis, op: Operation, index: int, outcome: execute.Outcome,
          clock: Clock) -> None:
    def mutate(draft: Operation) -> None:
        draft.state = OperationState.WAITING
        draft.resume_at = (outcome.resume_at or clock.now()).astimezone(UTC).isoformat()
        draft.step(index).outcome = outcome.detail
        draft.waiting_for = outcome.detail

    op.change(conn, mutate, now=clock.now())


def _close(conn: redis.Redis, org: OrgSettings, op: Operation, state: str, why: str,
           clock: Clock) -> None:
    op.close(conn, state, now=clock.now())
    execute.forget_secrets(conn, op.id)
    audit.record(conn, org=org.name, actor="exauth", action="operation.close", target=op.id,
                 outcome=state, detail={"reason": why})


def is_stale(step: Step, clock: Clock = SYSTEM_CLOCK) -> bool:
    """A step `running` for longer than the job timeout: its worker is gone. Measured by
    the later of wall time and `clock` (a lab's virtual clock runs ahead)."""
    if not step.started_at:
        return True
    latest = max(SYSTEM_CLOCK.now(), clock.now())
    return latest - datetime.fromisoformat(step.started_at) > timedelta(seconds=CHANGE_TIMEOUT)


# --- resume ------------------------------------------------------------------------------


def resume(
    conn: redis.Redis, org: OrgSettings, op: Operation, *, actor: str,
    client: ExchangeClient | None = None, clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Pick an operation up again: a step left running by a dead worker is re-validated,
    an expired approval is requested again; then `advance`. Refused while a worker runs."""
    client = client or ExchangeClient(org)
    if not op.is_open:
        raise operation.OperationError(f"operation {op.id} is {op.state}; nothing to resume")
    events: list[dict[str, Any]] = []
    index = op.next_index()
    state = op.step(index).state if index is not None else None
    if index is not None and state == StepState.RUNNING:
        with writer_lock.held(conn, org.name, f"resume {op.id}", CHANGE_TIMEOUT):
            obs, status = execute.observe(org, client, clock=clock)
            outcome = execute.own_effect(conn, op, op.step(index), obs, status, clock=clock)
            approval.finish(conn, op.id, index, "failed",
                            detail="the worker stopped mid-step")
            if outcome is not None:
                execute.finish_step(conn, org, op, index, outcome, actor=actor, clock=clock)
                events.append({"step": index, "state": "done", "detail": outcome.detail})
            else:
                op.set_step(conn, index, "pending",
                            outcome="interrupted; needs a new approval", now=clock.now())
                events.append({"step": index, "state": "pending",
                               "detail": "interrupted before its effect was visible; asking "
                                         "for approval again"})
        audit.record(conn, org=org.name, actor=actor, action="operation.resume", target=op.id,
                     outcome="resumed", detail={"step": index})
    elif index is not None and state == StepState.AWAITING_APPROVAL:
        record = approval.get(conn, op.id, index) or {}
        if record.get("state") in approval.RETRYABLE or _expired(record):
            op.set_step(conn, index, "pending", now=clock.now())
            events.append({"step": index, "state": "pending",
                           "detail": "the approval lapsed; asking again"})
    result = advance(conn, org, op, client=client, clock=clock)
    result["events"] = events + result["events"]
    return result


def _expired(record: dict[str, Any]) -> bool:
    expires = record.get("expires_at")
    return bool(expires) and datetime.fromisoformat(expires) <= datetime.now(UTC)


def deny(conn: redis.Redis, org: OrgSettings, op_id: str, index: int, *, user: str,
         reason: str, clock: Clock = SYSTEM_CLOCK) -> Operation:
    """A denied step ends the operation (cancelled), in the same write; the org is free
    again. Who denied it and why are kept on the step (`denied`), so the card can say so
    after any re-render. Returns the operation as saved."""
    moment = clock.now()
    why = audit.scrub_text(reason)
    closed: list[bool] = []

    def mutate(draft: Operation) -> None:
        closed.clear()
        step = draft.step(index)
        step.state = StepState.SKIPPED
        step.outcome = f"denied by {user}: {why}"
        step.finished_at = moment.astimezone(UTC).isoformat()
        step.denied = {"by": user, "reason": why}
        if draft.is_open:
            draft.end("cancelled", now=moment)
            closed.append(True)

    op = Operation.require(conn, op_id).change(conn, mutate, now=moment)
    if closed:
        execute.forget_secrets(conn, op.id)
        audit.record(conn, org=org.name, actor="exauth", action="operation.close",
                     target=op.id, outcome="cancelled",
                     detail={"reason": f"step {index + 1} denied by {user}: {reason}"})
    return op


def due(conn: redis.Redis, org_now: Callable[[str], datetime]) -> list[Operation]:
    """Open operations whose resume time has come on their org's clock (`org_now(name)`,
    asked once per org that has an operation waiting)."""
    clocks: dict[str, datetime] = {}
    out = []
    for op in operation.waiting_operations(conn):
        if op.org not in clocks:
            clocks[op.org] = org_now(op.org)
        if op.resume_at and datetime.fromisoformat(op.resume_at) <= clocks[op.org]:
            out.append(op)
    return out


def summary(op: Operation | Mapping[str, Any], events: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """What a callback needs to update the card (no secrets: the op holds none)."""
    op = _operation(op)
    return {
        "op_id": op.id,
        "org": op.org,
        "kind": op.kind,
        "state": str(op.state),
        "next_step": op.next_index(),
        "resume_at": op.resume_at,
        "events": events or [],
    }
