"""A rehearsal: the change the status recommends, run first on a replica of the org.

`rehearse` takes a fresh snapshot of the org (`workers.rehearsal.replica`: the only calls
that reach the real org, all reads), serves it in this process
(`workers.rehearsal.replica_server`), and runs the operation on the replica the way the
worker would run the real one (`workers.changes.lifecycle`, `approval`, `execute`), with
two differences only: every approval is granted by the rehearsal itself (approver
`REHEARSAL_APPROVER`), and each wait (replication, publication, the 24 h before the old
certificate may go) is passed by moving the replica's clock through its control API
rather than waited for. The report lists each step with its outcome and how long it took on
the replica's clock, the status at the end, and what differed from the plan.

The replica is an org of its own name (`<org>-rehearsal-<id>`) whose endpoints are the
lab's only: nothing in a rehearsal can address the real org's servers. Its operation is
closed when the rehearsal ends, whatever happened, so no sweep ever resumes it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from config.lab_settings import settings_for_lab
from config.schema import OrgSettings
from workers.changes import approval, execute, lifecycle, operation
from workers.changes.change_states import OperationState, StepState
from workers.changes.operation import Operation
from workers.clock import SYSTEM_CLOCK, CallableClock, Clock
from workers.exchange.client import ExchangeClient
from workers.rehearsal import rehearsal_record, replica, replica_server
from workers.status.decide import actions as decide_actions
from workers.status.report import build_status, checked_at
from workers.status.report_model import ActionKind, OrgStatus

REHEARSAL_APPROVER = "U0REHEARSAL"  # a Slack-ID-shaped name no person has
MAX_ROUNDS = 300  # approvals, waits and resumes of one rehearsal; a loop never runs forever
PAST_DUE = timedelta(minutes=1)  # the clock goes this far past a wait's end
CHANGING = set(operation.KINDS)
STILL_TO_DO = CHANGING | {ActionKind.BLOCKED.value}
# Thumbprints (whole, shortened, or the plan's placeholder for one not yet made) and the
# quotes around them: a replica's certificates are stand-ins, its new one is not made yet.
_THUMBPRINT = re.compile(r"'?(?:[0-9A-F]{40}|<new thumbprint>)'?|[0-9A-F]{8}…")

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class _Virtual:
    """The replica's clock as we move it: it stands still at the snapshot's time
    (`[lab] now`) until advanced, so it is known here without asking."""

    now: datetime


def rehearse(
    org: OrgSettings, conn: redis.Redis, *, kind: str | None = None, requester: str = "exauth",
    servers: list[str] | None = None, override: bool = False, clock: Clock = SYSTEM_CLOCK,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rehearse one change on a fresh replica of `org`; returns the report (see module)."""
    started = time.monotonic()
    said = progress or (lambda _event, _data: None)
    with tempfile.TemporaryDirectory(prefix="exauth-rehearsal-") as folder:
        path = Path(folder) / f"{org.name}-replica.toml"
        real_obs = replica.snapshot(org, path, clock=clock)
        real_status = build_status(real_obs)
        said("snapshot", {"checked_at": real_status.checked_at})
        with replica_server.serve(path) as info:
            report = _run(org, conn, info, real_status, kind=kind, requester=requester,
                          servers=servers, override=override, said=said)
    report["wall_seconds"] = round(time.monotonic() - started, 2)
    report["rehearsed_at"] = clock.now().astimezone(UTC).isoformat()
    if report.get("kind") in CHANGING and report["steps"]:  # something was tried
        rehearsal_record.save(conn, org.name, report["kind"], at=clock.now(), ok=report["ok"],
                              line=report["verdict"])
    return report


