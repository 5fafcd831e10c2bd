"""`exauth fix --org NAME`: the break-glass path from a terminal when Slack is down.

Same operation, same steps, same safety as in Slack - operation document, writer lock,
fresh re-read and fingerprint check before every step, audit log - but the approval of each
state-changing step is the person at the terminal typing "yes" after seeing its exact
command. Their local account name (getpass.getuser()) is the requester and approver in
the audit log. Without a terminal nothing is approved: a pipe cannot say yes.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable

from config.schema import Settings
from workers import audit
from workers.changes import approval, execute, lifecycle, operation
from workers.clock import SYSTEM_CLOCK, Clock
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError
from workers.jobs.queues import connect, unreachable


def run(
    settings: Settings,
    org_name: str | None,
    *,
    ask: Callable[[str], str] = input,
    isatty: Callable[[], bool] = sys.stdin.isatty,
    out: Callable[[str], None] = print,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """0 done (or nothing to do / waiting), 1 declined or failed, 2 cannot run."""
    user = f"local:{getpass.getuser()}"
    org = settings.org(org_name)
    if not isatty():
        out("exauth fix: break-glass needs a terminal to confirm each step; nothing was done")
        return 2
    conn = connect(settings.redis.url)
    try:
        conn.ping()
    except Exception as exc:
        out(f"exauth fix: {unreachable(settings.redis.url, exc)}; the audit log and writer "
            "lock live there, so nothing was done")
        return 2
    busy = operation.open_ops(conn, org.name)
    if busy:
        out(f"exauth fix: {org.name} already has an open operation {busy[0]['id']} "
            f"({busy[0]['kind']}); finish it or resume it in Slack")
        return 1
    client = ExchangeClient(org)
    try:
        obs, status = execute.observe(org, client, clock=clock)
        action = lifecycle.choose_action(status)
    except lifecycle.NothingToDo as exc:
        out(f"exauth fix: nothing to change for {org.name}: {exc}")
        return 0
    except ExchangeError as exc:
        out(f"exauth fix: {exc.line()}")
        return 2
    op = lifecycle.start(conn, org, obs, status, action, user, clock=clock)
    out(f"Operation {op.id}: {op.kind} on {org.name}. {action.reason}")
    while True:  # `op` is loaded once and kept current by the calls that change it
        summary = lifecycle.advance(conn, org, op, client=client, clock=clock)
        for event in summary["events"]:
            out(f"  step {_n(event.get('step'))}: {event['state']}: {event['detail']}")
        if op.state in operation.CLOSED_STATES:
            out(f"Operation {op.id} {op.state}.")
            return 0 if op.state == "done" else 1
        if op.state == "waiting":
            out(f"Waiting until {op.resume_at}: {op.waiting_for or ''}. The worker's "
                "sweep resumes it; or run `exauth fix` again later.")
            return 0
        index = op.next_index()
        assert index is not None
        step = op.step(index)
        members = step.batch or [index]
        out(f"\nStep {index + 1}: {step.title}")
        for member in members:
            out("  " + lifecycle.command(op, op.step(member)))
        answer = ask("Run this now? Type yes to run: ").strip().lower()
        decision = approval.decide(
            conn, op.id, index, user=user, decision="approve" if answer == "yes" else "deny",
            reason="declined at the terminal", approvers=[user], allow_self_approval=True,
            request_id=step.request_id)
        audit.record(conn, org=org.name, actor=user, action=f"breakglass.{decision.code}",
                     target=operation.step_ref(op.id, index), outcome=decision.code)
        if answer != "yes":
            lifecycle.deny(conn, org, op.id, index, user=user,
                            reason="declined at the terminal", clock=clock)
            out(f"Declined; operation {op.id} cancelled.")
            return 1
        if not decision.ok:
            out(f"exauth fix: {decision.message}")
            return 1
        result = execute.run_step(conn, org, op, index, str(step.request_id),
                                  client=client, clock=clock)
        out(f"  -> {result['state']}: {result['detail']}")


def _n(index: int | None) -> str:
    return "-" if index is None else str(index + 1)
