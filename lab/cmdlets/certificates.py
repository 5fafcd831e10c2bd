"""The *-ExchangeCertificate cmdlets: a server's certificate store as Exchange sees it.

A certificate is named by -Thumbprint or an -Identity like "EX1\\<thumbprint>" (which also
names the server). Assigning SMTP asks before replacing the default SMTP certificate, and
the remote host cannot answer, so only -Force goes through.
"""

from __future__ import annotations

import base64
from typing import Any

from lab import objects
from lab.certs import (
    AUTH_FRIENDLY_NAME,
    BACKEND_FRIENDLY_NAME,
    KEY_SIZES,
    export_pfx,
    import_pfx,
    is_auth_subject,
)
from lab.cmdlets.binder import Call, missing_mandatory
from lab.org import OrgError


def _thumbprint_arg(call: Call) -> str | None:
    """-Thumbprint, or an -Identity like "EX1\\<thumbprint>" / "<thumbprint>"."""
    value = call.get("Thumbprint") or call.get("Identity")
    if value is None:
        return None
    text = str(value).strip()
    if "\\" in text:
        server, _, text = text.rpartition("\\")
        if not call.has("Server"):
            call.args["Server"] = server
    return text.upper()


def _find(call: Call, server: str, thumbprint: str) -> Any:
    try:
        return call.org.find_certificate(server, thumbprint)
    except OrgError as error:
        raise call.fail(error.message, code="9D2A4D27", target=thumbprint) from None


def get_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    server = call.server()
    ctx = call.context()
    if thumbprint is not None:
        return [objects.exchange_certificate(_find(call, server, thumbprint).material, ctx)]
    return [objects.exchange_certificate(c.material, ctx) for c in call.org.store(server)]


def _services_prompt(call: Call, services: list[str], server: str) -> None:
    if "SMTP" in services and not call.get("Force"):
        raise call.prompt(f"Overwrite the existing default SMTP certificate? Current "
                          f"certificate on server {server.upper()} would be replaced.")


def new_exchange_certificate(call: Call) -> list[Any]:
    server = call.server()
    info = call.org.server_info(server)
    services = call.get("Services") if call.has("Services") else ["IMAP", "POP", "SMTP"]
    key_size = call.get("KeySize", 2048)
    if key_size not in KEY_SIZES:
        raise call.fail(f"The key size {key_size} isn't supported. Use one of "
                        f"{', '.join(map(str, KEY_SIZES))}.", category="InvalidArgument")
    subject = call.get("SubjectName") or f"CN={info['name']}"
    domains = call.get("DomainName") if call.has("DomainName") else (
        [] if call.get("SubjectName") else [info["name"], info["fqdn"]])
    _services_prompt(call, services, server)
    friendly = call.get("FriendlyName")
    if friendly is None:
        friendly = AUTH_FRIENDLY_NAME if is_auth_subject(subject) else BACKEND_FRIENDLY_NAME
    try:
        stored = call.org.new_certificate(
            server, subject=subject, friendly_name=friendly, domains=domains,
            key_size=key_size, exportable=bool(call.get("PrivateKeyExportable", False)),
            services=services)
    except OrgError as error:
        raise call.org_failure(error) from None
    return [objects.exchange_certificate(stored.material, call.context())]


def remove_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None:
        raise missing_mandatory(call.command, "Thumbprint")
    server = call.server()
    _find(call, server, thumbprint)
    if call.get("Confirm", True):
        raise call.prompt(f"Remove certificate with thumbprint {thumbprint} from server "
                          f"{server.upper()}?")
    call.org.remove_certificate(server, thumbprint)
    return []


def export_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None:
        raise missing_mandatory(call.command, "Thumbprint")
    if call.has("FileName"):
        raise call.fail("The FileName parameter is no longer supported. Use the FileData "
                        "output and write it to a file yourself.", category="InvalidArgument")
    server = call.server()
    stored = _find(call, server, thumbprint)
    password = call.get("Password")
    if password is not None:
        if not stored.has_private_key or not stored.exportable:
            raise call.fail(f"A special Rpc error occurs on server {server.upper()}: The private "
                            "key couldn't be exported as PKCS-12. It either couldn't be "
                            "accessed or isn't exportable.", target=thumbprint)
        data = export_pfx(stored.material, password, stored.friendly_name)
    else:
        data = stored.material.der
    file_data: Any = data if call.get("BinaryEncoded") else base64.b64encode(data).decode()
    return [objects.binary_file_data(file_data, call.context())]


def import_exchange_certificate(call: Call) -> list[Any]:
    data = call.get("FileData")
    if data is None:
        raise missing_mandatory(call.command, "FileData")
    server = call.server()
    try:
        material, friendly = import_pfx(data, call.get("Password"))
    except ValueError:
        raise call.fail(f"A special Rpc error occurs on server {server.upper()}: Cannot import "
                        "certificate. The password is incorrect or the data is not a "
                        "certificate.", category="InvalidData") from None
    try:
        stored = call.org.import_certificate(
            server, material, exportable=bool(call.get("PrivateKeyExportable", False)),
            friendly_name=call.get("FriendlyName") or friendly)
    except OrgError as error:
        raise call.org_failure(error) from None
    return [objects.exchange_certificate(stored.material, call.context())]


def enable_exchange_certificate(call: Call) -> list[Any]:
    thumbprint = _thumbprint_arg(call)
    if thumbprint is None or not call.has("Services"):
        raise missing_mandatory(call.command, "Thumbprint", "Services")
    server = call.server()
    _find(call, server, thumbprint)
    services = call.get("Services")
    _services_prompt(call, services, server)
    call.org.enable_certificate(server, thumbprint, services)
    return []
