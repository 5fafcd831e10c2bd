"""The `Org`: the org's state (servers, AuthConfig, faults, call log, clock) and the
operations commands perform on it.

Its start from a scenario is made in `build`; what the org does on its own lives in
`servicelets`, the IIS rules of one server on `ServerState` (`records`), how endpoints
fail in `health`, faults in `faults`, the control API's JSON in `snapshot`. Every public
method holds `self.lock` and first lets the servicelets catch up with the clock.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from lab.certs import CertMaterial, make_certificate
from lab.clock import parse_duration
from lab.graph import Directory
from lab.org.auth_thumbprints import AuthConfig
from lab.org.build import build
from lab.org.faults import Faults
from lab.org.health import backend_failure, signing_failure
from lab.org.records import (
    CERT_VALIDITY,
    Binding,
    OrgError,
    ServerState,
    StoredCert,
    iso,
)
from lab.org.servicelets import Servicelets
from lab.org.snapshot import snapshot
from lab.scenario import Scenario, ServerSpec


class Org:
    def __init__(self, scenario: Scenario) -> None:
        self.lock = threading.RLock()
        self.scenario = scenario
        self._materials: dict[str, CertMaterial] = {}
        self._build()

    # -- construction ----------------------------------------------------------------

    def _build(self) -> None:
        """The org as the scenario describes it (see `build`); the call log starts empty."""
        begun = build(self.scenario, self._materials, self.lock)
        self.clock = begun.clock
        self._start = begun.start
        self._servers: dict[str, ServerState] = begun.servers
        self.auth: AuthConfig = begun.auth
        self.injected_faults: Faults = begun.faults
        self.servicelets: Servicelets = begun.servicelets
        self.directory: Directory | None = begun.directory
        self._calls: list[dict[str, Any]] = []

    def _settle(self) -> None:
        self.servicelets.settle(self.clock.now())

    # -- the contract's read side ----------------------------------------------------

    def server_names(self) -> list[str]:
        with self.lock:
            return list(self._servers)

    def server_info(self, name: str) -> dict[str, Any]:
        with self.lock:
            spec = self._state(name).spec
            return {"name": spec.name, "fqdn": spec.fqdn, "site": spec.site,
                    "roles": list(spec.roles), "version": spec.version,
                    "reachable": self.is_up(spec.name)}

    def resolve(self, name_or_fqdn: str) -> str | None:
        with self.lock:
            key = name_or_fqdn.strip().lower()
            for spec in self.scenario.servers:
                if key in (spec.name.lower(), spec.fqdn.lower()):
                    return spec.name
            return None

    def now(self) -> datetime:
        with self.lock:
            self._settle()
            return self.clock.now()

    def advance(self, delta: timedelta | str) -> None:
        with self.lock:
            if isinstance(delta, str):
                parsed = parse_duration(delta)
                if parsed is None:
                    raise ValueError("cannot advance the clock by \"never\"")
                delta = parsed
            self._settle()
            self.clock.advance(delta)
            self._settle()

    def reset(self) -> None:
        """Back to the scenario as loaded: its own [[fault]]s return, runtime faults, the
        call log and everything changed since are dropped. Scenario certificates keep their
        thumbprints; a wall-clock scenario restarts from the current wall time."""
        with self.lock:
            self._build()

    def calls(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(c, parameters=dict(c["parameters"])) for c in self._calls]

    def record_call(self, *, server: str, endpoint: str, command: str,
                    parameters: dict[str, Any], outcome: str) -> None:
        with self.lock:
            safe = {k: ("***" if k.lower() == "password" else v) for k, v in parameters.items()}
            self._calls.append({"time": iso(self.clock.now()), "endpoint": endpoint,
                                "server": server, "command": command, "parameters": safe,
                                "outcome": outcome})

    # -- faults ------------------------------------------------------------------------

    def add_fault(self, fault: dict[str, Any]) -> None:
        """A server fault, or with endpoint "graph" one of the Graph stand-in's."""
        with self.lock:
            self._settle()
            if isinstance(fault, dict) and fault.get("endpoint") == "graph":
                if self.directory is None:
                    raise ValueError('endpoint "graph": this scenario has no [entra] tenant')
                self.directory.add_fault(fault)
                return
            self.injected_faults.add(fault, set(self._servers))

    def clear_faults(self) -> None:
        with self.lock:
            self._settle()
            self.injected_faults.clear()
            if self.directory is not None:
                self.directory.clear_faults()
            now = self.clock.now()
            for state in self._servers.values():  # back up: replication resumes from now
                for thumb in list(state.lacking_since):
                    state.lacking_since[thumb] = max(state.lacking_since[thumb], now)

    def faults(self) -> list[dict[str, Any]]:
        with self.lock:
            graph = self.directory.state()["faults"] if self.directory is not None else []
            return self.injected_faults.as_dicts() + graph

    def transport_fault(self, server: str, endpoint: str) -> str | None:
        with self.lock:
            if not self._state(server).spec.reachable:
                return "unreachable"
            return self.injected_faults.transport(server, endpoint)

    def latency_ms(self, server: str, endpoint: str) -> int:
        with self.lock:
            return self.injected_faults.latency_ms(server, endpoint)

    def command_fault(self, server: str, endpoint: str, command: str) -> str | None:
        """The message of an "error" fault for this command on this server/endpoint, if any."""
        with self.lock:
            return self.injected_faults.command(server, endpoint, command)

    def is_up(self, server: str) -> bool:
        """Down servers neither send nor receive replication and cannot be named by -Server."""
        with self.lock:
            return self.injected_faults.is_up(self._servers[server].spec)

    # -- endpoint health ---------------------------------------------------------------

    def exchange_endpoint_failure(self, server: str) -> str | None:
        """Why this server's Exchange endpoint fails (a broken back end binding), or None."""
        with self.lock:
            self._settle()
            return backend_failure(self._state(server), self.clock.now())

    def signing_failure(self, server: str) -> str | None:
        """Why Exchange endpoint cmdlets on `server` fail under serialization signing, or None."""
        with self.lock:
            self._settle()
            state = self._state(server)
            if not self.scenario.lab.serialization_signing:
                return None
            return signing_failure(state, self.auth.current, self.clock.now())

    # -- helpers used by the commands ----------------------------------------------------

    def _state(self, server: str) -> ServerState:
        try:
            return self._servers[server]
        except KeyError:
            raise KeyError(f"no server {server!r} in this lab") from None

    def target(self, server: str | None, default: str) -> str:
        """The server a `-Server` value names (default: the session's server), checked up."""
        with self.lock:
            name = default if server is None else self.resolve(str(server))
            if name is None:
                raise OrgError(f"The operation couldn't be performed because object '{server}'"
                               " couldn't be found on the domain controller.", "not_found")
            if not self.is_up(name):
                raise OrgError(
                    f"An error occurred while using RPC to contact server "
                    f"{self._servers[name].spec.fqdn}: The RPC server is unavailable.",
                    "unreachable")
            return name

    def servers(self) -> list[ServerSpec]:
        with self.lock:
            return [s.spec for s in self._servers.values()]

    def server_states(self) -> list[ServerState]:
        """The live per-server records (for `snapshot`); callers hold the lock."""
        return list(self._servers.values())

    def store(self, server: str) -> list[StoredCert]:
        with self.lock:
            self._settle()
            return list(self._state(server).store.values())

    def find_certificate(self, server: str, thumbprint: str) -> StoredCert:
        with self.lock:
            self._settle()
            stored = self._state(server).store.get(thumbprint.strip().upper())
            if stored is None:
                raise OrgError(_missing_message(server, thumbprint), "not_found")
            return stored

    def auth_config(self) -> dict[str, Any]:
        with self.lock:
            self._settle()
            return self.auth.as_dict()

    def bindings(self, server: str) -> list[Binding]:
        with self.lock:
            return [b.copy() for b in self._state(server).bindings]

    def scenario_material(self, cert_id: str) -> CertMaterial:
        """The certificate (with its private key) a scenario id was made into."""
        with self.lock:
            return self._materials[cert_id]

    def hybrid(self) -> bool:
        return self.scenario.lab.hybrid

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [dict(e) for e in self.servicelets.events]

    def auth_admin_last_run(self, server: str) -> datetime | None:
        with self.lock:
            self._settle()
            return self._state(server).auth_admin_last_run

    # -- changes ---------------------------------------------------------------------------

    def new_certificate(self, server: str, *, subject: str, friendly_name: str,
                        domains: list[str], key_size: int, exportable: bool,
                        services: list[str], not_before: datetime | None = None,
                        not_after: datetime | None = None,
                        signature: str = "sha256") -> StoredCert:
        """A new certificate in the server's store: Exchange's five years unless the
        dates are given (New-SelfSignedCertificate on the host endpoint)."""
        with self.lock:
            self._settle()
            now = self.clock.now()
            try:
                material = make_certificate(
                    subject, not_before=not_before or now - timedelta(minutes=5),
                    not_after=not_after or now + CERT_VALIDITY, sans=domains,
                    key_size=key_size, signature=signature)
            except ValueError as exc:
                raise OrgError(str(exc)) from None
            stored = StoredCert(material=material, friendly_name=friendly_name,
                                services=list(services), exportable=exportable,
                                installed_at=now)
            state = self._state(server)
            state.store[material.thumbprint] = stored
            if "IIS" in services:
                state.bind_frontend(material.thumbprint)
            return stored

    def remove_certificate(self, server: str, thumbprint: str) -> None:
        with self.lock:
            stored = self.find_certificate(server, thumbprint)
            state = self._state(server)
            del state.store[stored.thumbprint]
            state.lacking_since[stored.thumbprint] = self.clock.now()

    def import_certificate(self, server: str, material: CertMaterial, *, exportable: bool,
                           friendly_name: str) -> StoredCert:
        with self.lock:
            self._settle()
            state = self._state(server)
            if material.thumbprint in state.store:
                raise OrgError(
                    f"A special Rpc error occurs on server {server.upper()}: Cannot import "
                    f"certificate. A certificate with the thumbprint {material.thumbprint} "
                    "already exists.", "conflict")
            now = self.clock.now()
            stored = StoredCert(material=material, friendly_name=friendly_name, services=[],
                                exportable=exportable, installed_at=now)
            state.store[material.thumbprint] = stored
            state.lacking_since.pop(material.thumbprint, None)
            return stored

    def enable_certificate(self, server: str, thumbprint: str, services: list[str]) -> StoredCert:
        with self.lock:
            stored = self.find_certificate(server, thumbprint)
            for service in services:
                if service not in stored.services and service != "None":
                    stored.services.append(service)
            if "IIS" in services:
                self._state(server).bind_frontend(stored.thumbprint)
            return stored

    def set_next(self, thumbprint: str, effective: datetime) -> None:
        with self.lock:
            self._settle()
            self.auth.set_next(thumbprint, effective, self.clock.now())

    def publish_next(self) -> None:
        with self.lock:
            self._settle()
            if not self.auth.next:
                raise OrgError("The next certificate is not configured. Use "
                               "-NewCertificateThumbprint to configure it before publishing.",
                               "refused")
            self.auth.publish(self.clock.now())

    def clear_previous(self) -> None:
        with self.lock:
            self._settle()
            self.auth.previous = ""

    def set_current(self, thumbprint: str) -> None:
        with self.lock:
            self._settle()
            self.auth.set_current(thumbprint, self.clock.now())

    def restart_pool(self, server: str, pool: str) -> None:
        with self.lock:
            self._settle()
            self._state(server).recycle_pool(pool, self.auth.current)

    def restart_service(self, server: str, service: str) -> None:
        with self.lock:
            self._settle()
            if service.lower() == "msexchangeservicehost":
                self.servicelets.run_auth_admin(server, self.clock.now())
            elif service.lower() == "w3svc":
                self.iisreset(server)

    def iisreset(self, server: str) -> None:
        with self.lock:
            self._settle()
            self._state(server).iisreset(self.auth.current)

    def add_binding(self, server: str, binding: Binding, *, force: bool) -> None:
        with self.lock:
            self._state(server).add_binding(binding, force=force)

    def remove_binding(self, server: str, site: str, binding_information: str,
                       protocol: str) -> None:
        with self.lock:
            self._state(server).remove_binding(site, binding_information, protocol)

    # -- the observable whole ------------------------------------------------------------

    def pool_works(self, server: str, pool: str) -> bool:
        with self.lock:
            return self._state(server).pool_works(pool, self.auth.current, self.clock.now())

    def state(self) -> dict[str, Any]:
        with self.lock:
            self._settle()
            return snapshot(self, self.clock.now())

    def clock_state(self) -> dict[str, Any]:
        """The "clock" part of `state()`, without building the rest."""
        with self.lock:
            self._settle()
            return self.clock_at(self.clock.now())

    def clock_at(self, now: datetime) -> dict[str, Any]:
        return {"now": iso(now), "ticking": self.clock.ticking, "started": iso(self._start)}


def _missing_message(server: str, thumbprint: str) -> str:
    return (f"A special Rpc error occurs on server {server.upper()}: The certificate with "
            f"thumbprint {thumbprint.strip().upper()} was not found.")
