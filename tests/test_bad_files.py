"""Bad files a new user may hand exauth: each gets one line naming the file, never a
traceback or a command that runs on with nothing to do.

Run as a user runs them: `exauth ...` as a real process, from another working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import Context, configured
from lab import scenario
from lab.org import Org
from lab.scenario import ScenarioError
from tests.test_lab_scenario import GOOD

ROOT = Path(__file__).resolve().parent.parent
# Nothing may reach a Redis when the config has no org; if anything tried, it would fail
# here instead of touching a real database.
NO_REDIS = "redis://127.0.0.1:1/0"
ORGLESS = {
    "empty.toml": "",
    "orgless.toml": f'# settings, but no org\n[redis]\nurl = "{NO_REDIS}"\n',
}


def exauth(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if k != "EXAUTH_CONFIG" and not k.startswith("SLACK_")}
    return subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", *args],
        cwd=cwd, env={**environment, "PYTHONPATH": str(ROOT), "REDIS_URL": NO_REDIS},
        capture_output=True, text=True, timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- a config file without [[org]] ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ORGLESS))
def test_config_check_of_an_orgless_file_exits_3_naming_it(tmp_path: Path, name: str) -> None:
    config = tmp_path / name
    config.write_text(ORGLESS[name])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = exauth("--config", str(config), "config", "check", cwd=elsewhere)
    assert result.returncode == 3
    assert one_line(result) == f"exauth: no [[org]] in {config}"


@pytest.mark.parametrize("command", [["status"], ["plan"], ["worker", "--burst"], ["cron"],
                                     ["bot"], ["fix"]],
                         ids=lambda c: c[0])
def test_every_command_that_needs_an_org_says_the_same(tmp_path: Path,
                                                       command: list[str]) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    result = exauth("--config", str(config), *command, cwd=tmp_path)
    assert result.returncode == 3
    assert one_line(result) == f"exauth: no [[org]] in {config}"


def test_an_orgless_exauth_toml_in_the_working_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "exauth.toml").write_text(ORGLESS["orgless.toml"])
    result = exauth("status", cwd=tmp_path)
    assert result.returncode == 3
    assert one_line(result) == "exauth: no [[org]] in exauth.toml"


def test_configured_refuses_an_orgless_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    with pytest.raises(SystemExit) as stopped:
        configured(Context(config=str(config)))
    assert stopped.value.code == 3
    assert capsys.readouterr().err == f"exauth: no [[org]] in {config}\n"


# --- a scenario with numbers out of range ---------------------------------------------------


@pytest.mark.parametrize("days_left", ["nan", "1e308"])
def test_lab_serve_names_file_and_key_of_a_days_left_out_of_range(tmp_path: Path,
                                                                 days_left: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("days_left = 100", f"days_left = {days_left}"))
    result = exauth("lab", "serve", "--scenario", str(path), cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"exauth: {path}: certificate[0].days_left: must be a number of "
                           "days from -36500 to 36500"), line


def test_lab_serve_names_file_and_key_of_a_latency_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD + '\n[[fault]]\nserver = "ex1"\nkind = "latency"\n'
                           "latency_ms = 9223372036854775807\n")
    result = exauth("lab", "serve", "--scenario", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == (f"exauth: {path}: fault[0].latency_ms: must be at most 60000 "
                                "(got 9223372036854775807)")


def test_a_certificate_dated_past_year_9999_is_one_line(tmp_path: Path) -> None:
    """Each number in range, their sum not: `[lab] now` near the end of the calendar."""
    path = tmp_path / "far.toml"
    path.write_text(GOOD.replace('now = "2025-03-01T09:00:00Z"', 'now = "9999-12-01T00:00:00Z"'))
    with pytest.raises(ScenarioError) as info:
        Org(scenario.load(str(path)))
    assert str(info.value).startswith(f"{path}: certificate 'auth': ")
    assert "\n" not in str(info.value)
