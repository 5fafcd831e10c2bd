"""First contact explains itself: each failure a new deployment meets first, provoked on the
lab (and a real KDC), reaches `exauth config check` and status as one line naming the cause
and the fix (workers/exchange/first_contact.py).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pypsrp.powershell import RunspacePool

from config.load import load_settings
from config.schema import Settings
from lab.serve import LabHandle
from tests.fixtures_kerberos import Kdc, start_kdc
from tests.fixtures_lab import wsman_for
from workers.exchange.connection_check import check
from workers.exchange.errors import ExchangeAuthFailed, classify
from workers.exchange.target import exchange_target


def config_for(handle: LabHandle, tmp_path: Path, *, drop: tuple[str, ...] = (),
               **exchange: str) -> Path:
    """The config `exauth lab serve --write-config` writes, with [org.exchange] keys
    replaced (TOML values as text) or dropped."""
    path = handle.write_config(tmp_path / "exauth.toml")
    present = {line.split("=", 1)[0].strip() for line in path.read_text().splitlines()}
    added = {k: v for k, v in exchange.items() if k not in present}
    lines = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in drop:
            continue
        if key in exchange:
            line = f"{key} = {exchange[key]}"
        lines.append(line)
        if line == "[org.exchange]":
            lines += [f"{k} = {v}" for k, v in added.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_for(handle: LabHandle, tmp_path: Path, **kw: object) -> Settings:
    return load_settings(config_for(handle, tmp_path, **kw))  # type: ignore[arg-type]


def exchange_lines(settings: Settings) -> list[str]:
    """The messages of the failed Exchange-endpoint rows of `config check`."""
    rows = [r for r in check(settings) if r["endpoint"] == "exchange"]
    assert rows and not any(r["ok"] for r in rows), rows
    return [r["message"] for r in rows]


def exauth(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # the check table keeps each line whole
    return subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env)


# --- NTLM, Basic, encryption, TLS -------------------------------------------------------


def test_wrong_password_over_ntlm(make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    lab = make_lab("healthy", auth="ntlm")
    config = config_for(lab, tmp_path)
    (tmp_path / "exauth.toml.password").write_text("not-the-password")
    lines = exchange_lines(load_settings(config))
    assert all("NTLM logon refused for LAB\\exadmin: wrong user name or password" in line
               and "password_file" in line for line in lines), lines
    assert all("not-the-password" not in line for line in lines)


def test_basic_refused_by_a_negotiate_server(make_lab: Callable[..., LabHandle],
                                             tmp_path: Path) -> None:
    lab = make_lab("healthy", auth="ntlm")
    config = config_for(lab, tmp_path, auth='"basic"')
    lines = exchange_lines(load_settings(config))
    assert all('the server refuses Basic (it offers Negotiate): set auth = "kerberos"' in line
               for line in lines), lines
    # `exauth status` says the same about the writer, in its one line.
    status = exauth(config, "status")
    assert status.returncode != 0
    assert "the server refuses Basic (it offers Negotiate)" in status.stdout + status.stderr


def test_encryption_required_after_negotiate(make_lab: Callable[..., LabHandle],
                                             tmp_path: Path) -> None:
    """A client that sends plain messages after Negotiate over http (pypsrp with
    encryption="never", as older clients do) is refused; the line says what to change."""
    lab = make_lab("healthy", auth="ntlm")
    org = settings_for(lab, tmp_path).orgs[0]
    target = exchange_target(org, lab.writer)
    with pytest.raises(Exception) as caught, RunspacePool(
            wsman_for(lab, "ex1", auth="ntlm", encryption="never"),
            configuration_name="Microsoft.Exchange"):
        pass
    line = classify(caught.value, target, "opening the Exchange endpoint").line()
    assert "the server refuses unencrypted messages (AllowUnencrypted = false)" in line
    assert 'auth = "kerberos" or "ntlm" over http (message encryption) or an https URL' in line


def test_tls_verification_failed_names_subject_issuer_and_ca_bundle(
        make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    lab = make_lab("healthy", auth="ntlm", tls=True)
    config = config_for(lab, tmp_path, drop=("ca_bundle",))
    lines = exchange_lines(load_settings(config))
    wanted = ("TLS verification failed: certificate CN=127.0.0.1 issued by CN=exauth lab CA "
              "is not trusted: set ca_bundle in [org.exchange] to a PEM file holding the CA "
              "certificate CN=exauth lab CA")
    assert all(wanted in line for line in lines), lines
    result = exauth(config, "config", "check")
    assert result.returncode == 2
    shown = " ".join(result.stdout.replace("│", " ").split())  # the table wraps its cells
    assert "issued by CN=exauth lab CA is not trusted: set ca_bundle in [org.exchange]" in shown


# --- Kerberos ---------------------------------------------------------------------------


def test_no_ticket_for_a_realm_krb5_conf_does_not_know(
        kerberos_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    lab = kerberos_lab()
    settings = settings_for(lab, tmp_path, username='"exadmin@CONTOSO.COM"')
    lines = exchange_lines(settings)
    assert all("no Kerberos ticket for exadmin@CONTOSO.COM: krb5.conf names no KDC for realm "
               "CONTOSO.COM - add it under [realms]" in line for line in lines), lines


def test_wrong_password_over_kerberos(kerberos_lab: Callable[..., LabHandle],
                                      tmp_path: Path) -> None:
    lab = kerberos_lab()
    config = config_for(lab, tmp_path)
    (tmp_path / "exauth.toml.password").write_text("not-the-password")
    lines = exchange_lines(load_settings(config))
    assert all("Kerberos refused the password for exadmin@EXAUTH.LAB" in line
               for line in lines), lines


def test_no_spn_for_an_address(kerberos_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    lab = kerberos_lab(url_host="127.0.0.1")
    lines = exchange_lines(settings_for(lab, tmp_path))
    assert all("no Kerberos service principal host/127.0.0.1@EXAUTH.LAB for the name used "
               "(127.0.0.1): connect by the server's own FQDN" in line for line in lines), lines


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kdc_unreachable(kdc: Kdc, kerberos_lab: Callable[..., LabHandle], tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    lab = kerberos_lab()
    settings = settings_for(lab, tmp_path)
    conf = Path(kdc.krb5_conf).read_text()
    dead = re.sub(r"kdc = \S+", f"kdc = 127.0.0.1:{_closed_port()}", conf)
    krb5_conf = tmp_path / "krb5.conf"
    krb5_conf.write_text(dead)
    monkeypatch.setenv("KRB5_CONFIG", str(krb5_conf))
    lines = exchange_lines(settings)
    assert all("no KDC reachable for realm EXAUTH.LAB: check [realms] kdc in krb5.conf" in line
               for line in lines), lines


@pytest.fixture()
def skewed_kdc(tmp_path: Path) -> Iterator[Kdc]:
    """A second realm whose KDC runs two hours ahead (libfaketime)."""
    library = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
    if library is None or shutil.which("faketime") is None:
        pytest.fail("clock-skew test needs libfaketime (Debian: apt-get install faketime; "
                    ".ci/run does this)", pytrace=False)
    kdc = start_kdc(tmp_path / "skewed", kdc_env={
        "LD_PRELOAD": str(library), "FAKETIME": "+2h", "DONT_FAKE_MONOTONIC": "1"},
        libdefaults={"kdc_timesync": "0"})
    try:
        yield kdc
    finally:
        kdc.realm.stop()


def test_clock_skew(skewed_kdc: Kdc, make_lab: Callable[..., LabHandle], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "skewed").mkdir(exist_ok=True)
    lab = make_lab("healthy", auth="kerberos", keytab=skewed_kdc.keytab,
                   username=skewed_kdc.username, password=skewed_kdc.password)
    for key, value in skewed_kdc.env.items():
        monkeypatch.setenv(key, value)
    lines = exchange_lines(settings_for(lab, tmp_path))
    assert all("clock skew too great between this machine and the KDC/server" in line
               and "(NTP)" in line for line in lines), lines


def test_named_logon_failures_stay_auth_failures(make_lab: Callable[..., LabHandle],
                                                 tmp_path: Path) -> None:
    """Callers that stop on a refused logon (no retry towards a lockout) still do; the line
    ends with the named fix, not the generic hint."""
    from pypsrp.exceptions import AuthenticationError

    lab = make_lab("healthy", auth="ntlm")
    target = exchange_target(settings_for(lab, tmp_path, auth='"basic"').orgs[0], lab.writer)
    error = classify(AuthenticationError("401"), target, "opening the Exchange endpoint")
    assert type(error) is ExchangeAuthFailed and error.kind == "auth" and error.permanent
    assert error.line().endswith('as Exchange and WinRM expect')
