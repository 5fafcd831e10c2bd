"""The lab's objects look like real Exchange/IIS output on the wire.

Each lab object is serialized with psrpcore's serializer and compared with the real CLIXML
fixtures (parsed with ElementTree): the same type names, and the same property names in
<Props> (adapted) and <MS> (extended). PSComputerName, RunspaceId and PSShowComputerName
are left out of the comparison: the PowerShell client adds them, the server never sends them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from psrpcore.types import serialize
from pypsrp.serializer import Serializer

from lab import objects
from lab.certs import thumbprint_of
from lab.cmdlets import Invocation, Session, run_pipeline
from lab.org import Org
from tests.clixml import fixture_path
from tests.fixtures_lab import LAB_NOW, fixed_org

NS = "{http://schemas.microsoft.com/powershell/2004/04}"
CLIENT_ADDED = {"PSComputerName", "RunspaceId", "PSShowComputerName"}

NOW = LAB_NOW


def fixture_objects(name: str) -> list[ET.Element]:
    root = ET.fromstring(fixture_path(name).read_text(encoding="utf-8-sig"))
    for element in root.iter():
        element.tag = element.tag.removeprefix(NS)
    resolve_type_refs(root)
    return [obj for obj in root if obj.tag == "Obj"]


def resolve_type_refs(root: ET.Element) -> ET.Element:
    """Replace every <TNRef> by a copy of the <TN> it names (ids are document-wide)."""
    type_lists: dict[str, list[str]] = {}
    for element in root.iter():
        if element.tag == "TN":
            type_lists[element.attrib["RefId"]] = [t.text or "" for t in element]
    for element in root.iter():  # TNRef -> the <TN> it names (file-wide ids)
        for index, child in enumerate(list(element)):
            if child.tag == "TNRef":
                copy = ET.Element("TN")
                for type_name in type_lists[child.attrib["RefId"]]:
                    ET.SubElement(copy, "T").text = type_name
                element.remove(child)
                element.insert(index, copy)
    return root


def shape(obj: ET.Element) -> dict[str, Any]:
    """Type names and the property names of each section, in order."""
    tn = obj.find("TN")
    types = [t.text for t in tn] if tn is not None else []
    props = obj.find("Props")
    ms = obj.find("MS")
    return {
        "types": [t.removeprefix("Deserialized.") for t in types if t],
        "props": [p.attrib["N"] for p in props] if props is not None else [],
        "ms": [p.attrib["N"] for p in ms if p.attrib["N"] not in CLIENT_ADDED]
        if ms is not None else [],
    }


def lab_element(value: Any) -> ET.Element:
    return resolve_type_refs(serialize(value, None))


def lab_shape(value: Any) -> dict[str, Any]:
    return shape(lab_element(value))


@pytest.fixture(scope="module")
def org() -> Org:
    return fixed_org("hybrid")


def run(org: Org, session: Session, name: str, *params: tuple[str | None, Any]) -> list[Any]:
    return run_pipeline(org, session, [Invocation(name, list(params))])


@pytest.mark.parametrize("fixture", ["meac-GetExchangeCertificate.xml",
                                     "hc-e19-GetExchangeCertificate.xml",
                                     "meac-NewExchangeAuthCertificate.xml",
                                     "meac-GetExchangeCertificateBroken.xml"])
def test_exchange_certificate_carries_raw_data_only(org: Org, fixture: str) -> None:
    real = shape(fixture_objects(fixture)[0])
    ours = lab_shape(run(org, Session("ex1", "exchange"), "Get-ExchangeCertificate")[0])
    assert ours["types"] == real["types"]
    assert ours["props"] == real["props"] == ["RawData"]
    assert set(real["ms"]) <= set(ours["ms"]) <= {"SerializationData"}


def test_new_exchange_certificate_output_matches(org: Org) -> None:
    real = shape(fixture_objects("meac-NewExchangeAuthCertificate.xml")[0])
    out = run(org, Session("ex1", "exchange"), "New-ExchangeCertificate",
              ("SubjectName", "cn=Microsoft Exchange Server Auth Certificate"),
              ("Services", "None"), ("PrivateKeyExportable", True), ("DomainName", []))
    assert lab_shape(out[0]) == real


@pytest.mark.parametrize("fixture", ["meac-GetAuthConfig.xml",
                                     "meac-GetAuthConfigNoNextCert.xml",
                                     "hc-e19-GetAuthConfig.xml"])
def test_auth_config_matches(org: Org, fixture: str) -> None:
    real = shape(fixture_objects(fixture)[0])
    ours = lab_shape(run(org, Session("ex1", "exchange"), "Get-AuthConfig")[0])
    assert ours == real


def test_auth_config_effective_date_is_nil_or_a_datetime(org: Org) -> None:
    none = serialize(run(org, Session("ex1", "exchange"), "Get-AuthConfig")[0], None)
    assert none.find("Props/Nil[@N='NextCertificateEffectiveDate']") is not None
    real = fixture_objects("meac-GetAuthConfig.xml")[0]
    assert real.find("Props/DT[@N='NextCertificateEffectiveDate']") is not None
    staged_org = fixed_org("staged")
    element = serialize(run(staged_org, Session("ex1", "exchange"), "Get-AuthConfig")[0], None)
    date = element.find("Props/DT[@N='NextCertificateEffectiveDate']")
    assert date is not None and (date.text or "").startswith("2025-03-02T05:00:00")


def test_exchange_server_matches(org: Org) -> None:
    ours_obj = run(org, Session("ex1", "exchange"), "Get-ExchangeServer", ("Identity", "ex1"))[0]
    ours = lab_shape(ours_obj)
    meac = shape(fixture_objects("meac-GetExchangeServer.xml")[0])
    assert ours == meac
    hc = shape(fixture_objects("hc-e19-GetExchangeServer.xml")[0])
    assert ours["types"] == hc["types"]
    assert set(hc["props"]) <= set(ours["props"])  # 2019 CU lacks MitigationsAppliedTime
    element = lab_element(ours_obj)
    real = fixture_objects("meac-GetExchangeServer.xml")[0]
    for name in ("Site", "AdminDisplayVersion", "ServerRole", "Identity"):
        assert shape(element.find(f"Props/Obj[@N='{name}']"))["types"] == \
            shape(real.find(f"Props/Obj[@N='{name}']"))["types"]
        assert shape(element.find(f"Props/Obj[@N='{name}']"))["props"] == \
            shape(real.find(f"Props/Obj[@N='{name}']"))["props"]
    assert element.find("Props/Ref[@N='Id']") is not None  # Id refers back to Identity


def test_hybrid_configuration_matches(org: Org) -> None:
    ours = lab_shape(run(org, Session("ex1", "exchange"), "Get-HybridConfiguration")[0])
    assert ours == shape(fixture_objects("hc-e19-GetHybridConfiguration.xml")[0])


def test_web_binding_matches() -> None:
    real_objects = fixture_objects("hc-e19-GetWebBinding.xml")
    backend = next(o for o in real_objects
                   if o.find("MS/S[@N='bindingInformation']").text == "*:444:")
    org = fixed_org("healthy")
    ours = run(org, Session("ex1", "host"), "Get-WebBinding", ("Name", "Exchange Back End"),
               ("Protocol", "https"))
    element = lab_element(ours[0])
    assert shape(element) == shape(backend)
    xpath = element.find("MS/S[@N='ItemXPath']")
    assert xpath is not None and xpath.text == backend.find("MS/S[@N='ItemXPath']").text
    for name in ("Attributes", "Methods", "Schema"):
        assert shape(element.find(f"Props/Obj[@N='{name}']")) == \
            shape(backend.find(f"Props/Obj[@N='{name}']"))
    assert element.find("Props/Obj[@N='Attributes']/IE") is not None


def test_store_certificate_matches_a_serialized_x509certificate2(org: Org) -> None:
    real = shape(fixture_objects("meac-GetInternalTransportCertificateFromServer.xml")[0])
    ours = lab_shape(run(org, Session("ex1", "host"), "Get-ChildItem",
                         (None, "Cert:\\LocalMachine\\My"))[0])
    assert ours["types"] == real["types"]
    assert ours["props"] == real["props"] == ["RawData"]


def test_pypsrp_reads_the_lab_objects_like_the_fixtures(org: Org) -> None:
    """What the client library hands the bot: same values reachable the same way."""
    out = run(org, Session("ex1", "exchange"), "Get-ExchangeCertificate")[0]
    element = serialize(out, None)
    client = Serializer().deserialize(element)
    raw = client.adapted_properties["RawData"]
    assert thumbprint_of(raw) in {c.thumbprint for c in org.store("ex1")}
    config = Serializer().deserialize(serialize(
        run(org, Session("ex1", "exchange"), "Get-AuthConfig")[0], None))
    assert config.adapted_properties["CurrentCertificateThumbprint"] == \
        org.auth_config()["current"]
    server = Serializer().deserialize(serialize(
        run(org, Session("ex1", "exchange"), "Get-ExchangeServer", ("Identity", "ex3"))[0],
        None))
    assert str(server.adapted_properties["Site"]) == "contoso.lab/Configuration/Sites/Site-B"
    assert str(server.adapted_properties["AdminDisplayVersion"]) == \
        "Version 15.2 (Build 1544.4)"
    assert server.adapted_properties["Fqdn"] == "ex3.contoso.lab"


def test_signed_serialization_data_has_the_sig_prefix() -> None:
    assert objects.serialization_data("X", True).startswith(b"#sig#")
    assert not objects.serialization_data("X", False).startswith(b"#sig#")
