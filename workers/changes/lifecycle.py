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

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from config.errors import ExauthError
from config.schema import OrgSettings
from workers import audit
from workers.changes import approval, execute, operation, writer_lock
from workers.changes.plan import NEW_THUMBPRINT, Step
from workers.changes.plan import steps as plan_steps
from workers.changes.step_kind import StepKind, kind_of
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
) -> dict[str, Any]:
    """Persist a new operation for `action` (OperationBusy when the org has one open)."""
    moment = clock.now()
    built = plan_steps(status, action, writer=org.writer, now=checked_at(status))
    targets = list(action.servers)
    watched = (targets if action.kind == ActionKind.REPAIR_BACKEND
               else [_writer_fqdn(status, org)])
    op = operation.create(
        conn, org.name, action.kind.value, requester,
        [{**_stored(s), "fingerprint": None, "request_id": None, "expires_at": None}
         for s in built],
        moment,
    )

    def extra(doc: dict[str, Any]) -> None:
        doc.update(
            targets=targets,
            reason=action.reason,
            override=override,
            status_checked_at=status.checked_at,
            fingerprint=execute.fingerprint(status, {**doc, "targets": targets}),
            stores_before={
                s.fqdn.lower(): [c.thumbprint for c in s.certificates or ()]
                for s in obs.servers if s.fqdn.lower() in watched
            },
            hybrid=status.hybrid,
        )

    op = operation.update(conn, op["id"], extra, now=moment)
    audit.record(conn, org=org.name, actor=requester, action="operation.start",
                 target=op["id"], outcome="open",
                 detail={"kind": op["kind"], "servers": targets, "override": override,
                         "reason": op["reason"]})
    return op


def _stored(step: Step) -> dict[str, Any]:
    """A plan step as stored: without its rendered line (a rendered `-Password (Read-Host
    ...)` looks like a secret to the operation's checks); `command(step)` renders it."""
    out = step.to_dict()
    out.pop("command", None)
    return out


def command(op: dict[str, Any], step: dict[str, Any]) -> str:
    """The exact PowerShell line of a stored step, the recorded thumbprint filled in."""
    params = []
    for name, value in step.get("parameters") or []:
        if value == NEW_THUMBPRINT:
            value = execute.recorded_thumbprint(op, step) or value
        params.append((name, tuple(value) if isinstance(value, list) else value))
    # Only rendered: the line depends on the cmdlet and parameters, never on the kind.
    return Step(step["title"], step["server"], step["endpoint"], step["cmdlet"],
                tuple(params), bool(step["changes_state"]), kind=StepKind.COMMAND).render()


def _writer_fqdn(status: OrgStatus, org: OrgSettings) -> str:
    server = status.server(org.writer) if org.writer else None
    return server.fqdn.lower() if server is not None else org.writer.lower()


# --- following up ------------------------------------------------------------------------


def next_index(op: dict[str, Any]) -> int | None:
    for step in op["steps"]:
        if step["state"] not in ("done", "skipped"):
            return int(step["index"])
    return None


