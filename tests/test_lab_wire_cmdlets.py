"""Every lab command over the wire, in its success and failure forms, plus the org
behaviours a rehearsal relies on, all driven by the real pypsrp client.

These are the integration proof that the transport (WS-Man + PSRP) and the org model
fit together: parameters arrive bound exactly as sent (switches, lists, bytes,
SecureStrings, dates as ISO text), outputs arrive as deserialized objects, and a cmdlet
failure arrives as an ErrorRecord with its message, FullyQualifiedErrorId and category.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from psrpcore.types import ErrorCategory
from pypsrp.complex_objects import ObjectMeta
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from lab.serve import LabHandle
from tests.fixtures_lab import control, pool_for

SNAPIN = "Microsoft.Exchange.Management.PowerShell.SnapIn"
AUTH_SUBJECT = "cn=Microsoft Exchange Server Auth Certificate"
AUTH_NAME = "Microsoft Exchange Server Auth Certificate"
STORE = "Cert:\\LocalMachine\\My"
BACK_END = "Exchange Back End"

# System.Management.Automation.ErrorCategory values as they travel (Int32)
INVALID_ARGUMENT = ErrorCategory.InvalidArgument.value
OBJECT_NOT_FOUND = ErrorCategory.ObjectNotFound.value
NOT_IMPLEMENTED = ErrorCategory.NotImplemented.value
RESOURCE_EXISTS = ErrorCategory.ResourceExists.value


class Secure:
    """A parameter value to send as a SecureString (needs the session key)."""

    def __init__(self, text: str) -> None:
        self.text = text


def prop(obj: Any, name: str) -> Any:
    """A property of a deserialized object, wherever the server placed it."""
    for bag in (obj.adapted_properties, obj.extended_properties):
        if name in bag:
            return bag[name]
    raise KeyError(f"{name} not in {sorted({*obj.adapted_properties, *obj.extended_properties})}")


def thumbprint(cert: Any) -> str:
    """SHA-1 of RawData: the product trusts nothing else about a certificate on the wire."""
    return hashlib.sha1(prop(cert, "RawData")).hexdigest().upper()


class Result:
    def __init__(self, ps: PowerShell, output: list[Any]) -> None:
        self.output = output
        self.errors = ps.streams.error
        self.state = ps.state
        self.had_errors = ps.had_errors

    @property
    def error(self) -> Any:
        """The one error of a failed call (terminating or not)."""
        assert len(self.errors) == 1, [str(e) for e in self.errors]
        return self.errors[0]

    @property
    def terminating(self) -> Any:
        """The error of a call PowerShell itself stopped (binding, prompt, unknown command)."""
        assert self.state == PSInvocationState.FAILED and self.had_errors
        return self.error

    @property
    def non_terminating(self) -> Any:
        """The error a cmdlet wrote before completing (how Exchange cmdlets fail)."""
        assert self.state == PSInvocationState.COMPLETED and not self.had_errors
        return self.error

    def ok(self) -> list[Any]:
        assert self.state == PSInvocationState.COMPLETED
        assert not self.errors, [str(e) for e in self.errors]
        return self.output


def run(pool: RunspacePool, command: str, *arguments: Any, **parameters: Any) -> Result:
    """One cmdlet with bound parameters only (the product never sends script text)."""
    ps = PowerShell(pool)
    ps.add_cmdlet(command)
    for argument in arguments:
        ps.add_argument(argument)
    for name, value in parameters.items():
        if isinstance(value, Secure):
            pool.exchange_keys()
            value = pool.serialize(value.text, ObjectMeta("SS"))
        ps.add_parameter(name, value)
    output = ps.invoke()
    assert ps.state in (PSInvocationState.COMPLETED, PSInvocationState.FAILED)
    return Result(ps, output)


def state(lab: LabHandle) -> dict[str, Any]:
    return control(lab, "GET", "state")


def now(lab: LabHandle) -> datetime:
    return datetime.fromisoformat(state(lab)["clock"]["now"])


def iso(moment: datetime) -> str:
    return moment.isoformat()


def store(lab: LabHandle, server: str) -> set[str]:
    return {c["thumbprint"] for c in state(lab)["stores"][server]}


@contextmanager
def exchange_via_host(lab: LabHandle, server: str) -> Iterator[RunspacePool]:
    """The fallback path: host endpoint + the Exchange snap-in."""
    with pool_for(lab, server, "host") as pool:
        run(pool, "Add-PSSnapin", SNAPIN).ok()
        yield pool


def new_auth_cert(pool: RunspacePool, server: str) -> str:
    """Create an auth cert exactly as DOMAIN.md section 5 step 2 prescribes."""
    [cert] = run(
        pool, "New-ExchangeCertificate", Server=server, KeySize=2048, PrivateKeyExportable=True,
        SubjectName=AUTH_SUBJECT, FriendlyName=AUTH_NAME, DomainName=[], Services="None",
    ).ok()
    return thumbprint(cert)


# -- Exchange endpoint ---------------------------------------------------------------------


def test_get_auth_config(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        [config] = run(pool, "Get-AuthConfig").ok()
        assert config.types[0] == "Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig"
        current = state(lab)["auth_config"]["current"]
        assert prop(config, "CurrentCertificateThumbprint") == current
        assert prop(config, "NextCertificateThumbprint") == ""
        error = run(pool, "Get-AuthConfig", Bogus="x").terminating
        assert "A parameter cannot be found that matches parameter name 'Bogus'" in str(error)
        assert error.fq_error.startswith("NamedParameterNotFound,")
        assert error.category == INVALID_ARGUMENT
        assert error.exception.types[0] == (
            "System.Management.Automation.ParameterBindingException"
        )


def test_get_exchange_server(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        servers = run(pool, "Get-ExchangeServer").ok()
        assert [prop(s, "Name") for s in servers] == ["ex1", "ex2", "ex3"]
        [one] = run(pool, "Get-ExchangeServer", "ex3.contoso.lab").ok()
        assert prop(one, "Name") == "ex3"
        assert str(prop(one, "Site")).endswith("Site-B")
        error = run(pool, "Get-ExchangeServer", Identity="nosuch").non_terminating
        assert "couldn't be found" in str(error)
        assert error.exception.types[0].endswith("ManagementObjectNotFoundException")


def test_get_hybrid_configuration(make_lab) -> None:
    plain = make_lab("healthy")
    with pool_for(plain, "ex1") as pool:
        assert run(pool, "Get-HybridConfiguration").ok() == []
        assert "Identity" in str(run(pool, "Get-HybridConfiguration", Identity="x").error)
    hybrid = make_lab("hybrid")
    with pool_for(hybrid, "ex1") as pool:
        # Real Exchange output defines the ADObjectId type inside a multi-valued list and
        # refers to it later; pypsrp 0.9.1 cannot resolve that reference (the CLIXML fixture
        # hc-e19-GetHybridConfiguration.xml fails the same way). The lab reproduces the
        # shape, so a client must cope with this failure when an object does come back.
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-HybridConfiguration")
        with pytest.raises(KeyError):
            ps.invoke()
    [call] = control(hybrid, "GET", "calls")
    assert (call["command"], call["outcome"]) == ("Get-HybridConfiguration", "ok")


def test_get_exchange_certificate(make_lab) -> None:
    lab = make_lab("healthy")
    auth = state(lab)["auth_config"]["current"]
    with pool_for(lab, "ex1") as pool:
        listed = run(pool, "Get-ExchangeCertificate", Server="ex3").ok()
        assert auth in {thumbprint(c) for c in listed}
        [one] = run(pool, "Get-ExchangeCertificate", Server="ex3.contoso.lab", Thumbprint=auth).ok()
        assert thumbprint(one) == auth
        missing = "AB" * 20
        result = run(pool, "Get-ExchangeCertificate", Server="ex2", Thumbprint=missing)
        error = result.non_terminating
        assert str(error).startswith("A special Rpc error occurs on server EX2")
        assert "was not found" in str(error)
        assert error.exception.types[0] == "System.InvalidOperationException"
    down = make_lab("unreachable")
    [gone] = [s for s in state(down)["servers"] if not s["reachable"]]
    with pytest.raises(requests.exceptions.ConnectionError), pool_for(down, gone["name"]):
        pass  # a down server does not answer at all
    with pool_for(down, "ex1") as pool:
        error = run(pool, "Get-ExchangeCertificate", Server=gone["name"]).error
        assert "missing" not in str(error) and "was not found" not in str(error)
        assert error.category != OBJECT_NOT_FOUND  # unreachable is not "missing"


def test_new_exchange_certificate(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        made = new_auth_cert(pool, "ex1")
        assert made in store(lab, "ex1")
        hostile = "x'; Remove-Item $(Get-Item C:\\) #"
        [cert] = run(pool, "New-ExchangeCertificate", Server="ex2", Services="None",
                     FriendlyName=hostile).ok()
        stored = {c["thumbprint"]: c for c in state(lab)["stores"]["ex2"]}
        assert stored[thumbprint(cert)]["friendly_name"] == hostile  # stored, never run
        error = run(pool, "New-ExchangeCertificate", Server="ex1").terminating  # SMTP prompt
        assert "does not support user interaction" in str(error)
        assert "Overwrite the existing default SMTP certificate" in str(error)
        assert error.fq_error == "HostFunctionNotImplemented"
        assert error.category == NOT_IMPLEMENTED
        error = run(pool, "New-ExchangeCertificate", Services="None", KeySize=1000).error
        assert "1000" in str(error)


def test_set_auth_config_parameter_sets(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        old = prop(run(pool, "Get-AuthConfig").ok()[0], "CurrentCertificateThumbprint")
        new = new_auth_cert(pool, "ex1")
        clock = now(lab)
        error = run(pool, "Set-AuthConfig", NewCertificateThumbprint=new,
                    NewCertificateEffectiveDate=iso(clock - timedelta(hours=1)), Force=None).error
        assert "in the past" in str(error)
        error = run(pool, "Set-AuthConfig", NewCertificateThumbprint=new,
                    NewCertificateEffectiveDate=iso(clock + timedelta(hours=2))).error
        assert '"48" hours' in str(error) and error.fq_error == "HostFunctionNotImplemented"
        error = run(pool, "Set-AuthConfig", NewCertificateThumbprint="CD" * 20,
                    NewCertificateEffectiveDate=iso(clock + timedelta(days=30)), Force=None).error
        assert "couldn't be found" in str(error)
        error = run(pool, "Set-AuthConfig", PublishCertificate=None).error  # nothing staged
        assert "Set-AuthConfig" in error.fq_error or "SetAuthConfig" in error.fq_error
        effective = clock + timedelta(days=30)
        run(pool, "Set-AuthConfig", NewCertificateThumbprint=new,
            NewCertificateEffectiveDate=iso(effective), Force=None).ok()
        [config] = run(pool, "Get-AuthConfig").ok()
        assert prop(config, "NextCertificateThumbprint") == new
        error = run(pool, "Set-AuthConfig", PublishCertificate=None,
                    ClearPreviousCertificate=None).error
        assert "Parameter set cannot be resolved" in str(error)
        run(pool, "Set-AuthConfig", PublishCertificate=None).ok()
        [config] = run(pool, "Get-AuthConfig").ok()
        assert prop(config, "CurrentCertificateThumbprint") == new
        assert prop(config, "PreviousCertificateThumbprint") == old
        run(pool, "Set-AuthConfig", ClearPreviousCertificate=None).ok()
        assert state(lab)["auth_config"]["previous"] == ""
        run(pool, "Set-AuthConfig", CertificateThumbprint=old).ok()
        assert state(lab)["auth_config"]["current"] == old


def test_remove_exchange_certificate(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        [cert] = run(pool, "New-ExchangeCertificate", Server="ex2", Services="None").ok()
        made = thumbprint(cert)
        error = run(pool, "Remove-ExchangeCertificate", Server="ex2", Thumbprint=made).error
        assert "does not support user interaction" in str(error)  # -Confirm:$false missing
        assert made in store(lab, "ex2")
        run(pool, "Remove-ExchangeCertificate", Server="ex2", Thumbprint=made, Confirm=False).ok()
        assert made not in store(lab, "ex2")
        error = run(pool, "Remove-ExchangeCertificate", Server="ex2", Thumbprint=made,
                    Confirm=False).error
        assert "was not found" in str(error)


def test_export_and_import_carry_bytes_and_secure_strings(lab: LabHandle) -> None:
    auth = state(lab)["auth_config"]["current"]
    assert auth in store(lab, "ex1")
    with pool_for(lab, "ex1") as pool:
        [exported] = run(pool, "Export-ExchangeCertificate", Server="ex1", Thumbprint=auth,
                         BinaryEncoded=None, Password=Secure("P@ss w0rd!")).ok()
        pfx = prop(exported, "FileData")
        assert isinstance(pfx, bytes) and len(pfx) > 500
        run(pool, "Remove-ExchangeCertificate", Server="ex3", Thumbprint=auth, Confirm=False).ok()
        assert auth not in store(lab, "ex3")
        error = run(pool, "Import-ExchangeCertificate", Server="ex3", FileData=pfx,
                    Password=Secure("wrong")).error
        assert "password is incorrect" in str(error)
        [imported] = run(pool, "Import-ExchangeCertificate", Server="ex3", FileData=pfx,
                         Password=Secure("P@ss w0rd!"), PrivateKeyExportable=True).ok()
        assert thumbprint(imported) == auth
        assert auth in store(lab, "ex3")
        backend = next(c["thumbprint"] for c in state(lab)["stores"]["ex1"]
                       if not c["exportable"])
        error = run(pool, "Export-ExchangeCertificate", Server="ex1", Thumbprint=backend,
                    BinaryEncoded=None, Password=Secure("x")).error
        assert "isn't exportable" in str(error)
    calls = control(lab, "GET", "calls")
    assert "P@ss w0rd!" not in json.dumps(calls)
    secure_calls = [c for c in calls if "Password" in c["parameters"]]
    assert secure_calls and all(c["parameters"]["Password"] == "***" for c in secure_calls)


def test_enable_exchange_certificate(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        [cert] = run(pool, "New-ExchangeCertificate", Server="ex1", Services="None").ok()
        made = thumbprint(cert)
        run(pool, "Enable-ExchangeCertificate", Server="ex1", Thumbprint=made, Services="IIS",
            Force=None).ok()
        error = run(pool, "Enable-ExchangeCertificate", Server="ex1", Thumbprint=made).error
        assert "missing mandatory parameters" in str(error)
        error = run(pool, "Enable-ExchangeCertificate", Server="ex1", Thumbprint=made,
                    Services="Bogus").error
        assert "Bogus" in str(error)
    backend = state(lab)["bindings"]["ex1"]["backend"]["certificate_hash"]
    assert backend != made  # IIS means the front end; the back end keeps its certificate


def test_get_exchange_diagnostic_info(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        [info] = run(pool, "Get-ExchangeDiagnosticInfo", Server="ex2",
                     Process="Microsoft.Exchange.ServiceHost").ok()
        assert "<Diagnostics>" in str(prop(info, "Result"))
        error = run(pool, "Get-ExchangeDiagnosticInfo", Server="ex2", Process="notepad").error
        assert "notepad" in str(error)


# -- host endpoint -------------------------------------------------------------------------


def test_web_bindings_and_certificate_store_on_host(lab: LabHandle) -> None:
    backend = state(lab)["bindings"]["ex1"]["backend"]["certificate_hash"]
    with pool_for(lab, "ex1", "host") as pool:
        [binding] = run(pool, "Get-WebBinding", Name=BACK_END, Protocol="https", Port=444).ok()
        assert str(prop(binding, "certificateHash")).upper() == backend
        error = run(pool, "Get-WebBinding", Name="No Such Site").error
        assert "does not exist" in str(error)
        [site_binding] = run(pool, "Get-IISSiteBinding", BACK_END, Protocol="https").ok()
        assert prop(site_binding, "BindingInformation") == "*:444:"
        error = run(pool, "Get-IISSiteBinding").error
        assert "missing mandatory parameters: Name" in str(error)
        certs = run(pool, "Get-ChildItem", STORE).ok()
        assert backend in {thumbprint(c) for c in certs}
        [one] = run(pool, "Get-ChildItem", Path=f"{STORE}\\{backend}").ok()
        assert thumbprint(one) == backend
        error = run(pool, "Get-ChildItem", "C:\\Windows").error
        assert "Cannot find path" in str(error)
        assert error.exception.types[0] == "System.Management.Automation.ItemNotFoundException"


def test_exchange_cmdlets_on_host_need_the_snapin(lab: LabHandle) -> None:
    with pool_for(lab, "ex2", "host") as pool:
        error = run(pool, "Get-AuthConfig").terminating
        assert "is not recognized as the name of a cmdlet" in str(error)
        assert error.category == OBJECT_NOT_FOUND
        error = run(pool, "Add-PSSnapin", "Some.Other.SnapIn").error
        assert "is not installed" in str(error)
        run(pool, "Add-PSSnapin", Name=SNAPIN).ok()
        [config] = run(pool, "Get-AuthConfig").ok()
        assert prop(config, "CurrentCertificateThumbprint") == state(lab)["auth_config"]["current"]


def test_get_date_on_host_is_the_virtual_clock(lab: LabHandle) -> None:
    control(lab, "POST", "clock", {"advance": "30d"})
    with pool_for(lab, "ex1", "host") as pool:
        text = run(pool, "Get-Date", Format="o").ok()[0]
        moment = run(pool, "Get-Date").ok()[0]
        refused = run(pool, "Get-Date", Format="dd.MM.yyyy").non_terminating
    # The round-trip format of Windows PowerShell 5.1: 7 fractional digits and the offset.
    assert len(text) == len("2026-11-22T04:31:17.8920530+00:00") and text.endswith("+00:00")
    lab_now = now(lab)
    parsed = datetime.fromisoformat(text[:26] + text[27:])
    assert timedelta(0) <= lab_now - parsed < timedelta(minutes=1)
    # A DateTime object, which pypsrp hands over as ISO text.
    assert timedelta(0) <= lab_now - datetime.fromisoformat(moment) < timedelta(minutes=1)
    assert "-Format o" in str(refused)
    with pool_for(lab, "ex1") as pool:  # not an Exchange cmdlet: NoLanguage has no Get-Date
        assert "Get-Date" in str(run(pool, "Get-Date").terminating)


def test_services_pools_and_iisreset_on_host(lab: LabHandle) -> None:
    with pool_for(lab, "ex1", "host") as pool:
        run(pool, "Restart-WebAppPool", "MSExchangeOWAAppPool").ok()
        run(pool, "Restart-WebAppPool", Name="MSExchangeECPAppPool").ok()
        assert "NoSuchPool" in str(run(pool, "Restart-WebAppPool", "NoSuchPool").error)
        run(pool, "Restart-Service", "MSExchangeServiceHost").ok()
        error = run(pool, "Restart-Service", Name="NoSuchService").error
        assert "Cannot find any service" in str(error)
        lines = run(pool, "iisreset", "/noforce").ok()
        assert "Internet services successfully restarted" in lines
        assert "unsupported option" in str(run(pool, "iisreset", "/bogus").error)


def test_broken_back_end_fails_like_exchange_and_is_repaired_via_host(make_lab) -> None:
    lab = make_lab("backend-deleted")
    with pytest.raises(WSManFaultError) as caught, pool_for(lab, "ex2", "exchange"):
        pass
    assert "Cafe-SendFailure" in str(caught.value)
    assert "BackEndServer=ex2.contoso.lab" in str(caught.value)
    with pool_for(lab, "ex1") as pool:  # other servers' Exchange endpoints are fine
        run(pool, "Get-AuthConfig").ok()

    with exchange_via_host(lab, "ex2") as pool:
        run(pool, "Get-AuthConfig").ok()  # the fallback works while /PowerShell is broken
        [cert] = run(pool, "New-ExchangeCertificate", Server="ex2", Services="None").ok()
        repaired = thumbprint(cert)
        error = run(pool, "New-IISSiteBinding", Name=BACK_END, BindingInformation="*:444:",
                    Protocol="https", CertificateThumbPrint="EF" * 20,
                    CertStoreLocation=STORE).error
        assert "was not found" in str(error)
        error = run(pool, "New-IISSiteBinding", Name=BACK_END, BindingInformation="*:444:",
                    Protocol="https", CertificateThumbPrint=repaired,
                    CertStoreLocation=STORE).error  # the empty binding is still there
        assert error.category == RESOURCE_EXISTS
        error = run(pool, "Remove-IISSiteBinding", Name=BACK_END, BindingInformation="*:444:",
                    Protocol="https").error
        assert "does not support user interaction" in str(error)
        run(pool, "Remove-IISSiteBinding", Name=BACK_END, BindingInformation="*:444:",
            Protocol="https", Confirm=False).ok()
        run(pool, "New-IISSiteBinding", Name=BACK_END, BindingInformation="*:444:",
            Protocol="https", CertificateThumbPrint=repaired, CertStoreLocation=STORE).ok()
        run(pool, "iisreset", "/noforce").ok()
    assert state(lab)["bindings"]["ex2"]["backend"]["certificate_hash"] == repaired
    with pool_for(lab, "ex2", "exchange") as pool:
        run(pool, "Get-AuthConfig").ok()


# -- org behaviour seen through the wire -------------------------------------------------


def test_clock_advance_lets_auth_admin_publish_the_due_next_cert(make_lab) -> None:
    lab = make_lab("staged")
    with pool_for(lab, "ex1") as pool:
        [before] = run(pool, "Get-AuthConfig").ok()
        staged = prop(before, "NextCertificateThumbprint")
        assert staged and prop(before, "CurrentCertificateThumbprint") != staged
        control(lab, "POST", "clock", {"advance": "12h"})  # not yet effective
        assert prop(run(pool, "Get-AuthConfig").ok()[0], "NextCertificateThumbprint") == staged
        control(lab, "POST", "clock", {"advance": "13h"})  # past due, servicelet has run
        [after] = run(pool, "Get-AuthConfig").ok()
    assert prop(after, "CurrentCertificateThumbprint") == staged
    assert prop(after, "NextCertificateThumbprint") == ""
    assert prop(after, "PreviousCertificateThumbprint") == prop(
        before, "CurrentCertificateThumbprint"
    )


def test_replication_respects_sites(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        made = new_auth_cert(pool, "ex1")
        run(pool, "Set-AuthConfig", NewCertificateThumbprint=made,
            NewCertificateEffectiveDate=iso(now(lab) + timedelta(days=30)), Force=None).ok()

        def present(server: str) -> bool:
            result = run(pool, "Get-ExchangeCertificate", Server=server, Thumbprint=made)
            return not result.errors

        assert (present("ex2"), present("ex3")) == (False, False)
        control(lab, "POST", "clock", {"advance": "20m"})
        assert (present("ex2"), present("ex3")) == (True, False)  # same site only
        control(lab, "POST", "clock", {"advance": "1d"})
        assert present("ex3")  # the other site after cross-site replication


def test_app_pools_keep_the_old_cert_until_recycled(make_lab) -> None:
    lab = make_lab("staged")
    old = state(lab)["auth_config"]["current"]
    with pool_for(lab, "ex1") as pool:
        run(pool, "Set-AuthConfig", PublishCertificate=None).ok()
    new = state(lab)["auth_config"]["current"]
    assert new != old
    pools = state(lab)["pools"]["ex1"]
    assert pools["MSExchangeOWAAppPool"]["cached_thumbprint"] == old
    with pool_for(lab, "ex1", "host") as pool:
        run(pool, "Restart-WebAppPool", "MSExchangeOWAAppPool").ok()
    pools = state(lab)["pools"]["ex1"]
    assert pools["MSExchangeOWAAppPool"] == {"cached_thumbprint": new, "works": True}
    assert pools["MSExchangeECPAppPool"]["cached_thumbprint"] == old  # not recycled yet


def test_call_log_records_every_call_with_outcome(lab: LabHandle) -> None:
    with pool_for(lab, "ex2") as pool:
        run(pool, "Get-ExchangeServer", Identity="ex1").ok()
        run(pool, "Get-ExchangeCertificate", Server="ex3", Thumbprint="AB" * 20)
    with pool_for(lab, "ex3", "host") as pool:
        run(pool, "Restart-WebAppPool", "MSExchangeOWAAppPool").ok()
    calls = control(lab, "GET", "calls")
    assert [(c["server"], c["endpoint"], c["command"]) for c in calls] == [
        ("ex2", "exchange", "Get-ExchangeServer"),
        ("ex2", "exchange", "Get-ExchangeCertificate"),
        ("ex3", "host", "Restart-WebAppPool"),
    ]
    assert calls[0]["parameters"] == {"Identity": "ex1"}
    assert calls[1]["parameters"] == {"Server": "ex3", "Thumbprint": "AB" * 20}
    assert calls[1]["outcome"].startswith("error: A special Rpc error occurs")
    assert calls[0]["outcome"] == calls[2]["outcome"] == "ok"
    assert all(datetime.fromisoformat(c["time"]) for c in calls)


def test_unknown_scenario_file_path_is_served(make_lab, tmp_path: Path) -> None:
    source = Path(__file__).resolve().parent.parent / "lab" / "built_in_scenarios" / "healthy.toml"
    copy = tmp_path / "mine.toml"
    copy.write_text(source.read_text())
    lab = make_lab(copy)
    with pool_for(lab, "ex1") as pool:
        run(pool, "Get-AuthConfig").ok()
