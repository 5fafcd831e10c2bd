"""The lab's virtual clock and the time notation of scenario files.

Rehearsing a rotation means jumping over days (48 h notice, 12 h servicelet ticks, a day of
cross-site replication) in seconds, so the org never reads the wall clock directly. A clock
started from the wall clock keeps ticking with it (a bot computing "now + 1 min" from its
own clock then agrees with the lab); a clock started at a fixed `[lab] now` stands still
until advanced, which keeps rehearsals and tests repeatable.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMBER = r"\d+(?:\.\d+)?"
# A hundred years: longer than any certificate or wait the lab rehearses, and far enough
# inside datetime's range (year 1..9999) that adding it to the lab's clock cannot overflow.
MAX_DAYS = 36_500
# The clock stops a hundred years short of datetime's end, so that a scenario duration
# added to the lab's time (a certificate's validity, a next_effective) still fits.
LATEST = datetime(9999, 12, 31, tzinfo=UTC) - timedelta(days=MAX_DAYS)


class NotADuration(ValueError):
    """Text outside the duration notation; each caller words its own hint."""


class DurationTooLong(ValueError):
    """A duration past MAX_DAYS; str() is "'<text>' is longer than 36500 days"."""


def read_duration(text: str, *, units: str = "smhdw", signed: bool = True,
                  several: bool = False) -> timedelta:
    """The lab's one duration notation: a number and a unit ("90s", "15m", "24h", "2d", "1w").

    Scenario files take one signed part ("+30d", "-13h", "15 m"); the control API takes
    unsigned parts run together ("1d12h", "1d 12h"). Both share the unit table and the
    MAX_DAYS bound, so neither can build a timedelta that overflows the lab's clock.
    """
    cleaned = text.strip().lower()
    if several:
        cleaned = cleaned.replace(" ", "")
    sign = cleaned[:1] if cleaned[:1] in ("+", "-") else ""
    if sign and not signed:
        raise NotADuration(text)
    body = cleaned[len(sign):]
    part = _NUMBER + ("" if several else r"\s*") + f"[{units}]"
    if not re.fullmatch(f"(?:{part})+" if several else part, body):
        raise NotADuration(text)
    seconds = sum(float(number) * _UNITS[unit]
                  for number, unit in re.findall(rf"({_NUMBER})\s*([{units}])", body))
    if seconds > MAX_DAYS * 86400:
        raise DurationTooLong(f"{text!r} is longer than {MAX_DAYS} days")
    return timedelta(seconds=-seconds if sign == "-" else seconds)


def parse_duration(text: str) -> timedelta | None:
    """"15m", "24h", "2d", "90s", "+30d", "-13h" -> timedelta; "never" -> None.

    The scenario files' form. Raises ValueError with a readable reason for anything else.
    """
    if text.strip().lower() == "never":
        return None
    try:
        return read_duration(text)
    except NotADuration:
        raise ValueError(
            f"{text!r} is not a duration (use e.g. \"90s\", \"15m\", \"24h\", \"2d\", \"-13h\""
            " or \"never\")"
        ) from None


def parse_time(value: str | datetime) -> datetime:
    """ISO-8601 text (or a TOML datetime) -> timezone-aware UTC; naive values count as UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_duration(delta: timedelta) -> str:
    """A compact human form ("49h", "30m", "2d") used in logs and state."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class Clock:
    """Virtual time: a start, an offset moved by `advance`, and optionally the wall clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self.ticking = start is None
        self._start = parse_time(start) if start is not None else datetime.now(UTC)
        self._started_at = time.monotonic()
        self._offset = timedelta(0)

    def now(self) -> datetime:
        elapsed = timedelta(0)
        if self.ticking:
            elapsed = timedelta(seconds=time.monotonic() - self._started_at)
        return self._start + elapsed + self._offset

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("the lab clock only moves forward")
        if delta > LATEST - self.now():
            raise ValueError(f"the lab clock cannot move past {LATEST:%Y-%m-%d}")
        self._offset += delta
