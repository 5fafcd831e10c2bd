"""Remote PowerShell sessions over pypsrp: opened once, reused, one pipeline at a time.

Opening a session on real Exchange costs seconds, so sessions live in a process-wide cache
(keyed by endpoint URL, configuration and user) and are reused by every status run and job
in the process (the worker runs jobs in its own process for this: workers.jobs.worker_process). A
session that breaks (server restart, idle timeout) is dropped and reopened once.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer, TaggedValue
from pypsrp.wsman import WSMan

from config.errors import ConfigError
from config.network_policy import is_loopback, plain_http_to_remote
from workers.exchange import packed_messages, pipeline_command, primitive_values
from workers.exchange.errors import (
    ExchangeEndpointBroken,
    ExchangeError,
    ExchangeFailed,
    ExchangeUnreachable,
    classify,
    from_error_record,
    one_line,
)
from workers.exchange.target import SNAPIN, Params, Statement, Target

log = logging.getLogger(__name__)

# One WS-Man Receive waits at most this long; longer cmdlets are polled again.
_RECEIVE_WAIT = 20

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
                    tree = ET.fromstring(element)
                except ET.ParseError:
                    return super().deserialize(element, metadata, clear=False)
            else:
                tree = element
            for type_list in tree.iter("TN"):
                ref_id = type_list.attrib.get("RefId")
                if ref_id is not None:
                    self.tn[ref_id] = [t.text or "" for t in type_list.findall("T")]
            # The text as it came: pypsrp parses it again (cheap, in C) rather than writing
            # the parsed tree back to text (ET.tostring of the whole message, slow Python).
        elif isinstance(element, ET.Element) and primitive_values.is_primitive(element):
            return primitive_values.read(self, element, metadata)
        return super().deserialize(element, metadata, clear=False)

    def serialize(self, value: Any, metadata: Any = None, parent: Any = None,
                  clear: bool = True) -> Any:
        if clear and metadata is None and parent is None:  # a whole message: maybe sent before
            return packed_messages.PACKED.serialize(
                value, lambda v: super(_TolerantSerializer, self).serialize(v))
        return super().serialize(value, metadata, parent, clear)


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
    adds up to seconds over a large org. Done before the pool opens (pypsrp would build the
    HTTP session lazily on the first message, and scan the environment for each message of
    the open too), so only the one scan that resolves this endpoint's proxy is ever made."""
    transport = getattr(pool.connection, "transport", None)
    if transport is not None and getattr(transport, "session", None) is None:
        build = getattr(transport, "_build_session", None)
        if callable(build):
            transport.session = build()
    session = getattr(transport, "session", None)
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
            _settle_environment(pool)
            pool.open()
        except (ExchangeError, ConfigError):
            raise
        except Exception as exc:
            raise classify(exc, self.target, what) from None
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
        version = self._pool.protocol_version or ""
        for index, statement in enumerate(statements):
            if index:
                ps.add_statement()
            ps.add_command(pipeline_command.command(statement.cmdlet, version))
            for name, value in statement.params:
                if name:
                    ps.add_parameter(name, *_parameter_value(value))
                else:  # positional, e.g. iisreset /noforce
                    ps.add_argument(*_parameter_value(value))
            if statement.select:
                ps.add_command(pipeline_command.command("Select-Object", version))
                ps.add_parameter("Property", list(statement.select))
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
            raise from_error_record(errors[0], self.target, what)
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
        log.debug("ignored during cleanup: %s", one_line(str(exc)))


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

