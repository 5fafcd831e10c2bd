"""What to do about one org: DOMAIN.md section 4, first match wins.

Each action is an `Action` (workers.status.report_model: kind, servers as fqdns, reason)
and the list is in the order to do them:

    blocked -> repair_backend (broken) -> the auth-certificate action(s)
            -> repair_backend (expiring) -> cleanup        ... or just `none`.

Choices where DOMAIN.md is silent or open (also in the lead's report):
- Rules 1-2 apply when the current cert is *dead* (not in AuthConfig, expired, or on no
  server). A current cert that is valid but missing on some servers goes to rule 3
  (import_current), which is smaller than publishing and needs no HCW re-run.
- A staged next that is expired or on no server at all is replaced by stage_new even when
  the current cert still has > 60 days: otherwise the servicelet would publish it.
- Rule 5's "staged < 24 h ago": AuthConfig records no staging time, so the next cert's
  NotBefore stands in for it (New-ExchangeCertificate runs just before Set-AuthConfig).
  Without a known writer site the cross-site wait does not apply (import_next).
- Rule 6: a due next cert (effective date passed <= 12 h ago) is still wait_for_publish,
  since the servicelet runs every 12 h; a next whose effective date falls after the
  current cert's expiry, or that has no effective date, is publish_next.
- Back end: no_binding/no_certificate/not_in_store/expired are repaired first (a broken
  back end breaks that server's Exchange endpoint, which later steps need); expiring
  (< 30 days) is a renewal by the same procedure, offered after the auth work. Nothing,
  back end repair included, is offered while the org is blocked: DOMAIN rule 0 and
  section 8 say change nothing while a server is unreachable unless an operator
  overrides. A server with a broken back end still answers on its host endpoint, so it
  does not block by itself.
- cleanup only when no rotation is in flight (no next staged) and nothing else is due for
  the auth cert.
- The dedicated hybrid application (issue 13): when its keys lack the current certificate
  (or a staged next one), `upload_hybrid_key` comes before the auth actions - hybrid is
  broken now, or breaks at publication - unless an auth action replaces or publishes the
  current certificate anyway (replace_now and publish_next upload their own).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from workers.status.findings import (
    PUBLISH_GRACE,
    CertView,
    backend_problem,
    cert_view,
    in_scope_servers,
    iso,
    short,
)
from workers.status.observation import OrgObs, ServerObs
from workers.status.report_model import Action, ActionKind, BackendProblem

STAGE_CURRENT_DAYS = 60  # rule 4: current has <= 60 days left ...
STAGE_NEXT_DAYS = 120  # ... and next is absent or has <= 120 days left
REPLICATION_WAIT = timedelta(hours=24)  # rule 5


def action(kind: ActionKind, servers: list[str] | tuple[str, ...], reason: str) -> Action:
    return Action(kind=kind, servers=list(servers), reason=reason)


def actions(obs: OrgObs, *, override_unreachable: bool = False) -> list[Action]:
    """The decision for one org (see the module docstring for the order)."""
    scope = in_scope_servers(obs)
    if not scope:
        return [action(ActionKind.BLOCKED, [],
                       "No in-scope Exchange server (Mailbox/Client Access, "
                       "Version 15.x) was found; nothing can be judged.")]
    decision = _decide(obs, scope)
    unreachable = [server.fqdn for server in scope if not server.reachable]
    if unreachable and not override_unreachable:
        would = ", ".join(item.kind for item in decision)
        return [action(
            ActionKind.BLOCKED, unreachable,
            f"{len(unreachable)} in-scope server(s) could not be asked ("
            + ", ".join(unreachable) + "); no org-wide change until they answer or an "
            f"operator overrides. Otherwise the decision would be: {would}.",
        )]
    return decision


def _decide(obs: OrgObs, scope: list[ServerObs]) -> list[Action]:
    """The actions in order, were the org not blocked by an unreachable server."""
    now = obs.checked_at
    broken, expiring = _backend(scope, now)
    auth = _auth(obs, scope, now)
    out: list[Action] = []
    if broken:
        out.append(action(
            ActionKind.REPAIR_BACKEND, [fqdn for fqdn, _ in broken],
            "Back end certificate broken ("
            + ", ".join(f"{fqdn}: {problem}" for fqdn, problem in broken)
            + "): new self-signed certificate, bind it to \"Exchange Back End\" https *:444:, "
            "iisreset /noforce.",
        ))
    replacing = any(item.kind in (ActionKind.REPLACE_NOW, ActionKind.PUBLISH_NEXT)
                    for item in auth)
    upload = None if replacing else _upload_hybrid_key(obs)
    if upload is not None:
        out.append(upload)
    out += auth
    if expiring:
        out.append(action(
            ActionKind.REPAIR_BACKEND, expiring,
            "Back end certificate expires within 30 days on " + ", ".join(expiring)
            + ": renew it the same way (new self-signed certificate, rebind, iisreset).",
        ))
    if not auth:
        cleanup = _cleanup(obs)
        if cleanup is not None:
            out.append(cleanup)
    if not out:
        out.append(action(ActionKind.NONE, [], "Auth Certificate and back end certificates are "
                                      "healthy; nothing to do."))
    return out


def _upload_hybrid_key(obs: OrgObs) -> Action | None:
    read = obs.hybrid_app
    if not obs.hybrid or read is None or read.keys is None:
        return None
    held = {key.thumbprint for key in read.keys}
    missing = [(which, thumbprint) for which, thumbprint in
               (("current", obs.auth.current), ("next", obs.auth.next))
               if thumbprint and thumbprint.upper() not in held]
    if not missing:
        return None
    what = " and ".join(f"the {which} Auth Certificate {short(t)}" for which, t in missing)
    return action(ActionKind.UPLOAD_HYBRID_KEY, [], f"The dedicated hybrid application lacks "
                  f"{what}: upload it (every other key kept).")


def _backend(
    scope: list[ServerObs], now: datetime
) -> tuple[list[tuple[str, BackendProblem]], list[str]]:
    broken: list[tuple[str, BackendProblem]] = []
    expiring: list[str] = []
    for server in scope:
        problem = backend_problem(server, now)
        if problem is not None and problem.broken:
            broken.append((server.fqdn, problem))
        elif problem == BackendProblem.EXPIRING:
            expiring.append(server.fqdn)
    return broken, expiring


def _writer(obs: OrgObs, scope: list[ServerObs]) -> ServerObs | None:
    if not obs.writer:
        return None
    wanted = obs.writer.lower()
    for server in scope:
        if wanted in (server.fqdn.lower(), server.name.lower()):
            return server
    return None


def _auth(obs: OrgObs, scope: list[ServerObs], now: datetime) -> list[Action]:
    """Rules 1-6 for the auth certificate."""
    current = cert_view(obs, obs.auth.current)
    nxt = cert_view(obs, obs.auth.next)
    if nxt is not None and current is not None and nxt.thumbprint == current.thumbprint:
        nxt = None
    everywhere = [server.fqdn for server in scope if server.reachable]
    writer = _writer(obs, scope)
    stage_on = [writer.fqdn] if writer is not None else everywhere

    # Rules 1 and 2: the current cert is dead.
    dead = _dead(current, now)
    if dead is not None:
        if nxt is not None and nxt.usable(now):
            return [action(
                ActionKind.PUBLISH_NEXT, everywhere,
                f"{dead}; the staged next {short(nxt.thumbprint)} is on every server: publish "
                "it now (faster than creating another).",
            )]
        why_not = "" if nxt is None else f" and the staged next {short(nxt.thumbprint)} " + (
            _why_unusable(nxt, now)
        )
        return [action(
            ActionKind.REPLACE_NOW, everywhere,
            f"{dead}{why_not}: emergency replacement (new cert on the writer, publish at once).",
        )]

    assert current is not None and current.facts is not None
    out: list[Action] = []
    # Rule 3: valid but missing on some servers; import, then go on as if present.
    if current.missing_on:
        out.append(action(
            ActionKind.IMPORT_CURRENT, current.missing_on,
            f"Current Auth Certificate {short(current.thumbprint)} is missing on "
            + ", ".join(current.missing_on)
            + ": export it with its private key from a server that has it and import it there.",
        ))
    follow = _stage(current, nxt, now, stage_on) or _replicate(obs, nxt, now, writer)
    if follow is None:
        follow = _publish(current, nxt, obs, now, everywhere)
    if follow is not None:
        out.append(follow)
    return out


def _dead(current: CertView | None, now: datetime) -> str | None:
    if current is None:
        return "AuthConfig names no current Auth Certificate"
    label = f"Current Auth Certificate {short(current.thumbprint)}"
    if current.facts is None or not current.present_on:
        return f"{label} is on no server"
    if current.expired(now):
        return f"{label} expired on {iso(current.facts.not_after)}"
    return None


def _why_unusable(nxt: CertView, now: datetime) -> str:
    if nxt.facts is None or not nxt.present_on:
        return "is on no server"
    if nxt.expired(now):
        return "is expired"
    return "is missing on " + ", ".join(nxt.missing_on)


def _stage(
    current: CertView, nxt: CertView | None, now: datetime, stage_on: list[str]
) -> Action | None:
    """Rule 4, plus replacing a staged next that could never work."""
    left = current.days_left(now)
    assert left is not None
    if nxt is not None and not nxt.valid(now):
        return action(
            ActionKind.STAGE_NEW, stage_on,
            f"The staged next Auth Certificate {short(nxt.thumbprint)} {_why_unusable(nxt, now)}"
            "; stage a new one before the servicelet publishes it.",
        )
    next_left = None if nxt is None else nxt.days_left(now)
    if left <= STAGE_CURRENT_DAYS and (next_left is None or next_left <= STAGE_NEXT_DAYS):
        about_next = (
            "no next certificate is staged" if nxt is None
            else f"the staged next {short(nxt.thumbprint)} has only {next_left} days left"
        )
        return action(
            ActionKind.STAGE_NEW, stage_on,
            f"Current Auth Certificate {short(current.thumbprint)} has {left} days left and "
            f"{about_next}: create and stage a successor on the writer.",
        )
    return None


def _replicate(
    obs: OrgObs, nxt: CertView | None, now: datetime, writer: ServerObs | None
) -> Action | None:
    """Rule 5: a valid staged next that has not reached every server."""
    if nxt is None or not nxt.valid(now) or not nxt.missing_on:
        return None
    assert nxt.facts is not None
    staged = nxt.facts.not_before
    sites = {server.fqdn: server.site for server in obs.servers}
    missing = list(nxt.missing_on)
    if (
        writer is not None
        and now - staged < REPLICATION_WAIT
        and all(sites.get(fqdn, "").lower() != writer.site.lower() for fqdn in missing)
    ):
        ready = iso(staged + REPLICATION_WAIT)
        return action(
            ActionKind.WAIT_REPLICATION, missing,
            f"Next Auth Certificate {short(nxt.thumbprint)} was staged less than 24 h ago "
            f"and the servers still missing it are all in another AD site than the writer; "
            f"cross-site replication can take a day. Import it if still missing at {ready}.",
        )
    return action(
        ActionKind.IMPORT_NEXT, missing,
        f"Staged next Auth Certificate {short(nxt.thumbprint)} is missing on "
        + ", ".join(missing) + ": export it from a server that has it and import it there.",
    )


def _publish(
    current: CertView, nxt: CertView | None, obs: OrgObs, now: datetime, everywhere: list[str]
) -> Action | None:
    """Rule 6: a usable next waits for its effective date, or is published when overdue."""
    if nxt is None or not nxt.usable(now):
        return None
    effective = obs.auth.next_effective
    label = f"Next Auth Certificate {short(nxt.thumbprint)}"
    if effective is None:
        return action(ActionKind.PUBLISH_NEXT, everywhere,
                      f"{label} is staged without an effective date, so the servicelet will "
                      "never publish it: publish it.")
    assert current.facts is not None
    if effective >= current.facts.not_after:
        return action(ActionKind.PUBLISH_NEXT, everywhere,
                      f"{label} becomes effective {iso(effective)}, after the current "
                      f"certificate expires ({iso(current.facts.not_after)}): publish it now.")
    if effective > now:
        return action(ActionKind.WAIT_FOR_PUBLISH, [],
                      f"{label} is on every server; the AuthAdmin servicelet publishes it "
                      f"after {iso(effective)}.")
    if now - effective > PUBLISH_GRACE:
        return action(ActionKind.PUBLISH_NEXT, everywhere,
                      f"{label} was due at {iso(effective)} (more than 12 h ago) and is still "
                      "not current: the servicelet seems stuck; publish it now.")
    return action(ActionKind.WAIT_FOR_PUBLISH, [],
                  f"{label} is due since {iso(effective)}; the AuthAdmin servicelet runs every "
                  f"12 h and should publish it by {iso(effective + PUBLISH_GRACE)}.")


def _cleanup(obs: OrgObs) -> Action | None:
    auth = obs.auth
    if not auth.previous or auth.next:
        return None
    previous = auth.previous.upper()
    if auth.current and previous == auth.current.upper():
        return None
    view = cert_view(obs, previous)
    assert view is not None
    return action(
        ActionKind.CLEANUP, view.present_on,
        f"Rotation complete but AuthConfig still names previous {short(previous)}: clear it and "
        "remove the old certificate from the servers (not before the current one has been "
        "current for 24 h).",
    )
