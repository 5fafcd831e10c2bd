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

Where things are: `exchange_org` holds the `Org` (the org's state and the operations
commands perform on it); `build` makes its start from a scenario; `servicelets` the
certificate and AuthAdmin servicelets; `records` what a server is made of, with the IIS
rules (bindings, pool caching); `auth_config` the AuthConfig record; `health` how an
Exchange endpoint fails; `faults` injected faults; `snapshot` the JSON of
`GET /_lab/state`.
"""

from lab.org.exchange_org import Org
from lab.org.records import (
    AUTH_ADMIN_INTERVAL,
    BACKEND_BINDING,
    BACKEND_SITE,
    CERT_VALIDITY,
    EVENT_SOURCE,
    FRONTEND_BINDING,
    FRONTEND_SITE,
    POOLS,
    Binding,
    OrgError,
    ServerState,
    StoredCert,
)

__all__ = ["AUTH_ADMIN_INTERVAL", "BACKEND_BINDING", "BACKEND_SITE", "CERT_VALIDITY",
           "EVENT_SOURCE", "FRONTEND_BINDING", "FRONTEND_SITE", "POOLS", "Binding", "Org",
           "OrgError", "ServerState", "StoredCert"]
