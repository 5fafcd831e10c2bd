"""PSRP messages that are the same every time, serialized once per process.

Every host session of a status sends the same session capability and runspace pool
settings when it opens, and the same pipeline (the back end binding and the store
listing) on every server; pypsrp builds each one's CLIXML from scratch with ElementTree,
which was about a quarter of the client's CPU of a 50-server status. A message is the same
when everything pypsrp serializes from it is the same - its class, type names and
ToString, and each property, recursively - so that is the key, and the
XML bytes made the first time are sent again. Anything not plainly comparable (a
SecureString, bytes, an object pypsrp does not describe) makes the message uncached: it is
serialized as pypsrp always does.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pypsrp.complex_objects import ComplexObject, GenericComplexObject
from pypsrp.messages import CreatePipeline, InitRunspacePool, SessionCapability

from config.errors import ExauthError

# Only messages whose content our own code decides (pool open, pipelines we build).
CACHED_TYPES = (SessionCapability, InitRunspacePool, CreatePipeline)
LIMIT = 512  # distinct messages kept; a process sends a handful of shapes

_PLAIN = (str, int, float, bool, type(None))


class _Uncacheable(ExauthError):
    """Something in a message is not plainly comparable: it is serialized as usual."""


class PackedMessages:
    """XML bytes of serialized messages, by what they serialize from."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._bytes: dict[Any, bytes] = {}

    def serialize(self, value: Any, serialize: Callable[[Any], Any]) -> Any:
        """`serialize(value)`, or the XML bytes it made before for an equal message (pypsrp's
        Message.pack sends bytes as they are)."""
        if not isinstance(value, CACHED_TYPES):
            return serialize(value)
        try:
            key = fingerprint(value)
        except _Uncacheable:
            return serialize(value)
        with self._lock:
            cached = self._bytes.get(key)
        if cached is not None:
            return cached
        element = serialize(value)
        if not isinstance(element, ET.Element):
            return element
        data = ET.tostring(element, encoding="utf-8", method="xml")
        with self._lock:
            if len(self._bytes) >= self._limit:
                self._bytes.clear()
            self._bytes[key] = data
        return data

    def __len__(self) -> int:
        with self._lock:
            return len(self._bytes)


def fingerprint(value: Any) -> Any:
    """Everything pypsrp's serializer reads from `value`, as a hashable key; _Uncacheable
    when something in it is not plainly comparable."""
    if isinstance(value, _PLAIN):
        return (type(value).__name__, value)
    if isinstance(value, list | tuple):
        return ("list", tuple(fingerprint(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((fingerprint(k), fingerprint(v))
                                      for k, v in value.items()), key=repr)))
    if isinstance(value, ComplexObject) and not isinstance(value, GenericComplexObject):
        parts: list[Any] = [type(value).__module__, type(value).__qualname__,
                            tuple(value._types), fingerprint(value._to_string)]
        for group in (value._property_sets, value._extended_properties,
                      value._adapted_properties):
            # A property's metadata (tag, name, list types) is fixed by the class and the
            # property: the class is in the key already, so the name stands for it.
            for attr, _meta in group:
                parts.append((attr, fingerprint(getattr(value, attr))))
        return tuple(parts)
    raise _Uncacheable(type(value).__name__)


PACKED = PackedMessages()
