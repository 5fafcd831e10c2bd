"""The Exchange client: remote PowerShell sessions over pypsrp, reused, bounded, classified.

Opening a session on real Exchange costs seconds, so sessions live in a process-wide cache
(keyed by endpoint URL, configuration and user) and are reused by every status run and job
in the process; a session runs one pipeline at a time. A session that breaks (server
restart, idle timeout) is dropped and reopened once.

Everything reaches PowerShell as a cmdlet with bound parameters (add_cmdlet + add_parameter):
the Exchange endpoint is NoLanguage, and chat or config text must never become script.
A read may be followed by `| Select-Object -Property ...` (a pipeline of commands is legal
in NoLanguage): real Exchange objects are 100-200 KB of CLIXML each and reading them costs
far more client CPU than asking for them, so callers that need a few properties say which.

Every failure is one subclass of `ExchangeError`, chosen here where failures are classified
(unreachable, logon refused, endpoint broken, script refused, object missing, anything
else), that callers decide on by class, with a one-line text for people (server, what was
attempted, what went wrong, a hint), never a traceback.

When a server's Exchange endpoint cannot be opened but its host endpoint can (an Exchange
Back End binding without a certificate makes the endpoint fail with Cafe-SendFailure), the
Exchange cmdlets run on the host endpoint after loading the Exchange snap-in there.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer, TaggedValue
from pypsrp.wsman import WSMan
from spnego.exceptions import SpnegoError

from config.errors import ConfigError, ExauthError
from config.network_policy import is_loopback, plain_http_to_remote
from config.schema import OrgSettings
from workers import first_contact

log = logging.getLogger(__name__)

Endpoint = Literal["exchange", "host"]
Kind = Literal["missing", "unreachable", "auth", "endpoint_broken", "nolanguage", "error"]
Params = Sequence[tuple[str, Any]]
T = TypeVar("T")
R = TypeVar("R")

EXCHANGE_CONFIGURATION = "Microsoft.Exchange"
HOST_CONFIGURATION = "Microsoft.PowerShell"
SNAPIN = "Microsoft.Exchange.Management.PowerShell.SnapIn"
# Verbs whose cmdlets can be re-run safely after a broken connection.
_READ_ONLY_VERBS = ("get-", "test-")
# One WS-Man Receive waits at most this long; longer cmdlets are polled again.
_RECEIVE_WAIT = 20


class ExchangeError(ExauthError):
    """One failure talking to Exchange; str() is a single readable line.

    Only its subclasses are raised, and callers decide by class. `kind` names the class
    where a string has to travel (the rows of `exauth check --json`); `hint` ends the line;
    `permanent` says whether another attempt can answer differently (workers.jobs).
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
        self.detail = _one_line(detail)
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


