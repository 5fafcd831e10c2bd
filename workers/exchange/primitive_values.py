"""CLIXML primitive values read without pypsrp re-serializing them to text first.

pypsrp's `Serializer.deserialize` begins every call - the whole message, and again every
property and list item inside it - with `ET.tostring` of the element it is given, only to
keep that text for the rare object it cannot type (and for `ComplexObject._xml`, which
only `RunspacePool.get_command_metadata` reads). For a primitive (`<S>`, `<I32>`, `<B>`,
`<Nil/>`...) the text is thrown away at once; in a profile of a 50-server status these
throw-away serializations were about a sixth of the client's CPU. A primitive is read here
exactly as pypsrp 0.9.1 reads it (serializer.py, the `unpack_function` table), with the
same methods of the same serializer, so the values are identical.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pypsrp.serializer import Serializer

# tag -> how pypsrp reads it (same order and behaviour as its table).
_READERS: dict[str, Callable[[Serializer, ET.Element], Any]] = {
    "S": lambda s, d: s._deserialize_string(d.text),
    "ToString": lambda s, d: s._deserialize_string(d.text),
    "C": lambda s, d: chr(int(d.text)),  # type: ignore[arg-type]
    "B": lambda s, d: d.text.lower() == "true",  # type: ignore[union-attr]
    "DT": lambda s, d: d.text,
    "TS": lambda s, d: d.text,
    "By": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "SB": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "U16": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "I16": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "U32": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "I32": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "U64": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "I64": lambda s, d: int(d.text),  # type: ignore[arg-type]
    "Sg": lambda s, d: float(d.text),  # type: ignore[arg-type]
    "Db": lambda s, d: float(d.text),  # type: ignore[arg-type]
    "D": lambda s, d: d.text,
    "BA": lambda s, d: base64.b64decode(d.text),  # type: ignore[arg-type]
    "G": lambda s, d: uuid.UUID(d.text),
    "URI": lambda s, d: s._deserialize_string(d.text),
    "Nil": lambda s, d: None,
    "Version": lambda s, d: d.text,
    "XD": lambda s, d: s._deserialize_string(d.text),
    "SBK": lambda s, d: s._deserialize_string(d.text),
    "SS": lambda s, d: s._deserialize_secure_string(d),
    "Ref": lambda s, d: s.obj[d.attrib["RefId"]],
}


def is_primitive(element: ET.Element) -> bool:
    """A primitive value element: a known tag and no child elements (no type names)."""
    return element.tag in _READERS and len(element) == 0


def read(serializer: Serializer, element: ET.Element, metadata: Any) -> Any:
    """The element's value as pypsrp's `deserialize` returns it (call `is_primitive` first).

    pypsrp also sets a wildcard metadata tag to the element's tag before reading; that is
    kept, as a later read of the same metadata may depend on it."""
    if metadata is not None and metadata.tag == "*":
        metadata.tag = element.tag
    return _READERS[element.tag](serializer, element)
