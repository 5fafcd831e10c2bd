"""Templates: the big objects are built (and serialized, see `lab.psrp`) once per content.

An object is a pure function of what it is built from, except the time stamps some carry
(WhenChanged is "now" on every read). So each is built once with STAMP standing in for
its time; a read gets a shallow copy with the real time in those top-level slots, sharing
the template's (read-only) properties and nested objects, so the same instances repeat
within an object exactly as in a fresh build. Its `Recipe` lets the transport reuse the
template's CLIXML with only the time text swapped. Nothing here is ever mutated after it
is built: psrpcore's serializer and Select-Object only read.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psrpcore.types import (
    PSNoteProperty,
    PSObject,
    serialize,
)

STAMP = datetime(1601, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # no real object carries this time


def clixml_time(value: datetime) -> bytes:
    """A DateTime's text exactly as psrpcore serializes it."""
    return (serialize(value, None).text or "").encode()


STAMP_TEXT = clixml_time(STAMP)
STAMP_SHOWN = "1601"  # any text form of STAMP (ToString, @{...}) has its year


@dataclass(frozen=True)
class Recipe:
    """How an output object was made: `template` (serialized once) plus its `stamp`."""

    key: tuple[Any, ...]
    template: PSObject
    stamp: datetime | None


_RECIPES: weakref.WeakKeyDictionary[Any, Recipe] = weakref.WeakKeyDictionary()
_TEMPLATES: OrderedDict[tuple[Any, ...], PSObject] = OrderedDict()
_TEMPLATES_SIZE = 1024
_lock = threading.Lock()


def recipe_of(value: Any) -> Recipe | None:
    """The recipe of an object a template made, None for anything else."""
    if not isinstance(value, PSObject):
        return None
    with _lock:
        return _RECIPES.get(value)


def cached_template(key: tuple[Any, ...], build: Callable[[], PSObject]) -> PSObject:
    with _lock:
        template = _TEMPLATES.get(key)
        if template is not None:
            _TEMPLATES.move_to_end(key)
            return template
    template = build()
    with _lock:
        template = _TEMPLATES.setdefault(key, template)
        while len(_TEMPLATES) > _TEMPLATES_SIZE:
            _TEMPLATES.popitem(last=False)
    return template


def constant(key: tuple[Any, ...], build: Callable[[], PSObject]) -> PSObject:
    """An object with no time stamp: every read gets the template itself (read-only)."""
    template = cached_template(key, build)
    with _lock:
        if template not in _RECIPES:
            _RECIPES[template] = Recipe(key, template, None)
    return template


def stamped(key: tuple[Any, ...], build: Callable[[datetime], PSObject],
             stamp: datetime) -> PSObject:
    """`build(stamp)`, made from the template `build(STAMP)`."""
    template = cached_template(key, lambda: build(STAMP))
    meta = template.PSObject
    obj = PSObject()
    obj.PSObject.type_names = list(meta.type_names)
    for source, target in ((meta.adapted_properties, obj.PSObject.adapted_properties),
                           (meta.extended_properties, obj.PSObject.extended_properties)):
        for prop in source:  # note properties hold only a name and a value: share them
            stamped = prop.get_value(template) is STAMP
            target.append(PSNoteProperty(prop.name, stamp) if stamped else prop)
    if meta.to_string is not None:
        obj.PSObject.to_string = meta.to_string
    with _lock:
        _RECIPES[obj] = Recipe(key, template, stamp)
    return obj


def derived(source: Any, how: tuple[Any, ...], build: Callable[[Any], PSObject]) -> PSObject:
    """`build(source)` (e.g. Select-Object's output), made once per template of `source`.

    Built from the template when `source` has one, and reused while the result does not show
    the template's time stamp; otherwise (or when it does) built from `source` itself.
    """
    recipe = recipe_of(source)
    if recipe is None:
        return build(source)
    key = ("derived", how, recipe.key)
    template = cached_template(key, lambda: build(recipe.template))
    if recipe.stamp is not None and _shows_stamp(template):
        return build(source)
    with _lock:
        if template not in _RECIPES:
            _RECIPES[template] = Recipe(key, template, None)
    return template


def _shows_stamp(value: PSObject) -> bool:
    meta = value.PSObject
    if STAMP_SHOWN in (meta.to_string or ""):
        return True
    for holder in (meta.adapted_properties, meta.extended_properties):
        for prop in holder:
            found = prop.get_value(value)
            if found is STAMP or (isinstance(found, list) and any(v is STAMP for v in found)):
                return True
    return False

