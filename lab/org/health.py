"""How a server's Exchange endpoint fails, given its state: what a rehearsal must see.

- The back end binding: while the https `*:444:` binding HTTP.sys serves is missing, names
  no certificate, or names one not in the store, the front end cannot proxy to the back
  end and every Exchange endpoint call fails with Cafe-SendFailure.
- Serialization signing (`[lab] serialization_signing`): while the current auth
  certificate is expired or absent from the server's store, Exchange endpoint cmdlets
  fail. The host endpoint's snap-in runs locally, unsigned, and is unaffected.

Exchange 2010 and Edge servers have neither (out of scope): None.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from lab.org.records import ServerState, iso


def backend_failure(state: ServerState, now: datetime) -> str | None:
    """The Cafe-SendFailure text of a broken back end binding, or None."""
    if not state.spec.in_scope:  # 2010 has no back end site; Edge no such endpoint
        return None
    active = state.active_backend
    if active is not None and active.certificate_hash and \
            active.certificate_hash.upper() in state.store:
        return None
    stamp = now.strftime("%m/%d/%Y %I:%M:%S %p")
    return (f"[ClientAccessServer={state.spec.name.upper()},"
            f"BackEndServer={state.spec.fqdn},RequestId={uuid.uuid4()},"
            f"TimeStamp={stamp}] [FailureCategory=Cafe-SendFailure] ")


def signing_failure(state: ServerState, current: str, now: datetime) -> str | None:
    """Why serialization signing fails on this server (signing on), or None."""
    if not state.spec.in_scope:
        return None
    if not current:
        return ("Serialization data signing failed: no Auth Certificate is configured "
                "(Get-AuthConfig CurrentCertificateThumbprint is empty).")
    stored = state.store.get(current)
    if stored is None:
        return (f"Serialization data signing failed on server {state.spec.name.upper()}:"
                f" the Auth Certificate with thumbprint {current} was not found in "
                "the local computer certificate store.")
    if stored.material.not_after <= now:
        return (f"Serialization data signing failed on server {state.spec.name.upper()}:"
                f" the Auth Certificate with thumbprint {current} expired on "
                f"{iso(stored.material.not_after)}.")
    return None
