"""load_settings() reuses its last result only while nothing it depends on changed.

A worker's jobs each call load_settings(); with a fleet's config that parse and validation
cost more than a sweep, so the last result is kept. These tests prove it is never stale:
an edit of the file, another file, another environment each give fresh settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.load import load_settings

ORG = """
[[org]]
name = "{name}"
channel = "C0123"
writer = "ex1.contoso.com"
[org.exchange]
url = "https://ex1.contoso.com/PowerShell"
username = "svc@CONTOSO.COM"
password_env = "EXAUTH_TEST_PW"
"""


def write(path: Path, name: str) -> Path:
    path.write_text(ORG.format(name=name), encoding="utf-8")
    return path


def test_the_same_file_and_environment_give_the_same_settings_object(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAUTH_CONFIG", str(write(tmp_path / "exauth.toml", "contoso")))
    assert load_settings() is load_settings()


def test_an_edit_of_the_file_is_seen_at_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "exauth.toml", "contoso")
    monkeypatch.setenv("EXAUTH_CONFIG", str(config))
    assert [o.name for o in load_settings().orgs] == ["contoso"]
    write(config, "fabrikam")  # same size, same second
    assert [o.name for o in load_settings().orgs] == ["fabrikam"]


def test_another_environment_gives_fresh_settings(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAUTH_CONFIG", str(write(tmp_path / "exauth.toml", "contoso")))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    first = load_settings()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/4")
    second = load_settings()
    assert (first.redis.url, second.redis.url) == ("redis://127.0.0.1:6379/3",
                                                   "redis://127.0.0.1:6379/4")


def test_the_same_text_in_another_place_is_another_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("EXAUTH_CONFIG", str(write(tmp_path / "a" / "exauth.toml", "contoso")))
    first = load_settings()
    monkeypatch.setenv("EXAUTH_CONFIG", str(write(tmp_path / "b" / "exauth.toml", "contoso")))
    assert load_settings() is not first
