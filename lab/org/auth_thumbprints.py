"""The org-wide Auth Configuration: current, next and previous auth certificate thumbprints.

Besides the three thumbprints it remembers when each was first named (current or next),
because the certificate servicelet copies a certificate only from that moment on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class AuthConfig:
    current: str = ""
    next: str = ""
    previous: str = ""
    next_effective: datetime | None = None
    named_at: dict[str, datetime] = field(default_factory=dict)  # thumbprint -> first named

    def named(self) -> list[str]:
        """The thumbprints the certificate servicelet replicates (current, then next)."""
        return list(dict.fromkeys(t for t in (self.current, self.next) if t))

    def publish(self, at: datetime) -> None:
        """Next becomes current (what AuthAdmin and -PublishCertificate do)."""
        self.previous, self.current = self.current, self.next
        self.next, self.next_effective = "", None
        self.named_at[self.current] = self.named_at.get(self.current, at)

    def due(self, at: datetime) -> bool:
        """A next certificate whose effective date has come."""
        return bool(self.next) and self.next_effective is not None and self.next_effective <= at

    def set_next(self, thumbprint: str, effective: datetime, now: datetime) -> None:
        self.next, self.next_effective = thumbprint, effective
        self.named_at[thumbprint] = now

    def set_current(self, thumbprint: str, now: datetime) -> None:
        if thumbprint != self.current:
            self.previous, self.current = self.current, thumbprint
            self.named_at[thumbprint] = now

    def as_dict(self) -> dict[str, Any]:
        return {"current": self.current, "next": self.next, "previous": self.previous,
                "next_effective": self.next_effective}
