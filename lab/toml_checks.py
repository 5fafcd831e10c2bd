"""Checks of single values in a scenario file, and how a problem becomes one line.

A mistake in a scenario is reported the way a config error is, in one line naming the key
("<file>: server[1].site: missing"), in the lab's words rather than pydantic's: every check
raises `problem(...)` with the exact text, and `one_line` turns pydantic's first error into
that line. The annotated types (`Str`, `Bool`, `Time`, ...) wrap a whole field type, None
included, so a bad value meets exactly one check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from lab.clock import parse_duration, parse_time

_PROBLEM = "lab_scenario"


def problem(message: str, *, key: str | None = None,
            under: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """A problem in the lab's words. Its key path is pydantic's location, with the last
    part replaced by `key` (a sibling the check is about) and `under` appended."""
    return PydanticCustomError(_PROBLEM, "{message}",
                               {"message": message, "key": key, "under": list(under)})


def one_line(source: str, error: ValidationError, under: str = "") -> str:
    """"<file>: <key path>: <what is wrong>" for the first problem pydantic found.

    `under` names the table the validated data sits in ("fault" for a runtime fault).
    """
    first = error.errors(include_url=False)[0]
    loc: list[str | int] = [under, *first["loc"]] if under else list(first["loc"])
    ctx = first.get("ctx") or {}
    if first["type"] == _PROBLEM:
        if ctx.get("key") is not None:
            loc[-1:] = [ctx["key"]]
        loc += ctx.get("under", [])
        message = str(ctx["message"])
    elif first["type"] == "missing":
        message = "missing"
    else:  # not expected: every check words its own problem
        message = first["msg"]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{source}: {path}: {message}"


@dataclass
class Known:
    """Names vouched for so far in this file (the validation context)."""

    servers: set[str] | None = None
    ids: set[str] | None = None


def known(info: ValidationInfo) -> Known:
    return info.context if isinstance(info.context, Known) else Known()


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a TOML date-time"
    return type(value).__name__


# -- value types ---------------------------------------------------------------------------


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise problem(f"must be a string, not {kind_of(value)}")
    return value


def nonempty(value: Any) -> str:
    if not string(value).strip():
        raise problem("must not be empty")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem(f"must be true or false, not {kind_of(value)}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"must be an integer, not {kind_of(value)}")
    return value


def strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise problem(f"must be an array of strings, not {kind_of(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise problem(f"must be a string, not {kind_of(item)}", under=(i,))
    return value


def time_value(value: Any) -> datetime:
    if not isinstance(value, str | datetime):
        raise problem(f"must be an ISO-8601 time, not {kind_of(value)}")
    try:
        return parse_time(value)
    except ValueError:
        raise problem(f"{value!r} is not an ISO-8601 time "
                       "(e.g. \"2025-03-01T09:00:00Z\")") from None


def time_or_relative(value: Any) -> datetime | timedelta:
    if isinstance(value, str) and value.strip()[:1] in ("+", "-"):
        try:
            delta = parse_duration(value)
        except ValueError as exc:
            raise problem(str(exc)) from None
        assert delta is not None  # "never" does not start with a sign
        return delta
    if isinstance(value, str) and not re.match(r"^\s*\d{4}-", value):
        raise problem(f"{value!r} is neither an ISO-8601 time nor a relative time "
                       "like \"+30d\" or \"-13h\"")
    return time_value(value)


def duration(value: Any) -> timedelta | None:
    if not isinstance(value, str):
        raise problem(f"must be a duration string like \"15m\", not {kind_of(value)}")
    try:
        delta = parse_duration(value)
    except ValueError as exc:
        raise problem(str(exc)) from None
    if delta is not None and delta < timedelta(0):
        raise problem("must not be negative")
    return delta


def table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise problem(f"must be a table, not {kind_of(value)}")
    return value


def array_of_tables(key: str) -> BeforeValidator:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise problem(f"must be an array of tables ([[{key}]]), not {kind_of(value)}")
        for i, item in enumerate(value):  # every entry a table before any is read
            if not isinstance(item, dict):
                raise problem(f"must be a table, not {kind_of(item)}", under=(i,))
        return value
    return BeforeValidator(check)


Str = Annotated[str, BeforeValidator(string)]
NonEmpty = Annotated[str, BeforeValidator(nonempty)]
Bool = Annotated[bool, BeforeValidator(boolean)]
Int = Annotated[int, BeforeValidator(integer)]
Strings = Annotated[list[str], BeforeValidator(strings)]
Time = Annotated[datetime | None, BeforeValidator(time_value)]
TimeOrRelative = Annotated[datetime | timedelta | None, BeforeValidator(time_or_relative)]
Duration = Annotated[timedelta | None, BeforeValidator(duration)]
