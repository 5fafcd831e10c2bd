"""The client assertion: a JWT a confidential client signs with its certificate's private
key instead of sending a secret (RFC 7523; msal's certificate credential).

Checked as Entra checks it, with `cryptography` alone (the lab stays independent of the
client's JWT library): RS256 or PS256, the certificate named by `x5t#S256` (SHA-256 of its
DER) or `x5t` (SHA-1) among the application's keyCredentials, audience = the token
endpoint, issuer = subject = the client id, not expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lab.graph.key_credentials import StoredKey

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 300  # seconds Entra tolerates either way


class AssertionRejected(ValueError):
    """Why the assertion is refused, in one line."""


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AssertionRejected("the client assertion is not a JWT") from None


def verify(assertion: str, *, client_id: str, audiences: Iterable[str],
           keys: list[StoredKey]) -> None:
    """Raise AssertionRejected unless the assertion is valid for this client."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise AssertionRejected("the client assertion is not a JWT")
    try:
        header: Any = json.loads(_b64url(parts[0]))
        claims: Any = json.loads(_b64url(parts[1]))
    except ValueError:
        raise AssertionRejected("the client assertion is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AssertionRejected("the client assertion is not a JWT")
    key = _key_named(header, keys)
    public = key.material.certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise AssertionRejected("the certificate's key is not RSA")
    signed = f"{parts[0]}.{parts[1]}".encode()
    signature = _b64url(parts[2])
    algorithm = header.get("alg")
    try:
        if algorithm == "RS256":
            public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif algorithm == "PS256":
            public.verify(signature, signed, padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                hashes.SHA256())
        else:
            raise AssertionRejected(f"the signing algorithm {algorithm!r} is not supported")
    except InvalidSignature:
        raise AssertionRejected("Client assertion failed signature validation.") from None
    if claims.get("aud") not in set(audiences):
        raise AssertionRejected(f"the client assertion's audience {claims.get('aud')!r} "
                                "is not this token endpoint")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRejected("the client assertion's issuer and subject must be the "
                                "client id")
    now = time.time()
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires < now - CLOCK_SKEW:
        raise AssertionRejected("Client assertion is expired.")
    not_before = claims.get("nbf")
    if isinstance(not_before, int | float) and not_before > now + CLOCK_SKEW:
        raise AssertionRejected("Client assertion is not yet valid.")


def _key_named(header: dict[str, Any], keys: list[StoredKey]) -> StoredKey:
    wanted256 = header.get("x5t#S256")
    wanted1 = header.get("x5t")
    for key in keys:
        if isinstance(wanted256, str) and _b64url(wanted256) == hashlib.sha256(key.der).digest():
            return key
        if isinstance(wanted1, str) and _b64url(wanted1) == hashlib.sha1(key.der).digest():
            return key
    raise AssertionRejected("The certificate with identifier used to sign the client "
                            "assertion is not registered on application.")