def _run(org: OrgSettings, conn: redis.Redis, info: dict[str, Any],
         real_status: OrgStatus, *, kind: str | None, requester: str,
         servers: list[str] | None, override: bool, said: Progress) -> dict[str, Any]:
    twin = replica_org(org, info)
    client = ExchangeClient(twin)
    virtual = _Virtual(now=real_status.checked_time)
    books = CallableClock(lambda: virtual.now)
    obs, status = execute.observe(twin, client, clock=books)
    virtual.now = checked_at(status)
    differences = _replica_differences(real_status, status)
    if override:
        status = status.model_copy(
            update={"actions": decide_actions(obs, override_unreachable=True)})
    report: dict[str, Any] = {
        "org": org.name, "replica": twin.name, "snapshot_at": real_status.checked_at,
        "kind": kind, "reason": "", "steps": [], "differences": differences,
        "status_before": _brief(status), "status_after": None,
    }
    try:
        action = lifecycle.choose_action(status, kind, servers)
    except lifecycle.NothingToDo as exc:
        report.update(ok=True, state="nothing to do", verdict=f"nothing to rehearse: {exc}")
        return report
    report.update(kind=action.kind.value, reason=action.reason)
    op = lifecycle.start(conn, twin, obs, status, action, requester, override=override,
                         clock=books)
    said("started", {"kind": action.kind.value, "replica": twin.name})
    begun = virtual.now
    planned = [(step.title, lifecycle.command(op, step)) for step in op.steps]
    tracker = _StepTimes(begun)
    try:
        lifecycle.advance(conn, twin, op, client=client, clock=books)
        _drive(conn, twin, info, op, client, books, virtual, tracker, said)
    finally:
        op.reload(conn)
        if op.is_open:  # no sweep may ever find it: its org exists only for this run
            op.close(conn, OperationState.CANCELLED, now=books.now())
    report["steps"] = [
        {"index": step.index, "title": step.title, "command": lifecycle.command(op, step),
         "changes_state": step.changes_state, "state": StepState(step.state).value,
         "outcome": step.outcome or "", "virtual_seconds": tracker.seconds(step.index)}
        for step in op.steps]
    final_state = OperationState(op.state).value
    report["operation_state"] = final_state
    report["virtual_seconds"] = round((virtual.now - begun).total_seconds())
    _, after = execute.observe(twin, client, clock=books)
    report["status_after"] = _brief(after)
    report["differences"] += _plan_differences(planned, report["steps"], final_state, after)
    # "ok" is the plan kept: every step done, and nothing turned out otherwise.
    ok = final_state == "done" and not report["differences"] and not any(
        step["state"] == "failed" for step in report["steps"])
    report["ok"] = ok
    report["state"] = final_state
    report["verdict"] = "ok" if ok else _what_went_wrong(report)
    return report


def replica_org(org: OrgSettings, info: dict[str, Any]) -> OrgSettings:
    """The replica as an org: the lab's endpoints only, its own name, one approver (the
    rehearsal), and the real org's other settings where they shape a run."""
    name = f"{org.name[:40]}-rehearsal-{secrets.token_hex(3)}"
    built = settings_for_lab({**info, "org": name}, str(info["password"]),
                             writer=str(info.get("writer") or "") or None).orgs[0]
    return built.model_copy(update={"approvers": [REHEARSAL_APPROVER], "operators": [],
                                    "allow_self_approval": False,
                                    "approval_ttl_minutes": org.approval_ttl_minutes})


# --- driving the operation -------------------------------------------------------------


class _StepTimes:
    """When each step was first next and when it ended, on the replica's clock."""

    def __init__(self, begun: datetime) -> None:
        self.begun = begun
        self.first: dict[int, datetime] = {}
        self.ended: dict[int, datetime] = {}

    def see(self, op: Operation, now: datetime) -> None:
        for step in op.steps:
            if step.state in (StepState.DONE, StepState.SKIPPED, StepState.FAILED):
                self.ended.setdefault(step.index, now)
                self.first.setdefault(step.index, now)
        nxt = op.next_index()
        if nxt is not None:
            self.first.setdefault(nxt, now)

    def seconds(self, index: int) -> int | None:
        if index not in self.ended:
            return None
        return round((self.ended[index] - self.first.get(index, self.begun)).total_seconds())


