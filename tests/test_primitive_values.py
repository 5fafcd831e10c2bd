"""CLIXML read by exauth's serializer gives exactly what pypsrp's own reading gives."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.serializer import Serializer

from workers.exchange import primitive_values
from workers.exchange.session import _TolerantSerializer

# A PSCustomObject with one property of every primitive type, a nested object, a list, a
# reference back to an earlier object, and a bare <LST> pypsrp keeps as raw XML.
OBJECT = """<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>
<T>System.Object</T></TN><ToString>@{...}</ToString><MS>
<S N="S">caf_x00E9__x000A_&amp; text</S><C N="C">65</C><B N="B">true</B><B N="F">false</B>
<DT N="DT">2026-01-02T03:04:05.678+00:00</DT><TS N="TS">PT1H</TS><By N="By">255</By>
<SB N="SB">-1</SB><U16 N="U16">65535</U16><I16 N="I16">-3</I16><U32 N="U32">7</U32>
<I32 N="I32">-7</I32><U64 N="U64">18446744073709551615</U64><I64 N="I64">-9</I64>
<Sg N="Sg">1.5</Sg><Db N="Db">2.25</Db><D N="D">3.5</D><BA N="BA">AAEC</BA>
<G N="G">{}</G><URI N="URI">https://ex1/x</URI><Nil N="Nil" /><Version N="V">15.2.1544.4</Version>
<XD N="XD">&lt;a/&gt;</XD><SBK N="SBK">Get-Date</SBK><S N="Empty"></S>
<Obj N="Inner" RefId="1"><TNRef RefId="0" /><MS><I32 N="N">1</I32></MS></Obj>
<Ref N="Again" RefId="1" />
<Obj N="List" RefId="2"><TN RefId="1"><T>System.Object[]</T><T>System.Array</T>
<T>System.Object</T></TN><LST><S>a</S><I32>2</I32><Nil /></LST></Obj>
<Obj N="Bare" RefId="3"><LST><S>raw</S></LST></Obj>
</MS></Obj>""".replace("{}", str(uuid.UUID(int=12345)))


def adapted(obj: Any) -> dict[str, Any]:
    """Every property pypsrp read, nested objects as dicts, for comparison."""
    out: dict[str, Any] = {}
    for name, value in obj.adapted_properties.items() if hasattr(obj, "adapted_properties") \
            else ():
        out[name] = value
    for name, value in obj.extended_properties.items():
        out[name] = adapted(value) if hasattr(value, "extended_properties") else value
    return out


def test_objects_read_the_same_as_pypsrp_reads_them() -> None:
    ours = _TolerantSerializer().deserialize(OBJECT)
    theirs = Serializer().deserialize(OBJECT)
    assert adapted(ours) == adapted(theirs)
    props = adapted(ours)
    assert props["S"] == "café\n& text" and props["C"] == "A" and props["B"] is True
    assert props["U64"] == 2**64 - 1 and props["BA"] == b"\x00\x01\x02" and props["Nil"] is None
    assert props["G"] == uuid.UUID(int=12345) and props["List"] == ["a", 2, None]
    assert props["Again"] == props["Inner"] == {"N": 1}
    assert props["Empty"] == ""


@pytest.mark.parametrize("tag", ["S", "I32", "B", "Nil", "Ref", "SS", "G", "BA"])
def test_primitive_tags_are_known(tag: str) -> None:
    assert primitive_values.is_primitive(ET.Element(tag))


def test_elements_with_children_are_left_to_pypsrp() -> None:
    element = ET.fromstring("<S><TN RefId='0'><T>x</T></TN></S>")
    assert not primitive_values.is_primitive(element)
    assert not primitive_values.is_primitive(ET.Element("Obj"))
