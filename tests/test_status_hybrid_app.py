"""Status of a hybrid org's dedicated application, over the wire: Exchange over PSRP and
the Graph stand-in over HTTPS; an org that is not hybrid never calls Graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.serve import LabHandle
from tests.fixtures_lab import control
from tests.hybrid_variants import app_table, hybrid_variant
from tests.test_status_lab import lab_org, run_status


def _graph_calls(handle: LabHandle) -> list[dict[str, Any]]:
    return [c for c in handle.org.calls() if c["endpoint"] == "graph"]


def _codes(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["code"], f["severity"]) for f in report["findings"]
            if f["code"].startswith("HYBRID_APP")]


def test_a_hybrid_org_whose_app_holds_the_current_key(make_lab: Callable[..., LabHandle]
                                                      ) -> None:
    handle = make_lab("hybrid")
    report = run_status(handle)
    section = report["hybrid_app"]
    current = handle.org.auth_config()["current"]
    assert section["configured"] and section["read"] and section["error"] is None
    assert section["app_id"] == handle.info["graph"]["app_id"]
    assert [(k["thumbprint"], k["role"]) for k in section["keys"]] == [(current, "current")]
    assert section["current_on_app"] is True and section["next_on_app"] is None
    assert section["exchange_app_id"] == section["app_id"]  # Get-AuthServer agrees
    assert _codes(report) == []


def test_exchange_naming_another_application_is_a_finding(make_lab: Callable[..., LabHandle]
                                                          ) -> None:
    other = "0d1e2f3a-4b5c-4d6e-8f70-112233445566"
    handle = make_lab(hybrid_variant(lambda d: d["entra"].update(exchange_app_id=other)))
    report = run_status(handle)
    assert report["hybrid_app"]["exchange_app_id"] == other
    assert _codes(report) == [("HYBRID_APP_ID_MISMATCH", "warning")]


def test_current_missing_and_stale_key(make_lab: Callable[..., LabHandle]) -> None:
    def stale_only(data: dict[str, Any]) -> None:
        data["certificate"].append({"id": "old-auth", "subject":
                                    "CN=Microsoft Exchange Server Auth Certificate",
                                    "days_left": -30, "installed_on": []})
        app_table(data)["keys"] = ["old-auth"]
    handle = make_lab(hybrid_variant(stale_only))
    report = run_status(handle)
    assert _codes(report) == [("HYBRID_APP_CURRENT_MISSING", "critical"),
                              ("HYBRID_APP_STALE_KEY", "info")]
    assert report["findings"][0]["code"] == "HYBRID_APP_CURRENT_MISSING"
    assert report["hybrid_app"]["current_on_app"] is False


def test_next_staged_but_not_on_the_app(make_lab: Callable[..., LabHandle]) -> None:
    def staged(data: dict[str, Any]) -> None:
        data["certificate"].append({"id": "next-auth", "subject":
                                    "CN=Microsoft Exchange Server Auth Certificate",
                                    "days_left": 1800, "installed_on": ["ex1", "ex2", "ex3"]})
        data["auth_config"].update(next="next-auth", next_effective="+3d")
    handle = make_lab(hybrid_variant(staged))
    report = run_status(handle)
    assert _codes(report) == [("HYBRID_APP_NEXT_MISSING", "critical")]  # 3 days: near
    assert report["hybrid_app"]["next_on_app"] is False


def test_unreadable_is_unknown_with_graphs_reason(make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    control(handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                       "operation": "read"})
    report = run_status(handle)
    assert _codes(report) == [("HYBRID_APP_UNREADABLE", "unknown")]
    message = next(f["message"] for f in report["findings"]
                   if f["code"] == "HYBRID_APP_UNREADABLE")
    assert "403 Authorization_RequestDenied: Insufficient privileges" in message
    assert "\n" not in message
    assert report["hybrid_app"]["read"] is False


def test_an_org_that_is_not_hybrid_never_calls_graph(make_lab: Callable[..., LabHandle]
                                                     ) -> None:
    def not_hybrid(data: dict[str, Any]) -> None:
        data["lab"]["hybrid"] = False
    handle = make_lab(hybrid_variant(not_hybrid))
    assert lab_org(handle).hybrid_app is not None  # configured, yet not hybrid
    report = run_status(handle)
    assert report["hybrid"] is False and "hybrid_app" not in report
    assert _graph_calls(handle) == []


def test_a_hybrid_org_without_the_table_is_told_and_graph_is_not_called(
        make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    from workers.status.collect import status
    org = lab_org(handle).model_copy(update={"hybrid_app": None})
    report = status(org, now=handle.org.now()).to_json()
    assert _codes(report) == [("HYBRID_APP_NOT_CONFIGURED", "info")]
    assert _graph_calls(handle) == []


def test_slack_report_and_terminal_table_show_the_application(
        make_lab: Callable[..., LabHandle], capsys: Any) -> None:
    from bot.render.messages import status_message
    from bot.render.terminal import print_status
    from workers.status.report import overall
    from workers.status.report_model import parse_status

    def stale_only(data: dict[str, Any]) -> None:
        data["certificate"].append({"id": "old-auth", "subject":
                                    "CN=Microsoft Exchange Server Auth Certificate",
                                    "days_left": -30, "installed_on": []})
        app_table(data)["keys"] = ["old-auth"]
    handle = make_lab(hybrid_variant(stale_only))
    report = parse_status(run_status(handle))
    message = status_message(report, overall(report))
    texts = [b["text"]["text"] for b in message["blocks"] if b.get("type") == "section"]
    hybrid = next(t for t in texts if t.startswith("*Hybrid application*"))
    assert "Current Auth Certificate is *not* among its keys" in hybrid
    assert "1 stale key" in hybrid
    print_status(report)
    out = capsys.readouterr().out
    assert report.hybrid_app is not None
    assert f"Hybrid application {report.hybrid_app.app_id}" in out
    assert "current: MISSING" in out and "stale" in out


def test_an_unreadable_application_makes_the_overall_unknown_not_ok(
        make_lab: Callable[..., LabHandle], tmp_path: Any) -> None:
    """Could not be judged is not ok: `exauth status` exits 3 (could not check), the Slack
    report says UNKNOWN; a known warning still outranks it."""
    import json

    from bot.render.messages import status_message
    from tests.test_cli import exauth
    from workers.status.collect import status
    from workers.status.last_check import overall_state
    from workers.status.report import overall
    from workers.status.report_model import Overall

    handle = make_lab("hybrid")
    control(handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                       "operation": "read"})
    config = handle.write_config(tmp_path / "exauth.toml")
    result = exauth("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert [(f["code"], f["severity"]) for f in report["findings"]
            if f["severity"] != "info"] == [("HYBRID_APP_UNREADABLE", "unknown")]
    typed = status(lab_org(handle), now=handle.org.now())
    assert overall(typed) is Overall.UNKNOWN
    assert overall_state(typed.to_json()) == ("unknown", 3)  # /metrics and the Home tab
    assert "UNKNOWN" in json.dumps(status_message(typed, overall(typed)))

    control(handle, "POST", "faults", {"clear": True})
    assert overall(status(lab_org(handle), now=handle.org.now())) is Overall.OK

    other = "0d1e2f3a-4b5c-4d6e-8f70-112233445566"
    handle = make_lab(hybrid_variant(lambda d: d["entra"].update(exchange_app_id=other)))
    control(handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                       "operation": "read"})
    typed = status(lab_org(handle), now=handle.org.now())
    assert {f.code.value for f in typed.findings} >= {"HYBRID_APP_UNREADABLE",
                                                      "HYBRID_APP_ID_MISMATCH"}
    assert overall(typed) is Overall.WARNING