# ---------------------------------------------------------------------------------------------
# Where to connect
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One endpoint of one server, and how to log on to it."""

    server: str  # fqdn, for messages
    endpoint: Endpoint
    url: str
    auth: str
    username: str | None
    cert_validation: bool | str = True
    connection_timeout: int = 30
    operation_timeout: int = 120
    password: Callable[[], str] = field(default=lambda: "", repr=False, compare=False)

    @property
    def configuration(self) -> str:
        return EXCHANGE_CONFIGURATION if self.endpoint == "exchange" else HOST_CONFIGURATION

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.url.lower(), self.configuration, (self.username or "").lower())

    @property
    def label(self) -> str:
        return "Exchange endpoint" if self.endpoint == "exchange" else "host endpoint"


def exchange_target(org: OrgSettings, fqdn: str) -> Target:
    ex = org.exchange
    return Target(
        server=fqdn.lower(),
        endpoint="exchange",
        url=org.exchange_url(fqdn),
        auth=ex.auth,
        username=ex.username,
        cert_validation=ex.cert_validation(),
        connection_timeout=ex.connection_timeout,
        operation_timeout=ex.operation_timeout,
        password=ex.password,
    )


def host_target(org: OrgSettings, fqdn: str) -> Target:
    ex = org.exchange
    return Target(
        server=fqdn.lower(),
        endpoint="host",
        url=org.host_url(fqdn),
        auth=org.host_auth(),
        username=org.host_username(),
        cert_validation=org.host_cert_validation(),
        connection_timeout=ex.connection_timeout,
        operation_timeout=ex.operation_timeout,
        password=org.host_password,
    )


@dataclass(frozen=True)
class Statement:
    """One cmdlet with bound parameters, optionally piped into `Select-Object -Property`."""

    cmdlet: str
    params: tuple[tuple[str, Any], ...] = ()
    select: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        cmdlet: str,
        params: Params = (),
        /,
        *,
        select: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Statement:
        return cls(cmdlet, (*params, *kwargs.items()), tuple(select or ()))

    @property
    def read_only(self) -> bool:
        return self.cmdlet.lower().startswith(_READ_ONLY_VERBS)

    def whole(self) -> Statement:
        return Statement(self.cmdlet, self.params)


_ADD_SNAPIN = Statement("Add-PSSnapin", (("Name", SNAPIN),))


class _TolerantSerializer(Serializer):
    """pypsrp's deserializer, able to read every object Exchange sends.

    pypsrp returns a bare `<LST>` (e.g. Exchange's MultiValuedProperty of ADObjectId in
    Get-HybridConfiguration) as raw XML without reading the objects inside, so their `<TN>`
    type lists are never registered and a later `<TNRef>` to one fails with KeyError,
    losing the whole output. RefIds are unique within a message, so registering every type
    list of a message before pypsrp reads it makes such references resolve.
    """

    def deserialize(
        self,
        element: ET.Element | str,
        metadata: Any = None,
        clear: bool = True,
    ) -> Any:
        if clear:
            self._clear()
            if isinstance(element, str):
                try:
                    element = ET.fromstring(element)
                except ET.ParseError:
                    return super().deserialize(element, metadata, clear=False)
            for type_list in element.iter("TN"):
                ref_id = type_list.attrib.get("RefId")
                if ref_id is not None:
                    self.tn[ref_id] = [t.text or "" for t in type_list.findall("T")]
        return super().deserialize(element, metadata, clear=False)


def _runspace_pool(target: Target) -> RunspacePool:
    pool = RunspacePool(_wsman(target), configuration_name=target.configuration)
    serializer = _TolerantSerializer()
    # pypsrp offers no hook for its serializer; both references must be the same object
    # because the session key exchange later sets the cipher on it.
    pool._serializer = serializer
    pool._fragmenter.serializer = serializer
    return pool


def _settle_environment(pool: RunspacePool) -> None:
    """Stop requests from re-reading proxy variables on every request of this session.

    pypsrp builds the HTTP session with the environment's proxy settings already resolved
    for this one endpoint URL (NO_PROXY included); leaving `trust_env` on makes requests
    scan the whole environment again for every WS-Man message, a few ms of CPU each, which
    adds up to seconds over a large org."""
    session = getattr(getattr(pool.connection, "transport", None), "session", None)
    if isinstance(session, requests.Session):
        session.trust_env = False


def _wsman(target: Target) -> WSMan:
    parts = urlsplit(target.url)
    ssl = parts.scheme == "https"
    loopback = is_loopback(parts.hostname)
    if target.auth == "basic" and plain_http_to_remote(target.url):
        raise ExchangeFailed(
            target.server,
            f"opening the {target.label}",
            f"refusing basic auth over plain http to {parts.hostname} (use https)",
            endpoint=target.endpoint,
        )
    receive_wait = min(_RECEIVE_WAIT, target.operation_timeout)
    return WSMan(
        parts.hostname or "",
        port=parts.port or (443 if ssl else 80),
        path=parts.path.lstrip("/"),
        ssl=ssl,
        auth=target.auth,
        username=target.username,
        password=target.password(),
        cert_validation=target.cert_validation,
        connection_timeout=target.connection_timeout,
        read_timeout=receive_wait + target.connection_timeout,
        operation_timeout=receive_wait,
        # Basic has no session key to encrypt with (plain http only reaches loopback, above);
        # everything else keeps pypsrp's default: TLS, or message encryption for
        # Kerberos/NTLM over http, which Exchange and WinRM require.
        encryption="never" if (not ssl and target.auth == "basic") else "auto",
        no_proxy=loopback,
    )


# ---------------------------------------------------------------------------------------------
# One session
# ---------------------------------------------------------------------------------------------


class Session:
    """One opened runspace pool on one endpoint; one pipeline at a time."""

    def __init__(self, target: Target, stats: Stats) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.snapin_loaded = False
        # False once the endpoint refused Select-Object; reads then fetch whole objects.
        self.can_select = True
        self._stats = stats
        self._pool: RunspacePool | None = None

    def open(self) -> None:
        """Open the runspace pool if it is not open yet (call with the lock held)."""
        if self._pool is not None:
            return
        what = f"opening the {self.target.label}"
        try:
            pool = _runspace_pool(self.target)
            pool.open()
        except (ExchangeError, ConfigError):
            raise
        except Exception as exc:
            raise classify(exc, self.target, what) from None
        _settle_environment(pool)
        self._pool = pool
        self._stats.opened()
        log.debug("opened %s of %s at %s", self.target.label, self.target.server, self.target.url)

    def run(
        self,
        cmdlet: str,
        params: Params = (),
        /,
        *,
        select: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Run one cmdlet with bound parameters; deserialized output objects.

        `select` pipes the output through `Select-Object -Property <select>`, so only those
        properties travel (as note properties of `Selected.<type>` objects). PascalCase
        keywords are the cmdlet's parameters; `select` is the only lower-case option."""
        return self.run_statements([Statement.of(cmdlet, params, select=select, **kwargs)])

    def run_statements(self, statements: Sequence[Statement]) -> list[Any]:
        """Several statements in one invocation (one round trip); their outputs in order.

        The outputs arrive as one stream, so callers tell them apart by their properties.
        Any error fails the whole invocation, as for a single cmdlet."""
        if not statements:
            raise ValueError("no statement to run")
        with self.lock:
            return self._run_locked(tuple(statements))

    def ensure_snapin(self) -> None:
        """Load the Exchange snap-in once into this (host endpoint) session."""
        with self.lock:
            if self.snapin_loaded:
                return
            self._run_locked((_ADD_SNAPIN,))
            self.snapin_loaded = True

    def close(self) -> None:
        with self.lock:
            self._drop()

    def _run_locked(self, statements: tuple[Statement, ...]) -> list[Any]:
        reused = self._pool is not None
        had_snapin = self.snapin_loaded
        if not self.can_select:
            statements = tuple(s.whole() for s in statements)
        try:
            return self._invoke(statements)
        except ExchangeError as exc:
            if any(s.select for s in statements) and _select_refused(exc):
                # An endpoint trimmed below Exchange's usual command set: whole objects then.
                self.can_select = False
                log.info("%s has no Select-Object; reading whole objects", self.target.url)
                return self._invoke(tuple(s.whole() for s in statements))
            if not _session_broken(exc):
                raise
            self._drop()
            safe = not exc.started or all(s.read_only for s in statements)
            if not (reused and safe):
                raise
            log.debug("session to %s broke (%s); reopening once", self.target.url, exc.kind)
            if had_snapin:
                self._invoke((_ADD_SNAPIN,))
                self.snapin_loaded = True
            return self._invoke(statements)

    def _invoke(self, statements: tuple[Statement, ...]) -> list[Any]:
        self.open()
        assert self._pool is not None
        what = f"{'; '.join(s.cmdlet for s in statements)} on the {self.target.label}"
        if any(isinstance(value, Secret) for s in statements for _, value in s.params):
            self._pool.exchange_keys()  # SecureStrings need the session key (once per pool)
        ps = PowerShell(self._pool)
        for index, statement in enumerate(statements):
            if index:
                ps.add_statement()
            ps.add_cmdlet(statement.cmdlet)
            for name, value in statement.params:
                if name:
                    ps.add_parameter(name, *_parameter_value(value))
                else:  # positional, e.g. iisreset /noforce
                    ps.add_argument(*_parameter_value(value))
            if statement.select:
                ps.add_cmdlet("Select-Object").add_parameter("Property", list(statement.select))
        deadline = time.monotonic() + self.target.operation_timeout
        self._stats.begin()
        try:
            ps.begin_invoke()
            while ps.state == PSInvocationState.RUNNING:
                if time.monotonic() > deadline:
                    _quietly(ps.stop)
                    raise ExchangeFailed(
                        self.target.server,
                        what,
                        f"no answer within {self.target.operation_timeout} s; stopped",
                        endpoint=self.target.endpoint,
                        started=True,
                    )
                ps.poll_invoke()
        except ExchangeError:
            raise
        except Exception as exc:
            started = ps.state != PSInvocationState.NOT_STARTED
            raise classify(exc, self.target, what, started=started) from None
        finally:
            self._stats.end()
        output = list(ps.output)
        errors = list(ps.streams.error)
        _quietly(ps.close)
        if errors:
            raise _from_error_record(errors[0], self.target, what)
        return output

    def _drop(self) -> None:
        pool, self._pool = self._pool, None
        self.snapin_loaded = False
        if pool is not None:
            _quietly(pool.close)
            _quietly(pool.connection.close)


