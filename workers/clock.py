"""This process's clock, as one object passed to the code that needs the time.

exauth judges an org on the org's own clock (README): a fresh read's `checked_at` is the
writer's Get-Date (workers.status.collect), a waiting operation is due when the org says so
(`execute.org_now`), and warnings count on it (`warning_state.on_org_clock`). A `Clock`
is the other time - ours: the books (when a step ran, an operation closed) and the answer
when the org cannot say. It is passed as a parameter, defaulting to `SYSTEM_CLOCK`, instead
of a module global, so a test or a lab run hands in a fixed or virtual clock and nothing
else in the process changes with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The time now, timezone-aware, in UTC."""
        ...


@dataclass(frozen=True)
class SystemClock:
    """This machine's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """Always the same moment (tests)."""

    at: datetime

    def now(self) -> datetime:
        return self.at.astimezone(UTC)


@dataclass(frozen=True)
class CallableClock:
    """A clock kept elsewhere and read through a function, e.g. an in-process lab's virtual
    clock (`handle.org.now`), so exauth's books follow it as it is moved."""

    read: Callable[[], datetime]

    def now(self) -> datetime:
        return self.read().astimezone(UTC)


SYSTEM_CLOCK: Clock = SystemClock()
