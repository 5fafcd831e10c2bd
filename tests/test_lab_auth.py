"""The lab authenticates like Exchange and WinRM: Negotiate with message encryption over
http, https from a lab CA, Kerberos from a real KDC; Basic only when asked for.

The client is pypsrp as the product configures it (`encryption="auto"`); raw `requests`
calls show what the server answers on the wire.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import spnego
from cryptography import x509
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell

from lab.serve import LabHandle
from tests.fixtures_lab import pool_for, server_entry

SOAP = "application/soap+xml;charset=UTF-8"


def run(pool: Any, cmdlet: str, **params: Any) -> list[Any]:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in params.items():
        ps.add_parameter(name, value)
    out = ps.invoke()
    assert not ps.had_errors, ps.streams.error
    return list(out)


def ntlm_handshake(handle: LabHandle, url: str, body: bytes, content_type: str = SOAP,
                   password: str | None = None) -> requests.Response:
    """Negotiate NTLM by hand on one connection; the last leg carries `body`."""
    client = spnego.client(handle.username, password or handle.password, protocol="ntlm")
    session = requests.Session()
    verify = handle.ca_file or False
    first = session.post(url, data=b"", headers={
        "Authorization": "Negotiate " + base64.b64encode(client.step()).decode()},
        verify=verify, timeout=10)
    assert first.status_code == 401
    challenge = base64.b64decode(first.headers["WWW-Authenticate"].split()[1])
    auth = client.step(challenge)
    assert auth is not None
    return session.post(url, data=body, verify=verify, timeout=10, headers={
        "Authorization": "Negotiate " + base64.b64encode(auth).decode(),
        "Content-Type": content_type})


# --- NTLM with message encryption over http --------------------------------------------


def test_ntlm_lab_serves_both_endpoints_with_message_encryption(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab("healthy", auth="ntlm")
    with pool_for(lab, "ex1", auth="ntlm", encryption="auto") as pool:
        assert pool.connection.transport.wrap_required
        for _ in range(3):
            assert run(pool, "Get-AuthConfig")
    assert lab.handshakes == 1  # the handshake is paid once per session, not per message
    with pool_for(lab, "ex1", "host", auth="ntlm", encryption="always") as pool:
        assert run(pool, "Get-ChildItem", Path="Cert:\\LocalMachine\\My")


def test_ntlm_lab_refuses_an_unencrypted_body_after_negotiate(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab("healthy", auth="ntlm")
    url = server_entry(lab, "ex1")["exchange_url"]
    answer = ntlm_handshake(lab, url, b"<s:Envelope/>")
    assert answer.status_code == 500
    assert "AllowUnencrypted = false" in answer.text
    with pytest.raises(WSManFaultError, match="refuses unencrypted traffic"), \
            pool_for(lab, "ex1", auth="ntlm", encryption="never"):
        pass


def test_ntlm_lab_refuses_a_wrong_password_and_basic(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab("healthy", auth="ntlm")
    url = server_entry(lab, "ex1")["exchange_url"]
    assert ntlm_handshake(lab, url, b"", password="wrong").status_code == 401
    basic = requests.post(url, data=b"<x/>", auth=(lab.username, lab.password), timeout=10,
                          headers={"Content-Type": SOAP})
    assert basic.status_code == 401
    assert basic.headers["WWW-Authenticate"] == "Negotiate"  # Basic is not even offered
    with pytest.raises(AuthenticationError), pool_for(lab, "ex1", auth="basic"):
        pass


def test_a_garbled_envelope_is_refused(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab("healthy", auth="ntlm")
    url = server_entry(lab, "ex1")["exchange_url"]
    garbled = ntlm_handshake(
        lab, url, b"--Encrypted Boundary\r\nnonsense",
        'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
        'boundary="Encrypted Boundary"')
    assert garbled.status_code == 400


# --- https from a lab CA ---------------------------------------------------------------


def test_tls_lab_certificate_is_issued_by_the_lab_ca(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab("healthy", auth="ntlm", tls=True)
    assert lab.ca_file and lab.base_url.startswith("https://")
    parts = urlsplit(lab.base_url)
    pem = ssl.get_server_certificate((parts.hostname or "", parts.port or 443))
    leaf = x509.load_pem_x509_certificate(pem.encode())
    with open(lab.ca_file, "rb") as handle:
        ca = x509.load_pem_x509_certificate(handle.read())
    assert leaf.issuer == ca.subject != leaf.subject
    leaf.verify_directly_issued_by(ca)
    with pool_for(lab, "ex1", auth="ntlm", cert_validation=lab.ca_file) as pool:
        assert not pool.connection.transport.wrap_required  # TLS protects the messages
        assert run(pool, "Get-AuthConfig")
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(lab.base_url + "/_lab/state", verify=True, timeout=10)


# --- Kerberos from a real KDC ----------------------------------------------------------


def test_kerberos_lab_exchange_endpoint_with_message_encryption(
        kerberos_lab: Callable[..., LabHandle]) -> None:
    lab = kerberos_lab()
    assert urlsplit(lab.base_url).hostname == "localhost"
    with pool_for(lab, "ex1", auth="kerberos", encryption="auto") as pool:
        assert pool.connection.transport.wrap_required
        assert run(pool, "Get-AuthConfig")
    # The host endpoint takes Negotiate: Kerberos, or NTLM as WinRM does.
    with pool_for(lab, "ex2", "host", auth="negotiate") as pool:
        assert run(pool, "Get-ChildItem", Path="Cert:\\LocalMachine\\My")
    with pool_for(lab, "ex2", "host", auth="ntlm") as pool:
        assert run(pool, "Get-ChildItem", Path="Cert:\\LocalMachine\\My")


def test_kerberos_lab_exchange_endpoint_refuses_ntlm(
        kerberos_lab: Callable[..., LabHandle]) -> None:
    lab = kerberos_lab()
    with pytest.raises(AuthenticationError), pool_for(lab, "ex1", auth="ntlm"):
        pass


def test_kerberos_over_https_with_channel_binding(
        kerberos_lab: Callable[..., LabHandle]) -> None:
    lab = kerberos_lab(tls=True)
    with pool_for(lab, "ex1", auth="kerberos", cert_validation=lab.ca_file) as pool:
        assert run(pool, "Get-AuthConfig")


def test_kerberos_without_a_keytab_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from lab.serve import main

    monkeypatch.delenv("KRB5_KTNAME", raising=False)
    assert main("healthy", auth="kerberos") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "exauth: kerberos needs a keytab with the lab's service principals "
        "(--keytab PATH, or $KRB5_KTNAME)")
