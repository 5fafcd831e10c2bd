"""The simulated Exchange org: what a rehearsal changes and what it observes.

Everything a real org would do on its own between two commands happens here, driven by
the virtual clock (`advance`, or the wall clock for a ticking clock), in time order:

- **Certificate servicelet (replication).** For each thumbprint named in AuthConfig as
  current or next, every reachable in-scope server that lacks it receives a copy (with
  its private key) at the earliest time any reachable in-scope *source* server holding it
  with its key allows:
  `max(source has it since, thumbprint named in AuthConfig since, target lacks it since)
  + delay`, where delay is `replication.same_site` when source and target are in the same
  AD site and `replication.cross_site` otherwise ("never" = no copy that way). "Lacks it
  since" is the org's start for a certificate a scenario leaves out, or the time it was
  removed. So a server that someone imports the certificate into becomes a source for its
  own site, as Microsoft documents; a server alone in its site with cross_site "never"
  stays without it until someone imports it.
- **AuthAdmin servicelet.** Runs on every reachable in-scope server every 12 h from
  `[lab] auth_admin_last_run` (default: the org's start), and on one server when its
  MSExchangeServiceHost restarts. When a next certificate is set and its effective date
  has passed it publishes it org-wide (previous = current, current = next, next cleared)
  and logs event 2014 (source "MSExchange AuthAdmin") for that server. A `[[fault]]` with
  kind "error" and cmdlet "AuthAdmin" makes the servicelet on that server fail (a stuck
  servicelet), logged as an error event instead.
- **OWA/ECP app pools** load the current auth thumbprint when they start and keep it
  until `Restart-WebAppPool` or `iisreset`. A pool works when its cached thumbprint is
  the current one, that certificate is in the server's store, and it has not expired.
- **Exchange Back End binding.** The configured https `*:444:` binding (what
  `New-IISSiteBinding` changes) takes effect in HTTP.sys at `iisreset`. The Exchange
  endpoint of a server fails (Cafe-SendFailure) while the effective binding is missing,
  names no certificate, or names one that is not in the store.
- **Serialization signing** (`[lab] serialization_signing`): Exchange endpoint cmdlets of
  a server fail while the current auth certificate is expired or absent from that
  server's store. Cmdlets run through the host endpoint's snap-in are local, unsigned and
  unaffected (the documented fallback).

A server is down when its scenario says `reachable = false` or an "unreachable" fault
for endpoint "any" names it; down servers neither send nor receive replication and
cannot be reached by `-Server`. Every public method holds `self.lock`.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lab.certs import CertMaterial, make_certificate
from lab.clock import Clock, format_duration, parse_duration
from lab.scenario import (
    CertificateSpec,
    FaultSpec,
    Scenario,
    ScenarioError,
    ServerSpec,
    validate_fault,
)

AUTH_ADMIN_INTERVAL = timedelta(hours=12)
CERT_VALIDITY = timedelta(days=5 * 365)
POOLS = ("MSExchangeOWAAppPool", "MSExchangeECPAppPool")
BACKEND_SITE = "Exchange Back End"
FRONTEND_SITE = "Default Web Site"
BACKEND_BINDING = "*:444:"
FRONTEND_BINDING = "*:443:"
EVENT_SOURCE = "MSExchange AuthAdmin"


class OrgError(Exception):
    """A refused operation; `kind` lets the command layer pick the PowerShell error shape.

    kinds: "not_found" (certificate not on that server), "unreachable" (RPC to a down
    server), "invalid" (bad argument), "conflict" (already exists), "refused" (not allowed).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass
class StoredCert:
    """A certificate in one server's LocalMachine\\My store."""

    material: CertMaterial  # `key` is None when the store has no private key for it
    friendly_name: str
    services: list[str]  # [] shows as "None"
    exportable: bool
    installed_at: datetime

    @property
    def thumbprint(self) -> str:
        return self.material.thumbprint

    @property
    def has_private_key(self) -> bool:
        return self.material.key is not None


@dataclass
class Binding:
    """One https binding of an IIS site; certificate_hash "" = binding without certificate."""

    site: str
    binding_information: str
    certificate_hash: str = ""
    store_name: str = "My"
    protocol: str = "https"


