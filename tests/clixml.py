"""Load the real Exchange CLIXML fixtures as pypsrp would hand them to the collector.

The files come from `Export-Clixml`, which differs from the PSRP wire in two ways the
README names: a default XML namespace on `<Objs>`, and `<TNRef>` ids that point at type
lists defined by earlier objects of the same file. Both are undone here, so each top-level
`<Obj>` reaches `pypsrp.serializer.Serializer.deserialize` as it would arrive in a PSRP
message. One serializer is kept for the whole file because `<Ref>` ids (whole objects
reused, e.g. IIS `ChildElements`) also span objects.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pypsrp.serializer import Serializer

CLIXML_NAMESPACE = "{http://schemas.microsoft.com/powershell/2004/04}"


FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "exchange-clixml"


def fixture_path(name: str) -> Path:
    """The path of one fixture file, e.g. `meac-GetAuthConfig.xml`.

    Only files inside the repository: a fresh clone with nothing beside it must pass its
    tests, so a name that leads out of the fixture folder is refused, not followed.
    """
    path = (FIXTURE_DIR / name).resolve()
    if not path.is_relative_to(FIXTURE_DIR):
        raise ValueError(f"{name!r}: fixtures are read only from {FIXTURE_DIR}")
    return path


def _strip_namespace(root: ET.Element) -> None:
    for element in root.iter():
        if element.tag.startswith(CLIXML_NAMESPACE):
            element.tag = element.tag[len(CLIXML_NAMESPACE):]


def _resolve_type_refs(root: ET.Element) -> None:
    """Replace each `<TNRef>` by a copy of the `<TN>` it names (document order)."""
    type_lists: dict[str, ET.Element] = {}
    for parent in root.iter():
        for index, child in enumerate(list(parent)):
            if child.tag == "TN":
                type_lists[child.attrib["RefId"]] = child
            elif child.tag == "TNRef":
                ref_id = child.attrib["RefId"]
                if ref_id not in type_lists:
                    raise ValueError(f"<TNRef RefId={ref_id!r}> names no earlier <TN>")
                parent.remove(child)
                parent.insert(index, copy.deepcopy(type_lists[ref_id]))


def load_objects(name: str) -> list[Any]:
    """Every top-level object of a fixture file, deserialized by pypsrp."""
    text = fixture_path(name).read_text(encoding="utf-8-sig")
    root = ET.fromstring(text)
    _strip_namespace(root)
    _resolve_type_refs(root)
    serializer = Serializer()
    return [serializer.deserialize(obj, clear=False) for obj in root if obj.tag == "Obj"]
