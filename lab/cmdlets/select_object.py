"""Select-Object, the one command that takes pipeline input, on every endpoint.

Exchange's restricted runspace exposes it and a pipeline of commands is legal in
NoLanguage, so clients use it to trim what comes back.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from lab import objects
from lab.cmdlets.binder import Call, binding_error


def select_object(call: Call) -> list[Any]:
    """Select-Object over the previous command's output, as PowerShell runs it.

    -Property makes a `Selected.<type>` PSCustomObject per input with the chosen properties
    as note properties: names match case-insensitively and take the object's spelling,
    wildcards expand in the object's order, a name the object lacks comes out $null.
    -ExpandProperty emits the property's value(s) instead. -Skip, -First and -Last pick
    inputs (-Skip counts from the end when -Last is given).
    """
    items = list(call.input)
    skip, first, last = (call.get(n) for n in ("Skip", "First", "Last"))
    if any(n is not None and n < 0 for n in (skip, first, last)):
        raise binding_error(call.command, "Cannot validate argument: the value must be "
                                           "zero or positive.", "ParameterArgumentValidationError")
    if last is not None:
        items = items[: len(items) - (skip or 0)] if skip else items
        items = items[len(items) - last:] if last else []
    else:
        items = items[skip or 0:]
    if first is not None:
        items = items[:first]
    expand = call.get("ExpandProperty")
    if expand is not None:
        if call.has("Property"):
            raise call.fail("The lab's Select-Object does not combine -ExpandProperty with "
                            "-Property.", category="NotImplemented", code="LabNotModelled")
        return [v for item in items for v in _expanded(call, item, expand)]
    wanted = call.get("Property")
    if not wanted:
        return items
    excluded = call.get("ExcludeProperty") or []

    def select(item: Any) -> Any:
        return objects.selected(objects.first_type_name(item),
                                _chosen(objects.properties_of(item), wanted, excluded))

    patterns = [*wanted, *excluded]
    if not all(isinstance(p, str) for p in patterns):
        return [select(item) for item in items]
    # The same selection of the same object comes out the same: make it once (perf only).
    how = ("Select-Object", tuple(wanted), tuple(excluded))
    return [objects.derived(item, how, select) for item in items]


def _chosen(available: list[tuple[str, Any]], wanted: list[str],
            excluded: list[str]) -> list[tuple[str, Any]]:
    chosen: dict[str, tuple[str, Any]] = {}
    for pattern in wanted:
        if any(ch in pattern for ch in "*?["):
            matches = [(n, v) for n, v in available if fnmatch.fnmatchcase(n.lower(),
                                                                           pattern.lower())]
        else:
            found = next(((n, v) for n, v in available if n.lower() == pattern.lower()), None)
            matches = [found or (pattern, None)]
        for name, value in matches:
            chosen.setdefault(name.lower(), (name, objects.flattened(value)))
    return [(name, value) for key, (name, value) in chosen.items()
            if not any(fnmatch.fnmatchcase(key, x.lower()) for x in excluded)]


def _expanded(call: Call, item: Any, name: str) -> list[Any]:
    found = next((v for n, v in objects.properties_of(item) if n.lower() == name.lower()),
                 _MISSING)
    if found is _MISSING:
        raise call.fail(f'Property "{name}" cannot be found.', category="InvalidArgument",
                        code="ExpandPropertyNotFound", target=name,
                        exception_type="System.Management.Automation.PSArgumentException")
    if isinstance(found, list | tuple):
        return list(found)
    return [] if found is None else [found]


_MISSING = object()
