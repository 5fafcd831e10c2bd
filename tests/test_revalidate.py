"""The re-decision before a state-changing step (workers.changes.revalidate): pure rules."""

from __future__ import annotations

from typing import Any

from workers.changes.revalidate import BLOCKED, RUN, SUPERSEDED, judge

SCOPE = ["ex1.contoso.lab", "ex2.contoso.lab", "ex3.contoso.lab"]


def op(kind: str = "stage_new", *, override: bool = False, done: bool = False,
       recorded: dict[str, str] | None = None, targets: list[str] | None = None
       ) -> dict[str, Any]:
    steps = [
        {"index": 0, "changes_state": False, "state": "done", "server": "ex1.contoso.lab"},
        {"index": 1, "changes_state": True, "state": "done" if done else "approved",
         "server": "ex1.contoso.lab", "parameters": [["Server", "ex1.contoso.lab"]]},
        {"index": 2, "changes_state": True, "state": "approved" if done else "pending",
         "server": "ex1.contoso.lab", "parameters": []},
    ]
    return {"kind": kind, "override": override, "steps": steps, "recorded": recorded or {},
            "targets": targets if targets is not None else ["ex1.contoso.lab"]}


def act(kind: str, servers: list[str] | None = None, reason: str = "because") -> dict[str, Any]:
    return {"kind": kind, "servers": servers or [], "reason": reason}


def test_runs_when_everything_answered_nothing_changed_and_the_rules_agree() -> None:
    o = op()
    verdict = judge(o, o["steps"][1], decision=[act("stage_new", ["ex1.contoso.lab"])],
                    unreachable=[], in_scope=SCOPE)
    assert verdict.outcome == RUN and verdict.runs


def test_an_unreachable_server_blocks_an_org_wide_change_unless_overridden() -> None:
    o = op()
    verdict = judge(o, o["steps"][1], decision=[act("stage_new")],
                    unreachable=["EX3.contoso.lab"], in_scope=SCOPE)
    assert verdict.outcome == BLOCKED
    assert "ex3.contoso.lab could not be asked" in verdict.line()
    assert "`/exauth resume` carries on once it answers" in verdict.line()
    overridden = op(override=True)
    assert judge(overridden, overridden["steps"][1], decision=[act("stage_new")],
                 unreachable=["ex3.contoso.lab"], in_scope=SCOPE).runs


def test_the_step_s_own_server_unreachable_blocks_even_with_override() -> None:
    o = op(override=True)
    verdict = judge(o, o["steps"][1], decision=[act("stage_new")],
                    unreachable=["ex1.contoso.lab"], in_scope=SCOPE)
    assert verdict.outcome == BLOCKED and "the step runs there" in verdict.why


def test_a_back_end_repair_concerns_only_its_servers() -> None:
    o = op("repair_backend", targets=["ex2.contoso.lab"])
    step = {**o["steps"][1], "server": "ex2.contoso.lab", "parameters": []}
    decision = [act("repair_backend", ["ex2.contoso.lab"])]
    assert judge(o, step, decision=decision, unreachable=["ex3.contoso.lab"],
                 in_scope=SCOPE).runs
    assert judge(o, step, decision=decision, unreachable=["ex2.contoso.lab"],
                 in_scope=SCOPE).outcome == BLOCKED


def test_changed_facts_supersede_with_what_changed_and_the_recommendation() -> None:
    o = op()
    verdict = judge(o, o["steps"][1], decision=[act("replace_now", reason="it expired")],
                    unreachable=[], in_scope=SCOPE, changed=["current: 0A1B -> 9F8E"])
    assert verdict.outcome == SUPERSEDED
    assert "current: 0A1B -> 9F8E" in verdict.line()
    assert "Recommended now: replace_now (it expired) - `/exauth fix` starts it." in (
        verdict.line())


def test_a_stale_plan_is_superseded_when_the_rules_call_for_something_else() -> None:
    """The clock moved 41 days: the current certificate expired; stage_new is stale."""
    o = op("stage_new")
    verdict = judge(o, o["steps"][1], decision=[act("replace_now", SCOPE, "expired")],
                    unreachable=[], in_scope=SCOPE)
    assert verdict.outcome == SUPERSEDED
    assert "no longer call for stage_new" in verdict.why
    assert verdict.recommended.startswith("replace_now")
    nothing = judge(o, o["steps"][1], decision=[act("none", reason="healthy")],
                    unreachable=[], in_scope=SCOPE)
    assert nothing.outcome == SUPERSEDED and nothing.recommended == "none: healthy"


def test_a_started_operation_finishes_what_it_started() -> None:
    """After its certificate was created, the rest of a rotation completes it even though
    the rules (which see a staged next now) no longer say stage_new."""
    for started in (op(done=True), op(recorded={"new_thumbprint": "AB" * 20})):
        step = started["steps"][2]
        verdict = judge(started, step, decision=[act("wait_for_publish")], unreachable=[],
                        in_scope=SCOPE)
        assert verdict.runs
        # ... but never past an unreachable server or changed facts
        assert judge(started, step, decision=[], unreachable=["ex2.contoso.lab"],
                     in_scope=SCOPE).outcome == BLOCKED
        assert judge(started, step, decision=[], unreachable=[], in_scope=SCOPE,
                     changed=["next: - -> 0A1B"]).outcome == SUPERSEDED


def test_an_import_runs_only_while_the_rules_still_ask_for_that_server() -> None:
    o = op("import_current", targets=["ex3.contoso.lab"])
    step = {**o["steps"][1], "server": "ex3.contoso.lab",
            "parameters": [["Server", "ex3.contoso.lab"]]}
    assert judge(o, step, decision=[act("import_current", ["ex3.contoso.lab"])],
                 unreachable=[], in_scope=SCOPE).runs
    assert judge(o, step, decision=[act("import_current", ["ex2.contoso.lab"])],
                 unreachable=[], in_scope=SCOPE).outcome == SUPERSEDED


def test_an_operator_s_request_runs_unless_the_rules_now_call_for_another_change() -> None:
    """`/exauth rotate` on a healthy org: the rules never called for stage_new."""
    o = {**op("stage_new"), "advised": False}
    assert judge(o, o["steps"][1], decision=[act("none", reason="healthy")], unreachable=[],
                 in_scope=SCOPE).runs
    assert judge(o, o["steps"][1], decision=[act("wait_for_publish")], unreachable=[],
                 in_scope=SCOPE).runs
    verdict = judge(o, o["steps"][1], decision=[act("replace_now", SCOPE, "expired")],
                    unreachable=[], in_scope=SCOPE)
    assert verdict.outcome == SUPERSEDED and "requested by an operator" in verdict.why
    assert verdict.recommended.startswith("replace_now")
