"""Running one step of an operation against Exchange, in the worker.

A state-changing step runs only after its approval was won (`approval.decide`), claimed once
(`approval.claim_for_run`), under the org's writer lock, and after a fresh read of Exchange
shows the same AuthConfig thumbprints and relevant certificate facts as when its approval
was requested (the step's `fingerprint`). Anything else is refused with one line.

Our own effects are recognised before anything is re-run: a certificate this operation
created is recorded (`operation.record`) before it is used, and a retry that finds it
recorded - or finds a new Auth certificate in the writer's store that was not there when
the operation started (a worker killed between create and record) - adopts it instead of
creating another. Steps whose effect is visible in the status (staged, published, imported,
bound) are marked done instead of being run twice.

Parameters go to PowerShell only as bound parameters; placeholders are filled here, at run
time: the recorded thumbprint, a recomputed effective date, the export password (a
per-operation secret that lives only in Redis under a TTL) and the exported file data
(exported again right before each import, kept in memory only).
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from config.errors import ExauthError
from config.schema import OrgSettings
from workers import audit, redis_keys
from workers.changes import approval, writer_lock
from workers.changes.operation import Operation, Step, step_ref
from workers.changes.plan import (
    EXPORTED_FILE_DATA,
    NEW_THUMBPRINT,
    NOT_BEFORE_SLACK,
    effective_date,
)
from workers.changes.step_kind import CREATES_CERTIFICATE, StepKind
from workers.clock import SYSTEM_CLOCK, Clock
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import ExchangeError
from workers.exchange.parsing import (
    der_from_exchange_certificate,
    facts_from_exchange_certificate,
    prop,
)
from workers.exchange.session import Secret
from workers.hybrid_app.graph_client import GraphClient
from workers.hybrid_app.key_updates import remove_stale, upload
from workers.jobs.queues import CHANGE_TIMEOUT
from workers.status.collect import collect, org_clock
from workers.status.findings import is_auth_subject, iso, short
from workers.status.observation import OrgObs
from workers.status.report import build_status, checked_at
from workers.status.report_model import AuthCert, AuthStatus, BackendProblem, OrgStatus

log = logging.getLogger(__name__)

SECRET_TTL_S = 7 * 24 * 3600  # an import waits for approvals; the password dies with the op
NEW_THUMBPRINT_KEY = "new_thumbprint"
PUBLISHED_AT_KEY = "published_at"
EXCHANGE_VERBS = ("ExchangeCertificate", "AuthConfig", "ExchangeServer", "HybridConfiguration")
WORLD_CHANGED = "world changed since approval"
CHECK_EVERY = timedelta(hours=4)  # replication checks (cross-site can take a day)

# Two clocks. What Exchange will do (expiry, effective dates, publication, when a waiting
# operation is due) is judged on the org's own clock: a fresh read's `checked_at`
# (workers.status.collect asks the writer; report.checked_at) and `org_now`; `resume_at` is kept
# on it.
# This process's clock, the `clock` passed in (workers.clock), keeps the books (timestamps
# of steps and operations).


def org_now(org: OrgSettings, client: ExchangeClient | None = None, *,
            clock: Clock = SYSTEM_CLOCK) -> datetime:
    """The org's clock now (its writer's), else ours: a lab's clock moved ahead by days is
    followed by every exauth process, so an operation waiting on it is due when it says."""
    return org_clock(client or ExchangeClient(org), org.writer) or clock.now()


class StepRefused(ExauthError):
    """The step must not run; the message is the one line the channel sees."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one step: done, skipped, failed, or wait (until resume_at)."""

    state: str
    detail: str
    resume_at: datetime | None = None


# --- reading the org --------------------------------------------------------------------


def observe(org: OrgSettings, client: ExchangeClient, *, clock: Clock = SYSTEM_CLOCK
            ) -> tuple[OrgObs, OrgStatus]:
    """A fresh read of the org (observation and status), on the org's clock (`clock`
    when the writer cannot say)."""
    obs = collect(org, client=client, clock=clock)
    return obs, build_status(obs)


