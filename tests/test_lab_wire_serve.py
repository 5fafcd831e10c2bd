"""`exauth lab serve` (lab.serve.main) as a process, its ready line, config and control API."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.serve import LabHandle, config_toml, write_config
from tests.fixtures_lab import control
from tests.test_lab_scenario import GOOD

ROOT = Path(__file__).resolve().parent.parent
READY_KEYS = {"org", "username", "password", "control_url", "servers"}
SERVER_KEYS = {"name", "fqdn", "exchange_url", "host_url"}


def _serve(*args: str) -> subprocess.Popen[str]:
    code = (
        "import sys; from lab.serve import main; "
        f"sys.exit(main({', '.join(args)}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ready_line_then_serves_until_sigterm(tmp_path: Path) -> None:
    config_path = tmp_path / "exauth.toml"
    proc = _serve("'healthy'", "'127.0.0.1'", "0", "0", "0", repr(str(config_path)))
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert set(info) == READY_KEYS
        assert info["org"] == "lab"
        assert info["control_url"].startswith("http://127.0.0.1:")
        assert [s["name"] for s in info["servers"]] == ["ex1", "ex2", "ex3"]
        for entry in info["servers"]:
            assert set(entry) == SERVER_KEYS
            assert entry["exchange_url"].endswith(f"/{entry['fqdn']}/PowerShell")
            assert entry["host_url"].endswith(f"/{entry['fqdn']}/wsman")

        port = int(info["control_url"].split(":")[2].split("/")[0])
        connection = WSMan(
            server="127.0.0.1", port=port, path=f"{info['servers'][0]['fqdn']}/PowerShell",
            ssl=False, auth="basic", encryption="never",
            username=info["username"], password=info["password"],
        )
        with RunspacePool(connection, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-AuthConfig")
            ps.invoke()
            assert not ps.streams.error

        config = tomllib.loads(config_path.read_text())
        [org] = config["org"]
        assert org["name"] == "lab" and org["writer"] == "ex1.contoso.lab"
        password_file = Path(org["exchange"]["password_file"])
        assert password_file.read_text() == info["password"]
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line was printed
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(info["control_url"] + "/state", timeout=2)


def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[server]]\nname = "ex1"\n')
    proc = _serve(repr(str(bad)))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("exauth: ") and "bad.toml" in lines[0]
    assert "Traceback" not in err


def test_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("'healthy'", "'127.0.0.1'", str(port))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip() == f"exauth: port {port} on 127.0.0.1 is already in use"


def test_config_toml_points_every_server_at_the_lab(lab: LabHandle, tmp_path: Path) -> None:
    text = config_toml(lab.info, "/run/lab.password", writer=lab.writer)
    config = tomllib.loads(text)
    [org] = config["org"]
    assert org["name"] == "lab"
    assert org["channel"] == ""
    assert org["writer"] == lab.writer == "ex1.contoso.lab"
    exchange = org["exchange"]
    assert exchange == {
        "url": lab.info["servers"][0]["exchange_url"],
        "auth": "basic",
        "username": "LAB\\exadmin",
        "password_file": "/run/lab.password",
        "verify_tls": False,
    }
    assert org["endpoints"] == {
        s["fqdn"]: {"exchange_url": s["exchange_url"], "host_url": s["host_url"]}
        for s in lab.info["servers"]
    }
    written = write_config(lab.info, tmp_path / "lab.toml", writer="ex2")
    assert tomllib.loads(written.read_text())["org"][0]["writer"] == "ex2.contoso.lab"
    secret = tmp_path / "lab.toml.password"
    assert secret.read_text() == lab.password
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert lab.password not in written.read_text()


def _now(clock: dict) -> datetime:
    return datetime.fromisoformat(clock["now"])


def test_control_api_clock_state_calls_and_reset(lab: LabHandle) -> None:
    # The virtual clock may also tick with the wall clock, so compare with a little slack.
    slack = timedelta(seconds=5)
    before = _now(control(lab, "GET", "state")["clock"])
    answer = _now(control(lab, "POST", "clock", {"advance": "49h"})["clock"])
    assert timedelta(hours=49) <= answer - before < timedelta(hours=49) + slack
    assert abs(_now(control(lab, "GET", "state")["clock"]) - answer) < slack
    for text, delta in (("30m", timedelta(minutes=30)), ("2d", timedelta(days=2)),
                        ("90s", timedelta(seconds=90)), ("1d12h", timedelta(hours=36))):
        moved = lab.org.now()
        control(lab, "POST", "/_lab/clock", {"advance": text})
        assert delta <= lab.org.now() - moved < delta + slack
    assert isinstance(control(lab, "GET", "calls"), list)
    assert control(lab, "POST", "reset")["reset"] is True
    assert abs(_now(control(lab, "GET", "state")["clock"]) - before) < slack


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("clock", {"advance": "soon"}, "soon"),
        ("clock", {"advance": 5}, "advance"),
        ("clock", {"forward": "1h"}, "advance"),
        ("clock", {"advance": "1h", "extra": 1}, "extra"),
        ("faults", {"clear": "yes"}, "clear"),
        ("faults", [], "fault"),
        ("faults", ["unreachable"], "fault"),
    ],
)
def test_control_api_rejects_bad_input_with_400(
    lab: LabHandle, path: str, body: object, needle: str
) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        control(lab, "POST", path, body)
    response = caught.value.response
    assert response.status_code == 400
    assert needle in response.json()["error"]


@pytest.mark.parametrize("text", ["99999999999999999999d", "36501d", "876025h", "36500d1s"])
def test_control_api_refuses_an_advance_past_the_scenario_bound(lab: LabHandle,
                                                                text: str) -> None:
    """The same 36500-day bound as scenario durations: one line and a 400, not a 500."""
    before = lab.org.now()
    with pytest.raises(requests.HTTPError) as caught:
        control(lab, "POST", "clock", {"advance": text})
    response = caught.value.response
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == f'"advance" {text!r} is longer than 36500 days'
    assert lab.org.now() - before < timedelta(minutes=1)


def test_control_api_refuses_to_move_the_clock_past_its_end(
        make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    """Many bounded advances add up; the clock's end is a 400 too, and the lab goes on."""
    path = tmp_path / "late.toml"
    path.write_text(GOOD.replace('now = "2025-03-01T09:00:00Z"', 'now = "9900-01-01T00:00:00Z"'),
                    encoding="utf-8")
    late = make_lab(str(path))
    before = late.org.now()
    with pytest.raises(requests.HTTPError) as caught:
        control(late, "POST", "clock", {"advance": "400d"})
    response = caught.value.response
    assert response.status_code == 400
    assert response.json()["error"] == \
        "\"advance\" '400d': the lab clock cannot move past 9900-01-24"
    assert late.org.now() == before
    control(late, "POST", "clock", {"advance": "2d"})
    assert late.org.now() == before + timedelta(days=2)


def test_control_api_rejects_malformed_json_and_unknown_routes(lab: LabHandle) -> None:
    auth = (lab.username, lab.password)
    response = requests.post(lab.info["control_url"] + "/clock", data=b"{", auth=auth)
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = requests.get(lab.info["control_url"] + "/nowhere", auth=auth)
    assert response.status_code == 404 and "nowhere" in response.json()["error"]
    response = requests.get(lab.info["control_url"] + "/clock", auth=auth)
    assert response.status_code == 405
    response = requests.get(lab.info["control_url"] + "/state", auth=("LAB\\exadmin", "nope"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="WSMAN"'
