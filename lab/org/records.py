"""What the org is made of: a server's store, IIS bindings and app pools, and their rules.

`ServerState` is one server as a rehearsal sees it; the IIS rules live on it because they
concern one server only: the https `*:444:` binding of the back end takes effect at
`iisreset`, an IIS certificate is bound to the Default Web Site's `*:443:` (never the back
end), and the OWA/ECP pools cache the auth thumbprint they started with until recycled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lab.certs import CertMaterial
from lab.scenario import ServerSpec

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

    def copy(self) -> Binding:
        return Binding(self.site, self.binding_information, self.certificate_hash,
                       self.store_name, self.protocol)


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

    def bind_frontend(self, thumbprint: str) -> None:
        """IIS service = the Default Web Site's *:443: binding; never the back end."""
        for binding in self.bindings:
            if binding.site == FRONTEND_SITE and binding.binding_information == FRONTEND_BINDING:
                binding.certificate_hash = thumbprint
                binding.store_name = "My"
                return
        self.bindings.append(Binding(FRONTEND_SITE, FRONTEND_BINDING, thumbprint))

    def add_binding(self, binding: Binding, *, force: bool) -> None:
        for existing in self.bindings:
            if existing.site.lower() == binding.site.lower() and existing.protocol == \
                    binding.protocol and existing.binding_information == \
                    binding.binding_information:
                if not force:
                    raise OrgError(
                        f"Binding '{binding.binding_information}' already exists on site "
                        f"'{binding.site}'.", "conflict")
                self.bindings.remove(existing)
                break
        self.bindings.append(binding)

    def remove_binding(self, site: str, binding_information: str, protocol: str) -> None:
        for existing in self.bindings:
            if existing.site.lower() == site.lower() and existing.protocol == protocol \
                    and existing.binding_information == binding_information:
                self.bindings.remove(existing)
                return
        raise OrgError(f"Binding '{binding_information}' does not exist on site '{site}'.",
                       "not_found")

    def recycle_pool(self, pool: str, current: str) -> None:
        """A pool that starts again loads the auth certificate current now."""
        if pool not in self.pools:
            raise OrgError(f"The application pool {pool!r} does not exist.", "not_found")
        self.pools[pool] = current

    def iisreset(self, current: str) -> None:
        """Every pool starts again, and HTTP.sys takes the configured back end binding."""
        for pool in self.pools:
            self.pools[pool] = current
        configured = self.backend_binding()
        self.active_backend = None if configured is None else configured.copy()

    def pool_works(self, pool: str, current: str, now: datetime) -> bool:
        """Its cached thumbprint is the current one, in the store and not expired."""
        cached = self.pools.get(pool, "")
        stored = self.store.get(cached) if cached else None
        return bool(cached) and cached == current and stored is not None and \
            stored.material.not_after > now


def iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else ""
