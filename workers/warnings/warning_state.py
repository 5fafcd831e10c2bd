"""What was already said about each warning, kept in Redis so sweeps never repeat themselves.

Per org and subject key (workers.warnings.rules) one small hash, `exauth:warn:<org>:s:<key>`:
band, severity, news, title, posted_on (UTC date), the Slack message (channel, ts),
snooze_until/snooze_band/snooze_severity/snoozed_by, and for unreachable servers the
consecutive failure count with the sweep run that last counted (so an RQ retry of the
same sweep does not count twice). A set `exauth:warn:<org>:index` lists the keys, so one
org's snapshot is one SMEMBERS and one pipelined round trip, never a SCAN.

Every key expires (`STATE_TTL`, refreshed by each sweep that still sees the subject), so
state of certificates that are simply gone - an org removed from the config, a server
decommissioned - disappears by itself. A short-lived claim key per subject,
`exauth:warn:<org>:claim:<key>`, is taken by the sweep for each notice it hands to Slack
and dropped once posted (or failed): two sweeps of one org running at once cannot both
post the same notice, and a worker that dies mid-way frees it within `CLAIM_TTL`.
`exauth:warn:<org>:clock` keeps how far the org's clock was from ours at the last sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from workers import redis_keys
from workers.redis_scripts import LuaScript
from workers.warnings.rules import Notice, WarnState, utc_date

STATE_TTL = timedelta(days=35)  # longer than the gap between two bands (60 -> 30 days)
CLAIM_TTL = timedelta(minutes=15)  # a sweep job plus its Slack callback, with margin
SNOOZE = timedelta(days=7)

_COUNT_FAILURE = LuaScript("""
if redis.call('HGET', KEYS[1], 'fail_run') ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'fail_run', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return tonumber(redis.call('HGET', KEYS[1], 'failures'))
""")

# Snooze only a warning that exists and was posted; record the band/severity it was
# snoozed at, so decide() can lift it when things get worse.
_SNOOZE = LuaScript("""
if redis.call('HEXISTS', KEYS[1], 'posted_on') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'snooze_until', ARGV[1], 'snoozed_by', ARGV[2],
           'snooze_band', redis.call('HGET', KEYS[1], 'band') or '',
           'snooze_severity', redis.call('HGET', KEYS[1], 'severity') or '')
return 1
""")


def state_key(org: str, key: str) -> str:
    return redis_keys.warning_state(_org(org), key)


def index_key(org: str) -> str:
    return redis_keys.warning_index(_org(org))


def claim_key(org: str, key: str) -> str:
    return redis_keys.warning_claim(_org(org), key)


def clock_key(org: str) -> str:
    return redis_keys.warning_clock(_org(org))


def note_clock(conn: redis.Redis, org: str, skew: timedelta) -> None:
    """Remember how far the org's clock is from ours (org minus ours), as a sweep saw it.

    Sweeps count bands, repeats and snoozes on the org's clock; a snooze is set in the bot,
    which never asks Exchange, so it learns the org's time from here (`on_org_clock`)."""
    conn.set(clock_key(org), str(skew.total_seconds()), px=_ms(STATE_TTL))


def on_org_clock(conn: redis.Redis, org: str, now: datetime) -> datetime:
    """Our `now` on the org's clock, by the last sweep's reading (as is when none)."""
    raw = conn.get(clock_key(org))
    try:
        return now + timedelta(seconds=float(_text(raw))) if raw is not None else now
    except ValueError:
        return now


def snapshot(conn: redis.Redis, org: str) -> dict[str, WarnState]:
    """Everything known about one org's warnings; index entries whose state expired are
    dropped from the index on the way."""
    keys = sorted(_text(k) for k in conn.smembers(index_key(org)))
    if not keys:
        return {}
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(state_key(org, key))
        rows = pipe.execute()
    out: dict[str, WarnState] = {}
    gone: list[str] = []
    for key, raw in zip(keys, rows, strict=True):
        if raw:
            out[key] = _state({_text(k): _text(v) for k, v in raw.items()})
        else:
            gone.append(key)
    if gone:
        conn.srem(index_key(org), *gone)
    return out


def get(conn: redis.Redis, org: str, key: str) -> WarnState | None:
    raw = conn.hgetall(state_key(org, key))
    return _state({_text(k): _text(v) for k, v in raw.items()}) if raw else None


