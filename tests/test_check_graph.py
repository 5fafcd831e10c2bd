"""`exauth config check` proves the Graph side of `[org.hybrid_app]` too, over the wire on
the lab's Graph stand-in: one row per org, each failure one line with its fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from bot.render.terminal import print_check
from config.lab_settings import settings_for_lab
from lab.serve import LabHandle
from tests.fixtures_lab import control
from workers.exchange.connection_check import check

UNKNOWN_APP = "0d1e2f3a-4b5c-4d6e-8f70-998877665544"


def graph_row(handle: LabHandle, **graph: str) -> dict[str, Any]:
    info = copy.deepcopy(handle.info)
    info["graph"].update(graph)
    rows = [r for r in check(settings_for_lab(info, handle.password))
            if r["endpoint"] == "graph"]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_hybrid_lab_signs_in_and_reads_the_application(
        make_lab: Callable[..., LabHandle], capsys: pytest.CaptureFixture[str]) -> None:
    handle = make_lab("hybrid")
    rows = check(settings_for_lab(handle.info, handle.password))
    assert all(r["ok"] for r in rows), rows
    [row] = [r for r in rows if r["endpoint"] == "graph"]
    app_id = handle.info["graph"]["app_id"]
    assert row["server"] == "graph" and row["url"] == handle.info["graph"]["graph_url"]
    assert f"read application {app_id} (1 key)" in row["message"]
    reads = [c for c in handle.org.calls() if c["endpoint"] == "graph"
             and c["command"].startswith("GET")]
    assert reads and all(c["outcome"] == "ok" for c in reads)
    assert print_check(rows) is True
    assert "graph" in capsys.readouterr().out


def test_a_wrong_secret_says_which_credential_to_fix(
        make_lab: Callable[..., LabHandle], capsys: pytest.CaptureFixture[str]) -> None:
    handle = make_lab("hybrid")
    row = graph_row(handle, client_secret="not-the-secret-42")
    assert not row["ok"] and row["kind"] == "graph_sign_in"
    assert "could not sign in" in row["message"] and "secret_env" in row["message"]
    assert "AADSTS7000215" in row["message"] or "invalid_client" in row["message"]
    assert "not-the-secret-42" not in row["message"] and "\n" not in row["message"]
    assert print_check([row]) is False
    assert "could not sign in" in " ".join(capsys.readouterr().out.split())


def test_a_403_says_which_permission_to_grant(make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    control(handle, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                       "operation": "read"})
    row = graph_row(handle)
    assert not row["ok"] and row["kind"] == "graph_denied"
    assert "Application.ReadWrite.OwnedBy" in row["message"]
    assert "403 Authorization_RequestDenied" in row["message"]


def test_an_unknown_app_says_to_fix_app_id(make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    row = graph_row(handle, app_id=UNKNOWN_APP)
    assert not row["ok"] and row["kind"] == "graph_not_found"
    assert "app_id" in row["message"] and "404 Request_ResourceNotFound" in row["message"]
    assert UNKNOWN_APP in row["message"]


def test_an_unreachable_graph_says_to_check_the_network(
        make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    control(handle, "POST", "faults", {"endpoint": "graph", "kind": "unreachable",
                                       "operation": "any"})
    row = graph_row(handle)
    assert not row["ok"] and row["kind"] == "graph_unavailable"
    assert "did not answer" in row["message"] and "authority" in row["message"]
    # Exchange is another endpoint: its rows still pass.
    rows = check(settings_for_lab(handle.info, handle.password))
    assert all(r["ok"] for r in rows if r["endpoint"] != "graph")


def test_an_org_without_hybrid_app_has_no_graph_row(lab: Any) -> None:
    assert all(r["endpoint"] != "graph" for r in check(settings_for_lab(lab.info,
                                                                        lab.password)))
