"""Faults injected into the org: from the scenario's [[fault]]s or the control API.

A fault names a server, an endpoint ("exchange", "host" or "any") and a kind: the server
is "unreachable", refuses authentication ("auth_failure"), answers late ("latency"), or
fails a command ("error", optionally only one cmdlet; cmdlet "AuthAdmin" stalls that
server's AuthAdmin servicelet).
"""

from __future__ import annotations

from typing import Any

from lab.scenario import FaultSpec, ServerSpec, validate_fault


class Faults:
    def __init__(self, faults: tuple[FaultSpec, ...] = ()) -> None:
        self._faults: list[FaultSpec] = list(faults)

    def add(self, fault: dict[str, Any], servers: set[str]) -> None:
        self._faults.append(validate_fault(fault, servers))

    def clear(self) -> None:
        self._faults.clear()

    def as_dicts(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self._faults]

    def matching(self, server: str, endpoint: str, kind: str) -> list[FaultSpec]:
        return [f for f in self._faults
                if f.server == server and f.kind == kind and f.endpoint in (endpoint, "any")]

    def is_up(self, spec: ServerSpec) -> bool:
        """Down: `reachable = false`, or an "unreachable" fault for endpoint "any"."""
        return spec.reachable and not any(
            f.server == spec.name and f.kind == "unreachable" and f.endpoint == "any"
            for f in self._faults)

    def transport(self, server: str, endpoint: str) -> str | None:
        for kind in ("unreachable", "auth_failure"):
            if self.matching(server, endpoint, kind):
                return kind
        return None

    def latency_ms(self, server: str, endpoint: str) -> int:
        return sum(f.latency_ms for f in self.matching(server, endpoint, "latency"))

    def command(self, server: str, endpoint: str, command: str) -> str | None:
        """The message of an "error" fault for this command on this server/endpoint, if any."""
        for fault in self.matching(server, endpoint, "error"):
            if fault.cmdlet is None or fault.cmdlet.lower() == command.lower():
                return fault.message or (
                    f"The operation couldn't be performed on server {server.upper()} "
                    f"(simulated fault for {fault.cmdlet or 'every command'}).")
        return None

    def stalls_auth_admin(self, server: str) -> bool:
        return any(f.server == server and f.kind == "error" and (f.cmdlet or "").lower()
                   == "authadmin" for f in self._faults)
