"""Certificate facts and Exchange objects, read from what pypsrp deserializes.

Exchange sends certificates as deserialized objects whose `Status`, `Services` and
`HasPrivateKey` cannot be trusted over the wire (an expired auth cert shows `Invalid`), so
every fact is computed from `RawData`, the DER bytes. The other readers accept pypsrp's
`GenericComplexObject` (properties split into `adapted_properties` = `<Props>` and
`extended_properties` = `<MS>`), plain dicts (the lab or tests), or plain attributes, so the
collector does not care where a property landed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from workers.status.observation import AuthConfigObs, CertFacts

BACKEND_SITE = "Exchange Back End"
BACKEND_BINDING = "*:444:"
CERT_STORE = "Cert:\\LocalMachine\\My"  # the computer store IIS bindings name certificates in

# .NET (and so Exchange) names these attributes differently from RFC 4514.
_DOTNET_ATTRIBUTE_NAMES = {
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.EMAIL_ADDRESS: "E",
}


def facts_from_der(der: bytes) -> CertFacts:
    """Everything the rules need to know about one certificate, from its DER bytes."""
    if not isinstance(der, bytes | bytearray | memoryview):
        raise ValueError(f"certificate data must be DER bytes, not {type(der).__name__}")
    data = bytes(der)
    if not data:
        raise ValueError("certificate data is empty")
    try:
        with warnings.catch_warnings():
            # Real certificates carry oddities (e.g. a 7-letter country name) that
            # `cryptography` warns about; the facts are still right.
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(data)
            return CertFacts(
                thumbprint=hashlib.sha1(data).hexdigest().upper(),
                subject=_subject(cert.subject),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                signature_hash=_signature_hash(cert),
                key_size=_key_size(cert),
                sans=_dns_names(cert),
            )
    except ValueError as err:
        problem = f"not a readable DER X.509 certificate ({len(data)} bytes): {err}"
        raise ValueError(problem) from err


def _subject(name: x509.Name) -> str:
    """The subject as Exchange prints it: most specific first, ", " between parts."""
    return ", ".join(
        rdn.rfc4514_string(_DOTNET_ATTRIBUTE_NAMES) for rdn in reversed(name.rdns)
    )


def _signature_hash(cert: x509.Certificate) -> str:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return "unknown"
    return algorithm.name.lower() if algorithm is not None else "unknown"


def _key_size(cert: x509.Certificate) -> int:
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return 0
    return int(getattr(key, "key_size", 0))


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(extension.value.get_values_for_type(x509.DNSName))


def facts_from_exchange_certificate(obj: Any) -> CertFacts:
    """Facts of one `Get-ExchangeCertificate` (or X509Certificate2) object, from RawData."""
    raw = prop(obj, "RawData")
    if raw is None:
        raise ValueError("certificate object carries no RawData")
    return facts_from_der(_as_bytes(raw))


def der_from_exchange_certificate(obj: Any) -> bytes:
    """The DER bytes of one certificate object (its RawData), checked to be a certificate."""
    raw = prop(obj, "RawData")
    if raw is None:
        raise ValueError("certificate object carries no RawData")
    der = _as_bytes(raw)
    facts_from_der(der)  # raises ValueError for bytes that are no certificate
    return der


def _as_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError("RawData is text but not base64") from err
    if isinstance(raw, list | tuple) and all(isinstance(b, int) for b in raw):
        try:
            return bytes(raw)
        except ValueError as err:
            raise ValueError("RawData is a list but not of bytes") from err
    raise ValueError(f"RawData has an unexpected type {type(raw).__name__}")


# --- reading deserialized objects -------------------------------------------------------


def prop(obj: Any, name: str, default: Any = None) -> Any:
    """One property of a deserialized object, wherever it was placed (Props, MS, dict)."""
    if obj is None:
        return default
    maps: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        maps.append(obj)
    else:
        for attribute in ("adapted_properties", "extended_properties"):
            found = getattr(obj, attribute, None)
            if isinstance(found, dict):
                maps.append(found)
    for mapping in maps:
        if name in mapping:
            return mapping[name]
    lowered = name.lower()
    for mapping in maps:
        for key, value in mapping.items():
            if isinstance(key, str) and key.lower() == lowered:
                return value
    if not maps:
        return getattr(obj, name, default)
    return default


def text(value: Any) -> str:
    """The string PowerShell would show for a value (`ToString` of complex objects)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    to_string = getattr(value, "to_string", None)
    if isinstance(to_string, str):
        return to_string
    return str(value)