def _thumb(cert: AuthCert | None) -> str | None:
    return cert.thumbprint if cert is not None else None


def fingerprint(status: OrgStatus, op: Operation) -> dict[str, Any]:
    """The facts an approval is given on (see `facts`) for operation `op`."""
    return facts(status, op.kind, op.targets)


def facts(status: OrgStatus, kind: str, targets: list[str]) -> dict[str, Any]:
    """AuthConfig thumbprints plus, per operation kind, the state of the certificate or
    binding the operation is about on each of its target servers."""
    auth = status.auth
    out: dict[str, Any] = {
        "current": _thumb(auth.current),
        "next": _thumb(auth.next),
        "previous": _thumb(auth.previous),
    }
    if kind in ("import_current", "import_next"):
        imported = _imported(kind, auth)
        present = set(imported.present_on if imported else [])
        out["present"] = {server: server in present for server in targets}
    if kind == "repair_backend":
        out["backend"] = {server: _binding(status, server) for server in targets}
    return out


def _binding(status: OrgStatus, server: str) -> list[str | None]:
    """[thumbprint, problem] of the back end binding of `server`, as the fingerprint stores it."""
    entry = status.backend_of(server)
    if entry is None:
        return [None, None]
    return [entry.thumbprint, entry.problem.value if entry.problem else None]


def _imported(kind: str, auth: AuthStatus) -> AuthCert | None:
    """The AuthConfig certificate an import operation (of `kind`) is about: current or
    next."""
    cert: AuthCert | None = getattr(auth, kind.removeprefix("import_"))
    return cert


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Readable differences between two fingerprints."""
    out = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) or isinstance(after, dict):
            before, after = before or {}, after or {}
            out += [f"{key} on {server}: {before.get(server)} -> {after.get(server)}"
                    for server in sorted(set(before) | set(after))
                    if before.get(server) != after.get(server)]
        else:
            out.append(f"{key}: {_label(before)} -> {_label(after)}")
    return out


def _label(value: Any) -> str:
    return short(value) if isinstance(value, str) and len(value) == 40 else str(value)


# --- secrets ------------------------------------------------------------------------------


def secret_key(op_id: str, name: str) -> str:
    return redis_keys.secret(op_id, name)


def secret(conn: redis.Redis, op_id: str, name: str) -> str:
    """The operation's secret `name`, generated on first use; kept only in Redis (TTL)."""
    key = secret_key(op_id, name)
    conn.set(key, secrets.token_urlsafe(24), nx=True, ex=SECRET_TTL_S)
    value = conn.get(key)
    if value is None:
        raise StepRefused(f"the secret {name} of operation {op_id} vanished; start again")
    return value.decode() if isinstance(value, bytes) else str(value)


def forget_secrets(conn: redis.Redis, op_id: str) -> None:
    for key in conn.scan_iter(match=redis_keys.secrets_of(op_id)):
        conn.delete(key)


# --- parameters ---------------------------------------------------------------------------


def new_cert_key(op: Operation, server: str) -> str:
    """Where the thumbprint created for `server` is recorded."""
    if op.kind == "repair_backend":
        return f"backend_cert:{server.lower()}"
    return NEW_THUMBPRINT_KEY


def recorded_thumbprint(op: Operation, step: Step) -> str | None:
    """The certificate recorded for this step: the one it created, or the one it uses."""
    server = _cert_server(step) if step.kind in CREATES_CERTIFICATE else step.server
    return op.recorded.get(new_cert_key(op, server))


def _cert_server(step: Step) -> str:
    """The server whose store a New-ExchangeCertificate step creates in (its -Server; it may
    run on another server's endpoint)."""
    return str(step.param("Server") or step.server)


