"""The production wire end to end: Kerberos and NTLM with message encryption over http, and
https verified against the lab CA, each through the whole product.

Per wire: `exauth status` and `exauth config check` as commands, one approved
state-changing step run as the worker runs it, and a warning sweep; the config is the one
`exauth lab serve --write-config` writes for that lab, unchanged but for channel, approvers
and Redis. A real KDC (tests/fixtures_kerberos.py) issues the Kerberos tickets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from config.load import load_settings
from lab.serve import LabHandle
from tests.test_operations_lab import (
    APPROVER,
    Env,
    approve_and_run,
    auth_creations,
    pending_step,
    start,
)
from workers.changes import operation
from workers.clock import CallableClock
from workers.warnings.sweep import sweep

WIRES = {
    "kerberos+encryption": {"auth": "kerberos"},
    "ntlm+encryption": {"auth": "ntlm"},
    "ntlm+https": {"auth": "ntlm", "tls": True},
}


def exauth(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The child inherits this process's environment: the KDC's krb5.conf included.
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )


@pytest.fixture(params=list(WIRES))
def wired_env(
    request: pytest.FixtureRequest, make_lab: Callable[..., LabHandle], redis_url: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], Env]:
    options = dict(WIRES[request.param])
    if options["auth"] == "kerberos":
        kdc = request.getfixturevalue("kdc")
        options.update(keytab=kdc.keytab, username=kdc.username, password=kdc.password)

    def _make(scenario: str) -> Env:
        handle = make_lab(scenario, **options)
        config = handle.write_config(tmp_path / "exauth.toml")
        text = config.read_text()
        assert f'auth = "{options["auth"]}"' in text
        if options.get("tls"):
            assert "verify_tls = true" in text and "ca_bundle = " in text
            assert (tmp_path / "exauth.toml.ca.pem").read_bytes() == Path(
                handle.ca_file or "").read_bytes()
        text = text.replace('channel = ""', f'channel = "C0OPS"\napprovers = ["{APPROVER}"]')
        config.write_text(text + f'\n[redis]\nurl = "{redis_url}"\n')
        monkeypatch.setenv("EXAUTH_CONFIG", str(config))
        monkeypatch.setenv("REDIS_URL", redis_url)
        settings = load_settings()
        return Env(handle, settings.orgs[0], redis.Redis.from_url(redis_url), config,
                   CallableClock(handle.org.now))

    return _make


def test_status_and_config_check_commands(wired_env: Callable[[str], Env]) -> None:
    env = wired_env("healthy")
    status = exauth(env.config, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["servers"] and all(s["reachable"] and not s["error"] for s in body["servers"])
    assert body["auth"]["current"]["thumbprint"]

    check = exauth(env.config, "config", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    ok_rows = [line for line in check.stdout.splitlines()
               if ("│ exchange │" in line or "│ host     │" in line) and "│ ok" in line]
    assert len(ok_rows) == 2 * len(env.handle.info["servers"]), check.stdout
    assert env.handle.password not in check.stdout + check.stderr


def test_a_warning_sweep_and_one_approved_step(wired_env: Callable[[str], Env],
                                               conn: redis.Redis) -> None:
    env = wired_env("expiring-sha1")
    result: dict[str, Any] = sweep(env.org, conn, now=None, run_id="wire-1")
    assert result["error"] is None, result
    assert any(n["key"].startswith("auth:current:") for n in result["notices"]), result

    op_id = start(env)
    step = pending_step(env, op_id)
    approve_and_run(env, op_id)
    op = operation.load(env.conn, op_id)
    assert op is not None
    assert op["steps"][step["index"]]["state"] == "done", op["steps"][step["index"]]
    assert auth_creations(env.handle), "the approved step created no certificate on the lab"


def test_lab_serve_command_with_ntlm_and_tls_writes_a_config_that_verifies(
        tmp_path: Path) -> None:
    """`exauth lab serve --auth ntlm --tls --write-config`: the ready line keeps its shape,
    the CA lands beside the config, and `exauth status` on that config verifies TLS."""
    config = tmp_path / "lab.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "lab", "serve", "--auth", "ntlm", "--tls",
         "--write-config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = json.loads(proc.stdout.readline() if proc.stdout else "")
        assert set(info) == {"org", "username", "password", "control_url", "servers"}
        assert info["control_url"].startswith("https://127.0.0.1:")
        ca = tmp_path / "lab.toml.ca.pem"
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
        text = config.read_text()
        assert 'auth = "ntlm"' in text and "verify_tls = true" in text and str(ca) in text
        status = exauth(config, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert all(s["reachable"] for s in json.loads(status.stdout)["servers"])
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert proc.returncode == 0
