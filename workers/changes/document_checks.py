"""Checks of an operation document before it is stored: one line naming the first bad field.

Step parameters are shown on Slack cards and travel in job arguments, so they are checked
to be JSON and free of secrets: a parameter named like a secret may only carry a reference
placeholder (`<secret:pfx-password>`, or {"secret_ref": "pfx-password"}) or a bool/None.
These checks run on the plain JSON form (`Operation.to_dict()`) right before every write,
so what reaches Redis is exactly what was checked (workers.changes.operation).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from config.errors import ExauthError
from workers import redis_keys
from workers.audit import contains_secret, is_secret_key
from workers.changes.change_states import CLOSED_STATES, OPEN_STATES, STEP_STATES
from workers.changes.step_kind import StepKind

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




def _parse(text: Any, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise OperationError(f"{where}: not an ISO time: {text!r}") from None
    if when.tzinfo is None:
        raise OperationError(f"{where}: needs a timezone")
    return when


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise OperationError("times must be timezone-aware")
    return when.astimezone(UTC).isoformat()