@dataclass(frozen=True)
class Secret:
    """A secret parameter value (an export password).

    It travels as a SecureString, encrypted with the PSRP session key (real Exchange
    expects a SecureString for -Password), and its repr never shows it, so it cannot leak
    through a log line or a traceback.
    """

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)"


def _parameter_value(value: Any) -> tuple[Any, ...]:
    """None is a switch (no value). Everything else is sent as given - True as a [bool]
    (`-PrivateKeyExportable $true` needs the value; a switch accepts `-Force:$true` too),
    dates as ISO text (pypsrp cannot serialize datetime), secrets as SecureStrings."""
    if value is None:
        return ()
    if isinstance(value, datetime | date):
        return (value.isoformat(),)
    if isinstance(value, Secret):
        return (TaggedValue("SS", value.value),)
    return (value,)


def _select_refused(exc: ExchangeError) -> bool:
    """The endpoint does not know Select-Object (the cmdlet itself never ran)."""
    return "commandnotfound" in (exc.error_id or "").lower() and "select-object" in (
        exc.detail.lower()
    )


def _session_broken(exc: ExchangeError) -> bool:
    """Transport-level failures mean the pool is unusable; cmdlet errors do not."""
    return exc.error_id is None and isinstance(
        exc, ExchangeUnreachable | ExchangeFailed | ExchangeEndpointBroken
    )


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup must never hide the real outcome
        log.debug("ignored during cleanup: %s", _one_line(str(exc)))