def resolve(
    conn: redis.Redis,
    op: Operation,
    step: Step,
    status: OrgStatus,
    client: ExchangeClient,
) -> list[tuple[str | None, Any]]:
    """Bound parameters with every placeholder filled in ("" names become positional)."""
    out: list[tuple[str | None, Any]] = []
    for name, value in step.param_pairs():
        if value == NEW_THUMBPRINT:
            value = recorded_thumbprint(op, step)
            if not value:
                raise StepRefused("no new certificate has been recorded for this step yet")
        elif name == "NewCertificateEffectiveDate":
            value = iso(_effective(op, status))
        elif name in ("NotBefore", "NotAfter"):
            value = iso(_validity(step, status)[name == "NotAfter"])
        elif isinstance(value, str) and value.startswith("<secret:") and value.endswith(">"):
            value = Secret(secret(conn, op.id, value[len("<secret:"):-1]))
        elif value == EXPORTED_FILE_DATA:
            value = _export(conn, op, status, client)
        out.append((name or None, value))
    return out


def _validity(step: Step, status: OrgStatus) -> tuple[datetime, datetime]:
    """A certificate's NotBefore/NotAfter when its step runs: the planned lifetime, from
    the org's time now (a little in the past, so it is valid on every server at once)."""
    planned = (datetime.fromisoformat(str(step.param("NotAfter")).replace("Z", "+00:00"))
               - datetime.fromisoformat(str(step.param("NotBefore")).replace("Z", "+00:00")))
    start = checked_at(status) - NOT_BEFORE_SLACK
    return start, start + planned


def _effective(op: Operation, status: OrgStatus) -> datetime:
    """Recomputed when the step runs: it must lie in the future then (DOMAIN 5.3, 6), on
    the clock Exchange will judge it by."""
    moment = checked_at(status)
    if op.kind != "stage_new":
        return moment + timedelta(minutes=1)
    current = status.auth.current
    when = effective_date(current.expires if current else None, moment)
    if when is None:
        raise StepRefused("the current certificate has 61 h or less left: too late to stage; "
                          "start the emergency replacement instead (`/exauth fix`)")
    return when


def _export(
    conn: redis.Redis, op: Operation, status: OrgStatus, client: ExchangeClient
) -> bytes:
    """The PFX of the certificate being imported, exported again just now (memory only)."""
    export = next(s for s in op.steps if s.kind is StepKind.EXPORT_CERT)
    output = invoke(client, export, resolve(conn, op, export, status, client))
    for item in output:
        data = _file_data(item)
        if data:
            return data
    raise StepRefused(f"{export.server}: Export-ExchangeCertificate returned no file data")


def _file_data(item: Any) -> bytes | None:
    value = prop(item, "FileData") if not isinstance(item, bytes | str) else item
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value:
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return None
    return None


# --- calling Exchange ---------------------------------------------------------------------


def invoke(
    client: ExchangeClient, step: Step, params: list[tuple[str | None, Any]]
) -> list[Any]:
    """One cmdlet with bound parameters on the step's server and endpoint.

    An Exchange cmdlet that the plan sends to the host endpoint (the server's own Exchange
    endpoint is broken) runs there after loading the Exchange snap-in.
    """
    bound: Any = params  # exchange.Params types names as str, but a None name is positional
    # Secrets in the bound parameters (pypsrp logs them at DEBUG) are masked by the
    # process's log filter (workers.log_filter).
    if step.endpoint == "exchange":
        return client.exchange(step.server, step.cmdlet, bound)
    session = client.session(step.server, "host")
    if any(verb in step.cmdlet for verb in EXCHANGE_VERBS):
        session.ensure_snapin()
    return session.run(step.cmdlet, bound)


def _created_thumbprint(output: list[Any]) -> str:
    for item in output:
        try:
            return facts_from_exchange_certificate(item).thumbprint
        except (ValueError, TypeError, AttributeError):
            continue
    raise StepRefused("the step returned no certificate")


# --- what is already done -----------------------------------------------------------------


