"""The org as one JSON document: what the control API's `GET /_lab/state` answers.

It shows everything a rehearsal may want to check (stores, bindings, pools, AuthConfig,
the servicelets' next moves, events, faults) without reaching into the org's objects.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lab.clock import format_duration
from lab.org.records import ServerState, StoredCert, iso

if TYPE_CHECKING:
    from lab.org.exchange_org import Org


def snapshot(org: Org, now: datetime) -> dict[str, Any]:
    """Called by `Org.state()` with the lock held and the org settled at `now`."""
    lab = org.scenario.lab
    arrival = org.servicelets.next_arrival()
    auth = org.auth
    return {
        "scenario": org.scenario.name,
        "clock": org.clock_at(now),
        "hybrid": lab.hybrid,
        "serialization_signing": lab.serialization_signing,
        "replication": {"same_site": _duration(lab.same_site),
                        "cross_site": _duration(lab.cross_site),
                        "next_arrival": None if arrival is None else {
                            "time": iso(arrival[0]), "thumbprint": arrival[1],
                            "from": arrival[2], "to": arrival[3]}},
        "auth_admin": {"next_run": iso(org.servicelets.next_auth_admin)},
        "servers": [_server(org, s) for s in org.server_states()],
        "auth_config": {
            "current": auth.current, "next": auth.next, "previous": auth.previous,
            "next_effective": iso(auth.next_effective) if auth.next_effective else None},
        "stores": {s.spec.name: [_cert(c, now) for c in s.store.values()]
                   for s in org.server_states()},
        "bindings": {s.spec.name: _bindings(s) for s in org.server_states()},
        "pools": {s.spec.name: {pool: {"cached_thumbprint": cached,
                                       "works": org.pool_works(s.spec.name, pool)}
                                for pool, cached in s.pools.items()}
                  for s in org.server_states()},
        "events": [dict(e) for e in org.servicelets.events],
        "faults": org.faults(),
        "entra": None if org.directory is None else org.directory.state(),
    }


def _server(org: Org, state: ServerState) -> dict[str, Any]:
    spec = state.spec
    return {"name": spec.name, "fqdn": spec.fqdn, "site": spec.site,
            "roles": list(spec.roles), "version": spec.version,
            "reachable": org.is_up(spec.name), "in_scope": spec.in_scope,
            "writer": spec.writer,
            "exchange_endpoint": org.exchange_endpoint_failure(spec.name) or "ok",
            "serialization": org.signing_failure(spec.name) or "ok",
            "auth_admin_last_run": iso(state.auth_admin_last_run)
            if state.auth_admin_last_run else None}


def _bindings(state: ServerState) -> dict[str, Any]:
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


def _cert(stored: StoredCert, now: datetime) -> dict[str, Any]:
    material = stored.material
    return {"thumbprint": material.thumbprint, "subject": material.subject,
            "friendly_name": stored.friendly_name, "not_before": iso(material.not_before),
            "not_after": iso(material.not_after), "expired": material.not_after <= now,
            "services": ", ".join(stored.services) or "None",
            "has_private_key": stored.has_private_key, "exportable": stored.exportable,
            "signature": material.signature, "key_size": material.key_size}


def _duration(value: timedelta | None) -> str:
    return "never" if value is None else format_duration(value)
