"""How the lab authenticates a WS-Man request, as WinRM and Exchange's IIS do.

Modes (`exauth lab serve --auth`):
- `basic`: Basic only, the quick rehearsal mode (the client allows it to loopback only).
- `ntlm`: both endpoints offer Negotiate and accept NTLM; Basic is off.
- `kerberos`: the Exchange endpoint accepts Kerberos only (as Exchange's /PowerShell does
  in practice; NTLM there is unreliable), the host endpoint Negotiate with Kerberos or NTLM.

Negotiate is connection-based: the pyspnego acceptor context lives on the connection (the
request handler), and over plain http every later body must arrive sealed with its
session key (`message_encryption`); an unencrypted one is refused as WinRM refuses it with
AllowUnencrypted = false. Over https the TLS channel binding is checked instead.

pyspnego's NTLM acceptor reads its credentials from the file named by NTLM_USER_FILE and
GSSAPI its keytab from KRB5_KTNAME, both process-wide; each lab writes its own NTLM file and
sets both under one lock around the acceptor calls, so labs in one process do not mix.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import spnego
import spnego.channel_bindings
from cryptography import x509
from cryptography.hazmat.primitives import hashes

AuthMode = Literal["basic", "ntlm", "kerberos"]
AUTH_MODES: tuple[AuthMode, ...] = ("basic", "ntlm", "kerberos")

_ENV_LOCK = threading.Lock()
_TOKEN = re.compile(r"^\s*(Negotiate|Kerberos|NTLM)\s+(\S+)\s*$", re.I)


class AuthRefused(Exception):
    """The credentials or token were refused; the message is for the lab's debug log."""


def _split_user(username: str) -> tuple[str, str]:
    domain, sep, user = username.partition("\\")
    return (domain, user) if sep else ("", username)


def channel_binding(leaf_der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point application data for the certificate the lab serves."""
    cert = x509.load_der_x509_certificate(leaf_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(leaf_der)
    return b"tls-server-end-point:" + digest.finalize()


class Authenticator:
    """The lab-wide half: which schemes an endpoint offers, and the acceptor contexts."""

    def __init__(
        self,
        mode: AuthMode,
        *,
        username: str,
        password: str,
        directory: Path,
        keytab: str | None = None,
        tls_binding: bytes | None = None,
    ) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)} (got {mode!r})")
        self.mode = mode
        self.username = username
        self.password = password
        self.keytab = keytab or os.environ.get("KRB5_KTNAME")
        if mode == "kerberos" and not self.keytab:
            raise ValueError("kerberos needs a keytab with the lab's service principals "
                             "(--keytab PATH, or $KRB5_KTNAME)")
        self._binding = tls_binding
        # Completed Negotiate handshakes: a client reusing its session pays one per pool.
        self.handshakes = 0
        self._count_lock = threading.Lock()
        self.ntlm_file: Path | None = None
        if mode != "basic":
            domain, user = _split_user(username)
            self.ntlm_file = directory / "ntlm-users"
            fd = os.open(self.ntlm_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"{domain}:{user}:{password}\n")

    @property
    def negotiate(self) -> bool:
        return self.mode != "basic"

    def challenge(self) -> dict[str, str]:
        """The WWW-Authenticate of a 401: what this lab takes."""
        return {"WWW-Authenticate": "Negotiate" if self.negotiate else 'Basic realm="WSMAN"'}

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in ("NTLM_USER_FILE", "KRB5_KTNAME")}
            if self.ntlm_file is not None:
                os.environ["NTLM_USER_FILE"] = str(self.ntlm_file)
            if self.keytab:
                os.environ["KRB5_KTNAME"] = self.keytab
            try:
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def new_context(self) -> Any:
        bindings = None
        if self._binding is not None:
            bindings = spnego.channel_bindings.GssChannelBindings(application_data=self._binding)
        with self._environment():
            return spnego.server(
                protocol="negotiate",
                channel_bindings=bindings,
                options=spnego.NegotiateOptions.wrapping_winrm,
            )

    def step(self, context: Any, token: bytes) -> bytes | None:
        """One acceptor step; AuthRefused when the token or the password is wrong."""
        try:
            with self._environment():
                return context.step(token)
        except Exception as exc:  # any token the acceptor cannot take is a refused logon
            raise AuthRefused(f"{type(exc).__name__}: {exc}") from exc

    def completed(self) -> None:
        with self._count_lock:
            self.handshakes += 1

    def allowed(self, context: Any, endpoint: str) -> bool:
        """Whether the authenticated identity may use this endpoint the way it logged on:
        the lab's own account (domain and realm aside), by a protocol the endpoint takes."""
        protocol = str(getattr(context, "negotiated_protocol", "") or "").lower()
        if self.mode == "kerberos" and endpoint == "exchange" and protocol != "kerberos":
            return False
        if self.mode == "ntlm" and protocol != "ntlm":
            return False
        return _account(str(context.client_principal or "")) == _account(self.username)


def _account(name: str) -> str:
    """The account part of DOMAIN\\user, user@REALM or user, lower-cased."""
    return _split_user(name)[1].split("@")[0].lower()


def parse_token(header: str) -> tuple[str, bytes] | None:
    """(scheme, token) of a Negotiate/Kerberos/NTLM Authorization header, else None."""
    match = _TOKEN.match(header or "")
    if match is None:
        return None
    try:
        return match.group(1), base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return None


def token_header(token: bytes) -> str:
    return "Negotiate " + base64.b64encode(token).decode()