def adoptable(op: Operation, step: Step, obs: OrgObs) -> str | None:
    """A certificate this operation created but did not record (killed in between)."""
    target = _cert_server(step).lower()
    before = set(op.stores_before.get(target) or [])
    auth = op.kind != "repair_backend"
    for server in obs.servers:
        if server.fqdn.lower() != target or server.certificates is None:
            continue
        found = [c.thumbprint for c in server.certificates
                 if c.thumbprint not in before and is_auth_subject(c.subject) == auth]
        if len(found) == 1:
            return found[0]
    return None


def already_done(op: Operation, step: Step, status: OrgStatus) -> str | None:
    """Why running this step again would be pointless (its effect is there), or None."""
    auth = status.auth
    kind = step.kind
    new = recorded_thumbprint(op, step) if kind is not StepKind.REMOVE_OLD_AUTH_CERT else None
    if kind is StepKind.STAGE_NEXT and new in (_thumb(auth.next), _thumb(auth.current)):
        return f"{short(new)} is already staged"
    if kind is StepKind.PUBLISH_NEXT and new and _thumb(auth.current) == new:
        return f"{short(new)} is already current"
    if kind is StepKind.CLEAR_PREVIOUS and not auth.previous:
        return "no previous certificate is set"
    if kind is StepKind.IMPORT_CERT:
        which = _imported(op.kind, auth)
        if which is not None and str(step.param("Server")) in which.present_on:
            return f"{step.param('Server')} already has {short(which.thumbprint)}"
    if kind is StepKind.REMOVE_OLD_AUTH_CERT:
        thumbprint = str(step.param("Thumbprint") or "")
        holders = _holders(status, thumbprint)
        if holders is not None and str(step.param("Server")) not in holders:
            return f"{short(thumbprint)} is no longer on {step.param('Server')}"
    if kind is StepKind.UPLOAD_HYBRID_KEY:
        wanted = new if step.param("Add") == NEW_THUMBPRINT else step.param("Add")
        section = status.hybrid_app
        if wanted and section is not None and section.holds(str(wanted)):
            return f"{short(str(wanted))} is already on the hybrid application"
    if kind in (StepKind.BIND_BACKEND_CERT, StepKind.REMOVE_BACKEND_BINDING):
        backend = status.backend_of(step.server)
        thumbprint, problem = (backend.thumbprint, backend.problem) if backend else (None, None)
        if new and (thumbprint or "").upper() == new.upper():
            return f"the back end of {step.server} is already bound to {short(new)}"
        if kind is StepKind.REMOVE_BACKEND_BINDING and problem == BackendProblem.NO_BINDING:
            return f"{step.server} has no https *:444: binding to remove"
    return None


def _holders(status: OrgStatus, thumbprint: str) -> list[str] | None:
    for cert in status.auth.named():
        if cert.thumbprint == thumbprint:
            return list(cert.present_on)
    return None


# --- read-only steps (run by themselves, no approval) ------------------------------------


