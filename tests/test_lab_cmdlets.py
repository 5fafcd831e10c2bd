"""Every lab command in its success and failure forms, driven in-process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from psrpcore.types import PSSecureString

from lab.certs import thumbprint_of
from lab.cmdlets import CommandError, Invocation, Session, run_pipeline
from lab.org import Org
from tests.fixtures_lab import LAB_NOW, fixed_org

NOW = LAB_NOW
AUTH_SUBJECT = "cn=Microsoft Exchange Server Auth Certificate"
HOSTILE = "'; Remove-Item -Recurse C:\\ $(whoami) `n\"; exit"


def run(org: Org, session: Session, name: str, *params: tuple[str | None, Any],
        script: bool = False) -> list[Any]:
    return run_pipeline(org, session, [Invocation(name, list(params), is_script=script)])


def fails(org: Org, session: Session, name: str, *params: tuple[str | None, Any]) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(org, session, name, *params)
    return info.value


def ex(server: str = "ex1") -> Session:
    return Session(server, "exchange")


def host(server: str = "ex1") -> Session:
    return Session(server, "host")


def prop(obj: Any, name: str) -> Any:
    for item in (*obj.PSObject.adapted_properties, *obj.PSObject.extended_properties):
        if item.name == name:
            return item.get_value(obj)
    raise KeyError(name)


def new_auth(org: Org, server: str = "ex1", **extra: Any) -> str:
    params = {"Server": server, "KeySize": 2048, "PrivateKeyExportable": True,
              "SubjectName": AUTH_SUBJECT,
              "FriendlyName": "Microsoft Exchange Server Auth Certificate",
              "DomainName": [], "Services": "None", **extra}
    out = run(org, ex(), "New-ExchangeCertificate", *params.items())
    return thumbprint_of(prop(out[0], "RawData"))


# -- endpoint rules -----------------------------------------------------------------------


def test_exchange_endpoint_refuses_script_text() -> None:
    org = fixed_org()
    with pytest.raises(CommandError) as info:
        run(org, ex(), "Get-AuthConfig | Select *", script=True)
    assert info.value.error_id == "ScriptsNotAllowed"
    assert info.value.category == "ParserError"
    assert "no-language mode" in info.value.message


def test_unknown_and_wrong_endpoint_commands_are_not_found() -> None:
    org = fixed_org()
    for session, name in ((ex(), "Invoke-Expression"), (ex(), "Get-ChildItem"),
                          (host(), "Get-AuthConfig")):
        error = fails(org, session, name)
        assert error.exception_type == "System.Management.Automation.CommandNotFoundException"
        assert error.category == "ObjectNotFound"


def test_parameter_binding_errors() -> None:
    org = fixed_org()
    assert fails(org, ex(), "Get-AuthConfig", ("Bogus", 1)).error_id.startswith(
        "NamedParameterNotFound,")
    assert run(org, ex(), "Get-ExchangeCertificate", ("-s", "ex2"))  # unique prefix: Server
    assert fails(org, ex(), "Set-AuthConfig", ("New", "x")).error_id.startswith(
        "AmbiguousParameter,")
    assert fails(org, ex(), "Get-ExchangeServer", ("Identity", "ex1"),
                 ("identity", "ex2")).error_id.startswith("ParameterAlreadyBound,")
    error = fails(org, ex(), "Get-ExchangeServer", (None, "ex1"), (None, "extra"))
    assert error.error_id.startswith("PositionalParameterNotFound,")
    error = fails(org, ex(), "New-ExchangeCertificate", ("Services", "IMAP, WWW"))
    assert error.exception_type.endswith("ParameterBindingException")
    assert "WWW" in error.message


def test_snapin_serves_exchange_cmdlets_on_the_host_endpoint_even_when_signing_is_broken() -> None:
    org = fixed_org("expired")
    error = fails(org, ex(), "Get-AuthConfig")
    assert "Serialization data signing failed" in error.message
    session = host()
    error = fails(org, session, "Add-PSSnapin", (None, "Microsoft.Exchange.Nope"))
    assert "is not installed" in error.message
    run(org, session, "Add-PSSnapin", (None, "Microsoft.Exchange.Management.PowerShell.SnapIn"))
    assert session.snapin_loaded
    config = run(org, session, "Get-AuthConfig")[0]
    assert prop(config, "CurrentCertificateThumbprint") == org.auth_config()["current"]


def test_broken_back_end_fails_exchange_cmdlets_of_that_server() -> None:
    org = fixed_org("backend-deleted")
    error = fails(org, ex("ex2"), "Get-AuthConfig")
    assert "Cafe-SendFailure" in error.message
    assert run(org, ex("ex1"), "Get-AuthConfig")


def test_error_faults_fail_the_named_cmdlet() -> None:
    org = fixed_org()
    org.add_fault({"server": "ex1", "endpoint": "exchange", "cmdlet": "Get-ExchangeServer",
                   "kind": "error", "message": "Active Directory is slow today."})
    assert fails(org, ex(), "Get-ExchangeServer").message == "Active Directory is slow today."
    assert run(org, ex(), "Get-AuthConfig")


# -- reads ----------------------------------------------------------------------------------


def test_get_auth_config_reports_the_model() -> None:
    org = fixed_org("staged")
    config = run(org, ex(), "Get-AuthConfig")[0]
    auth = org.auth_config()
    assert prop(config, "CurrentCertificateThumbprint") == auth["current"]
    assert prop(config, "NextCertificateThumbprint") == auth["next"]
    assert prop(config, "NextCertificateEffectiveDate") == NOW + timedelta(hours=20)
    assert prop(config, "PreviousCertificateThumbprint") == ""
    empty = run(fixed_org(), ex(), "Get-AuthConfig")[0]
    assert prop(empty, "NextCertificateEffectiveDate") is None


def test_get_exchange_server_all_and_by_identity() -> None:
    org = fixed_org("hybrid")
    servers = run(org, ex(), "Get-ExchangeServer")
    assert [prop(s, "Name") for s in servers] == ["ex1", "ex2", "ex3", "edge1", "ex2010"]
    ex3 = run(org, ex(), "Get-ExchangeServer", (None, "ex3.contoso.lab"))[0]
    assert str(prop(ex3, "Site").PSObject.to_string) == "contoso.lab/Configuration/Sites/Site-B"
    assert prop(ex3, "AdminDisplayVersion").PSObject.to_string == "Version 15.2 (Build 1544.4)"
    edge = run(org, ex(), "Get-ExchangeServer", ("Identity", "edge1"))[0]
    assert prop(edge, "IsEdgeServer") is True
    error = fails(org, ex(), "Get-ExchangeServer", ("Identity", "nope"))
    assert "couldn't be found" in error.message
    assert error.exception_type.endswith("ManagementObjectNotFoundException")


def test_get_hybrid_configuration_only_when_hybrid() -> None:
    assert run(fixed_org(), ex(), "Get-HybridConfiguration") == []
    hybrid = run(fixed_org("hybrid"), ex(), "Get-HybridConfiguration")
    assert len(hybrid) == 1 and prop(hybrid[0], "Name") == "Hybrid Configuration"


def test_get_exchange_certificate_store_thumbprint_missing_and_unreachable() -> None:
    org = fixed_org("missing-on-server")
    current = org.auth_config()["current"]
    listed = run(org, ex(), "Get-ExchangeCertificate", ("Server", "ex2"))
    assert current in {thumbprint_of(prop(c, "RawData")) for c in listed}
    one = run(org, ex(), "Get-ExchangeCertificate", ("Server", "ex2.contoso.lab"),
              ("Thumbprint", current.lower()))
    assert thumbprint_of(prop(one[0], "RawData")) == current
    missing = fails(org, ex(), "Get-ExchangeCertificate", ("Server", "ex3"),
                    ("Thumbprint", current))
    assert missing.message == (f"A special Rpc error occurs on server EX3: The certificate with "
                               f"thumbprint {current} was not found.")
    assert missing.exception_type == "System.InvalidOperationException"
    assert missing.error_id.endswith(
        "Microsoft.Exchange.Management.SystemConfigurationTasks.GetExchangeCertificate")
    down = fixed_org("unreachable")
    error = fails(down, ex(), "Get-ExchangeCertificate", ("Server", "ex3"),
                  ("Thumbprint", current))
    assert "RPC server is unavailable" in error.message and "was not found" not in error.message


def test_get_exchange_diagnostic_info_reports_auth_admin_last_run() -> None:
    org = fixed_org()
    org.advance(timedelta(hours=13))
    result = run(org, ex(), "Get-ExchangeDiagnosticInfo", ("Server", "ex2"),
                 ("Process", "Microsoft.Exchange.ServiceHost"))[0]
    assert "<lastRunTime>2025-03-01T21:00:00.0000000Z</lastRunTime>" in prop(result, "Result")
    assert fails(org, ex(), "Get-ExchangeDiagnosticInfo", ("Process", "w3wp")).category == \
        "ObjectNotFound"


# -- New-ExchangeCertificate ---------------------------------------------------------------


def test_new_exchange_certificate_default_services_prompt_for_smtp() -> None:
    org = fixed_org()
    error = fails(org, ex(), "New-ExchangeCertificate", ("SubjectName", AUTH_SUBJECT))
    assert error.exception_type == "System.Management.Automation.Host.HostException"
    assert error.error_id == "HostFunctionNotImplemented"
    assert "does not support user interaction" in error.message
    assert "Overwrite the existing default SMTP certificate?" in error.message
    assert len(org.store("ex1")) == 2  # nothing created
    forced = run(org, ex(), "New-ExchangeCertificate", ("SubjectName", AUTH_SUBJECT),
                 ("Force", None))
    assert len(forced) == 1 and len(org.store("ex1")) == 3


def test_new_exchange_certificate_services_none_makes_an_auth_cert_on_the_named_server() -> None:
    org = fixed_org()
    thumb = new_auth(org, "ex2", FriendlyName=HOSTILE)
    stored = org.find_certificate("ex2", thumb)
    assert stored.material.subject == "CN=Microsoft Exchange Server Auth Certificate"
    assert stored.material.sans == ()
    assert stored.services == [] and stored.exportable and stored.has_private_key
    assert stored.friendly_name == HOSTILE  # stored literally, never evaluated
    assert stored.material.key_size == 2048 and stored.material.signature == "sha256"
    assert all(c.thumbprint != thumb for c in org.store("ex1"))
    assert org.calls()[-1]["parameters"]["FriendlyName"] == HOSTILE


def test_new_exchange_certificate_without_subject_is_a_back_end_cert() -> None:
    org = fixed_org("backend-deleted")
    out = run(org, ex(), "New-ExchangeCertificate", ("Server", "ex2"), ("Services", "None"))
    stored = org.find_certificate("ex2", thumbprint_of(prop(out[0], "RawData")))
    assert stored.material.subject == "CN=ex2"
    assert stored.material.sans == ("ex2", "ex2.contoso.lab")
    assert stored.friendly_name == "Microsoft Exchange"
    assert fails(org, ex(), "New-ExchangeCertificate", ("Services", "None"),
                 ("KeySize", 512)).category == "InvalidArgument"


# -- Set-AuthConfig --------------------------------------------------------------------------


def test_set_auth_config_staging_rules() -> None:
    org = fixed_org()
    thumb = new_auth(org)
    soon = (NOW + timedelta(hours=47)).isoformat()
    error = fails(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", thumb),
                  ("NewCertificateEffectiveDate", soon))
    assert error.error_id == "HostFunctionNotImplemented"
    assert 'not at least "48" hours in the future' in error.message
    past = fails(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", thumb),
                 ("NewCertificateEffectiveDate", (NOW - timedelta(minutes=1)).isoformat()),
                 ("Force", True))
    assert "in the past" in past.message
    assert org.auth_config()["next"] == ""
    run(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", thumb),
        ("NewCertificateEffectiveDate", soon), ("Force", None))
    assert org.auth_config()["next"] == thumb
    assert org.auth_config()["next_effective"] == NOW + timedelta(hours=47)
    later = new_auth(org)
    run(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", later),
        ("NewCertificateEffectiveDate", (NOW + timedelta(days=30)).isoformat()))
    assert org.auth_config()["next"] == later


def test_set_auth_config_refuses_a_thumbprint_not_on_this_server() -> None:
    org = fixed_org()
    thumb = new_auth(org, "ex3")
    error = fails(org, ex("ex1"), "Set-AuthConfig", ("NewCertificateThumbprint", thumb),
                  ("NewCertificateEffectiveDate", (NOW + timedelta(days=3)).isoformat()))
    assert "couldn't be found on server EX1" in error.message
    error = fails(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", "AB" * 20),
                  ("NewCertificateEffectiveDate", (NOW + timedelta(days=3)).isoformat()))
    assert error.category == "ObjectNotFound"


def test_set_auth_config_publish_clear_and_current() -> None:
    org = fixed_org("staged")
    before = org.auth_config()
    run(org, ex(), "Set-AuthConfig", ("PublishCertificate", None))
    after = org.auth_config()
    assert after["current"] == before["next"] and after["previous"] == before["current"]
    error = fails(org, ex(), "Set-AuthConfig", ("PublishCertificate", True))
    assert "next certificate is not configured" in error.message
    run(org, ex(), "Set-AuthConfig", ("ClearPreviousCertificate", True))
    assert org.auth_config()["previous"] == ""
    run(org, ex(), "Set-AuthConfig", ("CertificateThumbprint", before["current"]),
        ("SkipImmediateCertificateDeployment", None))
    assert org.auth_config()["current"] == before["current"]
    error = fails(org, ex(), "Set-AuthConfig", ("PublishCertificate", True),
                  ("ClearPreviousCertificate", True))
    assert error.error_id.startswith("AmbiguousParameterSet,")
    error = fails(org, ex(), "Set-AuthConfig", ("NewCertificateThumbprint", before["next"]))
    assert error.error_id.startswith("AmbiguousParameterSet,")


# -- export / import / remove / enable ---------------------------------------------------------


def test_export_then_import_carries_the_private_key() -> None:
    org = fixed_org("missing-on-server")
    current = org.auth_config()["current"]
    out = run(org, ex(), "Export-ExchangeCertificate", ("Server", "ex1"),
              ("Thumbprint", current), ("BinaryEncoded", None),
              ("Password", PSSecureString("S3cret!")))
    data = prop(out[0], "FileData")
    assert isinstance(data, bytes)
    key, cert, _ = pkcs12.load_key_and_certificates(data, b"S3cret!")
    assert key is not None and cert is not None
    imported = run(org, ex(), "Import-ExchangeCertificate", ("Server", "ex3"),
                   ("FileData", data), ("Password", PSSecureString("S3cret!")),
                   ("PrivateKeyExportable", True))
    assert thumbprint_of(prop(imported[0], "RawData")) == current
    stored = org.find_certificate("ex3", current)
    assert stored.has_private_key and stored.exportable
    assert org.signing_failure("ex3") is None
    again = fails(org, ex(), "Import-ExchangeCertificate", ("Server", "ex3"),
                  ("FileData", data), ("Password", PSSecureString("S3cret!")))
    assert "already exists" in again.message
    wrong = fails(org, ex(), "Import-ExchangeCertificate", ("Server", "ex2"),
                  ("FileData", data), ("Password", PSSecureString("wrong")))
    assert "password" in wrong.message.lower()
    logged = [c for c in org.calls() if c["command"] in ("Export-ExchangeCertificate",
                                                          "Import-ExchangeCertificate")]
    assert all(c["parameters"]["Password"] == "***" for c in logged)
    assert "S3cret!" not in repr(org.calls())
    assert logged[1]["parameters"]["FileData"] == f"<{len(data)} bytes>"
    assert logged[-1]["outcome"].startswith("error: ")


def test_export_refuses_a_non_exportable_key() -> None:
    org = fixed_org()
    backend = org.state()["bindings"]["ex1"]["backend"]["certificate_hash"]
    error = fails(org, ex(), "Export-ExchangeCertificate", ("Thumbprint", backend),
                  ("BinaryEncoded", True), ("Password", PSSecureString("pw")))
    assert "isn't exportable" in error.message


def test_remove_exchange_certificate_needs_confirm_false() -> None:
    org = fixed_org()
    thumb = new_auth(org, "ex2")
    error = fails(org, ex(), "Remove-ExchangeCertificate", ("Server", "ex2"),
                  ("Thumbprint", thumb))
    assert error.error_id == "HostFunctionNotImplemented"
    run(org, ex(), "Remove-ExchangeCertificate", ("Server", "ex2"), ("Thumbprint", thumb),
        ("Confirm", False))
    assert all(c.thumbprint != thumb for c in org.store("ex2"))
    error = fails(org, ex(), "Remove-ExchangeCertificate", ("Server", "ex2"),
                  ("Thumbprint", thumb), ("Confirm", False))
    assert "was not found" in error.message


def test_enable_exchange_certificate_iis_binds_the_front_end_only() -> None:
    org = fixed_org()
    before = org.state()["bindings"]["ex1"]["backend"]["certificate_hash"]
    thumb = new_auth(org)
    run(org, ex(), "Enable-ExchangeCertificate", ("Thumbprint", thumb), ("Services", "IIS"))
    bindings = org.state()["bindings"]["ex1"]
    assert bindings["backend"]["certificate_hash"] == before
    front = [b for b in bindings["all"] if b["site"] == "Default Web Site"
             and b["binding"] == "*:443:"]
    assert front[0]["certificate_hash"] == thumb
    error = fails(org, ex(), "Enable-ExchangeCertificate", ("Thumbprint", thumb),
                  ("Services", "SMTP"))
    assert error.error_id == "HostFunctionNotImplemented"
    run(org, ex(), "Enable-ExchangeCertificate", ("Thumbprint", thumb), ("Services", "SMTP"),
        ("Force", None))
    assert "SMTP" in org.find_certificate("ex1", thumb).services


# -- host commands ---------------------------------------------------------------------------


def test_get_web_binding_and_iis_site_binding() -> None:
    org = fixed_org("backend-deleted")
    rows = run(org, host("ex1"), "Get-WebBinding", ("Name", "Exchange Back End"))
    assert [(prop(r, "protocol"), prop(r, "bindingInformation")) for r in rows] == [
        ("http", "*:81:"), ("https", "*:444:")]
    assert "Exchange Back End" in prop(rows[1], "ItemXPath")
    https = run(org, host("ex2"), "Get-WebBinding", ("Name", "Exchange Back End"),
                ("Protocol", "https"), ("Port", 444))
    assert len(https) == 1 and prop(https[0], "certificateHash") == ""
    site = run(org, host("ex1"), "Get-IISSiteBinding", ("Name", "Exchange Back End"),
               ("Protocol", "https"))
    assert prop(site[0], "CertificateHash") is not None
    assert fails(org, host(), "Get-IISSiteBinding", ("Name", "Nope")).category == \
        "ObjectNotFound"


def test_back_end_repair_with_new_iis_site_binding_and_iisreset() -> None:
    org = fixed_org("backend-deleted")
    out = run(org, ex("ex1"), "New-ExchangeCertificate", ("Server", "ex2"),
              ("Services", "None"))
    thumb = thumbprint_of(prop(out[0], "RawData"))
    params = [("Name", "Exchange Back End"), ("BindingInformation", "*:444:"),
              ("Protocol", "https"), ("CertificateThumbPrint", thumb),
              ("CertStoreLocation", "Cert:\\LocalMachine\\My")]
    error = fails(org, host("ex2"), "New-IISSiteBinding", *params)
    assert "already exists" in error.message
    missing = fails(org, host("ex2"), "New-IISSiteBinding", *params[:3],
                    ("CertificateThumbPrint", "AB" * 20), ("Force", None))
    assert "was not found" in missing.message
    run(org, host("ex2"), "New-IISSiteBinding", *params, ("Force", None))
    assert org.state()["bindings"]["ex2"]["backend"]["certificate_hash"] == thumb
    assert org.exchange_endpoint_failure("ex2") is not None
    lines = run(org, host("ex2"), "iisreset", (None, "/noforce"))
    assert "Internet services successfully restarted" in lines
    assert org.exchange_endpoint_failure("ex2") is None
    assert run(org, ex("ex2"), "Get-AuthConfig")


def test_remove_iis_site_binding() -> None:
    org = fixed_org()
    params = [("Name", "Exchange Back End"), ("BindingInformation", "*:444:"),
              ("Protocol", "https")]
    assert fails(org, host(), "Remove-IISSiteBinding", *params).error_id == \
        "HostFunctionNotImplemented"
    run(org, host(), "Remove-IISSiteBinding", *params, ("Confirm", False))
    assert org.state()["bindings"]["ex1"]["backend"] is None
    assert "does not exist" in fails(org, host(), "Remove-IISSiteBinding", *params,
                                     ("Force", None)).message


def test_get_child_item_lists_the_machine_store() -> None:
    org = fixed_org()
    items = run(org, host("ex2"), "Get-ChildItem", (None, "Cert:\\LocalMachine\\My"))
    thumbs = {thumbprint_of(prop(i, "RawData")) for i in items}
    assert thumbs == {c.thumbprint for c in org.store("ex2")}
    assert all(thumbprint_of(prop(i, "RawData")) == prop(i, "PSChildName") for i in items)
    one = next(iter(thumbs))
    assert len(run(org, host("ex2"), "Get-ChildItem",
                   ("Path", f"cert:\\localmachine\\my\\{one}"))) == 1
    error = fails(org, host(), "Get-ChildItem", ("Path", "C:\\Windows"))
    assert error.error_id.startswith("PathNotFound,")


def test_restart_web_app_pool_and_services() -> None:
    org = fixed_org("staged")
    org.publish_next()
    run(org, host("ex3"), "Restart-WebAppPool", (None, "MSExchangeOWAAppPool"))
    run(org, host("ex3"), "Restart-WebAppPool", ("Name", "MSExchangeECPAppPool"))
    assert all(p["works"] for p in org.state()["pools"]["ex3"].values())
    assert "Cannot find an application pool" in fails(
        org, host(), "Restart-WebAppPool", (None, "Nope")).message
    assert "Cannot find any service" in fails(org, host(), "Restart-Service",
                                              (None, "Spooler2")).message
    other = fixed_org("staged")
    nxt = other.auth_config()["next"]
    other.advance(timedelta(hours=21))
    run(other, host("ex1"), "Restart-Service", ("Name", "MSExchangeServiceHost"), ("Force", None))
    assert other.auth_config()["current"] == nxt
    assert any(e["id"] == 2014 and e["server"] == "ex1" for e in other.events())
    run(other, host("ex2"), "Restart-Service", (None, "W3SVC"))
    assert all(p["works"] for p in other.state()["pools"]["ex2"].values())


def test_what_if_changes_nothing() -> None:
    org = fixed_org("staged")
    before = org.auth_config()
    run(org, ex(), "Set-AuthConfig", ("PublishCertificate", None), ("WhatIf", None))
    assert org.auth_config() == before


def test_call_log_records_every_call_with_its_outcome() -> None:
    org = fixed_org()
    run(org, ex(), "Get-AuthConfig")
    fails(org, ex(), "Get-ExchangeCertificate", ("Thumbprint", "AB" * 20))
    run(org, host("ex2"), "iisreset", (None, "/noforce"))
    calls = org.calls()
    assert [(c["server"], c["endpoint"], c["command"]) for c in calls] == [
        ("ex1", "exchange", "Get-AuthConfig"), ("ex1", "exchange", "Get-ExchangeCertificate"),
        ("ex2", "host", "iisreset")]
    assert calls[0]["outcome"] == "ok"
    assert calls[1]["outcome"].startswith("error: A special Rpc error occurs on server EX1")
    assert calls[2]["parameters"] == {"arg0": "/noforce"}
    assert calls[0]["time"] == "2025-03-01T09:00:00Z"


def test_a_plain_string_password_is_refused_without_echoing_it() -> None:
    """Exchange binds -Password to SecureString: plain text must not convert (nor show)."""
    org = fixed_org("missing-on-server")
    error = fails(org, ex(), "Export-ExchangeCertificate", ("Server", "ex1"),
                  ("Thumbprint", org.auth_config()["current"]), ("BinaryEncoded", None),
                  ("Password", "S3cret!"))
    assert "SecureString" in error.message
    assert "S3cret!" not in error.message
