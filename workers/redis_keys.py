"""Every Redis key exauth writes, named in one place.

Each function builds one key and says what lives there, its Redis type and its expiry, so
a newcomer (or someone with `redis-cli` at 3 am) finds here what `exauth:...` holds. The
strings are part of the stored format: data written by an earlier release must still be
found after an upgrade, so a change here is a migration, and tests/test_redis_keys.py pins
every string.

Not here: RQ's own keys (`rq:queue:...`, `rq:job:...`), which RQ names from the queue names
in workers.jobs.queues and the job ids callers choose (workers.changes.approval.job_id). The
arguments are
used as given; the modules that own a key check their names (workers.changes.writer_lock,
workers.changes.operation,
workers.changes.approval, ...) before building it, as they did before.
"""

from __future__ import annotations

ROOT = "exauth:"

# The prefix of every operation document; workers.changes.operation's create script needs it to
# look up other ids of the org inside Lua (an id is appended there).
OPERATION_PREFIX = ROOT + "op:"


def writer_lock(name: str) -> str:
    """`exauth:lock:<org>`: the org's writer lock (workers.changes.writer_lock); a string, JSON
    {token, owner, acquired_at}, expiring after the holder's TTL (a change step:
    workers.changes.lock_keeper.STEP_LOCK_TTL, kept alive while the step runs). The cron
    leader uses the name `_cron` (no org's)."""
    return f"{ROOT}lock:{name}"


def lockless(op_id: str, step: int) -> str:
    """`exauth:lockless:<op id>:<step>`: when `exauth cron` first saw this running step
    with no writer lock on its org (workers.changes.interruption); a string (epoch
    seconds), expiring after workers.changes.interruption.SIGHTING_TTL_S."""
    return f"{ROOT}lockless:{op_id}:{step}"


def secret(op_id: str, name: str) -> str:
    """`exauth:secret:<op id>:<name>`: a secret an operation generated (the PFX password of
    an export/import); a string, expiring after workers.changes.execute.SECRET_TTL_S (7 days), and
    deleted when the operation forgets its secrets."""
    return f"{ROOT}secret:{op_id}:{name}"


def secrets_of(op_id: str) -> str:
    """SCAN MATCH pattern of every `secret` of one operation."""
    return secret(op_id, "*")


def cron_slot(org: str, slot_id: str) -> str:
    """`exauth:cron:slot:<org>:<slot id>`: claimed (SET NX) by the cron scheduler before it
    enqueues the job due at that time (`YYYYMMDDTHHMMZ`), so a slot runs once; a string "1",
    expiring after workers.jobs.cron.SLOT_TTL (3 days)."""
    return f"{ROOT}cron:slot:{org}:{slot_id}"


def operation(op_id: str) -> str:
    """`exauth:op:<id>`: one operation document (workers.changes.operation); a string, JSON with a
    `version` for compare-and-set; no expiry (closed ones stay as the record)."""
    return OPERATION_PREFIX + op_id


def org_operations(org: str) -> str:
    """`exauth:ops:<org>`: ids of the org's open operations (at most one); a set, no
    expiry; kept by workers.changes.operation's Lua scripts."""
    return f"{ROOT}ops:{org}"


def open_operations() -> str:
    """`exauth:open_ops`: ids of every open operation; a set, no expiry."""
    return f"{ROOT}open_ops"


def resume_schedule() -> str:
    """`exauth:resume`: operations waiting to resume, scored by `resume_at` (epoch
    seconds); a sorted set, no expiry."""
    return f"{ROOT}resume"


def approval(op_id: str, step: int) -> str:
    """`exauth:approval:<op id>:<step>`: one approval round of one step (step from 0:
    state, approver, request_id, expires_ms, job_id ...); a hash, no Redis expiry (the
    request's own `expires_ms` says when it lapses)."""
    return f"{ROOT}approval:{op_id}:{step}"


def _warn(org: str) -> str:
    return f"{ROOT}warn:{org}:"