def advance(
    conn: redis.Redis, org: OrgSettings, op_id: str, *, client: ExchangeClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Carry the operation as far as it goes without a person; returns a summary with the
    events of this run (for the card's thread)."""
    client = client or ExchangeClient(org)
    events: list[dict[str, Any]] = []
    status: OrgStatus | None = None
    for _ in range(MAX_READ_STEPS):
        op = operation.require(conn, op_id)
        if op["state"] not in operation.OPEN_STATES:
            break
        index = next_index(op)
        if index is None:
            _close(conn, org, op, "done", "every step is done", clock)
            events.append({"step": None, "state": "done", "detail": "operation complete"})
            break
        step = op["steps"][index]
        if step["state"] == "running":
            if not is_stale(step, clock):
                break
            events += resume(conn, org, op_id, actor="exauth", client=client,
                             clock=clock)["events"]
            continue
        if step["state"] in ("awaiting_approval", "approved", "failed"):
            break
        if status is None:
            _, status = execute.observe(org, client, clock=clock)
        if not step["changes_state"]:
            outcome = execute.read_step(conn, op, step, status, client)
            if outcome.state == "wait":
                _wait(conn, op_id, index, outcome, clock)
                events.append({"step": index, "state": "waiting", "detail": outcome.detail})
                break
            execute.finish_step(conn, org, op_id, index, outcome, actor="exauth", clock=clock)
            events.append({"step": index, "state": outcome.state, "detail": outcome.detail})
            if outcome.state == "skipped" and index == 0:
                _close(conn, org, operation.require(conn, op_id), "done", outcome.detail, clock)
                break
            continue
        gate = _gate(op, step, status)
        if gate is not None:
            if gate.state == "skipped":
                execute.finish_step(conn, org, op_id, index, gate, actor="exauth", clock=clock)
                events.append({"step": index, "state": "skipped", "detail": gate.detail})
                continue
            _wait(conn, op_id, index, gate, clock)
            events.append({"step": index, "state": "waiting", "detail": gate.detail})
            break
        request(conn, org, op_id, index, status, clock=clock)
        events.append({"step": index, "state": "awaiting_approval", "detail": step["title"]})
        break
    return summary(operation.require(conn, op_id), events)


def request(
    conn: redis.Redis, org: OrgSettings, op_id: str, index: int, status: OrgStatus, *,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Ask for the approval of one state-changing step, on the facts of `status`."""
    op = operation.require(conn, op_id)
    record = approval.request(conn, op_id, index, requester=op["requester"],
                              ttl_minutes=org.approval_ttl_minutes)
    stamp = execute.fingerprint(status, op)
    members = batch(op, index)

    def mutate(doc: dict[str, Any]) -> None:
        step = doc["steps"][index]
        step.update(state="awaiting_approval", request_id=record["request_id"],
                    expires_at=record["expires_at"], fingerprint=stamp, batch=members)
        doc["state"], doc["resume_at"] = "open", None

    operation.update(conn, op_id, mutate, now=clock.now())
    audit.record(conn, org=org.name, actor=op["requester"], action="approval.request",
                 target=operation.step_ref(op_id, index), outcome="pending",
                 detail={"command": command(op, op["steps"][index]),
                         "expires_at": record["expires_at"]})
    return record


def batch(op: dict[str, Any], index: int) -> list[int]:
    """The steps one approval covers: a run of the same harmless, repeated command (pool
    recycles on every server, removal of the old certificate from every server), each
    still shown with its exact command on the card. Everything else: one step."""
    first = op["steps"][index]
    kind = kind_of(first)
    if kind not in BATCHED:
        return [index]
    out = [index]
    for step in op["steps"][index + 1:]:
        if kind_of(step) is not kind or step["state"] != "pending":
            break
        out.append(int(step["index"]))
    return out


def _gate(op: dict[str, Any], step: dict[str, Any], status: OrgStatus
          ) -> execute.Outcome | None:
    """A state-changing step that must not be asked for yet (or is pointless)."""
    if kind_of(step) is not StepKind.REMOVE_OLD_AUTH_CERT:
        return None
    thumbprint = execute.param(step, "Thumbprint")
    current = status.auth.current.thumbprint if status.auth.current else None
    if thumbprint == current:
        return execute.Outcome("skipped", "never remove the current Auth Certificate")
    published = (op.get("recorded") or {}).get(execute.PUBLISHED_AT_KEY)
    if published:
        ready = datetime.fromisoformat(published) + OLD_CERT_GRACE  # on the org's clock
        if checked_at(status) < ready:
            return execute.Outcome("wait", f"the old certificate may go at {ready.isoformat()} "
                                           "(24 h after the new one became current)", ready)
    return None


def _wait(conn: redis.Redis, op_id: str, index: int, outcome: execute.Outcome,
          clock: Clock) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["state"] = "waiting"
        doc["resume_at"] = (outcome.resume_at or clock.now()).astimezone(UTC).isoformat()
        doc["steps"][index]["outcome"] = outcome.detail
        doc["waiting_for"] = outcome.detail

    operation.update(conn, op_id, mutate, now=clock.now())


def _close(conn: redis.Redis, org: OrgSettings, op: dict[str, Any], state: str, why: str,
           clock: Clock) -> None:
    operation.close(conn, op["id"], state, now=clock.now())
    execute.forget_secrets(conn, op["id"])
    audit.record(conn, org=org.name, actor="exauth", action="operation.close", target=op["id"],
                 outcome=state, detail={"reason": why})


def is_stale(step: dict[str, Any], clock: Clock = SYSTEM_CLOCK) -> bool:
    """A step `running` for longer than the job timeout: its worker is gone. Measured by
    the later of wall time and `clock` (a lab's virtual clock runs ahead)."""
    started = step.get("started_at")
    if not started:
        return True
    latest = max(SYSTEM_CLOCK.now(), clock.now())
    return latest - datetime.fromisoformat(started) > timedelta(seconds=CHANGE_TIMEOUT)


# --- resume ------------------------------------------------------------------------------


def resume(
    conn: redis.Redis, org: OrgSettings, op_id: str, *, actor: str,
    client: ExchangeClient | None = None, clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Pick an operation up again: a step left running by a dead worker is re-validated,
    an expired approval is requested again; then `advance`. Refused while a worker runs."""
    client = client or ExchangeClient(org)
    op = operation.require(conn, op_id)
    if op["state"] not in operation.OPEN_STATES:
        raise operation.OperationError(f"operation {op_id} is {op['state']}; nothing to resume")
    events: list[dict[str, Any]] = []
    index = next_index(op)
    step = op["steps"][index] if index is not None else None
    if step is not None and step["state"] == "running":
        with writer_lock.held(conn, org.name, f"resume {op_id}", CHANGE_TIMEOUT):
            obs, status = execute.observe(org, client, clock=clock)
            outcome = execute.own_effect(conn, op, step, obs, status, clock=clock)
            approval.finish(conn, op_id, step["index"], "failed",
                            detail="the worker stopped mid-step")
            if outcome is not None:
                execute.finish_step(conn, org, op_id, step["index"], outcome, actor=actor,
                                    clock=clock)
                events.append({"step": step["index"], "state": "done", "detail": outcome.detail})
            else:
                operation.set_step(conn, op_id, step["index"], "pending",
                                   outcome="interrupted; needs a new approval", now=clock.now())
                events.append({"step": step["index"], "state": "pending",
                               "detail": "interrupted before its effect was visible; asking "
                                         "for approval again"})
        audit.record(conn, org=org.name, actor=actor, action="operation.resume", target=op_id,
                     outcome="resumed", detail={"step": step["index"]})
    elif step is not None and step["state"] == "awaiting_approval":
        record = approval.get(conn, op_id, step["index"]) or {}
        if record.get("state") in approval.RETRYABLE or _expired(record):
            operation.set_step(conn, op_id, step["index"], "pending", now=clock.now())
            events.append({"step": step["index"], "state": "pending",
                           "detail": "the approval lapsed; asking again"})
    result = advance(conn, org, op_id, client=client, clock=clock)
    result["events"] = events + result["events"]
    return result


def _expired(record: dict[str, Any]) -> bool:
    expires = record.get("expires_at")
    return bool(expires) and datetime.fromisoformat(expires) <= datetime.now(UTC)


def deny(conn: redis.Redis, org: OrgSettings, op_id: str, index: int, *, user: str,
         reason: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """A denied step ends the operation (cancelled); the org is free again. Who denied it
    and why are kept on the step (`denied`), so the card can say so after any re-render."""
    moment = clock.now()
    why = audit.scrub_text(reason)

    def mutate(doc: dict[str, Any]) -> None:
        doc["steps"][index].update(state="skipped", outcome=f"denied by {user}: {why}",
                                   finished_at=moment.astimezone(UTC).isoformat(),
                                   denied={"by": user, "reason": why})

    op = operation.update(conn, op_id, mutate, now=moment)
    if op["state"] in operation.OPEN_STATES:
        _close(conn, org, op, "cancelled", f"step {index + 1} denied by {user}: {reason}",
               clock)


def due(conn: redis.Redis, org_now: Callable[[str], datetime]) -> list[dict[str, Any]]:
    """Open operations whose resume time has come on their org's clock (`org_now(name)`,
    asked once per org that has an operation waiting)."""
    clocks: dict[str, datetime] = {}
    out = []
    for op in operation.waiting(conn):
        if op["org"] not in clocks:
            clocks[op["org"]] = org_now(op["org"])
        if datetime.fromisoformat(op["resume_at"]) <= clocks[op["org"]]:
            out.append(op)
    return out


def summary(op: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a callback needs to update the card (no secrets: the op holds none)."""
    index = next_index(op)
    return {
        "op_id": op["id"],
        "org": op["org"],
        "kind": op["kind"],
        "state": op["state"],
        "next_step": index,
        "resume_at": op.get("resume_at"),
        "events": events or [],
    }

