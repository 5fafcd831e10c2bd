"""The `exauth` command line as a user runs it: a real process, real lab, real protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.serve import LabHandle, write_config

ROOT = Path(__file__).resolve().parent.parent
STATUS_KEYS = {"org", "checked_at", "hybrid", "sites", "servers", "auth", "backend",
               "findings", "actions"}


EXAUTH = [sys.executable, "-c", "from bot.cli import main; main()"]


def exauth_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `exauth` runs in here: this one without $EXAUTH_CONFIG, plus `env`."""
    environment = {k: v for k, v in os.environ.items() if k != "EXAUTH_CONFIG"}
    environment.update(env or {})
    return {**environment, "PYTHONPATH": str(ROOT)}


def exauth(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXAUTH, *args], cwd=cwd, env=exauth_env(env), capture_output=True, text=True,
        timeout=timeout,
    )


def start_exauth(*args: str, cwd: Path,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A long-running `exauth` (bot, cron) started as exauth() runs one; stderr is piped."""
    return subprocess.Popen([*EXAUTH, *args], cwd=cwd, env=exauth_env(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exauth: ")
    for needle in needles:
        assert needle in lines[0]


def test_status_without_config_serves_the_lab_and_says_so(tmp_path: Path) -> None:
    result = exauth("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "built-in lab" in result.stderr and "healthy" in result.stderr
    status = json.loads(result.stdout)
    assert set(status) == STATUS_KEYS
    assert status["org"] == "lab"
    assert [a["kind"] for a in status["actions"]] == ["none"]
    assert status["auth"]["current"]["present_on"] == [
        "ex1.contoso.lab", "ex2.contoso.lab", "ex3.contoso.lab"]


def test_status_table_for_people(tmp_path: Path) -> None:
    result = exauth("status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Auth Certificate" in result.stdout
    for server in ("ex1", "ex2", "ex3"):
        assert server in result.stdout
    # thumbprints are printed whole: admins copy them
    status = json.loads(exauth("status", "--json", cwd=tmp_path).stdout)
    assert len(status["auth"]["current"]["thumbprint"]) == 40


@pytest.mark.parametrize(
    ("scenario", "code", "kinds"),
    [("expired", 2, ["replace_now"]), ("expiring-sha1", 1, ["stage_new"]),
     ("unreachable", 2, ["blocked"])],
)
def test_status_exit_codes_follow_monitoring_convention(
    make_lab: Callable[..., LabHandle], tmp_path: Path, scenario: str, code: int,
    kinds: list[str],
) -> None:
    handle = make_lab(scenario)
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    result = exauth("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert [a["kind"] for a in json.loads(result.stdout)["actions"]] == kinds


def test_plan_json_lists_exact_cmdlets(make_lab: Callable[..., LabHandle],
                                       tmp_path: Path) -> None:
    handle = make_lab("expiring-sha1")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    result = exauth("--config", str(config), "plan", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["org"] == "lab"
    commands = [step["command"] for action in document["actions"] for step in action["steps"]]
    assert any(c.startswith("New-ExchangeCertificate -Server ex1.contoso.lab -KeySize 2048")
               for c in commands)
    assert any(c.startswith("Set-AuthConfig -NewCertificateThumbprint") for c in commands)
    # plan runs nothing: the lab saw no state-changing command
    assert not [c for c in handle.org.calls()
                if c["command"].startswith(("New-", "Set-", "Remove-", "Import-"))]


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "exauth.toml"
    config.write_text('[[org]]\nname = "x"\nwriter = "ex1.contoso.com"\n'
                      '[org.exchange]\nurl = "https://ex1.contoso.com/PowerShell"\n'
                      'auth = "telepathy"\n')
    result = exauth("status", cwd=tmp_path)
    assert result.returncode == 3
    assert_one_line_error(result, "exauth.toml", "auth")


def test_unknown_org_is_one_line(make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    handle = make_lab("healthy")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    result = exauth("--config", str(config), "status", "--org", "fabrikam", cwd=tmp_path)
    assert result.returncode == 3
    assert_one_line_error(result, "fabrikam", "lab")


@pytest.mark.parametrize("command", ["audit", "fix"])
def test_unknown_org_is_one_line_for_every_command(tmp_path: Path, command: str) -> None:
    config = tmp_path / "exauth.toml"
    config.write_text('[[org]]\nname = "contoso"\nchannel = "C1"\nwriter = "ex1.contoso.lab"\n'
                      '[org.exchange]\nurl = "https://ex1.contoso.lab/PowerShell"\n'
                      'username = "u"\npassword_env = "EXAUTH_TEST_UNUSED_PASSWORD"\n')
    result = exauth("--config", str(config), command, "--org", "fabrikam", cwd=tmp_path)
    assert result.returncode == 3
    assert_one_line_error(result, "fabrikam", "contoso")


def test_unknown_org_without_config_is_one_line(tmp_path: Path) -> None:
    result = exauth("status", "--org", "fabrikam", cwd=tmp_path)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "exauth: unknown org 'fabrikam' (configured: lab)")


def test_wrong_password_is_one_line(make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    handle = make_lab("healthy")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    Path(f"{config}.password").write_text("not-the-password\n")
    result = exauth("--config", str(config), "status", cwd=tmp_path)
    assert result.returncode == 3
    assert_one_line_error(result)


def test_lab_scenarios_lists_builtins(tmp_path: Path) -> None:
    result = exauth("lab", "scenarios", cwd=tmp_path)
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    for required in ("healthy", "expiring-sha1", "expired", "staged", "missing-on-server",
                     "backend-deleted", "unreachable", "hybrid"):
        assert required in names
    assert names[0] == "healthy"


def lab_config_with_redis(handle: LabHandle, tmp_path: Path, redis_url: str) -> Path:
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    config.write_text(config.read_text() + f'\n[redis]\nurl = "{redis_url}"\n')
    return config


def test_audit_lists_recorded_entries(make_lab: Callable[..., LabHandle], tmp_path: Path,
                                      redis_url: str) -> None:
    import redis

    from workers import audit

    config = lab_config_with_redis(make_lab("healthy"), tmp_path, redis_url)
    empty = exauth("--config", str(config), "audit", "--org", "lab", cwd=tmp_path)
    assert (empty.returncode, empty.stdout.strip()) == (0, "No audit entries for lab.")
    audit.record(redis.Redis.from_url(redis_url), org="lab", actor="U0BOB", action="approve",
                 target="op-1/2", outcome="approved")
    result = exauth("--config", str(config), "audit", "--org", "lab", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("U0BOB", "approve",
                                                                   "approved")
    people = exauth("--config", str(config), "audit", cwd=tmp_path)
    assert "U0BOB approve op-1/2 -> approved" in people.stdout


def test_fix_without_a_terminal_changes_nothing(make_lab: Callable[..., LabHandle],
                                                tmp_path: Path, redis_url: str) -> None:
    handle = make_lab("expiring-sha1")
    config = lab_config_with_redis(handle, tmp_path, redis_url)
    result = exauth("--config", str(config), "fix", "--org", "lab", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "terminal" in result.stdout + result.stderr
    assert not [c for c in handle.org.calls() if c["command"].startswith(("New-", "Set-"))]


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table, each cell whole again where rich wrapped it."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0] or not rows:
            rows.append(cells)
        else:  # a wrapped row goes on: empty cells where nothing wrapped
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return rows


def test_config_check_reports_each_endpoint(make_lab: Callable[..., LabHandle],
                                            tmp_path: Path) -> None:
    handle = make_lab("unreachable")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    result = exauth("--config", str(config), "config", "check", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # ex3 is down
    assert "Traceback" not in result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == 6  # three servers, two endpoints each
    results = {(row[1], row[2]): row[-1] for row in rows}
    assert [key for key, text in results.items() if text == "ok"] == [
        (f"ex{n}.contoso.lab", endpoint) for n in (1, 2) for endpoint in ("exchange", "host")]
    for endpoint in ("exchange", "host"):  # what failed says why, not just "failed"
        reason = results[("ex3.contoso.lab", endpoint)]
        assert "ex3.contoso.lab" in reason and "reachable from here" in reason, reason


def test_config_check_says_why_an_endpoint_fails(make_lab: Callable[..., LabHandle],
                                                 tmp_path: Path) -> None:
    handle = make_lab("healthy")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    password_file = next(tmp_path.glob("*.password"), None)
    assert password_file is not None, list(tmp_path.iterdir())
    password_file.write_text("not-the-password")
    result = exauth("--config", str(config), "config", "check", cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    rows = table_rows(result.stdout)
    assert len(rows) == 6
    for row in rows:
        assert "access denied" in row[-1], row
    assert "not-the-password" not in result.stdout + result.stderr


def test_config_check_without_a_file_says_so(tmp_path: Path) -> None:
    result = exauth("config", "check", cwd=tmp_path)
    assert result.returncode == 3
    assert_one_line_error(result, "no config file")


def test_status_follows_a_lab_clock_moved_through_the_control_api(
        make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    """`exauth lab serve` in one terminal, `exauth status` in another: the second process
    sees the lab's time, so the certificate the lab let expire is expired here too."""
    from datetime import UTC, datetime, timedelta

    from tests.fixtures_lab import control

    handle = make_lab("expiring-sha1")
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    control(handle, "POST", "clock", {"advance": "45d"})
    result = exauth("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # critical
    status = json.loads(result.stdout)
    assert status["auth"]["current"]["days_left"] < 0
    checked = datetime.fromisoformat(status["checked_at"].replace("Z", "+00:00"))
    assert checked - datetime.now(UTC) > timedelta(days=44)


@pytest.mark.parametrize("command", ["worker", "cron"])
def test_worker_and_cron_without_redis_say_so_without_its_password(
        command: str, make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    config = write_config(make_lab("healthy").info, str(tmp_path / "exauth.toml"))
    url = "redis://:s3cret-redis-pw@127.0.0.1:1/0"
    result = exauth("--config", str(config), command, cwd=tmp_path, env={"REDIS_URL": url},
                    timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "s3cret-redis-pw" not in result.stderr + result.stdout
    [line] = [ln for ln in result.stderr.splitlines() if "Redis" in ln]
    assert line.startswith(f"exauth {command}: Redis at redis://:***@127.0.0.1:1/0 is not "
                           "reachable"), line