def _thumbprint(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        found = bytes(value).hex()
    else:
        found = re.sub(r"\s+", "", text(value))
    return found.upper() or None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_datetime(value: Any) -> datetime | None:
    """A .NET DateTime as pypsrp hands it over (ISO text) -> aware UTC datetime.

    A time without an offset (DateTimeKind.Unspecified) is taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        raw = _FRACTION.sub(r"\1", text(value).strip())
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as err:
            raise ValueError(f"not an ISO 8601 date/time: {text(value)!r}") from err
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def auth_config_from(obj: Any) -> AuthConfigObs:
    """`Get-AuthConfig` -> the org-wide choice of auth certificate."""
    return AuthConfigObs(
        current=_thumbprint(prop(obj, "CurrentCertificateThumbprint")),
        next=_thumbprint(prop(obj, "NextCertificateThumbprint")),
        next_effective=parse_datetime(prop(obj, "NextCertificateEffectiveDate")),
        previous=_thumbprint(prop(obj, "PreviousCertificateThumbprint")),
    )


def server_from(obj: Any) -> tuple[str, str, str, str, tuple[str, ...]]:
    """`Get-ExchangeServer` entry -> (name, fqdn, site, version, roles).

    Site is an AD path ("contoso.com/Configuration/Sites/Default-First-Site-Name"); the
    site's own name is its last element.
    """
    name = text(prop(obj, "Name"))
    fqdn = text(prop(obj, "Fqdn")) or name
    site = text(prop(obj, "Site")).rstrip("/").rsplit("/", 1)[-1]
    version = text(prop(obj, "AdminDisplayVersion"))
    return name, fqdn, site, version, _roles(obj)


def _roles(obj: Any) -> tuple[str, ...]:
    shown = text(prop(obj, "ServerRole"))
    roles = [part.strip() for part in shown.split(",") if part.strip() and part.strip() != "None"]
    flags = (
        ("IsMailboxServer", "Mailbox"),
        ("IsClientAccessServer", "ClientAccess"),
        ("IsEdgeServer", "Edge"),
    )
    if not roles:
        roles = [role for flag, role in flags if prop(obj, flag) is True]
    elif prop(obj, "IsEdgeServer") is True and "Edge" not in roles:
        roles.append("Edge")
    return tuple(roles)


def hybrid_from(objs: Iterable[Any]) -> bool:
    """`Get-HybridConfiguration` returns an object exactly when hybrid is configured."""
    return any(obj is not None for obj in objs)


def hybrid_app_id_from(objs: Iterable[Any], tenant_id: str = "") -> str | None:
    """`Get-AuthServer` -> the dedicated hybrid application Exchange uses: the
    ApplicationIdentifier of its enabled EvoSTS (Type AzureAD) Auth Server, the one for
    `tenant_id` when there are several; "" when it names none, None when there is none."""
    evo = [obj for obj in objs if obj is not None
           and text(prop(obj, "Type")).lower() == "azuread"
           and text(prop(obj, "Name")).lower().startswith("evosts")
           and prop(obj, "Enabled") is not False]
    if len(evo) > 1 and tenant_id:
        evo = [obj for obj in evo if text(prop(obj, "Realm")).lower() == tenant_id.lower()]
    if not evo:
        return None
    return text(prop(evo[0], "ApplicationIdentifier")).strip().lower()


_SITE_IN_XPATH = re.compile(r"@name='((?:[^']|'')*)'")


def backend_binding_from(objs: Iterable[Any]) -> tuple[bool, str | None]:
    """Bindings (`Get-WebBinding` or `Get-IISSiteBinding`) -> the https *:444: one.

    Returns (has_binding, certificate hash or None). Bindings of other sites are ignored
    when the object says which site it belongs to.
    """
    for obj in objs:
        protocol = text(prop(obj, "protocol")).lower()
        binding = text(prop(obj, "bindingInformation"))
        if protocol != "https" or binding != BACKEND_BINDING:
            continue
        xpath = text(prop(obj, "ItemXPath"))
        site = _SITE_IN_XPATH.search(xpath)
        if site is not None and site.group(1).replace("''", "'") != BACKEND_SITE:
            continue
        return True, _thumbprint(prop(obj, "certificateHash"))
    return False, None
