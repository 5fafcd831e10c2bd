"""Stopping an operation whose next step the re-decision refused (workers.changes.revalidate).

Nothing ran. The step's approval is spent (a new one is asked for on the new facts). Then:
- `blocked` (a server the change concerns could not be asked): the operation stays open
  in state `blocked` - still the org's one open operation, so nobody starts a second
  rotation over it - and `/exauth resume` carries it on once the server answers (the step
  goes back to pending and is asked for again on a fresh read);
- `superseded` (the facts or the rules moved on): the operation ends, and the card and
  thread say what changed and what the rules recommend now.
The verdict is kept on the document (`halted`) so the card can show it after any
re-render; the audit log gets one entry.
"""

from __future__ import annotations

from typing import Any

import redis

from config.errors import ExauthError
from config.schema import OrgSettings
from workers import audit, redis_keys
from workers.changes import approval
from workers.changes.change_states import OperationState, StepState
from workers.changes.operation import Operation, step_ref
from workers.changes.revalidate import BLOCKED, Verdict
from workers.clock import SYSTEM_CLOCK, Clock


class Halted(ExauthError):
    """Raised by the step runner when the re-decision refuses the step."""

    def __init__(self, index: int, verdict: Verdict) -> None:
        super().__init__(verdict.line())
        self.index, self.verdict = index, verdict


def halt(conn: redis.Redis, org: OrgSettings, op: Operation, index: int, verdict: Verdict,
         *, actor: str, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Record the refusal on `op` (one write); returns the step result ({op_id, step,
    state, detail})."""
    moment = clock.now()
    line = verdict.line()
    blocked = verdict.outcome == BLOCKED

    def mutate(draft: Operation) -> None:
        draft.mark_step(index, StepState.PENDING if blocked else StepState.SKIPPED,
                        outcome=line, now=moment)
        draft.halted = {"outcome": verdict.outcome, "step": index,
                        "why": audit.scrub_text(verdict.why),
                        "recommended": audit.scrub_text(verdict.recommended)}
        if blocked:
            draft.state = OperationState.BLOCKED
            draft.resume_at = None
        else:
            draft.end(OperationState.SUPERSEDED, now=moment)

    op.change(conn, mutate, now=moment)
    approval.finish(conn, op.id, index, "failed", detail=line)
    if not blocked:
        for key in conn.scan_iter(match=redis_keys.secrets_of(op.id)):
            conn.delete(key)
    audit.record(conn, org=org.name, actor=actor,
                 action="operation.blocked" if blocked else "operation.close",
                 target=step_ref(op.id, index), outcome=verdict.outcome,
                 detail={"title": op.step(index).title, "why": verdict.why,
                         "recommended": verdict.recommended})
    return {"op_id": op.id, "step": index, "state": verdict.outcome, "detail": line}


def unblock(op: Any) -> None:
    """In a mutate of Operation.change: a blocked operation is carried on (`resume`)."""
    if op.state == OperationState.BLOCKED:
        op.state = OperationState.OPEN
    if getattr(op, "halted", None) is not None:
        op.halted = None
