"""The parts every lab object is made of: a PSObject with Props/MS, typed lists, dates.

Kept apart from the builders so each object module reads as the shape of its type only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psrpcore.types import (
    PSList,
    PSNoteProperty,
    PSObject,
)

from lab.objects.type_names import (
    MVP_BASE,
)


def make(type_names: list[str], props: list[tuple[str, Any]] | None = None,
         ms: list[tuple[str, Any]] | None = None, to_string: str | None = None) -> PSObject:
    """A PSObject with the given type names, adapted (Props) and extended (MS) properties."""
    obj = PSObject()
    obj.PSObject.type_names = list(type_names)
    for name, value in props or []:
        obj.PSObject.adapted_properties.append(PSNoteProperty(name, value))
    for name, value in ms or []:
        obj.PSObject.extended_properties.append(PSNoteProperty(name, value))
    if to_string is not None:
        obj.PSObject.to_string = to_string
    return obj



def typed_list(type_name: str, items: list[Any], base: list[str] | None = None) -> PSList:
    value = PSList(items)
    value.PSObject.type_names = [type_name, *(base or MVP_BASE)]
    return value


def serialization_data(type_name: str, signed: bool) -> bytes:
    """Placeholder for Exchange's BinaryFormatter payload ("#sig#" prefix when signed)."""
    body = b"\x00\x01\x00\x00\x00\xff\xff\xff\xff\x01\x00\x00\x00" + type_name.encode()
    return (b"#sig#" if signed else b"") + body



def net_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%m/%d/%Y %H:%M:%S")

