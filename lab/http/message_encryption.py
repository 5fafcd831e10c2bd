"""WinRM message encryption over plain HTTP: the `multipart/encrypted` envelope, server side.

After Negotiate (NTLM or Kerberos) over http, WinRM sends and expects every SOAP body
sealed with the authentication's session key ([MS-WSMV] 2.2.9.1). The framing mirrors what
pypsrp's `WinRMEncryption` writes and reads (pypsrp/encryption.py): per part

    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted\\r\\n
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plain length>\\r\\n
    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/octet-stream\\r\\n
    <4-byte little-endian header length><signature header><sealed data>

and one closing `--Encrypted Boundary--\\r\\n`. The seal itself is pyspnego's
`wrap_winrm`/`unwrap_winrm`, the same calls the client makes.
"""

from __future__ import annotations

import re
import struct
from typing import Any

BOUNDARY = "Encrypted Boundary"
SPNEGO = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS = "application/HTTP-Kerberos-session-encrypted"
PROTOCOLS = frozenset({SPNEGO, KERBEROS})
_PARAM = re.compile(r';\s*([A-Za-z-]+)\s*=\s*"?([^";]*)"?')
_LENGTH = re.compile(rb"Length=(\d+)")


class EnvelopeError(Exception):
    """The body is not a well-formed encrypted envelope, or does not decrypt."""


def is_encrypted(content_type: str) -> bool:
    return content_type.lower().startswith(("multipart/encrypted", "multipart/x-multi-encrypted"))


def parameters(content_type: str) -> dict[str, str]:
    """`protocol` and `boundary` of a multipart/encrypted Content-Type."""
    return {k.lower(): v for k, v in _PARAM.findall(content_type)}


def unwrap(body: bytes, content_type: str, context: Any) -> tuple[bytes, str]:
    """The plain SOAP body of an encrypted request, and the protocol it named."""
    params = parameters(content_type)
    protocol = params.get("protocol", "")
    if protocol not in PROTOCOLS:
        raise EnvelopeError(f"unsupported encryption protocol {protocol!r}")
    boundary = params.get("boundary", BOUNDARY)
    marker = re.compile(rb"--\s*" + re.escape(boundary.encode()) + rb"\r\n")
    parts = [p for p in marker.split(body) if p]
    if len(parts) < 2 or len(parts) % 2:
        raise EnvelopeError("encrypted body does not hold header and data parts in pairs")
    plain = b""
    for header, payload in zip(parts[0::2], parts[1::2], strict=True):
        length = _LENGTH.search(header)
        if length is None:
            raise EnvelopeError("encrypted part names no original Length")
        payload = re.sub(rb"--\s*" + re.escape(boundary.encode()) + rb"--\r\n$", b"", payload)
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        if len(payload) < 4:
            raise EnvelopeError("encrypted part is too short")
        size = struct.unpack("<i", payload[:4])[0]
        if size < 0 or 4 + size > len(payload):
            raise EnvelopeError("encrypted part has a bad signature length")
        try:
            data = context.unwrap_winrm(payload[4 : 4 + size], payload[4 + size :])
        except Exception as exc:  # pyspnego raises its own errors for a bad seal
            raise EnvelopeError(f"cannot decrypt: {exc}") from exc
        if len(data) != int(length.group(1)):
            raise EnvelopeError("decrypted length differs from the announced Length")
        plain += data
    return plain, protocol


def wrap(body: bytes, context: Any, protocol: str) -> tuple[str, bytes]:
    """The Content-Type and encrypted body of a response sealed for this connection."""
    header, sealed, padding = context.wrap_winrm(body)
    head = "\r\n".join([
        f"--{BOUNDARY}",
        f"\tContent-Type: {protocol}",
        f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(body) + padding}",
        f"--{BOUNDARY}",
        "\tContent-Type: application/octet-stream",
        "",
    ]).encode()
    closing = f"--{BOUNDARY}--\r\n".encode()
    payload = head + struct.pack("<i", len(header)) + header + sealed + closing
    content_type = f'multipart/encrypted;protocol="{protocol}";boundary="{BOUNDARY}"'
    return content_type, payload
