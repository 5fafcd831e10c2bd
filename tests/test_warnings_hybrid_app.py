"""The daily warnings sweep speaks up for the dedicated hybrid application, end to end:
the lab over PSRP and its Graph stand-in over HTTPS, real Redis, the Slack mock; the Fix
button starts `upload_hybrid_key`, and the upload (approved and run as the worker does)
resolves the warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient

from bot.callbacks.warning_posts import deliver
from bot.listeners.operation_actions import Approvals
from bot.listeners.warning_buttons import handle_fix
from bot.render.warning_notice import FIX_ACTION
from config.load import load_settings
from tests.fixtures_lab import control
from tests.hybrid_variants import app_table, hybrid_variant
from tests.slack_mock import BOT_TOKEN, Call, SlackMock
from tests.test_operations_hybrid_app import app_keys
from tests.test_operations_lab import APPROVER, Env, drive, env_for, start
from workers.jobs.queues import CHANGE_QUEUE, queue
from workers.warnings import warning_state

__all__ = ["env_for"]

AUTH = "CN=Microsoft Exchange Server Auth Certificate"
STATE_BUDGET = 1024  # bytes of warning state per org (keys, fields and values)


def sweep_and_post(env: Env, slack: SlackMock, run_id: str) -> dict[str, Any]:
    from workers.warnings.sweep import sweep

    result = sweep(env.org, env.conn, now=env.handle.org.now(), run_id=run_id)
    deliver(WebClient(token=BOT_TOKEN, base_url=slack.api_url), env.conn, result)
    return result


def top_posts(slack: SlackMock) -> list[Call]:
    return [c for c in slack.calls_of("chat.postMessage") if not c.params.get("thread_ts")]


def replies(slack: SlackMock) -> list[Call]:
    return [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts")]


def resolved(slack: SlackMock) -> list[str]:
    return [str(c.params.get("text")) for c in slack.calls_of("chat.update")
            if "Resolved" in str(c.params.get("text"))]


def buttons(call: Call) -> list[dict[str, Any]]:
    blocks = call.params["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def state_bytes(env: Env) -> int:
    """What the org's warning state holds in Redis: every key name, field and value."""
    total = 0
    for key in env.conn.scan_iter(match=f"*warn*{env.org.name}*"):
        total += len(key)
        kind = env.conn.type(key)
        if kind == b"hash":
            total += sum(len(k) + len(v) for k, v in env.conn.hgetall(key).items())
        elif kind == b"set":
            total += sum(len(m) for m in env.conn.smembers(key))
        elif kind == b"string":
            total += len(env.conn.get(key) or b"")
    return total


def no_keys(data: dict[str, Any]) -> None:
    app_table(data)["keys"] = []


def test_current_key_missing_warns_daily_fix_uploads_and_resolves(
        env_for: Callable[..., Env], slack: SlackMock) -> None:
    env = env_for(hybrid_variant(no_keys))
    current = env.handle.org.auth_config()["current"].upper()
    key = f"hybrid_app:current:{current}"

    sweep_and_post(env, slack, "h1")
    [warning] = top_posts(slack)
    state = warning_state.get(env.conn, env.org.name, key)
    assert state is not None and state.severity == "critical"
    assert "not on the dedicated hybrid application" in warning.params["text"]
    fix = next(b for b in buttons(warning) if b["action_id"] == FIX_ACTION)
    assert json.loads(fix["value"]) == {"org": env.org.name, "key": key}
    env.handle.org.advance(timedelta(hours=1))
    sweep_and_post(env, slack, "h2")  # same day: nothing
    assert len(slack.calls_of("chat.postMessage")) == 1
    env.handle.org.advance(timedelta(days=1))
    sweep_and_post(env, slack, "h3")  # critical: reminded once a day in the thread
    assert len(top_posts(slack)) == 1 and len(replies(slack)) == 1
    assert replies(slack)[0].params["text"].startswith(":rotating_light: Daily reminder:")
    assert state_bytes(env) <= STATE_BUDGET, state_bytes(env)

    # Fix: the button starts the hybrid upload (not whatever comes first) for the clicker.
    settings = load_settings()
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    body = {"user": {"id": APPROVER}, "channel": {"id": "C0OPS"},
            "message": {"ts": warning.response["ts"]},
            "actions": [{"action_id": FIX_ACTION, "value": fix["value"]}]}
    assert handle_fix(settings, env.conn, client, body,
                      Approvals(settings, env.conn, client)) == "started"
    [job] = queue(CHANGE_QUEUE, env.conn).get_jobs()
    assert job.func_name == "workers.jobs.change_jobs.start_operation_job"
    assert list(job.args[:3]) == [env.org.name, "upload_hybrid_key", APPROVER]
    assert "upload_hybrid_key" in slack.calls_of("chat.postEphemeral")[-1].params["text"]
    job.delete()

    # What the worker does with that job: read, plan, approve, run (PATCH on the lab).
    op = drive(env, start(env, "upload_hybrid_key"))
    assert op["kind"] == "upload_hybrid_key" and op["state"] == "done", op["steps"]
    assert app_keys(env.handle) == [current]
    env.handle.org.advance(timedelta(hours=1))
    sweep_and_post(env, slack, "h4")
    assert len(resolved(slack)) == 1 and "is on the application now" in resolved(slack)[0]
    assert warning_state.get(env.conn, env.org.name, key) is None or \
        not warning_state.get(env.conn, env.org.name, key).posted


