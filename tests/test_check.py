"""`exauth config check` logic: every endpoint of every server, one actionable line each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.lab_settings import settings_for_lab
from config.load import settings_from_dict
from workers.exchange.connection_check import check


def test_healthy_lab_every_endpoint_ok(lab: Any) -> None:
    rows = check(settings_for_lab(lab.info, lab.password))
    servers = sorted(s["fqdn"] for s in lab.info["servers"])
    assert sorted({r["server"] for r in rows}) == servers
    assert sorted((r["server"], r["endpoint"]) for r in rows) == sorted(
        (s, e) for s in servers for e in ("exchange", "host")
    )
    assert all(r["ok"] and r["kind"] is None for r in rows), rows
    assert all(r["org"] == "lab" and r["url"].startswith("http://127.0.0.1:") for r in rows)


def test_wrong_password_reported_per_endpoint(lab: Any) -> None:
    rows = check(settings_for_lab(lab.info, "wrong-password"))
    assert rows and all(not r["ok"] and r["kind"] == "auth" for r in rows)
    assert all("wrong-password" not in r["message"] for r in rows)


def test_broken_and_unreachable_servers(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("backend-deleted")
    broken = [n for n in handle.org.server_names() if handle.org.exchange_endpoint_failure(n)]
    fqdn = handle.org.server_info(broken[0])["fqdn"].lower()
    rows = {(r["server"], r["endpoint"]): r for r in check(settings_for_lab(handle.info,
                                                                            handle.password))}
    assert rows[(fqdn, "exchange")]["kind"] == "endpoint_broken"
    assert "Cafe-SendFailure" in rows[(fqdn, "exchange")]["message"]
    assert rows[(fqdn, "host")]["ok"] is True

    handle = make_lab("unreachable")
    down = [handle.org.server_info(n)["fqdn"].lower() for n in handle.org.server_names()
            if not handle.org.server_info(n)["reachable"]]
    rows = {(r["server"], r["endpoint"]): r for r in check(settings_for_lab(handle.info,
                                                                            handle.password))}
    for endpoint in ("exchange", "host"):
        row = rows[(down[0], endpoint)]
        assert row["kind"] == "unreachable" and not row["ok"]
        assert row["message"].startswith(f"{down[0]}: opening the ")


def test_missing_password_is_a_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXAUTH_NOPE", raising=False)
    settings = settings_from_dict(
        {"org": [{"name": "c", "writer": "127.0.0.1", "exchange": {
            "url": "https://127.0.0.1:1/PowerShell", "username": "u",
            "password_env": "EXAUTH_NOPE"}}]},
        source="c.toml",
    )
    rows = check(settings)
    assert rows and all(r["kind"] == "config" for r in rows)
    assert rows[0]["message"] == (
        "c.toml: org[0].exchange.password_env: environment variable EXAUTH_NOPE is not set"
    )