# ---------------------------------------------------------------------------------------------
# Classifying failures
# ---------------------------------------------------------------------------------------------


def classify(
    exc: BaseException, target: Target, what: str, *, started: bool = False
) -> ExchangeError:
    """Turn any failure of pypsrp/requests into the ExchangeError subclass that says what
    it means."""

    def make(cls: type[ExchangeError], detail: str, *, hinted: bool = True) -> ExchangeError:
        return cls(target.server, what, detail, endpoint=target.endpoint, started=started,
                   hinted=hinted)

    text = _one_line(str(exc))
    if "Cafe-SendFailure" in text:
        return make(ExchangeEndpointBroken, _CAFE_DETAIL)
    # First contact (workers/first_contact.py): the cause and its fix in the detail.
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
        body = _one_line(re.sub(r"<[^>]+>", " ", str(exc.response_text or "")))
        return make(
            ExchangeFailed, f"HTTP {exc.code} from {target.url}" + (f": {body}" if body else "")
        )
    if isinstance(exc, WSManFaultError):
        reason = _one_line(str(exc.reason or exc.message))
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


def _from_error_record(record: Any, target: Target, what: str) -> ExchangeError:
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
            return _one_line(str(props["Message"]))
    for attr in ("details_message", "message"):
        value = getattr(record, attr, None)
        if value:
            return _one_line(str(value))
    try:
        return _one_line(str(record))
    except Exception:
        return ""


# A terminal colour/format sequence (ESC [ ... final byte): formatting, not text.
_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# Control characters left once whitespace is folded: C0, DEL, C1 (and a lone ESC).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_SHOWN_AS = "\ufffd"


def _one_line(text: str, limit: int = 400) -> str:
    """One line for people: whitespace runs (newlines included) become one space.

    Exchange text arrives decoded (pypsrp reads CLIXML's `_xHHHH_`), so it may hold any
    control character; none reaches Slack or a terminal raw: colour sequences such as
    PowerShell's ESC[31m are dropped (the text they colour stays), and any other control
    character shows as U+FFFD, so the reader sees that something was there.
    """
    line = " ".join(_ANSI_SEQUENCE.sub("", str(text)).split())
    line = _CONTROL.sub(CONTROL_SHOWN_AS, line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# The process-wide cache
# ---------------------------------------------------------------------------------------------


class Stats:
    """Counters that let tests and benches see reuse and concurrency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.opens = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def opened(self) -> None:
        with self._lock:
            self.opens += 1

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_in_flight = self.in_flight


class SessionCache:
    """Sessions by (url, configuration, user), shared by every thread of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str, str], Session] = {}
        self.stats = Stats()
        self._closes_at_exit = False

    def get(self, target: Target) -> Session:
        """The session for this target, opened (opening happens outside the cache lock)."""
        with self._lock:
            session = self._sessions.get(target.key)
            if session is None:
                session = Session(target, self.stats)
                self._sessions[target.key] = session
                if not self._closes_at_exit:  # registered by the first session, not at import
                    atexit.register(self.close_all)
                    self._closes_at_exit = True
        with session.lock:
            session.open()
        return session

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


SESSIONS = SessionCache()


def close_all() -> None:
    """Close every cached session (also done at interpreter exit)."""
    SESSIONS.close_all()


# ---------------------------------------------------------------------------------------------
# The org-level client
# ---------------------------------------------------------------------------------------------