def test_next_key_missing_is_a_warning_then_critical_near_its_effective_date(
        env_for: Callable[..., Env], slack: SlackMock) -> None:
    def staged(data: dict[str, Any]) -> None:
        data["certificate"].append({"id": "next-auth", "subject": AUTH, "days_left": 1800,
                                    "installed_on": ["ex1", "ex2", "ex3"]})
        data["auth_config"].update(next="next-auth", next_effective="+10d")
    env = env_for(hybrid_variant(staged))
    nxt = env.handle.org.auth_config()["next"].upper()
    key = f"hybrid_app:next:{nxt}"

    sweep_and_post(env, slack, "n1")  # 10 days before: a warning
    [first] = top_posts(slack)
    assert first.params["text"].startswith(":warning:")
    assert "before it is published" in first.params["text"]
    env.handle.org.advance(timedelta(days=1))
    sweep_and_post(env, slack, "n2")  # still a warning: no daily repeat
    assert len(slack.calls_of("chat.postMessage")) == 1
    env.handle.org.advance(timedelta(days=2, hours=1))
    sweep_and_post(env, slack, "n3")  # within 7 days: critical, a new message
    posted = top_posts(slack)
    assert len(posted) == 2 and posted[1].params["text"].startswith(":rotating_light:")
    state = warning_state.get(env.conn, env.org.name, key)
    assert state is not None and state.severity == "critical"
    assert state.ts == posted[1].response["ts"]
    assert state_bytes(env) <= STATE_BUDGET, state_bytes(env)


def test_unreadable_warns_once_and_keeps_what_it_cannot_judge(
        env_for: Callable[..., Env], slack: SlackMock) -> None:
    env = env_for(hybrid_variant(no_keys))
    current = env.handle.org.auth_config()["current"].upper()
    sweep_and_post(env, slack, "u1")
    assert len(top_posts(slack)) == 1  # the current key is missing

    control(env.handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                           "operation": "read"})
    env.handle.org.advance(timedelta(hours=2))
    sweep_and_post(env, slack, "u2")
    posted = top_posts(slack)
    assert len(posted) == 2
    assert "403 Authorization_RequestDenied" in posted[1].params["text"]
    assert "Application.ReadWrite.OwnedBy" in posted[1].params["text"]
    assert resolved(slack) == []  # unknown is not fixed: the missing key stays open
    assert warning_state.get(env.conn, env.org.name, f"hybrid_app:current:{current}")
    env.handle.org.advance(timedelta(days=1))
    sweep_and_post(env, slack, "u3")  # a warning, not repeated daily
    assert len(top_posts(slack)) == 2
    assert all("Daily reminder" not in c.params["text"] or "not on the dedicated" in
               c.params["text"] for c in replies(slack))

    control(env.handle, "POST", "faults", {"clear": True})
    env.handle.org.advance(timedelta(hours=1))
    sweep_and_post(env, slack, "u4")
    [done] = resolved(slack)
    assert "can be read through Microsoft Graph again" in done
    assert warning_state.get(env.conn, env.org.name, f"hybrid_app:current:{current}")
    assert state_bytes(env) <= STATE_BUDGET, state_bytes(env)
