"""Re-deciding before a state-changing step runs (DOMAIN.md 4 and 8): pure, no I/O.

An approval is given on the facts of one read; the step runs on a later one (minutes, or
days and a clock move later). Comparing AuthConfig thumbprints alone let a step run while a
server was unreachable, or a `stage_new` plan create a certificate after the current one
had expired meanwhile. So the worker reads every server again and this module judges that
read, in this order:

1. Every server the change concerns answered. Auth certificate changes are org-wide
   (AuthConfig, and every server must end up with the certificate): all in-scope servers.
   A back end repair concerns its own servers. The step's own server must answer in any
   case. Unreachable blocks unless the operation was started with `override`; a blocked
   operation is resumed when the server is back.
2. The facts the step was approved on are unchanged (the step's fingerprint, compared by
   workers.changes.execute.differences): otherwise it is superseded.
3. The decision rules, run on the fresh read, still call for the operation's action - or
   the step is needed to finish it: once an operation has changed something (a step done,
   or a certificate recorded or adopted), its remaining steps complete what was started
   rather than leave the org half way. Otherwise it is superseded, and what the rules call
   for now is said. An action an operator asked for although the rules did not call for it
   (`/exauth rotate` on a healthy org; the operation's `advised` is false) is superseded
   only when the rules now call for a different change (the certificate expired meanwhile:
   replace_now).

Nothing here reads Exchange or Redis: workers.changes.execute gathers the inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RUN, BLOCKED, SUPERSEDED = "run", "blocked", "superseded"
CHANGE_KINDS = ("stage_new", "replace_now", "publish_next", "import_current", "import_next",
                "cleanup", "repair_backend", "upload_hybrid_key")
SERVER_SCOPED = ("repair_backend",)  # every other kind is org-wide


@dataclass(frozen=True)
class Verdict:
    """Whether the step may run; when not, what changed and what is recommended now."""

    outcome: str  # RUN, BLOCKED or SUPERSEDED
    why: str = ""
    recommended: str = ""

    @property
    def runs(self) -> bool:
        return self.outcome == RUN

    def line(self) -> str:
        """One line for the step's outcome, the card's thread and the audit log."""
        if self.runs:
            return "re-validated on a fresh read"
        return f"{self.outcome}: {self.why}" + (
            f" Recommended now: {self.recommended}" if self.recommended else "")


def concerned(op: Mapping[str, Any], step: Mapping[str, Any],
              in_scope: Iterable[str]) -> list[str]:
    """The servers (fqdns, lower case) the step's change concerns."""
    own = {str(step.get("server") or "").lower()} | _named_servers(step)
    if op["kind"] in SERVER_SCOPED:
        wanted = {str(s).lower() for s in op.get("targets") or []} | own
    else:
        wanted = {s.lower() for s in in_scope} | own
    return sorted(s for s in wanted if s)


def _named_servers(step: Mapping[str, Any]) -> set[str]:
    """The server a step's -Server parameter names (it may run on another's endpoint)."""
    raw = step.get("parameters") or []
    pairs = raw.items() if isinstance(raw, Mapping) else [(p[0], p[1]) for p in raw]
    return {str(value).lower() for name, value in pairs if name == "Server" and value}


def started(op: Mapping[str, Any]) -> bool:
    """Whether the operation changed something already (its rest finishes that)."""
    if op.get("recorded"):
        return True
    return any(s.get("changes_state") and s.get("state") == "done" for s in op["steps"])


def calls_for(op: Mapping[str, Any], step: Mapping[str, Any],
              decision: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the fresh decision still contains the operation's action."""
    own = {str(step.get("server") or "").lower()} | _named_servers(step)
    targets = {str(s).lower() for s in op.get("targets") or []}
    for item in decision:
        if item["kind"] != op["kind"]:
            continue
        servers = {str(s).lower() for s in item.get("servers") or []}
        if op["kind"] in SERVER_SCOPED or op["kind"].startswith("import_"):
            if servers & (own | targets):
                return True
        else:
            return True
    return False


def recommendation(decision: Sequence[Mapping[str, Any]]) -> str:
    """What the rules call for now, in one line."""
    if not decision:
        return "nothing"
    first = decision[0]
    reason = str(first.get("reason") or "").strip()
    if first["kind"] in CHANGE_KINDS:
        return f"{first['kind']} ({reason}) - `/exauth fix` starts it."
    return f"{first['kind']}: {reason}"


def judge(
    op: Mapping[str, Any],
    step: Mapping[str, Any],
    *,
    decision: Sequence[Mapping[str, Any]],
    unreachable: Iterable[str],
    in_scope: Iterable[str],
    changed: Sequence[str] = (),
) -> Verdict:
    """May `step` of `op` run on this fresh read?

    `decision`: the rules' actions on the fresh read, ignoring unreachable servers
    (workers.status.decide.actions(obs, override_unreachable=True)); `unreachable`: the
    in-scope servers that did not answer; `changed`: readable differences between the
    facts the step was approved on and the fresh ones."""
    scope = list(in_scope)
    down = {s.lower() for s in unreachable}
    hit = [s for s in concerned(op, step, scope) if s in down]
    own = ({str(step.get("server") or "").lower()} | _named_servers(step)) & down
    if own or (hit and not op.get("override")):
        names = ", ".join(sorted(own or set(hit)))
        why = (f"{names} could not be asked, and this change concerns "
               + ("it" if len(own or hit) == 1 else "them")
               + ("; the step runs there" if own else "")
               + ". Nothing was run; `/exauth resume` carries on once "
               + ("it answers." if len(own or hit) == 1 else "they answer."))
        return Verdict(BLOCKED, why, "")
    if changed:
        return Verdict(SUPERSEDED, "Exchange changed since the approval: "
                       + "; ".join(changed) + ". Nothing was run.", recommendation(decision))
    if not started(op) and not calls_for(op, step, decision):
        if op.get("advised", True):
            return Verdict(SUPERSEDED, f"the decision rules no longer call for {op['kind']} "
                           "on a fresh read. Nothing was run.", recommendation(decision))
        other = [a for a in decision if a["kind"] in CHANGE_KINDS]
        if other:  # an operator's request, overtaken by a change the rules call for now
            return Verdict(SUPERSEDED, f"{op['kind']} was requested by an operator, and a "
                           f"fresh read now calls for {other[0]['kind']} instead. Nothing "
                           "was run.", recommendation(decision))
    return Verdict(RUN)
