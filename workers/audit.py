"""The audit log: who did what to which org, when, and how it ended.

It lives in Redis Streams, not in RQ job results, because job results expire and the audit
must not. Every entry goes to the org-wide stream `exauth:audit` and, with the SAME entry id,
to the org's own stream `exauth:audit:<org>`, in one Lua call; reading one org therefore
never scans the others, and an entry can be matched across both streams by its id. An
optional JSONL mirror (one JSON object per line, appended; `[audit] jsonl`, set for the
process by `use_mirror` when it starts) gives a copy outside Redis.

Secrets never reach an entry: `redact` runs over `detail` (by key name, by value type, and
over free text), and the free-text scrubber runs over every other field too, so a caller
that pastes an exception message or a parameter dict cannot leak a password, a token or
key material into the log.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from workers import redis_keys
from workers.redis_scripts import LuaScript

MASK = "***"
MAX_TEXT = 4000  # longer strings are cut: an audit line is a record, not a dump
MAX_DEPTH = 12

# Key names (lower-cased, punctuation removed) that carry secrets wherever they appear.
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "keymaterial",
    "filedata",
    "pfx",
    "credential",
    "authorization",
    "cookie",
    "sessionkey",
    "securestring",
)
_SECRET_KEY_EXACT = frozenset({"key", "pass", "pin", "auth"})

# Secrets recognisable by their shape, whatever key (or sentence) they sit in.
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, complete or cut off.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.S,
        ),
        MASK,
    ),
    # Slack tokens (bot, user, app-level, config, refresh).
    (re.compile(r"\bx(?:ox[a-z]|app)-[A-Za-z0-9-]+"), MASK),
    # Credentials inside URLs: scheme://user:password@host, user may be empty (redis://:pw@)
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{MASK}@"),
    # HTTP Authorization header values.
    (re.compile(r"(?i)\b(basic|bearer|negotiate|ntlm)\s+[A-Za-z0-9+/=._~-]{8,}"), rf"\1 {MASK}"),
    # key=value / key: value / "key": "value" for secret-looking keys (not the reference
    # placeholders of step parameters, such as <secret:pfx-password>).
    (
        re.compile(
            r"(?i)((?<!<)\b[\w-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key)[\w-]*"
            r"[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+)"
        ),
        rf"\1{MASK}",
    ),
    # CLIXML byte arrays and SecureStrings (pypsrp logs every PSRP message at DEBUG: an
    # exported PFX travels as <BA N="FileData">, its password as an <SS>).
    (re.compile(r"(<(BA|SS)\b[^>]*>)[^<]+(</\2>)"), rf"\1{MASK}\3"),
    # ... and the WS-Man envelopes around them, which carry those messages base64-encoded.
    (re.compile(r"(<(rsp:Stream|rsp:Arguments|creationXml|connectXml)\b[^>]*>)[^<]+(</\2>)"),
     rf"\1{MASK}\3"),
    # PowerShell-style parameters: -Password value, -FileData value (a <reference> stays).
    (
        re.compile(
            r"(?i)(-(?:password|passphrase|secret|token|filedata|credential)\s+)"
            r"(?!<[^<>\s]{1,200}>(?:\s|$))(\"[^\"]*\"|'[^']*'|\S+)"
        ),
        rf"\1{MASK}",
    ),
)


def is_secret_key(name: object) -> bool:
    """True for a key name that, by convention, holds a secret (password, token, PFX, ...)."""
    if not isinstance(name, str):
        return False
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    return flat in _SECRET_KEY_EXACT or any(part in flat for part in _SECRET_KEY_PARTS)


def contains_secret(text: str) -> bool:
    """True when free text holds something shaped like a secret (a PEM key, a token, ...)."""
    return any(pattern.sub(mask, text) != text for pattern, mask in _TEXT_PATTERNS)


def mask_secrets(text: str) -> str:
    """Mask secrets that are recognisable by their shape inside free text, whatever its
    length (workers.log_filter runs it over log records, which must not be cut)."""
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_text(text: str) -> str:
    """Mask secrets that are recognisable by their shape inside free text, and cut it to an
    audit line's length."""
    text = mask_secrets(text)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "...[cut]"
    return text