def warning_state(org: str, subject: str) -> str:
    """`exauth:warn:<org>:s:<subject key>`: what was said about one warning subject (band,
    severity, Slack message, snooze, failure count); a hash, expiring after
    workers.warnings.warning_state.STATE_TTL (35 days), refreshed by each sweep that sees it."""
    return f"{_warn(org)}s:{subject}"


def warning_index(org: str) -> str:
    """`exauth:warn:<org>:index`: the subject keys of the org's `warning_state` hashes; a
    set, expiring after STATE_TTL (35 days), refreshed by sweeps."""
    return f"{_warn(org)}index"


def warning_claim(org: str, subject: str) -> str:
    """`exauth:warn:<org>:claim:<subject key>`: taken by the sweep posting that notice, so
    two sweeps never post it twice; a string (the notice kind), expiring after
    workers.warnings.warning_state.CLAIM_TTL (15 minutes), deleted once posted."""
    return f"{_warn(org)}claim:{subject}"


def warning_clock(org: str) -> str:
    """`exauth:warn:<org>:clock`: the org's clock minus ours at the last sweep, in seconds;
    a string, expiring after STATE_TTL (35 days)."""
    return f"{_warn(org)}clock"


def audit_stream() -> str:
    """`exauth:audit`: the audit log of every org (workers.audit); a stream, no expiry."""
    return f"{ROOT}audit"


def org_audit_stream(org: str) -> str:
    """`exauth:audit:<org>`: the same entries for one org, with the same ids; a stream, no
    expiry."""
    return f"{audit_stream()}:{org}"


def slack_delivery(trigger_id: str) -> str:
    """`exauth:dedupe:<trigger id>`: a slash command delivery already handled
    (bot.listeners.after_ack
    drops a repeat); a string "1", expiring after bot.listeners.after_ack.DEDUPE_TTL_SECONDS (1
    h)."""
    return f"{ROOT}dedupe:{trigger_id}"


def rehearsal(org: str, kind: str) -> str:
    """`exauth:rehearsal:<org>:<operation kind>`: the last rehearsal of that kind of change
    on a replica of the org (workers.rehearsal.rehearsal_record: when, ok, what went wrong);
    a string, JSON, expiring after workers.rehearsal.rehearsal_record.RECORD_TTL (7 days)."""
    return f"{ROOT}rehearsal:{org}:{kind}"


def last_status(org: str) -> str:
    """`exauth:status:<org>`: the org's last check (workers.status.last_check): the last
    status JSON read from Exchange and when, and the last attempt's outcome (ok/failed,
    one line of why); a hash, no expiry (an org that stopped being checked still shows its
    last known state, dated). Read by `/metrics` and the Home tab instead of Exchange."""
    return f"{ROOT}status:{org}"


def job_durations(kind: str) -> str:
    """`exauth:metrics:jobs:<kind>`: a histogram of job run times of one job kind, summed
    over every worker (workers.tallies): cumulative bucket counts `<outcome>:<le>`, plus
    `<outcome>:count` and `<outcome>:sum`; a hash, no expiry (Prometheus counters only
    grow)."""
    return f"{ROOT}metrics:jobs:{kind}"


def job_duration_kinds() -> str:
    """`exauth:metrics:job_kinds`: the kinds that have a `job_durations` hash; a set."""
    return f"{ROOT}metrics:job_kinds"


def slack_errors() -> str:
    """`exauth:metrics:slack_errors`: Slack Web API calls that failed, counted by every
    process (workers.tallies); a hash `<method>|<error>` -> count, no expiry."""
    return f"{ROOT}metrics:slack_errors"


def home_viewers() -> str:
    """`exauth:home:viewers`: users who opened the app's Home tab, scored by when (epoch
    seconds); a sorted set, trimmed to HOME_VIEWER_DAYS by bot.home. Their Home tab is
    published again when an org's stored status changes."""
    return f"{ROOT}home:viewers"
