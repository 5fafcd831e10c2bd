"""Real X.509 certificates for the lab, made with `cryptography`.

The bot computes everything it reports (thumbprint, dates, signature hash, key size, SANs)
from the DER bytes, so the lab must hand out genuine certificates, not look-alikes. RSA key
generation is the only slow part; keys are drawn from a small per-size pool so a scenario
with fifty servers still loads in well under a second. Reusing a key between lab
certificates is harmless: each certificate still has its own serial number and thumbprint.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
AUTH_FRIENDLY_NAME = "Microsoft Exchange Server Auth Certificate"
BACKEND_FRIENDLY_NAME = "Microsoft Exchange"
KEY_SIZES = (1024, 2048, 3072, 4096)
SIGNATURES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
              "sha512": hashes.SHA512}



def is_auth_subject(subject: str) -> bool:
    """Whether `subject` names the Auth Certificate (spacing and case do not matter)."""
    return subject.replace(" ", "").lower() == AUTH_SUBJECT.replace(" ", "").lower()


_POOL_SIZE = 3
_pool: dict[int, list[rsa.RSAPrivateKey]] = {}
_pool_turn: dict[int, itertools.count[int]] = {}
_pool_lock = threading.Lock()

_NAME_KEYS = {
    "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME, "DC": NameOID.DOMAIN_COMPONENT,
}


def rsa_key(size: int) -> rsa.RSAPrivateKey:
    """A key of `size` bits from the pool (generated the first few times only)."""
    if size not in KEY_SIZES:
        raise ValueError(f"key size {size} is not one of {', '.join(map(str, KEY_SIZES))}")
    with _pool_lock:
        keys = _pool.setdefault(size, [])
        turn = next(_pool_turn.setdefault(size, itertools.count()))
        if len(keys) < _POOL_SIZE:
            keys.append(rsa.generate_private_key(public_exponent=65537, key_size=size))
            return keys[-1]
        return keys[turn % _POOL_SIZE]


def parse_subject(subject: str) -> x509.Name:
    """"cn=Foo, O=Bar" -> x509.Name; attribute keys are case-insensitive as in Windows."""
    attributes = []
    for part in _split_rdns(subject):
        key, sep, value = part.partition("=")
        oid = _NAME_KEYS.get(key.strip().upper())
        if not sep or oid is None or not value.strip():
            raise ValueError(f"{subject!r} is not a subject name like \"CN=name\"")
        attributes.append(x509.NameAttribute(oid, value.strip()))
    if not attributes:
        raise ValueError("the subject name is empty")
    return x509.Name(attributes)


def _split_rdns(subject: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in subject:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def subject_text(name: x509.Name) -> str:
    """Windows-style subject: "CN=ex1, O=Contoso" in the order the name was built."""
    labels = {oid: key for key, oid in _NAME_KEYS.items() if key != "S"}
    return ", ".join(f"{labels.get(a.oid, a.oid.dotted_string)}={a.value}" for a in name)


def thumbprint_of(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


@dataclass(frozen=True)
class CertMaterial:
    """One certificate: its DER bytes, the facts read from them, and its key if we hold it."""

    der: bytes
    key: rsa.RSAPrivateKey | None = field(default=None, repr=False, compare=False)

    # Parsed once per material: the org reads dates and thumbprints on every command.
    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def thumbprint(self) -> str:
        return thumbprint_of(self.der)

    @property
    def subject(self) -> str:
        return subject_text(self.certificate.subject)

    @property
    def issuer(self) -> str:
        return subject_text(self.certificate.issuer)

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def serial_hex(self) -> str:
        return f"{self.certificate.serial_number:X}"

    @property
    def key_size(self) -> int:
        public = self.certificate.public_key()
        return int(getattr(public, "key_size", 0))

    @property
    def signature(self) -> str:
        algorithm = self.certificate.signature_hash_algorithm
        return algorithm.name if algorithm is not None else "unknown"

    @property
    def sans(self) -> tuple[str, ...]:
        try:
            ext = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return ()
        return tuple(ext.value.get_values_for_type(x509.DNSName))


def make_certificate(
    subject: str,
    *,
    not_before: datetime,
    not_after: datetime,
    sans: tuple[str, ...] | list[str] = (),
    key_size: int = 2048,
    signature: str = "sha256",
) -> CertMaterial:
    """A self-signed certificate as Exchange's New-ExchangeCertificate would make it."""
    if signature not in SIGNATURES:
        raise ValueError(f"signature {signature!r} is not one of {', '.join(SIGNATURES)}")
    if not_after <= not_before:
        raise ValueError("not_after must be later than not_before")
    key = rsa_key(key_size)
    name = parse_subject(subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    if signature == "sha1":
        # OpenSSL 3 refuses SHA-1 for certificate signing, yet SHA-1 auth certificates are
        # exactly what the bot must detect, so one is made by hand: sign with SHA-256, swap
        # the algorithm identifiers (same length), and re-sign the TBS bytes with SHA-1.
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        return CertMaterial(der=_resign_sha1(der, key), key=key)
    cert = builder.sign(key, SIGNATURES[signature]())
    return CertMaterial(der=cert.public_bytes(serialization.Encoding.DER), key=key)


_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def _der_header(data: bytes, offset: int) -> tuple[int, int]:
    """(header length, content length) of the DER element starting at `offset`."""
    first = data[offset + 1]
    if first < 0x80:
        return 2, first
    count = first & 0x7F
    return 2 + count, int.from_bytes(data[offset + 2:offset + 2 + count], "big")


def _resign_sha1(der: bytes, key: rsa.RSAPrivateKey) -> bytes:
    if der.count(_SHA256_RSA) != 2:
        raise ValueError("unexpected certificate layout while making a SHA-1 certificate")
    swapped = der.replace(_SHA256_RSA, _SHA1_RSA)
    outer_header, _ = _der_header(swapped, 0)
    tbs_header, tbs_length = _der_header(swapped, outer_header)
    tbs = swapped[outer_header:outer_header + tbs_header + tbs_length]
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    if not swapped.endswith(b"\x00" + der[-len(signature):]) or len(signature) != key.key_size // 8:
        raise ValueError("unexpected signature layout while making a SHA-1 certificate")
    return swapped[:-len(signature)] + signature


def export_pfx(material: CertMaterial, password: str | None, friendly_name: str = "") -> bytes:
    """PKCS#12 bytes (with the private key when we hold it), as Export-ExchangeCertificate."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode() or None, material.key, material.certificate, None, encryption)


def import_pfx(data: bytes, password: str | None) -> tuple[CertMaterial, str]:
    """PKCS#12 (or plain DER/PEM certificate) bytes -> (CertMaterial, friendly name).

    ValueError when the bytes are no certificate or the password is wrong.
    """
    try:
        bundle = pkcs12.load_pkcs12(data, password.encode() if password else None)
    except ValueError as pkcs_error:
        for loader in (x509.load_der_x509_certificate, x509.load_pem_x509_certificate):
            try:
                der = loader(data).public_bytes(serialization.Encoding.DER)
            except ValueError:
                continue
            return CertMaterial(der=der), ""
        raise ValueError(str(pkcs_error) or "the data is not a certificate") from None
    if bundle.cert is None:
        raise ValueError("the file holds no certificate")
    key = bundle.key
    if key is not None and not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("only RSA keys are supported")
    name = (bundle.cert.friendly_name or b"").decode("utf-8", "replace")
    der = bundle.cert.certificate.public_bytes(serialization.Encoding.DER)
    return CertMaterial(der=der, key=key), name
