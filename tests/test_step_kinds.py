"""What a step does is decided by its kind, never by its title.

Against the lab, end to end (real Redis, the real pypsrp client): an operation whose every
step title is renamed runs the same cmdlets, makes the same verifications and ends the
same way as one with the plan's titles; and an operation document written before steps
had kinds (today's format: steps without `kind`) still runs to the same outcome.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from config.load import load_settings
from lab.serve import LabHandle
from tests.test_findings import CUR, NOW, NXT, PREV, cert, org, server
from tests.test_operations_lab import Env, drive, make_config, start
from workers.changes import lifecycle, operation
from workers.changes.plan import steps as plan_steps
from workers.changes.step_kind import StepKind, legacy_kind
from workers.clock import CallableClock
from workers.status.observation import BackendObs
from workers.status.report import build_status
from workers.status.report_model import Action, ActionKind, OrgStatus

PROCEDURES = {  # scenario -> the operation its status calls for
    "expiring-sha1": "stage_new",
    "expired": "replace_now",
    "missing-on-server": "import_current",
    "backend-deleted": "repair_backend",
}
_THUMB = re.compile(r"\b[0-9A-F]{8}(?:[0-9A-F]{32}|…)")
_BYTES = re.compile(r"<\d+ bytes>")  # the size of an exported PFX varies
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


@pytest.fixture()
def lab_env(
    make_lab: Callable[..., LabHandle], redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str], Env]]:
    """A fresh lab per call; the config (and the clock handed to the jobs, `env.clock`) are
    the newest one's, so a test can run the same procedure twice, one lab after the other."""
    made = 0

    def _make(scenario: str) -> Env:
        nonlocal made
        made += 1
        handle = make_lab(scenario)
        config = make_config(handle, tmp_path / f"exauth-{made}.toml", redis_url)
        monkeypatch.setenv("EXAUTH_CONFIG", str(config))
        monkeypatch.setenv("REDIS_URL", redis_url)
        return Env(handle, load_settings().orgs[0], redis.Redis.from_url(redis_url), config,
                   CallableClock(handle.org.now))

    yield _make


def _masked(value: Any) -> str:
    """Thumbprints and times differ between two labs; everything else must not."""
    text = _THUMB.sub("<thumbprint>", str(value))
    return _BYTES.sub("<bytes>", _TIME.sub("<time>", text))


def trace(env: Env, op: dict[str, Any]) -> dict[str, Any]:
    """What an operation did: its end, each step's end and every call the lab received.

    State-changing calls are counted; reads only need to have happened: how often the wait
    loop re-reads the org depends on how the lab clock and the wall clock line up, not on
    the step titles."""
    calls: Counter[tuple[Any, ...]] = Counter()
    for c in env.handle.org.calls():
        call = (c["endpoint"], c["server"], c["command"],
                tuple(sorted((k, _masked(v)) for k, v in c["parameters"].items())),
                _masked(c["outcome"]))
        if c["command"].lower().startswith(("get-", "test-", "select-")):
            calls[call] = 1
        else:
            calls[call] += 1
    return {
        "state": op["state"],
        "kind": op["kind"],
        "recorded": sorted(op["recorded"]),
        "steps": [(s["cmdlet"], s["server"], s["state"], _masked(s["outcome"]))
                  for s in op["steps"]],
        "calls": calls,
    }


def run_procedure(env: Env) -> dict[str, Any]:
    return drive(env, start(env))


_BASELINES: dict[str, dict[str, Any]] = {}


def baseline(lab_env: Callable[[str], Env], scenario: str) -> dict[str, Any]:
    """The trace of the procedure as planned, with the plan's titles and kinds (the same on
    every run of a scenario, so it is computed once for both tests below)."""
    if scenario not in _BASELINES:
        env = lab_env(scenario)
        op = run_procedure(env)
        assert op["state"] == "done" and op["kind"] == PROCEDURES[scenario], op
        _BASELINES[scenario] = trace(env, op)
    return _BASELINES[scenario]