def redact(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A JSON-able copy of `mapping` with every secret replaced by "***".

    Fails closed: bytes (FileData, key material) are masked wherever they appear, objects
    of unknown types are reduced to their type name (their repr could hold anything), and
    cycles or absurd nesting end in a marker instead of an error.
    """
    cleaned = _clean(mapping, depth=0, seen=set())
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}


def _clean(value: Any, *, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return MASK
    if isinstance(value, datetime):
        return value.isoformat()
    if depth >= MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if id(value) in seen:
            return "<cycle>"
        seen = seen | {id(value)}
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = key if isinstance(key, str) else _key_text(key)
                out[scrub_text(name)] = (
                    MASK if is_secret_key(name) else _clean(item, depth=depth + 1, seen=seen)
                )
            return out
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_clean(item, depth=depth + 1, seen=seen) for item in items]
    return f"<{type(value).__name__}>"


def _key_text(key: object) -> str:
    if key is None or isinstance(key, bool | int | float):
        return str(key)
    return f"<{type(key).__name__}>"


_RECORD = LuaScript("""
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
redis.call('XADD', KEYS[2], id, unpack(ARGV))
return id
""")


def org_stream(org: str) -> str:
    if not isinstance(org, str) or not org:
        raise ValueError("audit: org must be a non-empty name")
    return redis_keys.org_audit_stream(org)


# The one process-level setting of this module: the JSONL mirror of this process (see
# use_mirror). Nothing sets it at import; the CLI sets it when a process starts.
_mirror: Path | None = None


def use_mirror(path: str | os.PathLike[str] | None) -> None:
    """Mirror every entry this process records to `path` (None: Redis only).

    A process-wide choice, made once by the entry point (bot/cli.py `configured`, for every
    command, bot, worker and cron) from `[audit] jsonl`. It stays a process setting rather
    than an argument because `record` is called from a dozen places in jobs and callbacks
    that get no settings object; the file belongs to the deployment, not to the caller,
    and `record(mirror=...)` still overrides it for one entry.
    """
    global _mirror
    _mirror = None if path is None else Path(path)


def record(
    conn: redis.Redis,
    *,
    org: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    mirror: str | os.PathLike[str] | None = None,
) -> str:
    """Append one entry; returns its stream id (the same id in both streams).

    `mirror` names a JSONL file to append the same entry to (created 0600 if missing);
    by default the one `use_mirror` set, if any.
    """
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("audit: `now` must be timezone-aware")
    fields = {
        "ts": when.astimezone(UTC).isoformat(),
        "org": scrub_text(org),
        "actor": scrub_text(str(actor)),
        "action": scrub_text(str(action)),
        "target": scrub_text(str(target)),
        "outcome": scrub_text(str(outcome)),
        "detail": json.dumps(redact(detail or {}), sort_keys=True, allow_nan=False),
    }
    argv = [part for pair in fields.items() for part in pair]
    raw = _RECORD(conn, [redis_keys.audit_stream(), org_stream(org)], argv)
    entry_id = raw.decode() if isinstance(raw, bytes) else str(raw)
    target_file = Path(mirror) if mirror is not None else _mirror
    if target_file is not None:
        _append_jsonl(target_file, _entry(entry_id, fields))
    return entry_id


def entries(conn: redis.Redis, org: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` entries (of one org, or of all), newest first."""
    if limit < 1:
        return []
    key = redis_keys.audit_stream() if org is None else org_stream(org)
    rows = conn.xrevrange(key, count=min(limit, 10_000))
    return [
        _entry(_text(entry_id), {_text(k): _text(v) for k, v in raw.items()})
        for entry_id, raw in rows
    ]


def format_entry(entry: Mapping[str, Any]) -> str:
    """One line for people (the `exauth audit` table without --json)."""
    detail = entry.get("detail") or {}
    tail = " " + json.dumps(detail, sort_keys=True) if detail else ""
    return (
        f"{entry.get('ts', '?')} {entry.get('org', '?')} {entry.get('actor', '?')} "
        f"{entry.get('action', '?')} {entry.get('target', '?')} -> {entry.get('outcome', '?')}"
        f"{tail}"
    )


def _entry(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    try:
        detail = json.loads(fields.get("detail", "{}"))
    except ValueError:
        detail = {"unreadable": True}
    return {
        "id": entry_id,
        "ts": fields.get("ts", ""),
        "org": fields.get("org", ""),
        "actor": fields.get("actor", ""),
        "action": fields.get("action", ""),
        "target": fields.get("target", ""),
        "outcome": fields.get("outcome", ""),
        "detail": detail,
    }


def _append_jsonl(path: Path, entry: Mapping[str, Any]) -> None:
    line = (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of one line: concurrent appenders never interleave
    finally:
        os.close(fd)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
