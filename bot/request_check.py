"""What HTTP mode checks before bolt sees a request: Slack's signature, then the body's shape.

bolt parses the body when it builds its request, before its RequestVerification middleware
checks the signature: an unsigned request with a body that is not JSON (or a `payload=`
that is not) made it raise - a 500, not a 401 - and a timestamp header that is not a number
made the verifier's int() raise inside the middleware (500, and bolt logs the traceback).
So the signature is checked here first, over the raw bytes, and nothing of the body is
decoded until it holds; only then is the body read as the form Slack sends (a slash
command's fields, or an interactive `payload=` holding a JSON object), or as an Events API
envelope (JSON: `event_callback` with an `event` object, e.g. `app_home_opened` for the
Home tab, or Slack's `url_verification` challenge). A signed request that is neither is a
client error (400): nothing Slack sends, and nothing a listener should see half-parsed.

bolt verifies again afterwards with the same secret; both agree on every request let
through, since the timestamp here is a plain decimal number and the text handed on is the
very bytes signed, decoded as UTF-8.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_AGE_SECONDS = 5 * 60  # Slack's replay window, as bolt's SignatureVerifier
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
EVENT_TYPES = ("event_callback", "url_verification")  # the Events API envelopes we take
MAX_FORM_FIELDS = 100  # a slash command has about a dozen; an interaction one

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() would take " 1", "1_0"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Refusal:
    """Why a request is not handed to bolt, and the HTTP status that says so."""

    status: int
    reason: str


def signature_refusal(secret: str, timestamp: str | None, signature: str | None,
                      body: bytes, now: float) -> Refusal | None:
    """401 unless `signature` is Slack's v0 signature of `body` at a fresh `timestamp`.

    A timestamp that is not a plain number cannot show the request is fresh, so a signature
    over it proves nothing either: 401 like any unsigned request. No secret: nothing verifies.
    Not slack_sdk's SignatureVerifier: it decodes the body as UTF-8 before hashing and
    int()s the timestamp, so a binary body or a header like "soon" makes it raise (a 500).
    """
    if not secret:
        return Refusal(401, "no signing secret to verify with")
    if timestamp is None or signature is None:
        return Refusal(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not _TIMESTAMP.fullmatch(timestamp):
        return Refusal(401, "X-Slack-Request-Timestamp is not a number")
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return Refusal(401, "X-Slack-Request-Timestamp is outside the 5-minute window")
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body,
                      hashlib.sha256).hexdigest()
    # WSGI hands headers over as latin-1 text; compare bytes, so no header can make
    # compare_digest raise (it refuses non-ASCII str).
    if not hmac.compare_digest(f"v0={digest}".encode(),
                               signature.encode("latin-1", errors="replace")):
        return Refusal(401, "X-Slack-Signature does not match")
    return None


def body_refusal(content_type: str | None, body: bytes) -> Refusal | None:
    """400 unless `body` is what Slack sends: an Events API envelope (JSON) or a form;
    call only once the signature holds."""
    if (content_type or "").split(";")[0].strip().lower() == JSON_TYPE:
        return event_refusal(body)
    return form_refusal(content_type, body)


def event_refusal(body: bytes) -> Refusal | None:
    """400 unless `body` is an Events API envelope bolt can read: a JSON object whose
    `type` is `event_callback` (with an `event` object that has a text `type`) or
    `url_verification` (with a text `challenge`)."""
    try:
        envelope = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return Refusal(400, "body is not JSON")
    if not isinstance(envelope, dict) or envelope.get("type") not in EVENT_TYPES:
        return Refusal(400, "body is not an Events API envelope")
    if envelope["type"] == "url_verification":
        return None if isinstance(envelope.get("challenge"), str) else Refusal(
            400, "url_verification without a challenge")
    event = envelope.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return Refusal(400, "event_callback without an event")
    if not all(isinstance(envelope.get(name, ""), str) for name in ("team_id", "api_app_id")):
        return Refusal(400, "event_callback with an unreadable team_id or api_app_id")
    return None


def form_refusal(content_type: str | None, body: bytes) -> Refusal | None:
    """400 unless `body` is a form as Slack sends it; call only once the signature holds.

    bolt reads a body starting with "{" (or typed application/json) as JSON and a `payload`
    field as JSON, and parses forms leniently (bad escapes kept, bad UTF-8 replaced), so
    what passes here is what bolt will read the same way.
    """
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        return Refusal(400, f"Content-Type is not {FORM_TYPE}")
    if not body:
        return Refusal(400, "empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(400, "body is not UTF-8")
    if text.startswith("{") or _BAD_PERCENT.search(text):
        return Refusal(400, "body is not a form")
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                           errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # UnicodeDecodeError (a %-escape that is not UTF-8) included
        return Refusal(400, "body is not a form")
    payloads = [value for name, value in fields if name == "payload"]
    if payloads:
        try:
            payload = json.loads(payloads[-1])  # the one bolt reads
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return Refusal(400, "payload is not a JSON object")
    return None
