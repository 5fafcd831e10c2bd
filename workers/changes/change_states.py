"""The states of an operation, of its steps and of an approval, as enums.

They are str enums: stored in Redis, sent in job results and compared with the plain
strings of documents written before they existed, all as their value ("open",
"awaiting_approval", ...). How each moves is told where it moves: an operation and its
steps in workers.changes.operation and lifecycle, an approval in workers.changes.approval.
"""

from __future__ import annotations

from enum import StrEnum


class OperationState(StrEnum):
    OPEN = "open"  # a step runs, or waits for its approval
    WAITING = "waiting"  # until `resume_at` (replication, an effective date, 24 h grace)
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # a step was denied, or an operator cancelled it


class StepState(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class ApprovalState(StrEnum):
    """pending -> approved | denied | expired; approved -> enqueued -> running -> done |
    failed (enqueued is optional)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    ENQUEUED = "enqueued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


OPEN_STATES = (OperationState.OPEN, OperationState.WAITING)
CLOSED_STATES = (OperationState.DONE, OperationState.FAILED, OperationState.CANCELLED)
STEP_STATES = tuple(StepState)
FINISHED_STEP_STATES = (StepState.DONE, StepState.SKIPPED)  # the operation moves past them
