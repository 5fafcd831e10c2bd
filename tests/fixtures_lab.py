"""Fixtures that serve a lab org on an ephemeral loopback port, and helpers to reach it.

`lab` is a healthy org; `make_lab(scenario, **start_kwargs)` starts any other;
`fixed_org(scenario)` is an org model alone on a frozen clock, for tests without the wire. The
helpers connect the real pypsrp client exactly as the product does (Basic auth by default,
no message encryption with Basic and pypsrp's with Negotiate, one named server per
connection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
import requests
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from lab import scenario
from lab.org import Org
from lab.serve import LabHandle, start

Endpoint = Literal["exchange", "host"]
CONFIGURATION_NAMES: dict[str, str] = {
    "exchange": "Microsoft.Exchange",
    "host": "Microsoft.PowerShell",
}


LAB_NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def fixed_org(name: str = "healthy", **lab: Any) -> Org:
    """A built-in scenario on a clock frozen at LAB_NOW (plus any [lab] overrides)."""
    loaded = scenario.load(name)
    return Org(dataclasses.replace(loaded, lab=dataclasses.replace(loaded.lab, now=LAB_NOW, **lab)))


def server_entry(handle: LabHandle, server: str) -> dict[str, str]:
    """The ready-line entry of a server given its name or fqdn."""
    for entry in handle.info["servers"]:
        if server.lower() in (entry["name"].lower(), entry["fqdn"].lower()):
            return entry
    raise KeyError(f"lab has no server {server!r}")


def wsman_for(handle: LabHandle, server: str, endpoint: Endpoint = "exchange", **kw: Any) -> WSMan:
    """A pypsrp WSMan for one server's endpoint; `kw` overrides (e.g. password, timeouts)."""
    entry = server_entry(handle, server)
    url = urlsplit(entry["exchange_url"] if endpoint == "exchange" else entry["host_url"])
    options: dict[str, Any] = {
        "server": url.hostname,
        "port": url.port,
        "path": url.path.lstrip("/"),
        "ssl": url.scheme == "https",
        "auth": "basic",
        "username": handle.username,
        "password": handle.password,
        "cert_validation": handle.ca_file or False,
        "connection_timeout": 5,
        "read_timeout": 30,
    }
    options.update(kw)
    # As the product does: Basic has nothing to encrypt with; Negotiate over http encrypts.
    options.setdefault("encryption", "never" if options["auth"] == "basic" else "auto")
    return WSMan(**options)


@contextmanager
def pool_for(
    handle: LabHandle, server: str, endpoint: Endpoint = "exchange", **kw: Any
) -> Iterator[RunspacePool]:
    """An opened RunspacePool on one server's endpoint, closed (and its WSMan) on exit."""
    connection = wsman_for(handle, server, endpoint, **kw)
    try:
        with RunspacePool(connection, configuration_name=CONFIGURATION_NAMES[endpoint]) as pool:
            yield pool
    finally:
        connection.close()


def control(handle: LabHandle, method: str, path: str, body: Any = None) -> Any:
    """Call the control API (`path` like "state" or "/_lab/clock"); returns the JSON answer.

    A non-2xx answer raises `requests.HTTPError` (its response carries the JSON error).
    """
    route = path if path.startswith("/_lab") else "/_lab/" + path.lstrip("/")
    response = requests.request(
        method,
        handle.base_url + route,
        json=body,
        auth=(handle.username, handle.password),
        verify=handle.ca_file or False,
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture()
def make_lab() -> Iterator[Callable[..., LabHandle]]:
    """Factory: `make_lab("staged", latency_ms=5)`; every lab it starts is stopped after."""
    started: list[LabHandle] = []

    def _make(scenario: str = "healthy", **start_kwargs: Any) -> LabHandle:
        handle = start(scenario, **start_kwargs)
        started.append(handle)
        return handle

    yield _make
    for handle in started:
        handle.stop()


@pytest.fixture()
def lab(make_lab: Callable[..., LabHandle]) -> LabHandle:
    """A healthy lab org on an ephemeral loopback port."""
    return make_lab("healthy")
