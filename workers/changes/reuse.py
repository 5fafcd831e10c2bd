"""Reuse before create: never a second Auth Certificate for one rotation.

An operation that failed after creating its certificate (at Set-AuthConfig, say) leaves a
valid Auth Certificate on the writer that never became current. Creating another on the
next `/exauth fix` is what Microsoft changed MEAC for in 2023 (import or reuse, don't
re-create): several certificates with the Auth subject on one server are the classic sign
of a procedure run twice (DOMAIN.md 3).

A certificate is reusable by a new rotation of the same org when it is on the writer, has
the Auth subject, is not named by AuthConfig (current, next or previous), has at least
REUSE_MIN_LEFT of life, and was made by an earlier exauth operation of that org: recorded
by it (`recorded.new_thumbprint`), or - a worker killed between create and record -
created (NotBefore, on the org's clock) after that operation started (its
`status_checked_at`, the org's clock too). The newest such
certificate is adopted; the others are unused duplicates, whose removal the new
operation proposes as approval-gated steps at its end (`duplicate_steps`).

Friendly names are not compared: the status read does not collect them, and the Auth
subject plus the time window of an exauth operation already single exauth's own out.
The rules are pure (`find`); `earlier_operations` is the one Redis read (a SCAN of the
operation documents), made only when `worth_asking` sees an unused Auth certificate on
the writer at all - so a rotation that has nothing to reuse costs no extra round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from workers import redis_keys
from workers.changes import operation
from workers.status.findings import is_auth_subject, short
from workers.status.observation import CertFacts, OrgObs

CREATES_AUTH = ("stage_new", "replace_now")
REUSE_MIN_LEFT = timedelta(days=365)  # a fresh one has five years; one year is plenty
CLOCK_SKEW = timedelta(minutes=10)  # NotBefore vs the operation's start, both org clock


@dataclass(frozen=True)
class Reusable:
    """A certificate an earlier operation made and nobody uses."""

    thumbprint: str
    op_id: str  # the operation that made it
    how: str  # "recorded" by it, or "found" in its time window

    def line(self) -> str:
        return (f"reused {self.thumbprint}, made by earlier operation {self.op_id} and never "
                "current (no second certificate is created)")


def earlier_operations(conn: redis.Redis, org: str, *, but: str | None = None
                       ) -> list[dict[str, Any]]:
    """The org's operations that could have made an Auth Certificate that never became
    current (rotations that did not finish), newest first."""
    out = []
    for key in conn.scan_iter(match=redis_keys.OPERATION_PREFIX + "*", count=500):
        op_id = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(
            redis_keys.OPERATION_PREFIX)
        if op_id == but:
            continue
        doc = operation.load(conn, op_id)
        # a done rotation made its certificate current: that one is not "never current"
        if doc is not None and doc["org"] == org and doc["kind"] in CREATES_AUTH and (
                doc["state"] != "done"):
            out.append(doc)
    return sorted(out, key=lambda d: d["created_at"], reverse=True)


def _named(obs: OrgObs) -> set[str]:
    auth = obs.auth
    return {t.upper() for t in (auth.current, auth.next, auth.previous) if t}


def _writer_certs(obs: OrgObs) -> list[CertFacts]:
    wanted = (obs.writer or "").lower()
    for server in obs.servers:
        if wanted and wanted in (server.fqdn.lower(), server.name.lower()):
            return list(server.certificates or ())
    return []


def _made_by(cert: CertFacts, ops: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(operation id, how) of the earlier operation that made `cert`, if one did."""
    for op in ops:
        if str((op.get("recorded") or {}).get("new_thumbprint") or "").upper() == (
                cert.thumbprint.upper()):
            return str(op["id"]), "recorded"
    for op in ops:
        began = _when(op.get("status_checked_at"))
        if began is not None and cert.not_before >= began - CLOCK_SKEW:
            return str(op["id"]), "found"
    return None


def candidates(obs: OrgObs, ops: Sequence[Mapping[str, Any]]) -> list[Reusable]:
    """Every reusable certificate on the writer, newest first."""
    named = _named(obs)
    out = []
    for cert in sorted(_writer_certs(obs), key=lambda c: c.not_before, reverse=True):
        if not is_auth_subject(cert.subject) or cert.thumbprint.upper() in named:
            continue
        if cert.not_after - obs.checked_at < REUSE_MIN_LEFT:  # as in worth_asking
            continue
        made = _made_by(cert, ops)
        if made is not None:
            out.append(Reusable(cert.thumbprint, made[0], made[1]))
    return out


def worth_asking(obs: OrgObs) -> bool:
    """Whether the writer holds any Auth certificate that could be reused (not named by
    AuthConfig, enough life left); only then are earlier operations read."""
    named = _named(obs)
    return any(is_auth_subject(c.subject) and c.thumbprint.upper() not in named
               and c.not_after - obs.checked_at >= REUSE_MIN_LEFT for c in _writer_certs(obs))


def find(obs: OrgObs, ops: Sequence[Mapping[str, Any]]) -> Reusable | None:
    """The certificate a new rotation adopts instead of creating one, if any."""
    found = candidates(obs, ops)
    return found[0] if found else None


def duplicates(obs: OrgObs, ops: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(server fqdn, thumbprint) of the unused exauth-made Auth Certificates beyond the one
    adopted: on every in-scope server that holds them (replication spread them)."""
    extra = {r.thumbprint.upper() for r in candidates(obs, ops)[1:]}
    return [(server.fqdn, cert.thumbprint) for server in obs.servers
            for cert in server.certificates or () if cert.thumbprint.upper() in extra]


def duplicate_steps(pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Approval-gated plan steps removing unused duplicates (stored step form)."""
    return [{
        "title": f"Remove the unused duplicate Auth Certificate {short(thumbprint)} from "
                 f"{server}",
        "server": server, "endpoint": "exchange", "cmdlet": "Remove-ExchangeCertificate",
        "parameters": [["Server", server], ["Thumbprint", thumbprint], ["Confirm", False]],
        "changes_state": True, "kind": "remove_old_auth_cert",
        "note": "Made by an earlier exauth operation that never finished; another one is "
                "used instead. Never removed while AuthConfig names it.",
    } for server, thumbprint in pairs]


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None
