"""Status asks for less and still says the same.

The collector pipes every read into `Select-Object -Property` and reads a server's binding
and store in one invocation. These tests prove that costs nothing in meaning: for every
built-in scenario the status from selected properties equals the status from whole objects
(what the collector read before), the lab's call log shows the lean shape of the work, and
the endpoint without Select-Object still gets answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import pytest

from config.schema import OrgSettings
from lab import cmdlets
from lab.scenario import builtin_names
from lab.serve import LabHandle
from tests.test_status_lab import lab_org
from workers.exchange.client import ExchangeClient
from workers.exchange.parsing import server_from
from workers.exchange.session import SessionCache
from workers.exchange.target import Params, Statement
from workers.status.collect import collect
from workers.status.findings import is_in_scope
from workers.status.report import build_status


class WholeObjects(ExchangeClient):
    """The client with every `Select-Object` left out: whole objects, as before."""

    def exchange(self, fqdn: str, cmdlet: str, params: Params = (), /, *,
                 select: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
        return super().exchange(fqdn, cmdlet, params, **kwargs)

    def exchange_any(self, servers: Iterable[str], cmdlet: str, params: Params = (), /, *,
                     select: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
        return super().exchange_any(servers, cmdlet, params, **kwargs)

    def exchange_statements(self, fqdn: str, statements: Sequence[Statement]) -> list[Any]:
        return super().exchange_statements(fqdn, [s.whole() for s in statements])

    def host_statements(self, fqdn: str, statements: Sequence[Statement]) -> list[Any]:
        return super().host_statements(fqdn, [s.whole() for s in statements])


def report(
    handle: LabHandle, client_type: type[ExchangeClient], now: datetime
) -> dict[str, Any]:
    """Status at a fixed moment (the lab's clock runs), through a client of its own."""
    org = lab_org(handle)
    cache = SessionCache()
    try:
        return build_status(
            collect(org, now=now, client=client_type(org, cache=cache))).to_json()
    finally:
        cache.close_all()


@pytest.mark.parametrize("name", builtin_names())
def test_selected_reads_give_the_same_status_as_whole_objects(
    name: str, make_lab: Callable[..., LabHandle]
) -> None:
    handle = make_lab(name)
    now = handle.org.now()
    selected = report(handle, ExchangeClient, now)
    whole = report(handle, WholeObjects, now)
    assert selected["servers"], "the scenario lists servers"
    assert selected == whole


def test_each_server_is_asked_once_per_endpoint_for_only_what_is_read(
    make_lab: Callable[..., LabHandle],
) -> None:
    handle = make_lab("healthy")
    report(handle, ExchangeClient, handle.org.now())
    calls = handle.org.calls()
    in_scope = [handle.org.server_info(n) for n in handle.org.server_names()]
    in_scope = [i for i in in_scope if is_in_scope(tuple(i["roles"]), i["version"])]
    certificate_calls = [c for c in calls if c["command"] == "Get-ExchangeCertificate"]
    for info in in_scope:
        name = info["name"]
        mine = [c for c in calls if c["server"] == name]
        by_command = [c["command"] for c in mine]
        assert by_command.count("Get-WebBinding") == 1
        assert by_command.count("Get-ChildItem") == 1
        # Every store is listed once, through the one Exchange session of the org-wide reads.
        listed = [c for c in certificate_calls
                  if str(c["parameters"].get("Server", "")).lower() == info["fqdn"].lower()]
        assert len(listed) == 1
        assert listed[0]["endpoint"] == "exchange"
    assert {c["server"] for c in certificate_calls} == {lab_org(handle).writer.split(".")[0]}
    # One listing per server answers presence and duplicates: nothing asked by thumbprint.
    assert not any("Thumbprint" in c["parameters"] for c in certificate_calls)
    # Every read went through Select-Object: one per Get-* call, right after it.
    reads = [c for c in calls if c["command"].startswith("Get-")]
    selects = [c for c in calls if c["command"] == "Select-Object"]
    assert len(selects) == len(reads)
    assert all(c["outcome"] == "ok" for c in selects)


def test_an_endpoint_without_select_object_gets_whole_objects(
    make_lab: Callable[..., LabHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = make_lab("healthy")
    org: OrgSettings = lab_org(handle)
    now = handle.org.now()
    expected = report(handle, ExchangeClient, now)
    monkeypatch.delitem(cmdlets.COMMANDS, "select-object")
    cache = SessionCache()
    try:
        client = ExchangeClient(org, cache=cache)
        degraded = build_status(collect(org, now=now, client=client)).to_json()
        assert all(not client.session(s, "exchange").can_select for s in [org.writer])
    finally:
        cache.close_all()
    assert degraded == expected


@pytest.mark.parametrize(
    "site",
    [
        "contoso.lab/Configuration/Sites/Site-A",  # Select-Object: the ADObjectId's text
        type("ADObjectId", (), {"to_string": "contoso.lab/Configuration/Sites/Site-A"})(),
    ],
)
def test_server_entries_read_the_same_from_selected_text_or_objects(site: Any) -> None:
    obj = {"Name": "EX1", "Fqdn": "ex1.contoso.lab", "Site": site,
           "ServerRole": "Mailbox, ClientAccess", "IsEdgeServer": False,
           "AdminDisplayVersion": "Version 15.2 (Build 1544.4)"}
    assert server_from(obj) == ("EX1", "ex1.contoso.lab", "Site-A",
                                "Version 15.2 (Build 1544.4)", ("Mailbox", "ClientAccess"))


@pytest.mark.parametrize("name", builtin_names())
def test_the_one_session_listing_gives_the_same_status_as_asking_each_server(
    name: str, make_lab: Callable[..., LabHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every store listed through one Exchange session (workers.status.listing) says what
    each server's own Exchange endpoint says, in every built-in scenario: broken endpoints,
    unreachable servers and missing certificates included."""
    from workers.status import collect as collect_module

    handle = make_lab(name)
    now = handle.org.now()
    listed = report(handle, ExchangeClient, now)
    calls = len(handle.org.calls())
    monkeypatch.setattr(collect_module.listing, "list_all", lambda *args, **kwargs: None)
    alone = report(handle, ExchangeClient, now)
    per_server = [c for c in handle.org.calls()[calls:]
                  if c["command"] == "Get-ExchangeCertificate"]
    assert per_server, "each server was asked on its own endpoints"
    assert listed == alone
