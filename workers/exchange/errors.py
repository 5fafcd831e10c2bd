"""Every failure talking to Exchange, as one subclass of `ExchangeError`.

Failures are classified here (unreachable, logon refused, endpoint broken, script refused,
object missing, anything else) so that callers decide by class, and each carries a one-line
text for people (server, what was attempted, what went wrong, a hint), never a traceback.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import requests
from pypsrp.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from spnego.exceptions import SpnegoError

from config.errors import ExauthError
from workers.exchange import first_contact
from workers.exchange.target import Endpoint, Target

Kind = Literal["missing", "unreachable", "auth", "endpoint_broken", "nolanguage", "error"]


class ExchangeError(ExauthError):
    """One failure talking to Exchange; str() is a single readable line.

    Only its subclasses are raised, and callers decide by class. `kind` names the class
    where a string has to travel (the rows of `exauth check --json`); `hint` ends the line;
    `permanent` says whether another attempt can answer differently (workers.jobs.read_jobs).
    """

    kind: ClassVar[Kind]
    hint: ClassVar[str | None] = None

    def __init__(
        self,
        server: str,
        what: str,
        detail: str,
        *,
        endpoint: Endpoint | None = None,
        error_id: str | None = None,
        started: bool = False,
        hinted: bool = True,
    ) -> None:
        if type(self) is ExchangeError:
            raise TypeError("raise a subclass of ExchangeError: callers decide by its class")
        if not hinted:  # the detail already names the cause and its fix (first contact)
            self.hint = None
        self.server = server
        self.what = what
        self.detail = one_line(detail)
        self.endpoint = endpoint
        self.error_id = error_id
        # True once the server accepted the command: re-running it elsewhere could repeat it.
        self.started = started
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.server}: {self.what}: {self.detail}"
        return f"{text} ({self.hint})" if self.hint else text

    def recast(self, cls: type[ExchangeError]) -> ExchangeError:
        """The same failure told as another class (its hint)."""
        return cls(
            self.server,
            self.what,
            self.detail,
            endpoint=self.endpoint,
            error_id=self.error_id,
            started=self.started,
        )


class ExchangeUnreachable(ExchangeError):
    """No answer from the server or its WinRM/IIS port, or Exchange cannot reach the server
    (RPC unavailable); a later attempt may find it up."""

    kind = "unreachable"
    hint = "is the server up and its WinRM/IIS port reachable from here?"
    permanent = False


class ExchangeAuthFailed(ExchangeError):
    """The endpoint refused the account; another attempt would only count towards a
    lockout."""

    kind = "auth"
    hint = (
        "check username and password_env/password_file, and the account's remote "
        "PowerShell rights"
    )
    permanent = True


class ExchangeEndpointBroken(ExchangeError):
    """The server's Exchange endpoint itself cannot work (Cafe-SendFailure: a broken back end
    binding; serialization signing without its auth certificate); the host endpoint with the
    snap-in may still serve, and a repair changes the answer."""

    kind = "endpoint_broken"
    hint = "its Exchange Back End binding or auth certificate is likely broken"
    permanent = False


class NoLanguageRefused(ExchangeError):
    """The NoLanguage endpoint refused something that was not a cmdlet with bound
    parameters: the same on every attempt."""

    kind = "nolanguage"
    hint = "the Exchange endpoint only runs cmdlets with bound parameters"
    permanent = True


class ExchangeObjectMissing(ExchangeError):
    """Exchange ran the cmdlet and found no such object (a certificate by thumbprint)."""

    kind = "missing"
    permanent = True


class ExchangeFailed(ExchangeError):
    """Any other failure: the cmdlet's own error, a TLS certificate not trusted, an HTTP or
    WS-Management fault, no answer within the operation timeout, basic auth refused over
    plain http. Retrying repeats it."""

    kind = "error"
    permanent = True


def classify(
    exc: BaseException, target: Target, what: str, *, started: bool = False
) -> ExchangeError:
    """Turn any failure of pypsrp/requests into the ExchangeError subclass that says what
    it means."""

    def make(cls: type[ExchangeError], detail: str, *, hinted: bool = True) -> ExchangeError:
        return cls(target.server, what, detail, endpoint=target.endpoint, started=started,
                   hinted=hinted)

    text = one_line(str(exc))
    if "Cafe-SendFailure" in text:
        return make(ExchangeEndpointBroken, _CAFE_DETAIL)
    # First contact (first_contact.py): the cause and its fix in the detail, no generic hint.
    seen = dict(url=target.url, endpoint=target.endpoint)
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, WinRMTransportError) and exc.code == 401
    ):
        cause = first_contact.auth_refused_cause(
            **seen, auth=target.auth, username=target.username,
            cert_validation=target.cert_validation, timeout=target.connection_timeout)
        if cause:
            return make(ExchangeAuthFailed, cause, hinted=False)
        return make(ExchangeAuthFailed, f"access denied for {target.username} ({target.auth})")
    if isinstance(exc, SpnegoError) or type(exc).__module__.split(".")[0] in ("krb5", "gssapi"):
        cause = first_contact.kerberos_cause(text, **seen, username=target.username)
        if cause:
            return make(ExchangeAuthFailed, cause, hinted=False)
        return make(ExchangeAuthFailed, f"{target.auth} logon failed: {text}")
    if isinstance(exc, requests.exceptions.SSLError):
        return make(ExchangeFailed, first_contact.tls_cause(
            text, **seen, cert_validation=target.cert_validation,
            timeout=target.connection_timeout), hinted=False)
    unencrypted = first_contact.encryption_cause(text, url=target.url)
    if unencrypted and isinstance(exc, WinRMTransportError | WSManFaultError):
        return make(ExchangeFailed, unencrypted, hinted=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return make(ExchangeUnreachable, f"no answer within {target.connection_timeout} s")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | TimeoutError):
        return make(ExchangeUnreachable, _connection_detail(text))
    if isinstance(exc, WinRMTransportError):
        body = one_line(re.sub(r"<[^>]+>", " ", str(exc.response_text or "")))
        return make(
            ExchangeFailed, f"HTTP {exc.code} from {target.url}" + (f": {body}" if body else "")
        )
    if isinstance(exc, WSManFaultError):
        reason = one_line(str(exc.reason or exc.message))
        if "rpc server is unavailable" in reason.lower():
            return make(ExchangeUnreachable, reason)
        return make(ExchangeFailed, f"WS-Management fault: {reason}")
    if isinstance(exc, WinRMError):
        return make(ExchangeFailed, text or type(exc).__name__)
    return make(ExchangeFailed, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _connection_detail(text: str) -> str:
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "name or service not known" in low or "getaddrinfo" in low or "resolve" in low:
        return "host name does not resolve"
    if "timed out" in low:
        return "connection timed out"
    if "reset" in low:
        return "connection reset"
    if "aborted" in low or "closed" in low or "disconnected" in low or "without response" in low:
        return "connection closed without an answer"
    return "cannot connect"


# Said instead of the raw text, whose request ids and timestamps are noise in a one-liner.
_CAFE_DETAIL = "endpoint fails with Cafe-SendFailure (front end cannot reach the back end on 444)"


def from_error_record(record: Any, target: Target, what: str) -> ExchangeError:
    message = _record_message(record)
    error_id = str(getattr(record, "fq_error", "") or "")
    reason = str(getattr(record, "reason", "") or "")
    low = message.lower()
    cls: type[ExchangeError] = ExchangeFailed
    if "syntax is not supported by this runspace" in low or "scriptsnotallowed" in error_id.lower():
        cls = NoLanguageRefused
    elif "Cafe-SendFailure" in message or "serialization data signing" in low:
        # The endpoint itself cannot work (back end binding, expired/missing auth cert).
        cls = ExchangeEndpointBroken
    elif "was not found" in low and (
        "invalidoperation" in (reason + error_id).lower() or "special rpc error" in low
    ):
        cls = ExchangeObjectMissing
    elif "rpc server is unavailable" in low or "cannot be contacted" in low:
        cls = ExchangeUnreachable
    return cls(
        target.server,
        what,
        message or error_id or "failed",
        endpoint=target.endpoint,
        error_id=error_id or "unknown",
        started=True,
    )


def _record_message(record: Any) -> str:
    exception = getattr(record, "exception", None)
    for holder in ("adapted_properties", "extended_properties"):
        props = getattr(exception, holder, None) or {}
        if props.get("Message"):
            return one_line(str(props["Message"]))
    for attr in ("details_message", "message"):
        value = getattr(record, attr, None)
        if value:
            return one_line(str(value))
    try:
        return one_line(str(record))
    except Exception:
        return ""


# A terminal colour/format sequence (ESC [ ... final byte): formatting, not text.
_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

# Control characters left once whitespace is folded: C0, DEL, C1 (and a lone ESC).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

CONTROL_SHOWN_AS = "\ufffd"


def one_line(text: str, limit: int = 400) -> str:
    """One line for people: whitespace runs (newlines included) become one space.

    Exchange text arrives decoded (pypsrp reads CLIXML's `_xHHHH_`), so it may hold any
    control character; none reaches Slack or a terminal raw: colour sequences such as
    PowerShell's ESC[31m are dropped (the text they colour stays), and any other control
    character shows as U+FFFD, so the reader sees that something was there.
    """
    line = " ".join(_ANSI_SEQUENCE.sub("", str(text)).split())
    line = _CONTROL.sub(CONTROL_SHOWN_AS, line)
    return line if len(line) <= limit else line[: limit - 1] + "…"

