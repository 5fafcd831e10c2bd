"""Every server's Exchange certificate store, listed through one Exchange session.

Exchange answers `Get-ExchangeCertificate -Server X` for any server X from any of its
endpoints (it asks X over RPC), so the certificate stores of a whole org can be read in one
invocation on the session that already answered the org-wide reads: one round trip instead
of opening an Exchange session on every server (two round trips to open, three per
command, and most of the client's CPU per server). The per-server host sessions then carry
only the IIS read.

The outputs of all statements arrive as one stream, so each server's listing is preceded
by a marker statement, `Get-ExchangeServer -Identity X | Select-Object Fqdn`: everything
after a marker and before the next one is that server's. Any error fails the whole
invocation (workers.exchange.session); the caller then asks each server on its own, as
before, so a server that cannot be read is reported exactly as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.exchange.client import ExchangeClient
from workers.exchange.parsing import prop, text
from workers.exchange.target import Statement

MARKER_PROPERTY = "Fqdn"


def statements(fqdns: Sequence[str], select: Sequence[str]) -> list[Statement]:
    """Marker, listing; marker, listing; ... one pair per server, in order."""
    out: list[Statement] = []
    for fqdn in fqdns:
        out.append(Statement.of("Get-ExchangeServer", Identity=fqdn, select=(MARKER_PROPERTY,)))
        out.append(Statement.of("Get-ExchangeCertificate", Server=fqdn, select=select))
    return out


def split(fqdns: Sequence[str], output: Sequence[Any]) -> dict[str, list[Any]]:
    """The output stream cut at the markers: fqdn -> that server's certificate objects.

    Raises ValueError when the markers do not name the servers asked, in order (an
    endpoint that answered something else must not be read as the right servers')."""
    listed: dict[str, list[Any]] = {}
    expected = iter(fqdn.lower() for fqdn in fqdns)
    current: list[Any] | None = None
    for obj in output:
        if obj is None:
            continue
        marker = prop(obj, MARKER_PROPERTY)
        if marker is not None:
            fqdn = next(expected, None)
            if fqdn is None or text(marker).lower() != fqdn:
                raise ValueError(f"listing marker {text(marker)!r} where {fqdn!r} was due")
            current = listed.setdefault(fqdn, [])
        elif current is None:
            raise ValueError("a certificate before the first server marker")
        else:
            current.append(obj)
    if next(expected, None) is not None:
        raise ValueError("the listing ended before every server was named")
    return listed


def list_all(client: ExchangeClient, via: str, fqdns: Sequence[str],
             select: Sequence[str]) -> dict[str, list[Any]] | None:
    """Every named server's certificate objects, asked through `via`'s Exchange endpoint.

    None when that endpoint is not working (it fell back to host + snap-in in this client):
    what broke it (an expired Auth certificate breaks serialization signing on every
    Exchange endpoint) may break the others too, and each server is then asked on its own,
    so that each one's status says so. Raises ExchangeError or ValueError."""
    if not fqdns or via.lower() in client.fallbacks:
        return None
    output = client.exchange_statements(via, statements(fqdns, select))
    if via.lower() in client.fallbacks:  # it broke just now: answered by host + snap-in
        return None
    return split(fqdns, output)
