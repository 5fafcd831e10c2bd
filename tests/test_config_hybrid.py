"""`[org.hybrid_app]` and `[org.rotation]`: validated like every other key, the Graph
credential never in the file and read only when a token is needed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from config.errors import ConfigError
from config.lab_settings import settings_for_lab
from config.load import load_settings, settings_from_dict
from lab.serve import LabHandle, write_config
from tests.test_config import MINIMAL

APP = "3f6d8b2a-7c41-4e59-a0d3-5b9e1c7f2a64"
CLIENT = "c2a7e9d4-18b3-4f6a-9e25-7d0c4b8a1f39"


def hybrid(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    table: dict[str, Any] = {"tenant_id": "contoso.onmicrosoft.com", "app_id": APP,
                             "client_id": CLIENT, "secret_env": "EXAUTH_TEST_GRAPH"}
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    data["org"][0]["hybrid_app"] = table
    return data


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXAUTH_TEST_GRAPH", raising=False)


def test_defaults_are_the_global_cloud_and_no_graph_without_the_table() -> None:
    assert settings_from_dict(MINIMAL).org().hybrid_app is None
    assert settings_from_dict(MINIMAL).org().rotation.lifetime_days is None
    app = settings_from_dict(hybrid()).org().hybrid_app
    assert app is not None
    assert app.authority_url == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert app.scope == "https://graph.microsoft.com/.default"
    assert app.cert_validation() is True
    assert app.timeout == 30


def test_the_secret_is_read_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    app = settings_from_dict(hybrid(), source="x.toml").org().hybrid_app
    assert app is not None
    with pytest.raises(ConfigError, match=r"^x\.toml: org\[0\]\.hybrid_app\.secret_env: "
                                          "environment variable EXAUTH_TEST_GRAPH is not set"):
        app.credential()
    monkeypatch.setenv("EXAUTH_TEST_GRAPH", "s3cret")
    assert app.credential() == "s3cret"
    assert "s3cret" not in repr(app) and "s3cret" not in str(settings_from_dict(hybrid()))


def test_a_certificate_file_gives_msal_its_key_and_certificate(tmp_path: Path) -> None:
    pem = tmp_path / "graph.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                   "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    app = settings_from_dict(hybrid(secret_env=None, certificate_file=str(pem))).org().hybrid_app
    assert app is not None
    assert app.credential() == {
        "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        "public_certificate": "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"}
    pem.write_text("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"hybrid_app\.certificate_file: .*private key"):
        app.credential()


BAD = [
    ({"secret": "hunter2"}, "org[0].hybrid_app.secret: secrets never go in the file"),
    ({"client_secret": "x"}, "org[0].hybrid_app.client_secret: secrets never go in the file"),
    ({"tenant_id": None}, "org[0].hybrid_app.tenant_id: missing"),
    ({"tenant_id": "contoso"}, "org[0].hybrid_app.tenant_id: must be the tenant's ID"),
    ({"app_id": "exchange-hybrid"}, "org[0].hybrid_app.app_id: must be an application"),
    ({"client_id": APP}, "org[0].hybrid_app.client_id: must be exauth's own application"),
    ({"authority": "http://login.microsoftonline.com"},
     "org[0].hybrid_app.authority: must be an https:// URL"),
    ({"authority": "https://login.microsoftonline.com/contoso"},
     "org[0].hybrid_app.authority: must be the host only"),
    ({"graph_url": "graph"}, "org[0].hybrid_app.graph_url: must be an https:// URL"),
    ({"secret_env": None}, "org[0].hybrid_app.secret_env: missing (set certificate_file"),
    ({"secret_file": "/run/s"}, "org[0].hybrid_app.secret_file: set one of certificate_file"),
    ({"secret_env": None, "certificate_file": "/nonexistent.pem"},
     "org[0].hybrid_app.certificate_file: /nonexistent.pem: no such file"),
    ({"ca_bundle": "/nonexistent-ca.pem"}, "org[0].hybrid_app.ca_bundle: /nonexistent-ca.pem"),
    ({"timeout": 0}, "org[0].hybrid_app.timeout: must be at least 1"),
    ({"lab_secret": "x"}, "org[0].hybrid_app.lab_secret: unknown key"),
    ({"scopes": ["x"]}, "org[0].hybrid_app.scopes: unknown key"),
]


@pytest.mark.parametrize(("changes", "expected"), BAD)
def test_bad_hybrid_app_names_file_and_key(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(hybrid(**changes), source="bad.toml")
    assert str(err.value).startswith(f"bad.toml: {expected}"), str(err.value)


@pytest.mark.parametrize(("value", "expected"), [
    (365, None), (120, "must be at least 180"), (4000, "must be at most 1826"),
    ("1y", "must be an integer"),
])
def test_rotation_lifetime_days(value: Any, expected: str | None) -> None:
    data = copy.deepcopy(MINIMAL)
    data["org"][0]["rotation"] = {"lifetime_days": value}
    if expected is None:
        assert settings_from_dict(data).org().rotation.lifetime_days == value
        return
    with pytest.raises(ConfigError) as err:
        settings_from_dict(data, source="bad.toml")
    assert str(err.value).startswith(f"bad.toml: org[0].rotation.lifetime_days: {expected}")


def test_the_lab_hands_its_graph_stand_in_to_the_config(make_lab: Any, tmp_path: Path) -> None:
    handle: LabHandle = make_lab("hybrid")
    graph = handle.graph
    assert graph is not None
    in_memory = settings_for_lab(handle.info, handle.password).org().hybrid_app
    assert in_memory is not None
    assert in_memory.authority_url == f"{graph['authority']}/{graph['tenant_id']}"
    assert in_memory.credential() == graph["client_secret"]
    path = write_config(handle.info, tmp_path / "exauth.toml", writer=handle.writer)
    written = load_settings(path).org().hybrid_app
    assert written is not None
    assert (written.app_id, written.client_id) == (graph["app_id"], graph["client_id"])
    assert written.credential() == graph["client_secret"]
    assert Path(str(written.ca_bundle)).read_bytes() == Path(graph["ca_file"]).read_bytes()
    assert (tmp_path / "exauth.toml.graph-secret").stat().st_mode & 0o777 == 0o600
    assert graph["client_secret"] not in path.read_text()


def test_a_lab_without_entra_writes_no_hybrid_app(lab: LabHandle, tmp_path: Path) -> None:
    path = write_config(lab.info, tmp_path / "exauth.toml")
    assert "[org.hybrid_app]" not in path.read_text()
    assert load_settings(path).org().hybrid_app is None
