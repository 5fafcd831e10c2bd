"""Rehearsal: the recommended change run first on a replica of the org, never on the org.

Every built-in scenario plays "the real org" (a lab of its own): it is snapshotted through
the wire, the change runs on the replica served in-process, and the real lab's call log
must hold nothing but the snapshot's reads, its state untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import SimpleWorker
from slack_bolt import App

from bot import replica_lab
from bot.render import operation_card
from config.lab_settings import settings_for_lab
from config.schema import OrgSettings
from lab.scenario import builtin_names
from lab.serve import LabHandle, write_config
from tests.slack_mock import SlackMock
from tests.test_approvals_slack import CHANNEL, bot, slack, slash, wait_until
from tests.test_cli import exauth
from tests.test_operations_lab import Env
from tests.test_operations_lab import env_for as env_for  # the fixture
from workers.changes import operation
from workers.jobs.queues import CHANGE_QUEUE, READ_QUEUE, SERIALIZER, queue
from workers.rehearsal import rehearsal_record, replica_server
from workers.rehearsal.run_through import REHEARSAL_APPROVER, rehearse

__all__ = ["bot", "slack"]  # fixtures used below

# Exchange reads, and the Graph stand-in's reads of a hybrid org (a token, then GETs).
READS = ("Get-", "Select-Object", "Add-PSSnapin", "GET ")


def is_read(call: dict[str, Any]) -> bool:
    command = str(call["command"])
    return command.startswith(READS) or (command.startswith("POST /")
                                         and command.endswith("/oauth2/v2.0/token"))
# What each built-in org's status recommends, and whether carrying it out on the replica
# goes as its plan says (None: the status recommends no change, nothing is run).
EXPECTED: dict[str, tuple[str | None, bool]] = {
    "healthy": (None, True), "hybrid": (None, True), "weak-key": (None, True),
    "duplicate-auth": (None, True), "staged": (None, True), "unreachable": (None, True),
    "expiring-sha1": ("stage_new", True), "missing-on-server": ("import_current", True),
    "backend-deleted": ("repair_backend", True), "publish-overdue": ("publish_next", True),
    # The emergency path publishes before the new certificate reached the other servers:
    # the rehearsal says so (the status afterwards recommends importing it there).
    "expired": ("replace_now", False),
}


@pytest.fixture(autouse=True)
def replica_lab_installed() -> Iterator[None]:
    replica_lab.install()
    yield
    replica_server.use(None)


def org_of(handle: LabHandle) -> OrgSettings:
    return settings_for_lab(handle.info, handle.password, writer=handle.writer).orgs[0]


def state_of(handle: LabHandle) -> dict[str, Any]:
    state = handle.org.state()
    return {"auth_config": state["auth_config"], "stores": state["stores"],
            "bindings": state["bindings"], "events": state["events"]}


def clock_of(handle: LabHandle) -> datetime:
    return datetime.fromisoformat(handle.org.state()["clock"]["now"].replace("Z", "+00:00"))


def test_every_built_in_scenario_is_in_the_table() -> None:
    assert set(EXPECTED) == set(builtin_names())


@pytest.mark.parametrize("scenario", builtin_names())
def test_a_rehearsal_never_reaches_the_real_org(
        make_lab: Callable[..., LabHandle], conn: redis.Redis, scenario: str) -> None:
    real = make_lab(scenario)
    before, clock = state_of(real), clock_of(real)
    seen: dict[str, int] = {}

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "snapshot":
            seen["calls"] = len(real.org.calls())

    report = rehearse(org_of(real), conn, progress=progress)

    assert len(real.org.calls()) == seen["calls"], "a call reached the org after the snapshot"
    assert all(is_read(c) for c in real.org.calls()), [
        c["command"] for c in real.org.calls() if not is_read(c)]
    assert state_of(real) == before
    # Its clock only ticked with the wall clock: the replica's waits were hours and days.
    assert clock_of(real) - clock < timedelta(minutes=10)
    kind, ok = EXPECTED[scenario]
    assert report["kind"] == kind, report["verdict"]
    assert report["ok"] is ok, (report["verdict"], report["differences"])
    assert not [d for d in report["differences"] if "replica" in d], report["differences"]
    if kind is None:
        assert report["steps"] == [] and report["state"] == "nothing to do"
        return
    assert report["state"] == "done", report["steps"]
    assert all(s["state"] in ("done", "skipped") for s in report["steps"])
    assert all(s["virtual_seconds"] is not None for s in report["steps"])
    # The replica's operation is closed and carries the replica's name, not the org's.
    assert report["replica"] != report["org"]
    assert operation.open_ops(conn, report["replica"]) == []
    assert operation.open_ops(conn, report["org"]) == []


def test_a_staged_rotation_goes_through_every_wait(
        make_lab: Callable[..., LabHandle], conn: redis.Redis) -> None:
    real = make_lab("expiring-sha1")
    report = rehearse(org_of(real), conn)
    assert report["ok"] and report["verdict"] == "ok" and report["differences"] == []
    by_title = {s["title"]: s for s in report["steps"]}
    # Cross-site replication, publication on the effective date, the 24 h clean-up gate.
    assert by_title["Watch for publication"]["virtual_seconds"] > 24 * 3600
    removals = [s for s in report["steps"] if s["title"].startswith("Remove the old")]
    assert removals and removals[0]["virtual_seconds"] >= 24 * 3600
    assert report["virtual_seconds"] >= sum(s["virtual_seconds"] for s in report["steps"])
    assert [a["kind"] for a in report["status_after"]["actions"]] == ["none"]
    line = rehearsal_record.for_operation(conn, "lab", "stage_new")
    assert line is not None and line.startswith("rehearsed ") and line.endswith(": ok")


def test_the_operation_card_says_how_the_rehearsal_went(
        make_lab: Callable[..., LabHandle], conn: redis.Redis) -> None:
    rehearse(org_of(make_lab("expired")), conn)
    line = rehearsal_record.for_operation(conn, "lab", "replace_now")
    assert line is not None and "import_current" in line and not line.endswith(": ok")
    op = {"id": "abc123", "org": "lab", "kind": "replace_now", "state": "open",
          "requester": "U0ALICE", "reason": "expired", "steps": []}
    card = json.dumps(operation_card.operation_card(op, line)["blocks"])
    assert "rehearsed " in card and "import_current" in card
    assert "rehearsed" not in json.dumps(operation_card.operation_card(op)["blocks"])


def test_a_named_action_is_rehearsed_where_the_status_wants_none(
        make_lab: Callable[..., LabHandle], conn: redis.Redis, tmp_path: Path,
        redis_url: str) -> None:
    """`exauth rehearse --action stage_new` as a user runs it: a real process."""
    real = make_lab("healthy")
    config = write_config(real.info, tmp_path / "exauth.toml", writer=real.writer)
    config.write_text(config.read_text() + f'\n[redis]\nurl = "{redis_url}"\n')
    result = exauth("--config", str(config), "rehearse", "--action", "stage_new", "--json",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "stage_new" and report["ok"], report["differences"]
    approved = [s for s in report["steps"] if s["changes_state"]]
    assert approved and all(s["state"] == "done" for s in approved)
    assert all(is_read(c) for c in real.org.calls())
    table = exauth("--config", str(config), "rehearse", "--action", "stage_new", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Watch for publication" in table.stdout and "Differed from the plan" in table.stdout


def test_without_a_replica_server_a_rehearsal_says_so(
        make_lab: Callable[..., LabHandle], conn: redis.Redis) -> None:
    replica_server.use(None)
    real = make_lab("expiring-sha1")
    with pytest.raises(replica_server.NoReplicaServer, match="cannot serve a replica"):
        rehearse(org_of(real), conn)
    assert all(is_read(c) for c in real.org.calls())


def test_the_rehearsal_approver_is_nobody_in_the_org() -> None:
    assert REHEARSAL_APPROVER.startswith("U0")


def test_slash_rehearse_then_the_real_card_says_so(
        bot: Callable[..., tuple[Env, App]], slack: SlackMock) -> None:
    """`/exauth rehearse`: one message in the channel, the steps in its thread; the card of
    the real operation started afterwards says how the rehearsal went."""
    env, app = bot("expiring-sha1")
    reads, changes = queue(READ_QUEUE, env.conn), queue(CHANGE_QUEUE, env.conn)
    assert slash(app, slack, "rehearse") == 200
    placeholder = slack.wait_for("chat.postMessage")[0]
    assert placeholder.params["text"] == "Rehearsing on a replica of lab..."
    wait_until(lambda: reads.count == 1)
    SimpleWorker([reads], connection=env.conn, serializer=SERIALIZER).work(burst=True)

    [update] = slack.calls_of("chat.update")
    assert update.params["ts"] == placeholder.response["ts"]
    assert update.params["text"] == "Rehearsal of stage_new on lab: ok"
    [thread] = [c for c in slack.calls_of("chat.postMessage")
                if c.params.get("thread_ts") == placeholder.response["ts"]]
    assert "Watch for publication" in json.dumps(thread.params)
    assert not [c for c in env.handle.org.calls() if not is_read(c)]

    assert slash(app, slack, "fix") == 200
    wait_until(lambda: changes.count == 1)
    SimpleWorker([changes], connection=env.conn, serializer=SERIALIZER).work(burst=True)
    cards = [c for c in slack.calls_of("chat.postMessage")
             if c.params.get("channel") == CHANNEL and not c.params.get("thread_ts")
             and "stage_new" in str(c.params.get("text"))]
    assert cards and "rehearsed " in json.dumps(cards[-1].params) and ": ok" in json.dumps(
        cards[-1].params)


def test_the_hybrid_application_is_rehearsed_on_the_replicas_graph(
        make_lab: Callable[..., LabHandle], conn: redis.Redis) -> None:
    """A hybrid org's rotation uploads the new key to the dedicated Entra application: on
    the replica's own Graph stand-in (a lab tenant), never on the org's."""
    real = make_lab("hybrid")
    seen: dict[str, int] = {}
    report = rehearse(org_of(real), conn, kind="stage_new",
                      progress=lambda event, _: seen.setdefault(event, len(real.org.calls())))
    assert report["ok"], (report["verdict"], report["differences"])
    uploads = [s for s in report["steps"] if s["title"].startswith("Upload the next Auth")]
    assert uploads and all(s["state"] == "done" for s in uploads)
    assert len(real.org.calls()) == seen["snapshot"]
    assert all(is_read(c) for c in real.org.calls())
    assert [f["code"] for f in report["status_after"]["findings"]
            if f["code"].startswith("HYBRID_APP_")] == []