@dataclass
class ServerState:
    spec: ServerSpec
    store: dict[str, StoredCert] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)  # configured (applicationHost)
    active_backend: Binding | None = None  # what HTTP.sys serves since the last iisreset
    pools: dict[str, str] = field(default_factory=dict)  # pool -> cached auth thumbprint
    lacking_since: dict[str, datetime] = field(default_factory=dict)
    auth_admin_last_run: datetime | None = None

    def backend_binding(self) -> Binding | None:
        for binding in self.bindings:
            if binding.site == BACKEND_SITE and binding.binding_information == BACKEND_BINDING \
                    and binding.protocol == "https":
                return binding
        return None


class Org:
    def __init__(self, scenario: Scenario) -> None:
        self.lock = threading.RLock()
        self.scenario = scenario
        self._materials: dict[str, CertMaterial] = {}
        self._initial_start = scenario.lab.now
        self._build()

    # -- construction ----------------------------------------------------------------

    def _build(self) -> None:
        self.clock = Clock(self._initial_start)
        start = self.clock.now()
        self._start = start
        lab = self.scenario.lab
        self._calls: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._faults: list[FaultSpec] = list(self.scenario.faults)
        self._servers: dict[str, ServerState] = {
            spec.name: ServerState(spec=spec) for spec in self.scenario.servers}
        by_id: dict[str, CertMaterial] = {}
        for cert in self.scenario.certificates:
            material = self._materials.get(cert.id)
            if material is None:
                material = self._make_scenario_cert(cert, start)
                self._materials[cert.id] = material
            by_id[cert.id] = material
            for server in cert.installed_on:
                self._servers[server].store[material.thumbprint] = StoredCert(
                    material=material, friendly_name=cert.friendly_name,
                    services=list(cert.services), exportable=cert.exportable,
                    installed_at=start)

        def ref(value: str) -> str:
            if value.startswith("thumbprint:"):
                return value[len("thumbprint:"):]
            return by_id[value].thumbprint if value else ""

        auth = self.scenario.auth_config
        self.current, self.next, self.previous = ref(auth.current), ref(auth.next), \
            ref(auth.previous)
        effective = auth.next_effective
        self.next_effective: datetime | None = (
            start + effective if isinstance(effective, timedelta) else effective)
        self._named_at: dict[str, datetime] = {t: start for t in (self.current, self.next) if t}

        # Setup binds the server's "Microsoft Exchange" certificate to both sites.
        backends = {b.server: (by_id[b.certificate].thumbprint if b.certificate else "")
                    for b in self.scenario.backends}
        for name, state in self._servers.items():
            state.bindings = [Binding(FRONTEND_SITE, "*:80:", "", "", protocol="http"),
                              Binding(FRONTEND_SITE, FRONTEND_BINDING, backends.get(name, ""))]
            if name in backends:
                state.bindings += [Binding(BACKEND_SITE, "*:81:", "", "", protocol="http"),
                                   Binding(BACKEND_SITE, BACKEND_BINDING, backends[name])]
                state.active_backend = Binding(BACKEND_SITE, BACKEND_BINDING, backends[name])
            state.pools = dict.fromkeys(POOLS, self.current)

        last = lab.auth_admin_last_run
        last_run = start + last if isinstance(last, timedelta) else (last or start)
        for state in self._servers.values():
            if state.spec.in_scope:
                state.auth_admin_last_run = last_run
        self._next_auth_admin = last_run + AUTH_ADMIN_INTERVAL
        while self._next_auth_admin <= start:
            self._next_auth_admin += AUTH_ADMIN_INTERVAL

    def _make_scenario_cert(self, cert: CertificateSpec, start: datetime) -> CertMaterial:
        try:  # dates past year 9999 (`[lab] now` + days_left) overflow: one line, too
            if cert.not_after is not None:
                not_after = cert.not_after
            else:
                not_after = start + timedelta(days=cert.days_left or 0)
            not_before = cert.not_before or min(not_after - CERT_VALIDITY,
                                                start - timedelta(days=1))
            return make_certificate(cert.subject, not_before=not_before, not_after=not_after,
                                    sans=cert.sans, key_size=cert.key_size,
                                    signature=cert.signature)
        except (ValueError, OverflowError) as exc:
            raise ScenarioError(f"{self.scenario.source}: certificate {cert.id!r}: {exc}") from None

    # -- the contract's read side ----------------------------------------------------

    def server_names(self) -> list[str]:
        with self.lock:
            return list(self._servers)

    def server_info(self, name: str) -> dict[str, Any]:
        with self.lock:
            spec = self._state(name).spec
            return {"name": spec.name, "fqdn": spec.fqdn, "site": spec.site,
                    "roles": list(spec.roles), "version": spec.version,
                    "reachable": self._is_up(spec.name)}

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
            self._calls.append({"time": _iso(self.clock.now()), "endpoint": endpoint,
                                "server": server, "command": command, "parameters": safe,
                                "outcome": outcome})

    # -- faults ------------------------------------------------------------------------

    def add_fault(self, fault: dict[str, Any]) -> None:
        with self.lock:
            self._settle()
            self._faults.append(validate_fault(fault, set(self._servers)))

    def clear_faults(self) -> None:
        with self.lock:
            self._settle()
            self._faults.clear()
            now = self.clock.now()
            for state in self._servers.values():  # back up: replication resumes from now
                for thumb in list(state.lacking_since):
                    state.lacking_since[thumb] = max(state.lacking_since[thumb], now)

    def faults(self) -> list[dict[str, Any]]:
        with self.lock:
            return [f.as_dict() for f in self._faults]

    def _matching_faults(self, server: str, endpoint: str, kind: str) -> list[FaultSpec]:
        return [f for f in self._faults
                if f.server == server and f.kind == kind and f.endpoint in (endpoint, "any")]

    def transport_fault(self, server: str, endpoint: str) -> str | None:
        with self.lock:
            if not self._state(server).spec.reachable:
                return "unreachable"
            for kind in ("unreachable", "auth_failure"):
                if self._matching_faults(server, endpoint, kind):
                    return kind
            return None

    def latency_ms(self, server: str, endpoint: str) -> int:
        with self.lock:
            return sum(f.latency_ms for f in self._matching_faults(server, endpoint, "latency"))

    def command_fault(self, server: str, endpoint: str, command: str) -> str | None:
        """The message of an "error" fault for this command on this server/endpoint, if any."""
        with self.lock:
            for fault in self._matching_faults(server, endpoint, "error"):
                if fault.cmdlet is None or fault.cmdlet.lower() == command.lower():
                    return fault.message or (
                        f"The operation couldn't be performed on server {server.upper()} "
                        f"(simulated fault for {fault.cmdlet or 'every command'}).")
            return None

    def _is_up(self, server: str) -> bool:
        state = self._servers[server]
        return state.spec.reachable and not any(
            f.server == server and f.kind == "unreachable" and f.endpoint == "any"
            for f in self._faults)

    # -- endpoint health ---------------------------------------------------------------

    def exchange_endpoint_failure(self, server: str) -> str | None:
        with self.lock:
            self._settle()
            state = self._state(server)
            if not state.spec.in_scope:  # 2010 has no back end site; Edge no such endpoint
                return None
            active = state.active_backend
            if active is not None and active.certificate_hash and \
                    active.certificate_hash.upper() in state.store:
                return None
            stamp = self.clock.now().strftime("%m/%d/%Y %I:%M:%S %p")
            return (f"[ClientAccessServer={state.spec.name.upper()},"
                    f"BackEndServer={state.spec.fqdn},RequestId={uuid.uuid4()},"
                    f"TimeStamp={stamp}] [FailureCategory=Cafe-SendFailure] ")

    def signing_failure(self, server: str) -> str | None:
        """Why Exchange endpoint cmdlets on `server` fail under serialization signing, or None."""
        with self.lock:
            self._settle()
            state = self._state(server)
            if not self.scenario.lab.serialization_signing or not state.spec.in_scope:
                return None
            if not self.current:
                return ("Serialization data signing failed: no Auth Certificate is configured "
                        "(Get-AuthConfig CurrentCertificateThumbprint is empty).")
            stored = state.store.get(self.current)
            if stored is None:
                return (f"Serialization data signing failed on server {state.spec.name.upper()}:"
                        f" the Auth Certificate with thumbprint {self.current} was not found in "
                        "the local computer certificate store.")
            if stored.material.not_after <= self.clock.now():
                return (f"Serialization data signing failed on server {state.spec.name.upper()}:"
                        f" the Auth Certificate with thumbprint {self.current} expired on "
                        f"{_iso(stored.material.not_after)}.")
            return None

    # -- servicelets and replication ---------------------------------------------------

    def _settle(self) -> None:
        """Run everything that became due up to now, in time order."""
        until = self.clock.now()
        while True:
            arrival = self._next_arrival()
            tick = self._next_auth_admin
            if arrival is not None and arrival[0] <= tick and arrival[0] <= until:
                at, thumb, source, target = arrival
                self._copy(source, target, thumb, at)
            elif tick <= until:
                for state in self._servers.values():
                    if state.spec.in_scope and self._is_up(state.spec.name):
                        self._run_auth_admin(state.spec.name, tick)
                self._next_auth_admin = tick + AUTH_ADMIN_INTERVAL
            else:
                return

    def _delay(self, source: ServerSpec, target: ServerSpec) -> timedelta | None:
        lab = self.scenario.lab
        return lab.same_site if source.site == target.site else lab.cross_site

    def _next_arrival(self) -> tuple[datetime, str, str, str] | None:
        best: tuple[datetime, str, str, str] | None = None
        up = [s for s in self._servers.values() if s.spec.in_scope and self._is_up(s.spec.name)]
        for thumb in dict.fromkeys(t for t in (self.current, self.next) if t):
            holders = [s for s in up if thumb in s.store and s.store[thumb].has_private_key]
            for target in up:
                if thumb in target.store:
                    continue
                lacking = target.lacking_since.get(thumb, self._start)
                for source in holders:
                    delay = self._delay(source.spec, target.spec)
                    if delay is None:
                        continue
                    at = max(source.store[thumb].installed_at, self._named_at.get(
                        thumb, self._start), lacking) + delay
                    if best is None or at < best[0]:
                        best = (at, thumb, source.spec.name, target.spec.name)
        return best

    def _copy(self, source: str, target: str, thumb: str, at: datetime) -> None:
        original = self._servers[source].store[thumb]
        self._servers[target].store[thumb] = StoredCert(
            material=original.material, friendly_name=original.friendly_name,
            services=list(original.services), exportable=original.exportable, installed_at=at)
        self._servers[target].lacking_since.pop(thumb, None)
        self._event(at, target, "MSExchange CertificateDeployment", 0, "Information",
                    f"The certificate with thumbprint {thumb} was deployed to this server "
                    f"from {source.upper()}.")

    def _run_auth_admin(self, server: str, at: datetime) -> None:
        state = self._servers[server]
        state.auth_admin_last_run = at
        if any(f.server == server and f.kind == "error" and (f.cmdlet or "").lower()
               == "authadmin" for f in self._faults):
            self._event(at, server, EVENT_SOURCE, 0, "Error",
                        "The AuthAdmin servicelet could not complete its run.")
            return
        if self.next and self.next_effective is not None and self.next_effective <= at:
            new = self.next
            self._publish(at)
            self._event(at, server, EVENT_SOURCE, 2014, "Information",
                        "The current signing certificate for Exchange has been updated to "
                        f"certificate with thumbprint {new}.")

    def _publish(self, at: datetime) -> None:
        self.previous, self.current = self.current, self.next
        self.next, self.next_effective = "", None
        self._named_at[self.current] = self._named_at.get(self.current, at)

    def _event(self, at: datetime, server: str, source: str, event_id: int, level: str,
               message: str) -> None:
        self._events.append({"time": _iso(at), "server": server, "source": source,
                             "id": event_id, "level": level, "message": message})

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
            if not self._is_up(name):
                raise OrgError(
                    f"An error occurred while using RPC to contact server "
                    f"{self._servers[name].spec.fqdn}: The RPC server is unavailable.",
                    "unreachable")
            return name

    def servers(self) -> list[ServerSpec]:
        with self.lock:
            return [s.spec for s in self._servers.values()]

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
            return {"current": self.current, "next": self.next, "previous": self.previous,
                    "next_effective": self.next_effective}

    def bindings(self, server: str) -> list[Binding]:
        with self.lock:
            return [Binding(b.site, b.binding_information, b.certificate_hash, b.store_name,
                            b.protocol) for b in self._state(server).bindings]

    def hybrid(self) -> bool:
        return self.scenario.lab.hybrid

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [dict(e) for e in self._events]

    def auth_admin_last_run(self, server: str) -> datetime | None:
        with self.lock:
            self._settle()
            return self._state(server).auth_admin_last_run

    # -- changes ---------------------------------------------------------------------------

    def new_certificate(self, server: str, *, subject: str, friendly_name: str,
                        domains: list[str], key_size: int, exportable: bool,
                        services: list[str]) -> StoredCert:
        with self.lock:
            self._settle()
            now = self.clock.now()
            try:
                material = make_certificate(subject, not_before=now - timedelta(minutes=5),
                                            not_after=now + CERT_VALIDITY, sans=domains,
                                            key_size=key_size, signature="sha256")
            except ValueError as exc:
                raise OrgError(str(exc)) from None
            stored = StoredCert(material=material, friendly_name=friendly_name,
                                services=list(services), exportable=exportable,
                                installed_at=now)
            self._state(server).store[material.thumbprint] = stored
            if "IIS" in services:
                self._bind_frontend(server, material.thumbprint)
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
                self._bind_frontend(server, stored.thumbprint)
            return stored

    def _bind_frontend(self, server: str, thumbprint: str) -> None:
        """IIS service = the Default Web Site's *:443: binding; never the back end."""
        state = self._state(server)
        for binding in state.bindings:
            if binding.site == FRONTEND_SITE and binding.binding_information == FRONTEND_BINDING:
                binding.certificate_hash = thumbprint
                binding.store_name = "My"
                return
        state.bindings.append(Binding(FRONTEND_SITE, FRONTEND_BINDING, thumbprint))

    def set_next(self, thumbprint: str, effective: datetime) -> None:
        with self.lock:
            self._settle()
            self.next, self.next_effective = thumbprint, effective
            self._named_at[thumbprint] = self.clock.now()

    def publish_next(self) -> None:
        with self.lock:
            self._settle()
            if not self.next:
                raise OrgError("The next certificate is not configured. Use "
                               "-NewCertificateThumbprint to configure it before publishing.",
                               "refused")
            self._publish(self.clock.now())

    def clear_previous(self) -> None:
        with self.lock:
            self._settle()
            self.previous = ""

    def set_current(self, thumbprint: str) -> None:
        with self.lock:
            self._settle()
            if thumbprint != self.current:
                self.previous, self.current = self.current, thumbprint
                self._named_at[thumbprint] = self.clock.now()

    def restart_pool(self, server: str, pool: str) -> None:
        with self.lock:
            self._settle()
            state = self._state(server)
            if pool not in state.pools:
                raise OrgError(f"The application pool {pool!r} does not exist.", "not_found")
            state.pools[pool] = self.current

    def restart_service(self, server: str, service: str) -> None:
        with self.lock:
            self._settle()
            if service.lower() == "msexchangeservicehost":
                self._run_auth_admin(server, self.clock.now())
            elif service.lower() == "w3svc":
                self.iisreset(server)

    def iisreset(self, server: str) -> None:
        with self.lock:
            self._settle()
            state = self._state(server)
            for pool in state.pools:
                state.pools[pool] = self.current
            configured = state.backend_binding()
            state.active_backend = None if configured is None else Binding(
                configured.site, configured.binding_information, configured.certificate_hash,
                configured.store_name, configured.protocol)

    def add_binding(self, server: str, binding: Binding, *, force: bool) -> None:
        with self.lock:
            state = self._state(server)
            for existing in state.bindings:
                if existing.site.lower() == binding.site.lower() and existing.protocol == \
                        binding.protocol and existing.binding_information == \
                        binding.binding_information:
                    if not force:
                        raise OrgError(
                            f"Binding '{binding.binding_information}' already exists on site "
                            f"'{binding.site}'.", "conflict")
                    state.bindings.remove(existing)
                    break
            state.bindings.append(binding)

    def remove_binding(self, server: str, site: str, binding_information: str,
                       protocol: str) -> None:
        with self.lock:
            state = self._state(server)
            for existing in state.bindings:
                if existing.site.lower() == site.lower() and existing.protocol == protocol \
                        and existing.binding_information == binding_information:
                    state.bindings.remove(existing)
                    return
            raise OrgError(f"Binding '{binding_information}' does not exist on site '{site}'.",
                           "not_found")

    # -- the observable whole ------------------------------------------------------------

    def pool_works(self, server: str, pool: str) -> bool:
        with self.lock:
            state = self._state(server)
            cached = state.pools.get(pool, "")
            stored = state.store.get(cached) if cached else None
            return bool(cached) and cached == self.current and stored is not None and \
                stored.material.not_after > self.clock.now()

    def state(self) -> dict[str, Any]:
        with self.lock:
            self._settle()
            now = self.clock.now()
            lab = self.scenario.lab
            arrival = self._next_arrival()
            return {
                "scenario": self.scenario.name,
                "clock": self._clock_state(now),
                "hybrid": lab.hybrid,
                "serialization_signing": lab.serialization_signing,
                "replication": {"same_site": _duration(lab.same_site),
                                "cross_site": _duration(lab.cross_site),
                                "next_arrival": None if arrival is None else {
                                    "time": _iso(arrival[0]), "thumbprint": arrival[1],
                                    "from": arrival[2], "to": arrival[3]}},
                "auth_admin": {"next_run": _iso(self._next_auth_admin)},
                "servers": [self._server_state(s) for s in self._servers.values()],
                "auth_config": {
                    "current": self.current, "next": self.next, "previous": self.previous,
                    "next_effective": _iso(self.next_effective) if self.next_effective else None},
                "stores": {name: [_cert_state(c, now) for c in s.store.values()]
                           for name, s in self._servers.items()},
                "bindings": {name: self._binding_state(s) for name, s in self._servers.items()},
                "pools": {name: {pool: {"cached_thumbprint": cached,
                                        "works": self.pool_works(name, pool)}
                                 for pool, cached in s.pools.items()}
                          for name, s in self._servers.items()},
                "events": [dict(e) for e in self._events],
                "faults": [f.as_dict() for f in self._faults],
            }

    def clock_state(self) -> dict[str, Any]:
        """The "clock" part of `state()`, without building the rest."""
        with self.lock:
            self._settle()
            return self._clock_state(self.clock.now())

    def _clock_state(self, now: datetime) -> dict[str, Any]:
        return {"now": _iso(now), "ticking": self.clock.ticking, "started": _iso(self._start)}

    def _server_state(self, state: ServerState) -> dict[str, Any]:
        spec = state.spec
        return {"name": spec.name, "fqdn": spec.fqdn, "site": spec.site,
                "roles": list(spec.roles), "version": spec.version,
                "reachable": self._is_up(spec.name), "in_scope": spec.in_scope,
                "writer": spec.writer,
                "exchange_endpoint": self.exchange_endpoint_failure(spec.name) or "ok",
                "serialization": self.signing_failure(spec.name) or "ok",
                "auth_admin_last_run": _iso(state.auth_admin_last_run)
                if state.auth_admin_last_run else None}

    def _binding_state(self, state: ServerState) -> dict[str, Any]:
        backend = state.backend_binding()
        active = state.active_backend
        return {
            "backend": None if backend is None else {
                "binding": backend.binding_information,
                "certificate_hash": backend.certificate_hash,
                "in_store": backend.certificate_hash.upper() in state.store},
            "backend_effective": None if active is None else {
                "binding": active.binding_information,
                "certificate_hash": active.certificate_hash},
            "all": [{"site": b.site, "protocol": b.protocol, "binding": b.binding_information,
                     "certificate_hash": b.certificate_hash} for b in state.bindings],
        }


def _missing_message(server: str, thumbprint: str) -> str:
    return (f"A special Rpc error occurs on server {server.upper()}: The certificate with "
            f"thumbprint {thumbprint.strip().upper()} was not found.")


def _cert_state(stored: StoredCert, now: datetime) -> dict[str, Any]:
    material = stored.material
    return {"thumbprint": material.thumbprint, "subject": material.subject,
            "friendly_name": stored.friendly_name, "not_before": _iso(material.not_before),
            "not_after": _iso(material.not_after), "expired": material.not_after <= now,
            "services": ", ".join(stored.services) or "None",
            "has_private_key": stored.has_private_key, "exportable": stored.exportable,
            "signature": material.signature, "key_size": material.key_size}


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else ""


def _duration(value: timedelta | None) -> str:
    return "never" if value is None else format_duration(value)