def count_failures(conn: redis.Redis, org: str, servers: Iterable[str], run_id: str) -> dict[
        str, int]:
    """Count one more failed sweep for each server (once per `run_id`); returns the counts."""
    ttl = _ms(STATE_TTL)
    counts: dict[str, int] = {}
    for server in servers:
        key = f"unreachable:{server}"
        counts[server] = int(_COUNT_FAILURE(conn, [state_key(org, key), index_key(org)],
                                            [run_id, ttl, key]))
    return counts


def touch(conn: redis.Redis, org: str, keys: Iterable[str]) -> None:
    """Keep the state of subjects that are still there (expiry is for gone ones)."""
    ttl = _ms(STATE_TTL)
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pexpire(state_key(org, key), ttl)
        pipe.pexpire(index_key(org), ttl)
        pipe.execute()


def forget(conn: redis.Redis, org: str, keys: Iterable[str]) -> None:
    keys = list(keys)
    if not keys:
        return
    with conn.pipeline() as pipe:
        pipe.delete(*(state_key(org, key) for key in keys))
        pipe.srem(index_key(org), *keys)
        pipe.execute()


def claim(conn: redis.Redis, org: str, notice: Notice) -> bool:
    """Take the right to post this notice; False when another sweep already has it."""
    return bool(conn.set(claim_key(org, notice.key), notice.kind, nx=True, px=_ms(CLAIM_TTL)))


def release(conn: redis.Redis, org: str, key: str) -> None:
    conn.delete(claim_key(org, key))


def commit(conn: redis.Redis, org: str, notice: Notice, *, now: datetime,
           channel: str | None = None, ts: str | None = None) -> None:
    """Record that `notice` was posted (and where), then release its claim."""
    skey = state_key(org, notice.key)
    with conn.pipeline() as pipe:
        if notice.kind == "resolved":
            pipe.delete(skey)
            pipe.srem(index_key(org), notice.key)
        else:
            fields: dict[str, str] = {
                "severity": notice.severity,
                "news": notice.news,
                "posted_on": utc_date(now),
            }
            if notice.kind == "new":
                fields["band"] = "" if notice.band is None else str(notice.band)
                fields["title"] = notice.title
            if channel and ts:
                fields["channel"], fields["ts"] = channel, ts
            pipe.hset(skey, mapping=fields)
            if notice.lifts_snooze:
                pipe.hdel(skey, "snooze_until", "snooze_band", "snooze_severity", "snoozed_by")
            pipe.pexpire(skey, _ms(STATE_TTL))
            pipe.sadd(index_key(org), notice.key)
            pipe.pexpire(index_key(org), _ms(STATE_TTL))
        pipe.delete(claim_key(org, notice.key))
        pipe.execute()


def snooze(conn: redis.Redis, org: str, key: str, user: str, *, now: datetime,
           length: timedelta = SNOOZE) -> WarnState | None:
    """Snooze a posted warning until now + `length`; None when there is no such warning
    (resolved, or expired). Who may snooze is the caller's rule (approvers only)."""
    until = (now + length).astimezone(UTC).isoformat()
    if not _SNOOZE(conn, [state_key(org, key)], [until, user]):
        return None
    return get(conn, org, key)


def memory_bytes(conn: redis.Redis, org: str) -> int:
    """Redis MEMORY USAGE summed over one org's warning keys (bench figure)."""
    keys = [index_key(org), clock_key(org)] + [
        state_key(org, _text(k)) for k in conn.smembers(index_key(org))]
    return sum(int(conn.memory_usage(key) or 0) for key in keys)


def _state(raw: Mapping[str, str]) -> WarnState:
    return WarnState(
        band=_int(raw.get("band")),
        severity=raw.get("severity") or None,
        posted_on=raw.get("posted_on") or None,
        news=raw.get("news", ""),
        title=raw.get("title", ""),
        channel=raw.get("channel") or None,
        ts=raw.get("ts") or None,
        snooze_until=_time(raw.get("snooze_until")),
        snooze_band=_int(raw.get("snooze_band")),
        snooze_severity=raw.get("snooze_severity") or None,
        snoozed_by=raw.get("snoozed_by") or None,
        failures=_int(raw.get("failures")) or 0,
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _org(org: str) -> str:
    if not isinstance(org, str) or not org:
        raise ValueError("warning state: org must be a non-empty name")
    return org


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