def read_step(
    conn: redis.Redis,
    op: Operation,
    step: Step,
    status: OrgStatus,
    client: ExchangeClient,
) -> Outcome:
    """Verification, watching and waiting steps: judged from the fresh status when it says
    what the step asks, otherwise the cmdlet is run (it only reads)."""
    auth = status.auth
    current, nxt = _thumb(auth.current), _thumb(auth.next)
    new = op.recorded.get(NEW_THUMBPRINT_KEY)
    moment = checked_at(status)
    kind = step.kind
    if kind is StepKind.REREAD_AUTH_CONFIG:
        return _reread(op, auth, moment)
    if kind is StepKind.VERIFY_NEW_CERT_REACHED:
        holders = _holders(status, new or "") or []
        if step.server in holders:
            return Outcome("done", f"{short(new or '')} is on {step.server}")
        return Outcome("wait", f"{short(new or '')} has not reached {step.server} yet; "
                               "checking again in 4 hours", moment + CHECK_EVERY)
    if kind is StepKind.WATCH_PUBLICATION:
        if new and current == new:
            op.record(conn, PUBLISHED_AT_KEY, iso(moment))
            return Outcome("done", f"{short(new)} is the current Auth Certificate")
        effective = auth.next.effective if auth.next is not None and nxt == new else None
        due = datetime.fromisoformat(effective) if effective else moment
        resume = max(due + timedelta(minutes=5), moment + timedelta(hours=3))
        return Outcome("wait", f"waiting for the AuthAdmin servicelet to publish "
                               f"{short(new or '')} (effective {effective or 'now'})", resume)
    if kind is StepKind.WATCH_CURRENT_SPREAD:
        missing = auth.current.missing_on if auth.current is not None else []
        tail = f"; still missing on {', '.join(missing)}" if missing else ""
        return Outcome("done", f"{short(current or '')} is current{tail}. Publication can take "
                               "up to an hour to reach all servers.")
    if kind is StepKind.HYBRID_WIZARD_REMINDER:
        return Outcome("done", step.note or "Re-run the Hybrid Configuration Wizard.")
    if kind is StepKind.REREAD_IMPORT_SOURCE:
        which = _imported(op.kind, auth)
        planned = step.param("Thumbprint")
        if _thumb(which) != planned:
            return Outcome("failed", f"{WORLD_CHANGED}: AuthConfig no longer names {planned}")
        if which is None or step.server not in which.present_on:
            return Outcome("failed", f"{WORLD_CHANGED}: {step.server} no longer has it")
        return Outcome("done", f"{short(planned)} is still in AuthConfig and on {step.server}")
    if kind is StepKind.VERIFY_IMPORTED:
        which = _imported(op.kind, auth)
        if which is not None and step.server in which.present_on:
            return Outcome("done", f"{step.server} has it")
        return Outcome("failed", f"{step.server} still lacks it after the import")
    if kind is StepKind.VERIFY_BACKEND_BINDING:
        thumbprint, problem = _binding(status, step.server)
        if problem in (None, BackendProblem.EXPIRING):
            return Outcome("done", f"{step.server}: *:444: bound to "
                                   f"{short(thumbprint or '')}")
        return Outcome("failed", f"{step.server}: back end still {problem}")
    if kind is StepKind.REREAD_BACKEND_BINDING:
        return Outcome("done", "read")
    if kind is StepKind.CHECK_REPLICATION:
        return Outcome("done", "checked")
    try:
        invoke(client, step, resolve(conn, op, step, status, client))
    except ExchangeError as exc:
        return Outcome("failed", exc.line())
    return Outcome("done", "ok")


def _reread(op: Operation, auth: AuthStatus, moment: datetime) -> Outcome:
    current, nxt = auth.current, auth.next
    ours = op.recorded.get(NEW_THUMBPRINT_KEY)
    if op.kind == "stage_new" and nxt and nxt.thumbprint != ours and _usable(nxt, moment):
        return Outcome("skipped", f"a usable next certificate {short(nxt.thumbprint)} is "
                                  "already staged; nothing to do")
    if op.kind == "replace_now" and current and not ours and _usable(current, moment):
        return Outcome("skipped", f"the current certificate {short(current.thumbprint)} is "
                                  "usable again; nothing to do")
    return Outcome("done", f"current {short(_thumb(current) or '-')}, next "
                           f"{short(_thumb(nxt) or '-')}")


def _usable(cert: AuthCert, moment: datetime) -> bool:
    expires = cert.expires
    return (bool(cert.present_on) and not cert.missing_on
            and expires is not None and expires > moment)


# --- one approved state-changing step ----------------------------------------------------


