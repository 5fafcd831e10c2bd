"""Select-Object in the lab: PowerShell's semantics, over the real protocol and in the model.

Exchange's restricted runspace exposes Select-Object and NoLanguage allows a pipeline of
commands, so the product asks for only the properties it reads. These tests pin what the
client then receives: `Selected.<type>` PSCustomObjects carrying exactly the chosen
properties as note properties, rich values (an ADObjectId, a ServerVersion) as their text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from pypsrp.powershell import PowerShell

from lab import scenario
from lab.cmdlets import CommandError, Invocation, Session, run_pipeline
from lab.org import Org
from lab.serve import LabHandle
from tests.fixtures_lab import pool_for

SELECTED_SERVER_TYPES = [
    "Selected.Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "System.Management.Automation.PSCustomObject",
    "System.Object",
]


def wire(handle: LabHandle, endpoint: str, *commands: tuple[str, dict[str, Any]]) -> PowerShell:
    """Run one pipeline of commands on ex1 through pypsrp; the finished PowerShell."""
    with pool_for(handle, "ex1", endpoint) as pool:  # type: ignore[arg-type]
        ps = PowerShell(pool)
        for name, params in commands:
            ps.add_cmdlet(name)
            for key, value in params.items():
                ps.add_parameter(key, value)
        ps.invoke()
        return ps


def note(obj: Any, name: str) -> Any:
    return obj.PSObject.extended_properties[[p.name for p in
                                             obj.PSObject.extended_properties].index(name)] \
        .get_value(obj)


def names(obj: Any) -> list[str]:
    return [p.name for p in obj.PSObject.extended_properties]


# --- over the wire ----------------------------------------------------------------------------


def test_selected_servers_carry_only_the_chosen_properties(
    make_lab: Callable[..., LabHandle],
) -> None:
    handle = make_lab("healthy")
    chosen = ["Name", "Fqdn", "Site", "ServerRole", "AdminDisplayVersion"]
    ps = wire(handle, "exchange", ("Get-ExchangeServer", {}),
              ("Select-Object", {"Property": chosen}))
    assert not ps.had_errors
    expected = {handle.org.server_info(n)["fqdn"].lower(): handle.org.server_info(n)
                for n in handle.org.server_names()}
    assert len(ps.output) == len(expected)
    for obj in ps.output:
        assert obj.types == SELECTED_SERVER_TYPES
        assert list(obj.extended_properties) == chosen
        assert obj.adapted_properties == {}
        info = expected[obj.extended_properties["Fqdn"].lower()]
        # An ADObjectId travels as its text once it is a note property of a custom object.
        assert obj.extended_properties["Site"].endswith(f"/Sites/{info['site']}")
        assert obj.extended_properties["AdminDisplayVersion"] == info["version"]
        assert set(obj.extended_properties["ServerRole"].split(", ")) == set(info["roles"])


def test_selected_certificates_keep_their_raw_bytes(make_lab: Callable[..., LabHandle]) -> None:
    handle = make_lab("healthy")
    ps = wire(handle, "exchange", ("Get-ExchangeCertificate", {"Server": "ex1"}),
              ("Select-Object", {"Property": ["RawData", "Thumbprint"]}))
    assert not ps.had_errors
    listed = {hashlib.sha1(obj.extended_properties["RawData"]).hexdigest().upper()
              for obj in ps.output}
    assert listed == {c.thumbprint for c in handle.org.store("ex1")}
    for obj in ps.output:
        assert obj.types[0] == ("Selected.Microsoft.Exchange.Management."
                                "SystemConfigurationTasks.ExchangeCertificate")
        # The lab's objects model the wire: a property only the live object has is $null.
        assert obj.extended_properties["Thumbprint"] is None


def test_host_endpoint_selects_bindings_and_runs_two_statements(
    make_lab: Callable[..., LabHandle],
) -> None:
    handle = make_lab("healthy")
    with pool_for(handle, "ex1", "host") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WebBinding").add_parameter("Name", "Exchange Back End")
        ps.add_cmdlet("Select-Object").add_parameter("Property", ["protocol",
                                                                  "bindingInformation"])
        ps.add_statement()
        ps.add_cmdlet("Get-ChildItem").add_parameter("Path", "Cert:\\LocalMachine\\My")
        ps.add_cmdlet("Select-Object").add_parameter("Property", ["PSChildName"])
        ps.invoke()
    assert not ps.had_errors
    bindings = [o for o in ps.output if "bindingInformation" in o.extended_properties]
    items = [o for o in ps.output if "PSChildName" in o.extended_properties]
    assert len(bindings) + len(items) == len(ps.output)
    assert ("https", "*:444:") in {(b.extended_properties["protocol"],
                                    b.extended_properties["bindingInformation"])
                                   for b in bindings}
    assert {i.extended_properties["PSChildName"] for i in items} == \
        {c.thumbprint for c in handle.org.store("ex1")}


def test_exchange_endpoint_still_refuses_input_to_other_commands(
    make_lab: Callable[..., LabHandle],
) -> None:
    handle = make_lab("healthy")
    ps = wire(handle, "exchange", ("Get-ExchangeServer", {}), ("Get-AuthConfig", {}))
    assert ps.had_errors
    assert "InputObjectNotBound" in str(ps.streams.error[0].fq_error)


# --- the model --------------------------------------------------------------------------------


@pytest.fixture()
def org() -> Org:
    return Org(scenario.load("healthy"))


def select(org: Org, *params: tuple[str | None, Any], source: str = "Get-ExchangeServer",
           endpoint: str = "exchange") -> list[Any]:
    return run_pipeline(org, Session("ex1", endpoint),  # type: ignore[arg-type]
                        [Invocation(source, []), Invocation("Select-Object", list(params))])


def test_names_match_case_insensitively_and_missing_ones_are_null(org: Org) -> None:
    out = select(org, ("Property", ["fqdn", "NoSuchProperty"]))
    assert names(out[0]) == ["Fqdn", "NoSuchProperty"]
    assert note(out[0], "Fqdn") == org.server_info(org.server_names()[0])["fqdn"]
    assert note(out[0], "NoSuchProperty") is None


def test_wildcards_expand_in_object_order_and_exclude_applies(org: Org) -> None:
    out = select(org, ("Property", ["Is*Server"]), ("ExcludeProperty", ["IsEdge*"]))
    chosen = names(out[0])
    assert chosen and all(n.startswith("Is") and n.endswith("Server") for n in chosen)
    assert "IsEdgeServer" not in chosen and "IsMailboxServer" in chosen
    assert chosen.index("IsClientAccessServer") < chosen.index("IsMailboxServer")


def test_expand_first_skip_and_last(org: Org) -> None:
    every = org.server_names()
    assert len(every) >= 3
    assert select(org, ("ExpandProperty", "Name")) == every
    assert select(org, ("ExpandProperty", "Name"), ("First", 2)) == every[:2]
    assert select(org, ("ExpandProperty", "Name"), ("Skip", 1), ("First", 1)) == every[1:2]
    assert select(org, ("ExpandProperty", "Name"), ("Last", 1)) == every[-1:]
    assert select(org, ("ExpandProperty", "Name"), ("Last", 1), ("Skip", 1)) == every[-2:-1]


def test_without_input_or_property_select_passes_through(org: Org) -> None:
    assert run_pipeline(org, Session("ex1", "exchange"),
                        [Invocation("Select-Object", [("Property", ["Name"])])]) == []
    assert len(select(org)) == len(org.server_names())


def test_calculated_properties_are_refused_in_one_clear_line(org: Org) -> None:
    with pytest.raises(CommandError) as info:
        select(org, ("Property", [{"Name": "n", "Expression": "Name"}]))
    assert "property names only" in info.value.message
    assert info.value.exception_type.endswith("ParameterBindingException")
