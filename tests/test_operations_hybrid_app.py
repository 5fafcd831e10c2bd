"""Operations that keep the dedicated hybrid application in step, end to end on the lab:
real Redis, the real pypsrp client for Exchange, msal and requests for the Graph stand-in,
every state-changing step approved and run as the worker does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bot.render.operation_card import operation_card
from lab.serve import LabHandle
from tests.fixtures_lab import control
from tests.hybrid_variants import app_table, hybrid_variant
from tests.test_operations_lab import Env, approve_and_run, drive, env_for, start
from workers.changes import lifecycle, operation
from workers.changes.step_kind import StepKind

__all__ = ["env_for"]  # the fixture, shared with tests.test_operations_lab


def app_keys(handle: LabHandle) -> list[str]:
    """The thumbprints of the dedicated hybrid application's keys, from the lab's state."""
    entra = control(handle, "GET", "state")["entra"]
    app = next(a for a in entra["applications"] if a["app_id"] == entra["hybrid_app_id"])
    return [k["thumbprint"] for k in app["keys"]]


def graph_calls(handle: LabHandle, prefix: str = "") -> list[dict[str, Any]]:
    return [c for c in handle.org.calls() if c["endpoint"] == "graph"
            and c["command"].startswith(prefix)]


def test_a_rotation_uploads_the_next_key_before_publication_and_cleans_up(
        env_for: Callable[..., Env]) -> None:
    env = env_for("hybrid")
    old = env.handle.org.auth_config()["current"]
    assert app_keys(env.handle) == [old]
    op_id = start(env, "stage_new")
    op = operation.require(env.conn, op_id)
    kinds = [s["kind"] for s in op["steps"]]
    upload = kinds.index(StepKind.UPLOAD_HYBRID_KEY)
    assert kinds.index(StepKind.STAGE_NEXT) < upload < kinds.index(StepKind.WATCH_PUBLICATION)
    assert kinds[-1] == StepKind.REMOVE_STALE_HYBRID_KEYS
    seen_both = False
    for _ in range(200):
        op = operation.require(env.conn, op_id)
        if op["state"] in operation.CLOSED_STATES or op["state"] == "waiting":
            break
        approve_and_run(env, op_id)
        op = operation.require(env.conn, op_id)
        if op["steps"][upload]["state"] == "done" and not seen_both:
            new = op["recorded"]["new_thumbprint"]
            # Uploaded while the old certificate is still current: nothing is published yet.
            assert env.handle.org.auth_config()["current"] == old
            assert sorted(app_keys(env.handle)) == sorted([old, new])
            seen_both = True
    assert seen_both
    op = drive(env, op_id)
    assert op["state"] == "done", [(s["title"], s["state"], s["outcome"]) for s in op["steps"]]
    new = op["recorded"]["new_thumbprint"]
    assert env.handle.org.auth_config()["current"] == new
    assert app_keys(env.handle) == [new]  # after clean-up: current only
    patches = graph_calls(env.handle, "PATCH")
    assert [c["parameters"]["key_count"] for c in patches] == [2, 1]
    assert all(c["outcome"] == "ok" for c in patches)
    outcome = op["steps"][upload]["outcome"]
    assert outcome.startswith("uploaded ") and "none lost" in outcome


def test_a_403_ends_the_upload_step_with_graphs_reason_on_the_card(
        env_for: Callable[..., Env]) -> None:
    env = env_for("hybrid")
    control(env.handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                           "operation": "write"})
    op = drive(env, start(env, "stage_new"))
    assert op["state"] == "failed"
    failed = next(s for s in op["steps"] if s["state"] == "failed")
    assert failed["kind"] == StepKind.UPLOAD_HYBRID_KEY
    assert "403 Authorization_RequestDenied: Insufficient privileges to complete the " \
           "operation." in failed["outcome"]
    card = json.dumps(operation_card(op))
    assert "Insufficient privileges to complete the operation." in card
    assert app_keys(env.handle) == [env.handle.org.auth_config()["current"]]  # untouched


def test_a_429_during_the_upload_is_retried_as_graph_says(env_for: Callable[..., Env]
                                                          ) -> None:
    env = env_for("hybrid")
    control(env.handle, "POST", "faults", {"endpoint": "graph", "kind": "throttled",
                                           "operation": "write", "retry_after": 1,
                                           "times": 1})
    op_id = start(env, "stage_new")
    op = operation.require(env.conn, op_id)
    upload = next(s["index"] for s in op["steps"] if s["kind"] == StepKind.UPLOAD_HYBRID_KEY)
    while operation.require(env.conn, op_id)["steps"][upload]["state"] != "done":
        result = approve_and_run(env, op_id)
        assert result["state"] != "failed", result
    outcomes = [c["outcome"].split(":")[0] for c in graph_calls(env.handle, "PATCH")]
    assert outcomes == ["429 TooManyRequests", "ok"]


def test_fix_uploads_the_current_certificate_when_the_app_lacks_it(
        env_for: Callable[..., Env]) -> None:
    def no_keys(data: dict[str, Any]) -> None:
        app_table(data)["keys"] = []
    env = env_for(hybrid_variant(no_keys))
    assert app_keys(env.handle) == []
    op_id = start(env)  # fix: the first recommended action
    op = drive(env, op_id)
    assert op["kind"] == "upload_hybrid_key" and op["state"] == "done", op["steps"]
    assert app_keys(env.handle) == [env.handle.org.auth_config()["current"]]


def test_a_non_hybrid_org_never_calls_graph(env_for: Callable[..., Env]) -> None:
    def not_hybrid(data: dict[str, Any]) -> None:
        data["lab"]["hybrid"] = False
    env = env_for(hybrid_variant(not_hybrid))
    assert env.org.hybrid_app is not None  # configured, yet the org is not hybrid
    op_id = start(env, "stage_new")
    kinds = [s["kind"] for s in operation.require(env.conn, op_id)["steps"]]
    assert StepKind.UPLOAD_HYBRID_KEY not in kinds
    assert StepKind.REMOVE_STALE_HYBRID_KEYS not in kinds
    op = drive(env, op_id)
    assert op["state"] == "done"
    assert graph_calls(env.handle) == []
    assert lifecycle.next_index(op) is None


def _one_year_policy(data: dict[str, Any]) -> None:
    data["entra"]["max_key_lifetime_days"] = 365


def test_lifetime_days_makes_a_certificate_the_tenants_policy_accepts(
        env_for: Callable[..., Env]) -> None:
    env = env_for(hybrid_variant(_one_year_policy), rotation="{ lifetime_days = 365 }")
    assert env.org.rotation.lifetime_days == 365
    op = drive(env, start(env, "stage_new"))
    assert op["state"] == "done", [(s["title"], s["outcome"]) for s in op["steps"]
                                   if s["state"] == "failed"]
    create = next(s for s in op["steps"] if s["kind"] == StepKind.CREATE_AUTH_CERT_WITH_LIFETIME)
    assert (create["endpoint"], create["cmdlet"]) == ("host", "New-SelfSignedCertificate")
    new = op["recorded"]["new_thumbprint"]
    assert env.handle.org.auth_config()["current"] == new
    material = env.handle.org.find_certificate("ex1", new).material
    assert material.not_after - material.not_before == timedelta(days=365)
    assert app_keys(env.handle) == [new]
    assert not [c for c in env.handle.org.calls() if c["command"] == "New-ExchangeCertificate"]


def test_without_lifetime_days_the_policy_refuses_the_five_year_key(
        env_for: Callable[..., Env]) -> None:
    env = env_for(hybrid_variant(_one_year_policy))
    op = drive(env, start(env, "stage_new"))
    failed = next(s for s in op["steps"] if s["state"] == "failed")
    assert failed["kind"] == StepKind.UPLOAD_HYBRID_KEY
    assert "lifetime exceeds the max value allowed" in failed["outcome"]
    assert env.handle.org.auth_config()["next"]  # staged, but never published without its key


def test_the_card_shows_the_graph_request_to_approve(env_for: Callable[..., Env]) -> None:
    def no_keys(data: dict[str, Any]) -> None:
        app_table(data)["keys"] = []
    env = env_for(hybrid_variant(no_keys))
    op_id = start(env)
    op = operation.require(env.conn, op_id)
    assert op["steps"][1]["state"] == "awaiting_approval"
    card = json.dumps(operation_card(op))
    current = env.handle.org.auth_config()["current"]
    app_id = env.org.hybrid_app.app_id if env.org.hybrid_app else ""
    line = lifecycle.command(op, op["steps"][1])
    assert line.startswith(f"PATCH /v1.0/applications(appId='{app_id}') -Keep 'every key it "
                           "holds, unchanged' -Add ") and current in line
    assert json.dumps(line)[1:-1] in card
    assert "runs against Microsoft Graph" in card