def run_step(
    conn: redis.Redis,
    org: OrgSettings,
    op: Operation,
    index: int,
    request_id: str,
    *,
    client: ExchangeClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Run one approved step (or the batch its approval covers) exactly once; `op`, loaded
    by the job, is changed (and saved) as the step goes.

    Returns {"op_id", "step", "state", "detail"} of the approved step."""
    record = approval.Approval.fetch(conn, op.id, index)
    if record is None or record.request_id != request_id:
        return _result(op.id, index, "skipped", "this approval is not the step's current one")
    state_before = record.state
    if not record.claim_for_run(conn):
        return _result(op.id, index, "skipped", f"step already {state_before}")
    client = client or ExchangeClient(org)
    actor = str(record.decided_by)
    batch = list(op.step(index).batch or [index])
    results: list[dict[str, Any]] = []
    try:
        with writer_lock.held(conn, org.name, f"{op.id}/{index}", CHANGE_TIMEOUT):
            seen: dict[str, Any] = {}
            for member in batch:
                op.set_step(conn, member, "running", now=clock.now())
                try:
                    outcome = _run_claimed(conn, org, op, member, client, seen, clock)
                except Exception as exc:
                    if not _fatal(op.step(member)):
                        outcome = Outcome("skipped", f"failed (not fatal): {error_line(exc)}")
                    else:
                        raise
                results.append(finish_step(conn, org, op, member, outcome, actor=actor,
                                           clock=clock))
    except Exception as exc:  # one line for the channel, never a traceback
        failed = next(m for m in batch if m not in {r["step"] for r in results})
        results.append(finish_step(conn, org, op, failed, Outcome("failed", error_line(exc)),
                                   actor=actor, clock=clock))
    final = "failed" if any(r["state"] == "failed" for r in results) else "done"
    record.finish(conn, final, detail=results[-1]["detail"])
    if len(results) == 1:
        return results[0]
    lines = "; ".join(f"{r['step']}: {r['detail']}" for r in results)
    return _result(op.id, index, final, lines)


def _fatal(step: Step) -> bool:
    """A pool recycle that fails is reported, not fatal (DOMAIN 6)."""
    return step.kind is not StepKind.RECYCLE_APP_POOL


def error_line(exc: BaseException) -> str:
    """One scrubbed line for the channel and the audit log, never a traceback."""
    if isinstance(exc, ExchangeError):
        return exc.line()
    text = " ".join(str(exc).split())
    return audit.scrub_text(text[:400]) if text else type(exc).__name__


def _run_claimed(
    conn: redis.Redis, org: OrgSettings, op: Operation, index: int, client: ExchangeClient,
    seen: dict[str, Any], clock: Clock,
) -> Outcome:
    """One claimed step; `seen` keeps the fresh read for the later members of a batch
    (approved together on that same read)."""
    step = op.step(index)
    first = "status" not in seen
    if first:
        seen["obs"], seen["status"] = observe(org, client, clock=clock)
    obs, status = seen["obs"], seen["status"]
    done = own_effect(conn, op, step, obs, status, clock=clock)
    if done is not None:
        return done
    changed = differences(step.fingerprint or {}, fingerprint(status, op))
    if first and changed:
        raise StepRefused(f"{WORLD_CHANGED}: " + "; ".join(changed))
    if step.kind in GRAPH_STEPS:
        return _graph_step(org, op, step, status, client)
    output = invoke(client, step, resolve(conn, op, step, status, client))
    if step.kind in CREATES_CERTIFICATE:
        created = _created_thumbprint(output)
        _before_record(op.id, index)
        kept = op.record(conn, new_cert_key(op, _cert_server(step)), created, now=clock.now())
        return Outcome("done", f"created {created}" + (
            "" if kept == created else f"; {short(kept)} was recorded first and is used"))
    return Outcome("done", "ok")


# --- the dedicated hybrid application (Microsoft Graph) ----------------------------------

GRAPH_STEPS = frozenset({StepKind.UPLOAD_HYBRID_KEY, StepKind.REMOVE_STALE_HYBRID_KEYS})


def _graph_step(org: OrgSettings, op: Operation, step: Step, status: OrgStatus,
                client: ExchangeClient) -> Outcome:
    """Upload a certificate's key, or remove stale keys: each reads the keys fresh just
    before its PATCH and checks a fresh read after it (workers.hybrid_app.key_updates)."""
    settings = org.hybrid_app
    if settings is None:
        raise StepRefused("[org.hybrid_app] is no longer configured; nothing was sent to Graph")
    with GraphClient(settings) as graph:
        if step.kind is StepKind.UPLOAD_HYBRID_KEY:
            thumbprint = _upload_thumbprint(op, step)
            return Outcome("done", upload(graph, _certificate_der(client, step.server,
                                                                   thumbprint)))
        keep = [cert.thumbprint for cert in status.auth.named()]
        if not keep:
            raise StepRefused("AuthConfig names no certificate; no key is removed")
        return Outcome("done", remove_stale(graph, keep))


def _upload_thumbprint(op: Operation, step: Step) -> str:
    value = step.param("Add")
    if value == NEW_THUMBPRINT:
        value = recorded_thumbprint(op, step)
        if not value:
            raise StepRefused("no new certificate has been recorded for this step yet")
    return str(value)


def _certificate_der(client: ExchangeClient, server: str, thumbprint: str) -> bytes:
    """The certificate itself (its public part) from the server's Exchange store."""
    found = client.exchange(server, "Get-ExchangeCertificate",
                            [("Server", server), ("Thumbprint", thumbprint)],
                            select=("RawData", "Thumbprint"))
    for item in found:
        try:
            return der_from_exchange_certificate(item)
        except ValueError:
            continue
    raise StepRefused(f"{short(thumbprint)} is not in the store of {server}")


def _before_record(op_id: str, index: int) -> None:
    """The moment between creating a certificate and recording it (tests kill here)."""


def own_effect(
    conn: redis.Redis, op: Operation, step: Step, obs: OrgObs,
    status: OrgStatus, *, clock: Clock = SYSTEM_CLOCK,
) -> Outcome | None:
    """Done, when this step's effect is already there (recorded, adoptable or visible in the
    status); None when it still has to run. Shared by a run and the recovery path."""
    if step.kind in CREATES_CERTIFICATE:
        recorded = recorded_thumbprint(op, step)
        if recorded:
            return Outcome("done", f"reused {recorded}, recorded by an earlier attempt")
        found = adoptable(op, step, obs)
        if found:
            kept = op.record(conn, new_cert_key(op, _cert_server(step)), found,
                             now=clock.now())
            return Outcome("done", f"adopted {kept}, created by an interrupted attempt")
        return None
    why = already_done(op, step, status)
    return Outcome("done", f"already done: {why}") if why else None


def finish_step(
    conn: redis.Redis, org: OrgSettings, op: Operation, index: int, outcome: Outcome, *,
    actor: str, clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Write the outcome to the operation and the audit log; a failure closes the operation
    (in the same write)."""
    state = outcome.state
    closed: list[bool] = []

    def mutate(draft: Operation) -> None:
        closed.clear()
        draft.mark_step(index, state, outcome=outcome.detail, now=clock.now())
        if state == "failed" and draft.is_open:
            draft.end("failed", now=clock.now())
            closed.append(True)

    op.change(conn, mutate, now=clock.now())
    step = op.step(index)
    audit.record(conn, org=org.name, actor=actor, action=f"step:{step.cmdlet}",
                 target=f"{step_ref(op.id, index)} {step.server}", outcome=state,
                 detail={"title": step.title, "detail": outcome.detail})
    if closed:
        forget_secrets(conn, op.id)
        audit.record(conn, org=org.name, actor="exauth", action="operation.close",
                     target=op.id, outcome="failed", detail={"reason": outcome.detail})
    return _result(op.id, index, state, outcome.detail)


def _result(op_id: str, index: int, state: str, detail: str) -> dict[str, Any]:
    return {"op_id": op_id, "step": index, "state": state, "detail": detail}