def _drive(conn: redis.Redis, twin: OrgSettings, info: dict[str, Any], op: Operation,
           client: ExchangeClient, books: Clock, virtual: _Virtual, tracker: _StepTimes,
           said: Progress) -> None:
    """Approve, run and wait through the operation until it closes or a step fails; `op`
    is carried along (each call below changes and saves it)."""
    for _ in range(MAX_ROUNDS):
        tracker.see(op, virtual.now)
        if not op.is_open:
            return
        if op.state == OperationState.WAITING:
            due = datetime.fromisoformat(str(op.resume_at))
            ahead = max(due - virtual.now, timedelta(0)) + PAST_DUE
            _advance_clock(info, ahead)
            virtual.now += ahead
            said("waited", {"for": op.waiting_for or "", "seconds": ahead.total_seconds()})
            lifecycle.resume(conn, twin, op, actor="exauth", client=client, clock=books)
            continue
        index = op.next_index()
        step = op.step(index) if index is not None else None
        if step is None or step.state != StepState.AWAITING_APPROVAL or not step.request_id:
            return  # a failed step (or one only a person can carry on): the report says
        decision = approval.decide(conn, op.id, step.index, user=REHEARSAL_APPROVER,
                                   decision="approve", approvers=twin.approvers,
                                   request_id=step.request_id)
        if not decision.ok:
            return
        result = execute.run_step(conn, twin, op, step.index, step.request_id,
                                  client=client, clock=books)
        said("step", {"index": step.index, "title": step.title, "state": result["state"]})
        tracker.see(op, virtual.now)
        lifecycle.advance(conn, twin, op, client=client, clock=books)


def _advance_clock(info: dict[str, Any], delta: timedelta) -> None:
    """Move the replica's clock by `delta` (its control API, POST /_lab/clock, on loopback)."""
    body = json.dumps({"advance": f"{max(1, int(delta.total_seconds()))}s"}).encode()
    token = base64.b64encode(f"{info['username']}:{info['password']}".encode()).decode()
    request = urllib.request.Request(
        f"{info['control_url']}/clock", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


# --- what the report says --------------------------------------------------------------


def _brief(status: OrgStatus) -> dict[str, Any]:
    document = status.to_json()
    return {"checked_at": document["checked_at"], "findings": document["findings"],
            "actions": document["actions"]}


def _aside(value: Any) -> str:
    return _THUMBPRINT.sub("…", json.dumps(value, sort_keys=True, ensure_ascii=False))


def _replica_differences(real_status: OrgStatus, twin_status: OrgStatus) -> list[str]:
    real, twin = real_status.to_json(), twin_status.to_json()
    out = []
    if _aside(real["findings"]) != _aside(twin["findings"]):
        codes = sorted({f["code"] for f in twin["findings"]}
                       ^ {f["code"] for f in real["findings"]})
        out.append("the replica's findings differ from the org's: "
                   + (", ".join(codes) or "same codes, other details"))
    if _aside(real["actions"]) != _aside(twin["actions"]):
        out.append("the replica's recommended actions differ from the org's: "
                   f"{[a['kind'] for a in twin['actions']]} vs "
                   f"{[a['kind'] for a in real['actions']]}")
    return out


def _plan_differences(planned: list[tuple[str, str]], steps: list[dict[str, Any]],
                      state: str, after: OrgStatus) -> list[str]:
    out = []
    for (title, command), step in zip(planned, steps, strict=False):
        if step["state"] == "skipped":
            out.append(f"step {step['index'] + 1} ({title}) was skipped: {step['outcome']}")
        elif step["state"] == "failed":
            out.append(f"step {step['index'] + 1} ({title}) failed: {step['outcome']}")
        elif step["state"] not in ("done",):
            out.append(f"step {step['index'] + 1} ({title}) was not reached ({step['state']})")
        elif _aside(command) != _aside(step["command"]):
            out.append(f"step {step['index'] + 1} ({title}) ran {step['command']!r}, "
                       f"planned {command!r}")
    if len(steps) != len(planned):
        out.append(f"the operation has {len(steps)} steps; the plan had {len(planned)}")
    if state != "done":
        out.append(f"the operation ended {state}, not done")
    left = [a.kind.value for a in after.actions if a.kind.value in STILL_TO_DO]
    if left:
        out.append(f"afterwards the status still recommends {', '.join(left)}")
    return out


def _what_went_wrong(report: dict[str, Any]) -> str:
    failed = [s for s in report["steps"] if s["state"] == "failed"]
    if failed:
        step = failed[0]
        return f"step {step['index'] + 1} ({step['title']}) failed: {step['outcome']}"
    return report["differences"][0] if report["differences"] else f"ended {report['state']}"
