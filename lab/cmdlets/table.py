"""The command table: every command the lab serves, its endpoint and its parameters.

A parameter's kind ("str", "switch", "services", ...) says how the binder converts it;
`changes` marks the commands that honour -WhatIf; `positional` lists the parameters
positional arguments fill, in order.
"""

from __future__ import annotations

from lab.cmdlets import auth_config, certificates, exchange_servers, host, web
from lab.cmdlets.binder import Command
from lab.cmdlets.select_object import select_object


def _commands() -> dict[str, Command]:
    on_exchange = "exchange"
    on_host = "host"
    table = [
        Command("Get-AuthConfig", on_exchange, {}, auth_config.get_auth_config),
        Command("Set-AuthConfig", on_exchange, {
            "NewCertificateThumbprint": "str", "NewCertificateEffectiveDate": "date",
            "PublishCertificate": "switch", "ClearPreviousCertificate": "switch",
            "CertificateThumbprint": "str", "SkipImmediateCertificateDeployment": "switch",
            "Force": "switch"}, auth_config.set_auth_config, changes=True),
        Command("Get-ExchangeServer", on_exchange, {"Identity": "str", "Status": "switch"},
                exchange_servers.get_exchange_server, ("Identity",)),
        Command("Get-HybridConfiguration", on_exchange, {},
                exchange_servers.get_hybrid_configuration),
        Command("Get-AuthServer", on_exchange, {"Identity": "str"},
                exchange_servers.get_auth_server, ("Identity",)),
        Command("Get-ExchangeCertificate", on_exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str"},
            certificates.get_exchange_certificate, ("Thumbprint",)),
        Command("New-ExchangeCertificate", on_exchange, {
            "Server": "str", "Services": "services", "Force": "switch", "DomainName": "list",
            "KeySize": "int", "SubjectName": "str", "FriendlyName": "str",
            "PrivateKeyExportable": "bool"}, certificates.new_exchange_certificate, changes=True),
        Command("Remove-ExchangeCertificate", on_exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str"},
            certificates.remove_exchange_certificate, ("Thumbprint",), changes=True),
        Command("Export-ExchangeCertificate", on_exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str", "BinaryEncoded": "switch",
            "Password": "secure", "FileName": "str"}, certificates.export_exchange_certificate,
            ("Thumbprint",)),
        Command("Import-ExchangeCertificate", on_exchange, {
            "Server": "str", "FileData": "bytes", "Password": "secure",
            "PrivateKeyExportable": "bool", "FriendlyName": "str"},
            certificates.import_exchange_certificate, changes=True),
        Command("Enable-ExchangeCertificate", on_exchange, {
            "Identity": "str", "Thumbprint": "str", "Server": "str", "Services": "services",
            "Force": "switch", "DoNotRequireSsl": "switch"},
            certificates.enable_exchange_certificate, ("Thumbprint",), changes=True),
        Command("Get-ExchangeDiagnosticInfo", on_exchange, {
            "Server": "str", "Process": "str", "Component": "str", "Argument": "str"},
            exchange_servers.get_exchange_diagnostic_info),
        Command("Get-WebBinding", on_host, {
            "Name": "str", "Protocol": "str", "Port": "int", "IPAddress": "str",
            "HostHeader": "str"}, web.get_web_binding, ("Name",)),
        Command("Get-IISSiteBinding", on_host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str"},
            web.get_iis_site_binding, ("Name", "BindingInformation", "Protocol")),
        Command("New-IISSiteBinding", on_host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str",
            "CertificateThumbPrint": "str", "CertStoreLocation": "str", "SslFlag": "str",
            "Force": "switch", "Passthru": "switch"}, web.new_iis_site_binding,
            ("Name", "BindingInformation", "Protocol"), changes=True),
        Command("Remove-IISSiteBinding", on_host, {
            "Name": "str", "BindingInformation": "str", "Protocol": "str",
            "RemoveConfigOnly": "switch", "Force": "switch"}, web.remove_iis_site_binding,
            ("Name", "BindingInformation", "Protocol"), changes=True),
        Command("Get-ChildItem", on_host, {"Path": "str", "LiteralPath": "str"},
                host.get_child_item, ("Path",)),
        Command("Get-Date", on_host, {"Format": "str"}, host.get_date),
        Command("New-SelfSignedCertificate", on_host, {
            "Subject": "str", "FriendlyName": "str", "CertStoreLocation": "str",
            "KeyAlgorithm": "str", "KeyLength": "int", "HashAlgorithm": "str",
            "KeyExportPolicy": "str", "KeySpec": "str", "Provider": "str", "NotBefore": "date",
            "NotAfter": "date", "KeyUsage": "list", "DnsName": "list", "Type": "str"},
            host.new_self_signed_certificate, ("Subject",), changes=True),
        Command("Restart-WebAppPool", on_host, {"Name": "str"}, web.restart_web_app_pool,
                ("Name",), changes=True),
        Command("Restart-Service", on_host, {"Name": "list", "Force": "switch"},
                host.restart_service, ("Name",), changes=True),
        Command("iisreset", on_host, {"Option": "str", "Option2": "str"}, web.iisreset,
                ("Option", "Option2"), changes=True),
        Command("Add-PSSnapin", on_host, {"Name": "list"}, host.add_ps_snapin, ("Name",)),
        Command("Select-Object", "any", {
            "Property": "names", "ExcludeProperty": "names", "ExpandProperty": "str",
            "First": "int", "Last": "int", "Skip": "int"}, select_object, ("Property",),
            takes_input=True),
    ]
    return {c.name.lower(): c for c in table}


COMMANDS = _commands()
