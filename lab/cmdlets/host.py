"""The Windows host commands: certificate store (listing, New-SelfSignedCertificate),
clock, services and snap-ins.

Restarting MSExchangeServiceHost runs the AuthAdmin servicelet (the org does that);
`Add-PSSnapin` makes the Exchange cmdlets available on the host endpoint's session.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from lab import objects
from lab.cmdlets.binder import Call, missing_mandatory
from lab.org import OrgError

SNAPINS = ("Microsoft.Exchange.Management.PowerShell.SnapIn",
           "Microsoft.Exchange.Management.PowerShell.E2010")
KNOWN_SERVICES = ("MSExchangeServiceHost", "W3SVC", "WAS", "MSExchangeIS",
                  "MSExchangeTransport", "MSExchangeFrontEndTransport", "MSExchangeADTopology")
CERT_STORE = "Cert:\\LocalMachine\\My"


def get_child_item(call: Call) -> list[Any]:
    path = str(call.get("Path") or call.get("LiteralPath") or "").strip().rstrip("\\")
    base = CERT_STORE.lower()
    thumbprint = None
    if path.lower().startswith(base + "\\"):
        thumbprint = path[len(base) + 1:].upper()
    elif path.lower() != base:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    out = []
    for stored in call.org.store(call.session.server):
        if thumbprint is None or stored.thumbprint == thumbprint:
            out.append(objects.store_certificate(stored.material))
    if thumbprint is not None and not out:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    return out


# What New-SelfSignedCertificate takes here: an RSA certificate in the machine store, as
# Exchange keeps its own (legacy CSP key, exportable), with the dates it is given.
SELF_SIGNED_HASHES = {"sha256": "sha256", "sha384": "sha384", "sha512": "sha512",
                      "sha1": "sha1"}


def new_self_signed_certificate(call: Call) -> list[Any]:
    """New-SelfSignedCertificate: how a certificate with a chosen lifetime is made (the
    lifetime New-ExchangeCertificate cannot set). Lands in Cert:\\LocalMachine\\My, which
    is Exchange's certificate store, so Exchange and its servicelet see it at once."""
    location = str(call.get("CertStoreLocation") or "").rstrip("\\")
    if location.lower() != CERT_STORE.lower():
        raise call.fail(f"The lab's New-SelfSignedCertificate stores only in {CERT_STORE}, "
                        f"not '{location}'.", category="InvalidArgument",
                        code="CertStoreLocation")
    subject = call.get("Subject")
    if not subject:
        raise missing_mandatory(call.command, "Subject")
    if str(call.get("KeyAlgorithm", "RSA")).upper() != "RSA":
        raise call.fail("The lab makes RSA keys only.", category="InvalidArgument")
    digest = SELF_SIGNED_HASHES.get(str(call.get("HashAlgorithm", "sha256")).lower())
    if digest is None:
        raise call.fail(f"Unknown hash algorithm '{call.get('HashAlgorithm')}'.",
                        category="InvalidArgument")
    now = call.org.now()
    not_before = call.get("NotBefore") or now - timedelta(minutes=10)
    not_after = call.get("NotAfter") or now + timedelta(days=365)
    if not_after <= not_before:
        raise call.fail("NotAfter must be later than NotBefore.", category="InvalidArgument")
    export = str(call.get("KeyExportPolicy", "ExportableEncrypted")).lower()
    try:
        stored = call.org.new_certificate(
            call.session.server, subject=str(subject),
            friendly_name=str(call.get("FriendlyName") or ""),
            domains=list(call.get("DnsName") or []), key_size=int(call.get("KeyLength", 2048)),
            exportable=export in ("exportable", "exportableencrypted"), services=[],
            not_before=not_before, not_after=not_after, signature=digest)
    except OrgError as error:
        raise call.org_failure(error) from None
    return [objects.store_certificate(stored.material)]


def get_date(call: Call) -> list[Any]:
    """The server's clock, which in the lab is the virtual clock (moved by /_lab/clock).

    `-Format o` is the round-trip format Windows PowerShell 5.1 prints: local time with 7
    fractional digits and the offset; the lab's servers run on UTC. Without -Format a
    DateTime object comes back, as from the real cmdlet.
    """
    now = call.org.now().astimezone(UTC)
    fmt = call.get("Format")
    if fmt is None:
        return [now]
    if str(fmt) not in ("o", "O"):
        raise call.fail(f"Get-Date: the lab knows -Format o, not '{fmt}'.",
                        category="InvalidArgument", code="FormatNotSupported")
    return [now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"]


def restart_service(call: Call) -> list[Any]:
    names = call.get("Name") or []
    if not names:
        raise missing_mandatory(call.command, "Name")
    for name in names:
        service = next((s for s in KNOWN_SERVICES if s.lower() == name.strip().lower()), None)
        if service is None:
            raise call.fail(f"Cannot find any service with service name '{name}'.",
                            category="ObjectNotFound", code="NoServiceFoundForGivenName",
                            exception_type="Microsoft.PowerShell.Commands."
                                           "ServiceCommandException", target=name)
        call.org.restart_service(call.session.server, service)
    return []


def add_ps_snapin(call: Call) -> list[Any]:
    names = call.get("Name") or []
    for name in names:
        if not any(name.strip().lower() == s.lower() for s in SNAPINS):
            raise call.fail(f"The Windows PowerShell snap-in '{name}' is not installed on this "
                            "computer.", category="InvalidArgument", code="AddPSSnapInRead",
                            exception_type="System.Management.Automation."
                                           "PSArgumentException", target=name)
    call.session.snapin_loaded = True
    return []
