"""What the org does on its own between two commands: its servicelets, in time order.

- The certificate servicelet copies each thumbprint named in AuthConfig (current or next)
  to every reachable in-scope server that lacks it, from the earliest reachable in-scope
  source holding it with its key, at `max(source has it since, thumbprint named since,
  target lacks it since) + delay`; the delay is the scenario's `same_site` or `cross_site`
  ("never" = no copy that way).
- The AuthAdmin servicelet runs on every reachable in-scope server every 12 h (and on one
  server when its MSExchangeServiceHost restarts) and publishes a due next certificate,
  logging event 2014; a stalled one (fault "error" on cmdlet "AuthAdmin") logs an error.

Both write the org's event log. `settle(until)` runs everything due up to a time; the org
calls it under its lock before every read and change.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lab.org.auth_thumbprints import AuthConfig
from lab.org.faults import Faults
from lab.org.records import AUTH_ADMIN_INTERVAL, EVENT_SOURCE, ServerState, StoredCert, iso
from lab.scenario import LabSettings, ServerSpec

Arrival = tuple[datetime, str, str, str]  # when, thumbprint, from server, to server


class Servicelets:
    def __init__(self, *, servers: dict[str, ServerState], auth: AuthConfig, faults: Faults,
                 lab: LabSettings, start: datetime, last_run: datetime) -> None:
        self.servers, self.auth, self.faults, self.lab = servers, auth, faults, lab
        self.start = start
        self.events: list[dict[str, Any]] = []
        for state in servers.values():
            if state.spec.in_scope:
                state.auth_admin_last_run = last_run
        self.next_auth_admin = last_run + AUTH_ADMIN_INTERVAL
        while self.next_auth_admin <= start:
            self.next_auth_admin += AUTH_ADMIN_INTERVAL

    def settle(self, until: datetime) -> None:
        """Run everything that became due up to `until`, in time order."""
        while True:
            arrival = self.next_arrival()
            tick = self.next_auth_admin
            if arrival is not None and arrival[0] <= tick and arrival[0] <= until:
                at, thumb, source, target = arrival
                self._copy(source, target, thumb, at)
            elif tick <= until:
                for state in self.servers.values():
                    if state.spec.in_scope and self.faults.is_up(state.spec):
                        self.run_auth_admin(state.spec.name, tick)
                self.next_auth_admin = tick + AUTH_ADMIN_INTERVAL
            else:
                return

    # -- certificate servicelet --------------------------------------------------------

    def _delay(self, source: ServerSpec, target: ServerSpec) -> timedelta | None:
        return self.lab.same_site if source.site == target.site else self.lab.cross_site

    def next_arrival(self) -> Arrival | None:
        """The next copy the certificate servicelet will make, if any."""
        best: Arrival | None = None
        up = [s for s in self.servers.values()
              if s.spec.in_scope and self.faults.is_up(s.spec)]
        for thumb in self.auth.named():
            holders = [s for s in up if thumb in s.store and s.store[thumb].has_private_key]
            for target in up:
                if thumb in target.store:
                    continue
                lacking = target.lacking_since.get(thumb, self.start)
                for source in holders:
                    delay = self._delay(source.spec, target.spec)
                    if delay is None:
                        continue
                    at = max(source.store[thumb].installed_at, self.auth.named_at.get(
                        thumb, self.start), lacking) + delay
                    if best is None or at < best[0]:
                        best = (at, thumb, source.spec.name, target.spec.name)
        return best

    def _copy(self, source: str, target: str, thumb: str, at: datetime) -> None:
        original = self.servers[source].store[thumb]
        self.servers[target].store[thumb] = StoredCert(
            material=original.material, friendly_name=original.friendly_name,
            services=list(original.services), exportable=original.exportable, installed_at=at)
        self.servers[target].lacking_since.pop(thumb, None)
        self._event(at, target, "MSExchange CertificateDeployment", 0, "Information",
                    f"The certificate with thumbprint {thumb} was deployed to this server "
                    f"from {source.upper()}.")

    # -- AuthAdmin servicelet ----------------------------------------------------------

    def run_auth_admin(self, server: str, at: datetime) -> None:
        state = self.servers[server]
        state.auth_admin_last_run = at
        if self.faults.stalls_auth_admin(server):
            self._event(at, server, EVENT_SOURCE, 0, "Error",
                        "The AuthAdmin servicelet could not complete its run.")
            return
        if self.auth.due(at):
            new = self.auth.next
            self.auth.publish(at)
            self._event(at, server, EVENT_SOURCE, 2014, "Information",
                        "The current signing certificate for Exchange has been updated to "
                        f"certificate with thumbprint {new}.")

    def _event(self, at: datetime, server: str, source: str, event_id: int, level: str,
               message: str) -> None:
        self.events.append({"time": iso(at), "server": server, "source": source,
                            "id": event_id, "level": level, "message": message})
