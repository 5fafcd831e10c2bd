"""HTTP Basic authentication, as WinRM's Basic auth checks it: user case-insensitive.

Both the WS-Man endpoints and the control API take the lab's one username and password.
"""

from __future__ import annotations

import base64
import binascii
import hmac

CHALLENGE = {"WWW-Authenticate": 'Basic realm="WSMAN"'}


def is_authorized(header: str, username: str, password: str) -> bool:
    """Whether an `Authorization` header carries these credentials (compared in constant time)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, given = base64.b64decode(token.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.lower().encode(), username.lower().encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    return user_ok and password_ok