class ExchangeClient:
    """Exchange and host cmdlets on the servers of one org, with the host fallback."""

    def __init__(
        self,
        org: OrgSettings,
        *,
        max_workers: int | None = None,
        cache: SessionCache | None = None,
    ) -> None:
        self.org = org
        self.max_workers = max_workers or org.exchange.max_concurrency
        self.cache = cache if cache is not None else SESSIONS
        self._lock = threading.Lock()
        # fqdn -> why its Exchange cmdlets go through the host endpoint in this client.
        self.fallbacks: dict[str, str] = {}

    def session(self, fqdn: str, endpoint: Endpoint) -> Session:
        target = exchange_target(self.org, fqdn) if endpoint == "exchange" else host_target(
            self.org, fqdn
        )
        return self.cache.get(target)

    def host_statements(self, fqdn: str, statements: Sequence[Statement]) -> list[Any]:
        """Several commands on the server's host endpoint in one invocation (one round trip
        instead of one per command); outputs in order, in one list."""
        return self.session(fqdn, "host").run_statements(statements)

    def exchange(
        self,
        fqdn: str,
        cmdlet: str,
        params: Params = (),
        /,
        *,
        select: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """An Exchange cmdlet on that server: its Exchange endpoint, else host + snap-in."""
        if fqdn.lower() not in self.fallbacks:
            try:
                return self.session(fqdn, "exchange").run(
                    cmdlet, params, select=select, **kwargs
                )
            except ExchangeError as exc:
                if not _may_fall_back(exc, cmdlet):
                    raise
                self._fall_back(fqdn, exc)
        host = self.session(fqdn, "host")
        host.ensure_snapin()
        return host.run(cmdlet, params, select=select, **kwargs)

    def exchange_any(
        self,
        servers: Iterable[str],
        cmdlet: str,
        params: Params = (),
        /,
        *,
        select: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """An org-wide read (AuthConfig, servers) from the first server that answers: the
        Exchange endpoints in order first, then the same servers with the host fallback."""
        fqdns = list(dict.fromkeys(s.lower() for s in servers))
        if not fqdns:
            raise ValueError("no server to ask")
        failed: dict[str, ExchangeError] = {}
        for fqdn in fqdns:
            if fqdn in self.fallbacks:
                continue
            try:
                return self.session(fqdn, "exchange").run(
                    cmdlet, params, select=select, **kwargs
                )
            except ExchangeError as exc:
                if not _may_fall_back(exc, cmdlet):
                    raise  # Exchange answered: asking another server would say the same
                failed[fqdn] = exc
        for fqdn in fqdns:
            try:
                if fqdn not in self.fallbacks:
                    self._fall_back(fqdn, failed[fqdn])
                return self.exchange(fqdn, cmdlet, params, select=select, **kwargs)
            except ExchangeError as exc:
                if _answered(exc):
                    raise
                failed.setdefault(fqdn, exc)
        raise failed[fqdns[0]]

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | ExchangeError]:
        """fn over items concurrently (at most max_workers at once), results in order;
        an ExchangeError is returned in place of its result, anything else is raised."""
        if not items:
            return []

        def guarded(item: T) -> R | ExchangeError:
            try:
                return fn(item)
            except ExchangeError as exc:
                return exc

        workers = min(self.max_workers, len(items))
        if workers == 1:
            return [guarded(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exauth-exchange") as ex:
            try:
                return list(ex.map(guarded, items))
            except BaseException:  # the job's deadline (workers.deadline): ask no one else
                ex.shutdown(wait=False, cancel_futures=True)
                raise

    def _fall_back(self, fqdn: str, exchange_error: ExchangeError) -> None:
        """Use the host endpoint + snap-in when it works; else the original error stands."""
        try:
            self.session(fqdn, "host").ensure_snapin()
        except ExchangeError:
            raise exchange_error from None
        broken = exchange_error.recast(ExchangeEndpointBroken)
        line = broken.line() + "; asked via its host endpoint"
        with self._lock:
            self.fallbacks[fqdn.lower()] = line
        log.info("%s; using its host endpoint with the Exchange snap-in", line)


def _answered(exc: ExchangeError) -> bool:
    """Exchange ran the cmdlet and said no (not a connection or endpoint problem)."""
    return exc.error_id is not None and not isinstance(
        exc, ExchangeUnreachable | ExchangeEndpointBroken
    )


def _may_fall_back(exc: ExchangeError, cmdlet: str) -> bool:
    """May this cmdlet be tried elsewhere (host + snap-in, another server) after exc?

    Yes when the Exchange endpoint itself is broken or the failure came before the command
    ran; a cmdlet that may have run is repeated elsewhere only when it only reads."""
    if isinstance(exc, ExchangeEndpointBroken):
        return not exc.started or cmdlet.lower().startswith(_READ_ONLY_VERBS)
    return exc.error_id is None and not exc.started
