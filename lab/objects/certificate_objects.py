"""Certificate output: ExchangeCertificate, a Cert: drive X509Certificate2, an export.

Real Exchange sends an ExchangeCertificate as `RawData` alone (plus its opaque
SerializationData), so everything a client knows about it must be computed from RawData.
"""

from __future__ import annotations

from psrpcore.types import (
    PSObject,
)

from lab.certs import CertMaterial
from lab.objects.ad_context import Context
from lab.objects.psobject_parts import make, net_date
from lab.objects.templates import constant
from lab.objects.type_names import (
    EXCHANGE_CERTIFICATE_TYPES,
    X509_TYPES,
)


def certificate_to_string(material: CertMaterial) -> str:
    """X509Certificate.ToString(): the block the fixtures carry in <ToString>."""
    return (f"[Subject]\r\n  {material.subject}\r\n\r\n[Issuer]\r\n  {material.issuer}\r\n\r\n"
            f"[Serial Number]\r\n  {material.serial_hex}\r\n\r\n"
            f"[Not Before]\r\n  {net_date(material.not_before)}\r\n\r\n"
            f"[Not After]\r\n  {net_date(material.not_after)}\r\n\r\n"
            f"[Thumbprint]\r\n  {material.thumbprint}\r\n")


def exchange_certificate(material: CertMaterial, ctx: Context) -> PSObject:
    """Get-/New-/Import-ExchangeCertificate output: RawData only, as real Exchange sends."""
    return constant(("ExchangeCertificate", material.der, ctx.domain, ctx.signed),
                     lambda: _exchange_certificate(material, ctx))


def _exchange_certificate(material: CertMaterial, ctx: Context) -> PSObject:
    return make(EXCHANGE_CERTIFICATE_TYPES, [("RawData", material.der)],
                ctx.ms(EXCHANGE_CERTIFICATE_TYPES[0]), certificate_to_string(material))




def binary_file_data(data: bytes, ctx: Context) -> PSObject:
    """Export-ExchangeCertificate output; FileData holds the PKCS#12 (or DER) bytes."""
    return make(["Microsoft.Exchange.Data.BinaryFileDataObject",
                 "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"],
                [("FileData", data), ("Identity", None), ("IsValid", True)],
                ctx.ms("Microsoft.Exchange.Data.BinaryFileDataObject"),
                "Microsoft.Exchange.Data.BinaryFileDataObject")



def store_certificate(material: CertMaterial) -> PSObject:
    """Get-ChildItem Cert:\\LocalMachine\\My item.

    PowerShell serializes an X509Certificate2 as RawData alone (the fixture of a plain
    X509Certificate2 shows it; PowerShell rehydrates it from those bytes), plus the note
    properties the certificate provider attaches to every item.
    """
    return constant(("StoreCertificate", material.der), lambda: _store_certificate(material))


def _store_certificate(material: CertMaterial) -> PSObject:
    parent = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My"
    return make(X509_TYPES, [("RawData", material.der)], [
        ("PSPath", f"{parent}\\{material.thumbprint}"), ("PSParentPath", parent),
        ("PSChildName", material.thumbprint), ("PSDrive", "Cert"),
        ("PSProvider", "Microsoft.PowerShell.Security\\Certificate"), ("PSIsContainer", False),
    ], certificate_to_string(material))

