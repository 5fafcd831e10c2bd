"""An org as its scenario describes it, at the start of a rehearsal (and after a reset).

Scenario certificates become real certificates once per org (a reset keeps their
thumbprints), relative times resolve against the clock's start, setup's bindings and
pools are in place, the servicelets' first AuthAdmin tick is scheduled, and an `[entra]`
tenant gets its applications with the scenario certificates' public keys.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from lab.certs import CertMaterial, make_certificate
from lab.clock import Clock
from lab.graph import Directory
from lab.org.auth_thumbprints import AuthConfig
from lab.org.faults import Faults
from lab.org.records import (
    BACKEND_BINDING,
    BACKEND_SITE,
    CERT_VALIDITY,
    FRONTEND_BINDING,
    FRONTEND_SITE,
    POOLS,
    Binding,
    ServerState,
    StoredCert,
)
from lab.org.servicelets import Servicelets
from lab.scenario import CertificateSpec, Scenario, ScenarioError


@dataclass
class Start:
    """Everything an org holds at its start."""

    clock: Clock
    start: datetime
    servers: dict[str, ServerState]
    auth: AuthConfig
    faults: Faults
    servicelets: Servicelets
    directory: Directory | None  # the Entra tenant of the Graph stand-in, if any


def build(scenario: Scenario, materials: dict[str, CertMaterial],
          lock: threading.RLock | None = None) -> Start:
    """The org at its start; `materials` caches the certificates made per scenario id, and
    `lock` (the org's) guards the tenant too."""
    begun = _build(scenario, materials)
    if scenario.entra is not None:
        begun.directory = Directory.build(scenario.entra, materials, lock or threading.RLock())
    return begun


def _build(scenario: Scenario, materials: dict[str, CertMaterial]) -> Start:
    clock = Clock(scenario.lab.now)
    start = clock.now()
    servers = {spec.name: ServerState(spec=spec) for spec in scenario.servers}
    by_id: dict[str, CertMaterial] = {}
    for cert in scenario.certificates:
        material = materials.get(cert.id)
        if material is None:
            material = _make_scenario_cert(scenario, cert, start)
            materials[cert.id] = material
        by_id[cert.id] = material
        for server in cert.installed_on:
            servers[server].store[material.thumbprint] = StoredCert(
                material=material, friendly_name=cert.friendly_name,
                services=list(cert.services), exportable=cert.exportable, installed_at=start)

    def ref(value: str) -> str:
        if value.startswith("thumbprint:"):
            return value[len("thumbprint:"):]
        return by_id[value].thumbprint if value else ""

    spec = scenario.auth_config
    effective = spec.next_effective
    auth = AuthConfig(
        current=ref(spec.current), next=ref(spec.next), previous=ref(spec.previous),
        next_effective=start + effective if isinstance(effective, timedelta) else effective)
    auth.named_at = {t: start for t in (auth.current, auth.next) if t}

    # Setup binds the server's "Microsoft Exchange" certificate to both sites.
    backends = {b.server: ref(b.certificate) for b in scenario.backends}
    for name, state in servers.items():
        state.bindings = [Binding(FRONTEND_SITE, "*:80:", "", "", protocol="http"),
                          Binding(FRONTEND_SITE, FRONTEND_BINDING, backends.get(name, ""))]
        if name in backends:
            state.bindings += [Binding(BACKEND_SITE, "*:81:", "", "", protocol="http"),
                               Binding(BACKEND_SITE, BACKEND_BINDING, backends[name])]
            state.active_backend = Binding(BACKEND_SITE, BACKEND_BINDING, backends[name])
        state.pools = dict.fromkeys(POOLS, auth.current)

    faults = Faults(scenario.faults)
    last = scenario.lab.auth_admin_last_run
    servicelets = Servicelets(
        servers=servers, auth=auth, faults=faults, lab=scenario.lab, start=start,
        last_run=start + last if isinstance(last, timedelta) else (last or start))
    return Start(clock=clock, start=start, servers=servers, auth=auth, faults=faults,
                 servicelets=servicelets, directory=None)


def _make_scenario_cert(scenario: Scenario, cert: CertificateSpec,
                        start: datetime) -> CertMaterial:
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
        raise ScenarioError(f"{scenario.source}: certificate {cert.id!r}: {exc}") from None
