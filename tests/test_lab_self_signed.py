"""New-SelfSignedCertificate on a lab server's host endpoint: a certificate with the lifetime
asked for lands in the machine store, which is Exchange's, so it can be staged as the next
Auth Certificate and replicates like one New-ExchangeCertificate made."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pypsrp.powershell import PowerShell

from lab.certs import AUTH_SUBJECT
from lab.serve import LabHandle
from tests.fixtures_lab import pool_for


def _run(handle: LabHandle, server: str, endpoint: Any, cmdlet: str,
         parameters: dict[str, Any]) -> tuple[list[Any], list[str]]:
    with pool_for(handle, server, endpoint) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet).add_parameters(parameters)
        out = ps.invoke()
        return out, [str(e) for e in ps.streams.error]


def test_a_one_year_auth_certificate_is_made_staged_and_replicated(
        make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("hybrid")
    now = handle.org.now()
    before = {c.thumbprint for c in handle.org.store("ex1")}
    out, errors = _run(handle, "ex1", "host", "New-SelfSignedCertificate", {
        "Subject": AUTH_SUBJECT, "FriendlyName": "Microsoft Exchange Server Auth Certificate",
        "CertStoreLocation": "Cert:\\LocalMachine\\My", "KeyAlgorithm": "RSA",
        "KeyLength": 2048, "HashAlgorithm": "SHA256", "KeyExportPolicy": "Exportable",
        "KeySpec": "KeyExchange", "Provider": "Microsoft RSA SChannel Cryptographic Provider",
        "NotBefore": (now - timedelta(minutes=10)).isoformat(),
        "NotAfter": (now + timedelta(days=365)).isoformat()})
    assert errors == [] and len(out) == 1
    new = [c for c in handle.org.store("ex1") if c.thumbprint not in before]
    assert len(new) == 1 and new[0].exportable and new[0].has_private_key
    lifetime = new[0].material.not_after - new[0].material.not_before
    assert timedelta(days=365) <= lifetime <= timedelta(days=365, minutes=11)
    _, errors = _run(handle, "ex1", "exchange", "Set-AuthConfig", {
        "NewCertificateThumbprint": new[0].thumbprint,
        "NewCertificateEffectiveDate": (now + timedelta(days=30)).isoformat(), "Force": True})
    assert errors == []
    handle.org.advance("16m")
    assert new[0].thumbprint in {c.thumbprint for c in handle.org.store("ex2")}


def test_only_the_machine_store_and_a_later_end(make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("healthy")
    now = handle.org.now()
    _, errors = _run(handle, "ex1", "host", "New-SelfSignedCertificate", {
        "Subject": AUTH_SUBJECT, "CertStoreLocation": "Cert:\\CurrentUser\\My"})
    assert errors and "LocalMachine" in errors[0]
    _, errors = _run(handle, "ex1", "host", "New-SelfSignedCertificate", {
        "Subject": AUTH_SUBJECT, "CertStoreLocation": "Cert:\\LocalMachine\\My",
        "NotBefore": now.isoformat(), "NotAfter": (now - timedelta(days=1)).isoformat()})
    assert errors and "NotAfter" in errors[0]
