"""keyCredentials as exauth reads and writes them.

A key is judged by the certificate in it, never by its label: exauth reads the collection
with `$select=keyCredentials`, which makes Graph return each key's certificate, and
computes the thumbprint (SHA-1 of the DER, upper-case hex) from that, as it does for
Exchange's RawData; `customKeyIdentifier` is only a fallback when Graph gives no key.

Graph's PATCH replaces the whole collection. So a change is always: the keys read just
before, every one sent back as it was (its keyId and its certificate), plus the new one or
minus the ones meant to go; and after it, `unintended_changes` compares a fresh read with
what was meant, so a key that vanished (someone else's write in between, a Graph quirk)
is reported rather than assumed away.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

KEY_TYPE = "AsymmetricX509Cert"
KEY_USAGE = "Verify"
DISPLAY_NAME = "Microsoft Exchange Server Auth Certificate (exauth)"


@dataclass(frozen=True)
class AppKey:
    """One keyCredential of the application."""

    key_id: str
    thumbprint: str  # upper-case hex; from the certificate when Graph returned it
    display_name: str
    start: datetime | None
    end: datetime | None
    type: str
    usage: str
    der: bytes | None  # the certificate, when Graph returned it

    def as_patch(self) -> dict[str, Any]:
        """Sent back unchanged in a PATCH: its keyId, and its certificate when known."""
        entry: dict[str, Any] = {"keyId": self.key_id, "type": self.type, "usage": self.usage,
                                 "displayName": self.display_name}
        if self.der is not None:
            entry["key"] = base64.b64encode(self.der).decode()
        if self.start is not None:
            entry["startDateTime"] = _graph_time(self.start)
        if self.end is not None:
            entry["endDateTime"] = _graph_time(self.end)
        return entry

    def as_status(self) -> dict[str, Any]:
        return {"thumbprint": self.thumbprint, "key_id": self.key_id,
                "display_name": self.display_name,
                "not_before": _graph_time(self.start) if self.start else None,
                "not_after": _graph_time(self.end) if self.end else None}


def keys_from(application: dict[str, Any]) -> list[AppKey]:
    """The keyCredentials of a Graph application object."""
    keys = []
    for entry in application.get("keyCredentials") or []:
        if not isinstance(entry, dict):
            continue
        der = _der(entry.get("key"))
        thumbprint = (hashlib.sha1(der).hexdigest().upper() if der is not None
                      else str(entry.get("customKeyIdentifier") or "").upper())
        keys.append(AppKey(
            key_id=str(entry.get("keyId") or ""), thumbprint=thumbprint,
            display_name=str(entry.get("displayName") or ""),
            start=_time(entry.get("startDateTime")), end=_time(entry.get("endDateTime")),
            type=str(entry.get("type") or KEY_TYPE), usage=str(entry.get("usage") or KEY_USAGE),
            der=der))
    return keys


def new_key(der: bytes, display_name: str = DISPLAY_NAME) -> dict[str, Any]:
    """A certificate as a new keyCredential: its public DER, thumbprint as identifier,
    AsymmetricX509Cert / Verify, and its own validity as the key's dates."""
    cert = x509.load_der_x509_certificate(der)
    public = cert.public_bytes(serialization.Encoding.DER)
    return {"type": KEY_TYPE, "usage": KEY_USAGE, "key": base64.b64encode(public).decode(),
            "customKeyIdentifier": hashlib.sha1(public).hexdigest().upper(),
            "displayName": display_name,
            "startDateTime": _graph_time(cert.not_valid_before_utc),
            "endDateTime": _graph_time(cert.not_valid_after_utc)}


def with_key_added(existing: list[AppKey], der: bytes) -> list[dict[str, Any]]:
    """Every existing key unchanged, plus the certificate (not twice)."""
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    body = [key.as_patch() for key in existing]
    if not any(key.thumbprint == thumbprint for key in existing):
        body.append(new_key(der))
    return body


def without_keys(existing: list[AppKey], thumbprints: Iterable[str]) -> list[dict[str, Any]]:
    """Every existing key unchanged except the certificates named."""
    going = {t.upper() for t in thumbprints}
    return [key.as_patch() for key in existing if key.thumbprint not in going]


def unintended_changes(before: list[AppKey], after: list[AppKey], *,
                       added: Iterable[str] = (), removed: Iterable[str] = ()) -> list[str]:
    """What a fresh read shows that the change did not mean: keys gone that were to stay,
    keys meant to be added that are not there, keys meant to go that are still there."""
    meant_added = {t.upper() for t in added}
    meant_removed = {t.upper() for t in removed}
    now_there = {key.thumbprint for key in after}
    problems = [f"key {key.thumbprint} ({key.display_name or 'no name'}) is gone"
                for key in before
                if key.thumbprint not in meant_removed and key.thumbprint not in now_there]
    problems += [f"key {t} was not added" for t in sorted(meant_added - now_there)]
    problems += [f"key {t} is still there" for t in sorted(meant_removed & now_there)]
    return problems


def _der(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
        x509.load_der_x509_certificate(raw)
    except (binascii.Error, ValueError):
        return None
    return raw


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
