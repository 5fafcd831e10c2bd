"""Where Basic auth may go: never over plain http, except to a loopback address (the lab).

Basic sends the password itself, and over plain http anyone on the path can read it. The
rule is applied twice on purpose: when the config is read (config/schema.py, naming the key
to fix) and again just before connecting (workers/exchange/client.py), for URLs built at run time.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

BASIC_OVER_HTTP = "basic auth over plain http is refused except to a loopback address (use https)"


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses (IPv6 ones with or without brackets)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_to_remote(url: str) -> bool:
    """True when a URL is plain http to anything but a loopback address."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname)


def refuses_basic(url: str | None, auth: str) -> bool:
    """True when connecting to `url` with `auth` would send a password in the clear."""
    return bool(url) and auth == "basic" and plain_http_to_remote(url or "")
