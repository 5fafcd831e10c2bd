"""The two changes exauth makes to the dedicated hybrid application, each from a fresh read.

`upload`: the application's keys are read just before (re-validation), the certificate is
added with every other key sent back unchanged, the keys are read again, and anything the
change did not mean (a key gone, the new one absent) ends it with a `KeysChanged` naming
it. `remove_stale`: the same, removing only the keys of certificates that are no longer
current, next or previous. Both do nothing when there is nothing to do, so a retry after a
worker died mid-step is safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from config.errors import ExauthError
from workers.hybrid_app.graph_client import GraphClient
from workers.hybrid_app.keys import (
    AppKey,
    keys_from,
    unintended_changes,
    with_key_added,
    without_keys,
)


class KeysChanged(ExauthError):
    """A fresh read after the PATCH shows something the change did not mean."""

    permanent = True


def _short(thumbprint: str) -> str:
    return f"{thumbprint[:8]}…"


def fresh_keys(client: GraphClient) -> list[AppKey]:
    return keys_from(client.read_application())


def upload(client: GraphClient, der: bytes) -> str:
    """Make sure the certificate is among the application's keys; one line of what was done."""
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    before = fresh_keys(client)
    if any(key.thumbprint == thumbprint for key in before):
        return f"{_short(thumbprint)} is already on the application ({len(before)} keys)"
    client.replace_key_credentials(with_key_added(before, der))
    after = fresh_keys(client)
    problems = unintended_changes(before, after, added=[thumbprint])
    if problems:
        raise KeysChanged("after the upload " + "; ".join(problems))
    return f"uploaded {_short(thumbprint)}; the application holds {len(after)} keys, none lost"


def remove_stale(client: GraphClient, keep: Iterable[str]) -> str:
    """Remove the keys of every certificate not in `keep` (current, next, previous)."""
    kept = {t.upper() for t in keep if t}
    before = fresh_keys(client)
    going = [key.thumbprint for key in before if key.thumbprint not in kept]
    if not going:
        return f"no stale keys ({len(before)} keys, all current, next or previous)"
    client.replace_key_credentials(without_keys(before, going))
    after = fresh_keys(client)
    problems = unintended_changes(before, after, removed=going)
    if problems:
        raise KeysChanged("after the clean-up " + "; ".join(problems))
    return (f"removed {', '.join(_short(t) for t in going)}; the application holds "
            f"{len(after)} keys")
