"""Select-Object output: PSCustomObjects with the chosen properties, as remoting sends them."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from typing import Any

from psrpcore.types import (
    PSObject,
)

from lab.objects.psobject_parts import make, net_date
from lab.objects.type_names import (
    CUSTOM_OBJECT_TYPES,
)


def first_type_name(value: Any) -> str:
    """The most specific .NET type name of a pipeline object (for `Selected.<type>`)."""

    names = getattr(getattr(value, "PSObject", None), "type_names", None)
    if names:
        return str(names[0])
    natives: list[tuple[type, str]] = [
        (bool, "System.Boolean"), (int, "System.Int32"), (float, "System.Double"),
        (str, "System.String"), (bytes, "System.Byte[]"), (datetime, "System.DateTime"),
        (uuid.UUID, "System.Guid"), (timedelta, "System.TimeSpan")]
    return next((name for kind, name in natives if isinstance(value, kind)), "System.Object")


def properties_of(value: Any) -> list[tuple[str, Any]]:
    """The (name, value) properties an object shows to Select-Object, adapted then extended.

    The lab's objects model the wire, so a property real Exchange keeps only on the live
    object (an ExchangeCertificate's Thumbprint) is not there to select; it comes out $null.
    """
    meta = getattr(value, "PSObject", None)
    if meta is None:
        return []
    found: list[tuple[str, Any]] = []
    for holder in (meta.adapted_properties, meta.extended_properties):
        for member in holder:
            found.append((member.name, member.get_value(value)))
    return found


def flattened(value: Any) -> Any:
    """A note property value as remoting sends it from a custom object (depth 1).

    A PSCustomObject has no type-specific serialization depth, so PowerShell's default of
    one level applies: primitives (strings, numbers, bytes, dates) travel as themselves,
    collections as lists of such, and anything richer (an ADObjectId, a ServerVersion, an
    enum) as its ToString text - which is why `Site` arrives as
    "contoso.lab/Configuration/Sites/Site-A" after Select-Object.
    """
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return _enum_text(value)
    if isinstance(value, str | bytes | bool | int | float | datetime | uuid.UUID | timedelta):
        return value
    if isinstance(value, list | tuple):
        return [_text_of(item) for item in value]
    return _text_of(value)


def _text_of(value: Any) -> Any:
    if value is None or isinstance(value, str | bytes | bool | int | float | datetime):
        return value
    if isinstance(value, enum.Enum):
        return _enum_text(value)
    meta = getattr(value, "PSObject", None)
    shown = getattr(meta, "to_string", None)
    if shown is not None:
        return str(shown)
    return first_type_name(value) if meta is not None else str(value)


def _enum_text(value: enum.Enum) -> str:
    if isinstance(value, enum.Flag):
        names = [m.name for m in type(value) if m.value and m in value and m.name]
        return ", ".join(names) or "None"
    return str(value.name)


def selected(source_type: str, values: list[tuple[str, Any]]) -> PSObject:
    """Select-Object -Property output: a PSCustomObject with the chosen note properties."""
    shown = "@{" + "; ".join(f"{name}={_shown(value)}" for name, value in values) + "}"
    return make([f"Selected.{source_type}", *CUSTOM_OBJECT_TYPES], None, values, shown)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return "System.Byte[]"  # PowerShell names arrays inside @{...} by their type
    if isinstance(value, list):
        return "System.Object[]"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, datetime):
        return net_date(value)
    return str(value)
