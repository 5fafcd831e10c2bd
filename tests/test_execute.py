"""workers.changes.execute and the pure parts of workers.changes.lifecycle: fingerprints,
placeholders,
recognising our own effects, choosing the action; and hostile text reaching the lab only
as literal bound parameter values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from config.lab_settings import settings_for_lab
from lab.serve import LabHandle
from workers.changes import execute, lifecycle
from workers.changes.operation import Operation, Step
from workers.changes.plan import NEW_THUMBPRINT
from workers.changes.step_kind import StepKind
from workers.clock import CallableClock, FixedClock
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError
from workers.exchange.session import Secret
from workers.status.report_model import ActionKind, OrgStatus, parse_status

HOSTILE = "ex9'; Remove-Item C:\\ -Recurse; $(Stop-Computer) `\"x\"\n\u202etxt.exe ✓"
T1, T2, T3 = "A" * 40, "B" * 40, "C" * 40


def status(current: str | None = T1, nxt: str | None = None, previous: str | None = None,
           **extra: Any) -> OrgStatus:
    """A small status document, read by the model as every consumer gets it."""
    def cert(t: str | None, present: list[str], **more: Any) -> dict[str, Any] | None:
        return None if t is None else {
            "thumbprint": t, "subject": None, "not_before": None,
            "not_after": "2031-01-01T00:00:00Z", "days_left": None, "signature_hash": None,
            "key_size": None, "present_on": present, "missing_on": [], "unknown_on": [],
            **more}

    def server(name: str) -> dict[str, Any]:
        return {"name": name, "fqdn": f"{name}.contoso.lab", "site": "Site-A",
                "version": "Version 15.2 (Build 1544.4)", "roles": ["Mailbox"],
                "reachable": True, "error": None}

    return parse_status({
        "org": "contoso", "checked_at": "2026-01-01T00:00:00Z", "hybrid": False,
        "sites": ["Site-A"], "servers": [server("ex1"), server("ex2")],
        "auth": {"current": cert(current, ["ex1.contoso.lab", "ex2.contoso.lab"]),
                 "next": cert(nxt, ["ex1.contoso.lab"], effective=None),
                 "previous": cert(previous, [])},
        "backend": [{"server": "ex2.contoso.lab", "thumbprint": None, "not_after": None,
                     "days_left": None, "problem": "no_certificate"}],
        "findings": [],
        "actions": extra.get("actions", []),
    })


def op(kind: str = "stage_new", **fields: Any) -> Operation:
    """Just the fields these checks read (not a whole, valid document)."""
    return Operation.model_construct(**{"id": "op1", "kind": kind,
                                        "targets": ["ex2.contoso.lab"], "recorded": {},
                                        "steps": [], **fields})


def stored(**fields: Any) -> Step:
    """A stored step with just the fields these checks read."""
    if "kind" in fields:
        fields["kind"] = StepKind(fields["kind"])
    return Step.model_construct(**fields)


def test_fingerprint_names_what_changed() -> None:
    before = execute.fingerprint(status(), op())
    after = execute.fingerprint(status(nxt=T2), op())
    changed = execute.differences(before, after)
    assert changed == ["next: None -> BBBBBBBB…"]
    assert execute.differences(before, execute.fingerprint(status(), op())) == []


def test_fingerprint_of_backend_and_import_covers_the_target_servers() -> None:
    repair = op("repair_backend")
    assert execute.fingerprint(status(), repair)["backend"] == {
        "ex2.contoso.lab": [None, "no_certificate"]}
    fixed = status()
    fixed.backend[0] = fixed.backend[0].model_copy(update={"thumbprint": T3, "problem": None})
    assert execute.differences(execute.fingerprint(status(), repair),
                               execute.fingerprint(fixed, repair))
    imp = op("import_next")
    assert execute.fingerprint(status(nxt=T2), imp)["present"] == {"ex2.contoso.lab": False}


def test_resolve_fills_placeholders_and_binds_bools_and_positionals(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    doc = op(recorded={"new_thumbprint": T2})
    step = stored(kind="bind_backend_cert",
                  cmdlet="New-IISSiteBinding", server="ex2.contoso.lab", parameters=[
        ["CertificateThumbPrint", NEW_THUMBPRINT], ["", "/noforce"],
        ["PrivateKeyExportable", True], ["Confirm", False], ["Password", "<secret:pfx>"]])
    bound = execute.resolve(conn, doc, step, status(), None)  # type: ignore[arg-type]
    names = [name for name, _ in bound]
    assert names == ["CertificateThumbPrint", None, "PrivateKeyExportable", "Confirm", "Password"]
    assert bound[0][1] == T2 and bound[1][1] == "/noforce" and bound[3][1] is False
    assert bound[2][1] is True  # a [bool]: the client sends True as a value, None = switch
    assert isinstance(bound[4][1], Secret)  # sent as a SecureString, never shown
    assert "***" in repr(bound[4][1])
    password = bound[4][1].value
    assert password not in repr(bound)
    assert len(password) >= 24 and conn.ttl(execute.secret_key("op1", "pfx")) > 0
    # The same operation gets the same secret back (export and import must match).
    assert execute.secret(conn, "op1", "pfx") == password
    execute.forget_secrets(conn, "op1")
    assert conn.get(execute.secret_key("op1", "pfx")) is None


def test_a_step_without_a_recorded_thumbprint_is_refused(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    step = stored(kind="stage_next", cmdlet="Set-AuthConfig", server="ex1", parameters=[
        ["NewCertificateThumbprint", NEW_THUMBPRINT]])
    with pytest.raises(execute.StepRefused):
        execute.resolve(conn, op(), step, status(), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("step", "world", "done"), [
    ({"kind": "stage_next", "cmdlet": "Set-AuthConfig",
      "parameters": [["NewCertificateThumbprint", NEW_THUMBPRINT]]},
     status(nxt=T2), True),
    ({"kind": "stage_next", "cmdlet": "Set-AuthConfig",
      "parameters": [["NewCertificateThumbprint", NEW_THUMBPRINT]]},
     status(nxt=T3), False),
    ({"kind": "publish_next", "cmdlet": "Set-AuthConfig",
      "parameters": [["PublishCertificate", None]]},
     status(current=T2), True),
    ({"kind": "clear_previous", "cmdlet": "Set-AuthConfig",
      "parameters": [["ClearPreviousCertificate", None]]},
     status(previous=T1), False),
    ({"kind": "clear_previous", "cmdlet": "Set-AuthConfig",
      "parameters": [["ClearPreviousCertificate", None]]},
     status(), True),
    ({"kind": "remove_old_auth_cert", "cmdlet": "Remove-ExchangeCertificate", "parameters": [
        ["Server", "ex2.contoso.lab"], ["Thumbprint", T1]]}, status(), False),
    ({"kind": "recycle_app_pool", "cmdlet": "Restart-WebAppPool",
      "parameters": [["Name", "MSExchangeOWAAppPool"]]},
     status(), False),
])
def test_already_done_recognises_our_own_effects(step: dict[str, Any], world: OrgStatus,
                                                  done: bool) -> None:
    assert (execute.already_done(op(recorded={"new_thumbprint": T2}),
                                 stored(server="ex1.contoso.lab", **step), world)
            is not None) is done


def test_choose_action_first_change_and_named_kinds() -> None:
    acts = [{"kind": "repair_backend", "servers": ["ex2.contoso.lab"], "reason": "r"},
            {"kind": "stage_new", "servers": ["ex1.contoso.lab"], "reason": "s"}]
    world = status(actions=acts)
    assert lifecycle.choose_action(world).kind == ActionKind.REPAIR_BACKEND
    assert lifecycle.choose_action(world, "repair_backend", ["EX2"]).servers == [
        "ex2.contoso.lab"]
    with pytest.raises(lifecycle.NothingToDo, match="no Exchange server named"):
        lifecycle.choose_action(world, "repair_backend", [HOSTILE])
    blocked = status(actions=[{"kind": "blocked", "servers": ["ex2"], "reason": "down"}])
    with pytest.raises(lifecycle.NothingToDo, match="blocked"):
        lifecycle.choose_action(blocked)
    waiting = status(actions=[{"kind": "wait_for_publish", "servers": [], "reason": "soon"}])
    with pytest.raises(lifecycle.NothingToDo, match="soon"):
        lifecycle.choose_action(waiting)


def test_hostile_text_reaches_the_lab_only_as_literal_values(
        make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("healthy")
    org = settings_for_lab(handle.info, handle.password, writer=handle.writer).orgs[0]
    client = ExchangeClient(org)
    for endpoint, cmdlet, name in (("exchange", "Get-ExchangeServer", "Identity"),
                                   ("host", "Get-IISSiteBinding", "Name"),
                                   ("host", "Restart-WebAppPool", "Name")):
        step = stored(server=handle.writer, endpoint=endpoint, cmdlet=cmdlet,
                      parameters=[[name, HOSTILE]])
        with pytest.raises(ExchangeError):
            execute.invoke(client, step, [(name, HOSTILE)])
        call = handle.org.calls()[-1]
        assert call["command"] == cmdlet
        assert call["parameters"] == {name: HOSTILE}
    commands = {c["command"] for c in handle.org.calls()}
    assert commands <= {"Get-ExchangeServer", "Get-IISSiteBinding", "Restart-WebAppPool"}
    assert all(p["works"] for s in handle.org.state()["pools"].values() for p in s.values())


def test_breakglass_confirms_each_step_and_audits_the_local_user(
        make_lab: Callable[..., LabHandle], redis_url: str, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from bot import breakglass
    from config.load import load_settings
    from tests.test_operations_lab import make_config
    from workers import audit

    handle = make_lab("backend-deleted")
    monkeypatch.setenv("EXAUTH_CONFIG", str(make_config(handle, tmp_path / "x.toml", redis_url)))
    monkeypatch.setenv("REDIS_URL", redis_url)
    clock = CallableClock(handle.org.now)
    asked: list[str] = []
    lines: list[str] = []
    settings = load_settings()
    assert breakglass.run(settings, None, ask=lambda q: "no", isatty=lambda: False,
                          out=lines.append, clock=clock) == 2
    code = breakglass.run(settings, None, ask=lambda q: asked.append(q) or "yes",
                          isatty=lambda: True, out=lines.append, clock=clock)
    assert code == 0, lines
    assert len(asked) == 4  # create, remove the empty binding, bind, iisreset
    assert any("New-ExchangeCertificate -Server ex2.contoso.lab -Services None" in x
               for x in lines)
    binding = handle.org.state()["bindings"]["ex2"]["backend"]
    assert binding["in_store"]
    entries = audit.entries(redis.Redis.from_url(redis_url), "lab", 200)
    assert {e["actor"] for e in entries if e["action"].startswith("breakglass")} == {
        f"local:{getpass.getuser()}"}


def test_org_now_is_the_writers_clock_and_ours_when_it_cannot_say(
        make_lab: Callable[..., LabHandle]) -> None:
    from datetime import UTC, datetime, timedelta

    handle = make_lab("healthy")
    handle.org.advance(timedelta(days=3))
    org = settings_for_lab(handle.info, handle.password, writer=handle.writer).org()
    assert abs(execute.org_now(org) - handle.org.now()) < timedelta(minutes=1)
    writer = handle.writer.split(".")[0]
    handle.org.add_fault({"server": writer, "endpoint": "host", "kind": "unreachable"})
    fixed = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    assert execute.org_now(org, clock=FixedClock(fixed)) == fixed
    assert abs(execute.org_now(org) - datetime.now(UTC)) < timedelta(minutes=1)


def test_breakglass_without_redis_changes_nothing_and_masks_the_redis_password(
        make_lab: Callable[..., LabHandle]) -> None:
    from bot import breakglass
    from config.load import settings_from_dict

    handle = make_lab("backend-deleted")
    lab = settings_for_lab(handle.info, handle.password, writer=handle.writer)
    settings = settings_from_dict({"redis": {"url": "redis://:s3cret-pw@127.0.0.1:1/0"}})
    settings = settings.model_copy(update={"orgs": lab.orgs})
    lines: list[str] = []
    assert breakglass.run(settings, None, ask=lambda q: "yes", isatty=lambda: True,
                          out=lines.append) == 2
    assert lines and lines[-1].startswith(
        "exauth fix: Redis at redis://:***@127.0.0.1:1/0 is not reachable"), lines
    assert "s3cret-pw" not in "\n".join(lines)
    assert not [c for c in handle.org.calls() if c["command"].startswith(("New-", "Remove-"))]