def _renamed(original: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    def plan_with_other_titles(*args: Any, **kwargs: Any) -> list[Any]:
        return [dataclasses.replace(step, title=f"step {number}")
                for number, step in enumerate(original(*args, **kwargs), 1)]

    return plan_with_other_titles


@pytest.mark.parametrize("scenario", list(PROCEDURES))
def test_renaming_every_step_title_changes_nothing(
        scenario: str, lab_env: Callable[[str], Env], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = baseline(lab_env, scenario)
    monkeypatch.setattr(lifecycle, "plan_steps", _renamed(lifecycle.plan_steps))
    renamed = lab_env(scenario)
    op = run_procedure(renamed)
    assert [s["title"] for s in op["steps"]] == [f"step {n}" for n in
                                                 range(1, len(op["steps"]) + 1)]
    got = trace(renamed, op)
    assert got == expected, [(s["title"], s["state"], s["outcome"])
                                            for s in op["steps"]]
    if scenario == "backend-deleted":
        # The back end repair still verifies the binding it made, by reading it back.
        last = op["steps"][-1]
        assert last["cmdlet"] == "Get-IISSiteBinding" and last["state"] == "done"
        assert last["outcome"].startswith("ex2.contoso.lab: *:444: bound to ")


def _as_written_before_kinds(conn: redis.Redis, op_id: str) -> None:
    """Rewrite the stored document as exauth wrote it before steps had kinds."""
    key = operation.op_key(op_id)
    doc = json.loads(conn.get(key) or b"null")
    for step in doc["steps"]:
        del step["kind"]
    conn.set(key, json.dumps(doc, sort_keys=True))


@pytest.mark.parametrize("scenario", list(PROCEDURES))
def test_an_operation_stored_before_step_kinds_runs_to_the_same_outcome(
        scenario: str, lab_env: Callable[[str], Env], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = baseline(lab_env, scenario)
    env = lab_env(scenario)
    written: dict[str, Any] = {}
    advance = lifecycle.advance

    def old_format_then_advance(conn: redis.Redis, org: Any, op: operation.Operation,
                                **kw: Any) -> dict[str, Any]:
        """Between creating the operation and running anything of it: the job carries on
        with the document as stored in the old format, loaded again."""
        if not written:
            written["kinds"] = [s["kind"] for s in operation.require(conn, op.id)["steps"]]
            _as_written_before_kinds(conn, op.id)
            written["raw"] = json.loads(conn.get(operation.op_key(op.id)) or b"null")
            op = operation.Operation.require(conn, op.id)
            written["loaded"] = [s.kind.value for s in op.steps]
        return advance(conn, org, op, **kw)

    monkeypatch.setattr(lifecycle, "advance", old_format_then_advance)
    op_id = start(env)
    monkeypatch.setattr(lifecycle, "advance", advance)
    raw_steps = written["raw"]["steps"]
    assert raw_steps and not any("kind" in step for step in raw_steps)
    assert written["loaded"] == written["kinds"]  # derived on load, as the plan sets them
    done = drive(env, op_id)

    assert trace(env, done) == expected
    stored = json.loads(env.conn.get(operation.op_key(op_id)) or b"null")
    assert [s.get("kind") for s in stored["steps"]] == written["kinds"]  # kept by the saves


# --- the upgrade mapping against today's plan, every action kind -----------------------


def _statuses() -> list[OrgStatus]:
    """Staged path, 30-day and 49-hour effective dates, the emergency path; a next and a
    previous certificate; a back end without a binding; hybrid and not."""
    return [build_status(obs) for obs in (
        org(server("ex1", cert(CUR, 50)), server("ex2", back=BackendObs(False)),
            server("ex3"), hybrid=True),
        org(server("ex1", cert(CUR, 20), cert(NXT, 400), cert(PREV, 5)),
            server("ex2", cert(CUR, 20)), server("ex3", cert(CUR, 20)),
            next=NXT, effective=NOW + timedelta(days=3), previous=PREV),
        org(server("ex1", cert(CUR, 2)), server("ex2", cert(CUR, 2)), server("ex3")),
    )]


@pytest.mark.parametrize("kind", list(operation.KINDS))
def test_legacy_kind_gives_each_step_of_today_s_plan_its_kind(kind: str) -> None:
    """Titles and cmdlets as the plan writes them today map back to the kinds it sets."""
    seen = 0
    for status in _statuses():
        servers = [s.fqdn for s in status.servers][1:]
        action = Action(kind=ActionKind(kind), servers=servers, reason="r")
        for writer in ("ex1", "ex2"):
            for index, step in enumerate(plan_steps(status, action, writer=writer, now=NOW)):
                stored = {**step.to_dict(), "index": index}
                del stored["kind"], stored["command"]
                assert legacy_kind(kind, stored) is step.kind, stored["title"]
                seen += 1
    assert seen


def test_a_step_without_a_valid_kind_is_refused() -> None:
    step = {"title": "x", "server": "ex1", "endpoint": "exchange", "cmdlet": "Get-AuthConfig",
            "parameters": [], "changes_state": False}
    with pytest.raises(operation.OperationError, match=r"steps\[0\]\.kind"):
        operation.new_step(0, step)
    with pytest.raises(operation.OperationError, match=r"steps\[0\]\.kind"):
        operation.new_step(0, {**step, "kind": "Re-read AuthConfig"})
    assert operation.new_step(0, {**step, "kind": StepKind.REREAD_AUTH_CONFIG})["kind"] == \
        "reread_auth_config"

