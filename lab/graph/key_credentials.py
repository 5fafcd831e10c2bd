"""keyCredentials as Graph stores, shows and checks them.

A PATCH of `keyCredentials` replaces the whole collection: an entry that names the
`keyId` of a credential the application already has may leave `key` out (Graph keeps
that key), every other entry must carry the certificate itself, base64 DER, in `key`.
What is wrong is answered 400 with Graph's wording ("Invalid value specified for property
'key' of resource 'KeyCredential'."). Dates default to the certificate's and must lie
within it; `customKeyIdentifier` defaults to the thumbprint, as when Graph computes it.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab.certs import CertMaterial
from lab.graph.errors import GraphError

KEY_TYPE = "AsymmetricX509Cert"
KEY_USAGE = "Verify"
PROPERTIES = ("customKeyIdentifier", "displayName", "endDateTime", "key", "keyId",
              "startDateTime", "type", "usage")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class StoredKey:
    """One keyCredential of an application (Graph keeps the public certificate only)."""

    key_id: str
    der: bytes
    custom_key_identifier: str
    display_name: str
    start: datetime
    end: datetime
    type: str = KEY_TYPE
    usage: str = KEY_USAGE

    @property
    def material(self) -> CertMaterial:
        return CertMaterial(der=self.der)

    @property
    def thumbprint(self) -> str:
        return self.material.thumbprint

    def as_graph(self, *, with_key: bool) -> dict[str, Any]:
        """As GET shows it: `key` only when the single object was read with $select."""
        return {"customKeyIdentifier": self.custom_key_identifier,
                "displayName": self.display_name, "endDateTime": graph_time(self.end),
                "key": base64.b64encode(self.der).decode() if with_key else None,
                "keyId": self.key_id, "startDateTime": graph_time(self.start),
                "type": self.type, "usage": self.usage}


def seeded(material: CertMaterial, display_name: str = "") -> StoredKey:
    """A scenario's key: the certificate's public part, dates and thumbprint."""
    return StoredKey(key_id=str(uuid.uuid4()), der=material.der,
                     custom_key_identifier=material.thumbprint,
                     display_name=display_name or f"CN={material.subject.removeprefix('CN=')}",
                     start=material.not_before, end=material.not_after)


def graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid(prop: str) -> GraphError:
    return GraphError(400, "Request_BadRequest",
                      f"Invalid value specified for property '{prop}' of resource "
                      "'KeyCredential'.")


def _time(entry: dict[str, Any], prop: str) -> datetime | None:
    value = entry.get(prop)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(prop)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(prop) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _certificate(entry: dict[str, Any]) -> bytes:
    value = entry.get("key")
    if not isinstance(value, str) or not value.strip():
        raise _invalid("key")
    try:
        raw = base64.b64decode(value, validate=True)
        cert = x509.load_der_x509_certificate(raw)
    except (binascii.Error, ValueError):
        raise _invalid("key") from None
    return cert.public_bytes(serialization.Encoding.DER)


def parse_patch(value: Any, existing: list[StoredKey], *,
                max_lifetime_days: int | None) -> list[StoredKey]:
    """The new collection a PATCH body's `keyCredentials` asks for, or a 400 GraphError."""
    if not isinstance(value, list):
        raise GraphError(400, "Request_BadRequest",
                         "Invalid value specified for property 'keyCredentials' of resource "
                         "'Application'.")
    by_id = {k.key_id.lower(): k for k in existing}
    result: list[StoredKey] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise GraphError(400, "Request_BadRequest",
                             "Invalid value specified for property 'keyCredentials' of "
                             "resource 'Application'.")
        unknown = [p for p in entry if p not in PROPERTIES and not p.startswith("@odata.")]
        if unknown:
            raise GraphError(400, "Request_BadRequest",
                             f"Property '{unknown[0]}' does not exist on type "
                             "'microsoft.graph.keyCredential'.")
        result.append(_one(entry, by_id, max_lifetime_days))
    seen_ids: set[str] = set()
    seen_certs: set[str] = set()
    for key in result:
        if key.key_id.lower() in seen_ids:
            raise GraphError(400, "Request_BadRequest",
                             f"Key credential keyId '{key.key_id}' is used more than once.")
        seen_ids.add(key.key_id.lower())
        if key.thumbprint in seen_certs:
            raise GraphError(400, "Request_BadRequest",
                             "Upload of a duplicate key credential is not allowed "
                             f"(certificate {key.thumbprint}).")
        seen_certs.add(key.thumbprint)
    return result


def _one(entry: dict[str, Any], by_id: dict[str, StoredKey],
         max_lifetime_days: int | None) -> StoredKey:
    key_id = entry.get("keyId")
    if key_id is not None and (not isinstance(key_id, str) or not _GUID.match(key_id)):
        raise _invalid("keyId")
    kept = by_id.get(key_id.lower()) if isinstance(key_id, str) else None
    # An entry naming a kept keyId may leave the key out: Graph keeps that key.
    der = kept.der if entry.get("key") is None and kept is not None else _certificate(entry)
    if entry.get("type", KEY_TYPE) != KEY_TYPE:
        raise _invalid("type")
    if entry.get("usage", KEY_USAGE) != KEY_USAGE:
        raise _invalid("usage")
    cert = CertMaterial(der=der)
    start = _time(entry, "startDateTime") or (kept.start if kept and kept.der == der
                                              else cert.not_before)
    end = _time(entry, "endDateTime") or (kept.end if kept and kept.der == der
                                          else cert.not_after)
    if start < cert.not_before - timedelta(seconds=1) or start >= end:
        raise _invalid("startDateTime")
    if end > cert.not_after + timedelta(seconds=1):
        raise GraphError(400, "Request_BadRequest",
                         "Key credential end date is invalid: it is later than the "
                         "certificate's expiry.")
    # A tenant's lifetime policy judges keys being added; a key the application already has
    # (named by its keyId, same certificate) is sent back unchanged and stays.
    new = kept is None or kept.der != der
    if new and max_lifetime_days is not None and end - start > timedelta(days=max_lifetime_days):
        raise GraphError(400, "Request_BadRequest",
                         "Key credential lifetime exceeds the max value allowed as per "
                         f"assigned policy ({max_lifetime_days} days).")
    identifier = entry.get("customKeyIdentifier")
    if identifier is None:
        identifier = kept.custom_key_identifier if kept and kept.der == der else cert.thumbprint
    elif not isinstance(identifier, str) or not _is_base64(identifier):
        raise _invalid("customKeyIdentifier")
    display_name = entry.get("displayName")
    if display_name is not None and not isinstance(display_name, str):
        raise _invalid("displayName")
    if display_name is None:
        display_name = kept.display_name if kept else ""
    return StoredKey(key_id=(key_id or str(uuid.uuid4())).lower(), der=der,
                     custom_key_identifier=identifier, display_name=display_name,
                     start=start, end=end)


def _is_base64(text: str) -> bool:
    """customKeyIdentifier is Edm.Binary (a 40-digit hex thumbprint is valid base64)."""
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)
