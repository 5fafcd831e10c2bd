"""The Exchange client of one org: cmdlets on its servers, concurrently, with the host fallback.

When a server's Exchange endpoint cannot be opened but its host endpoint can (an Exchange
Back End binding without a certificate makes the endpoint fail with Cafe-SendFailure), the
Exchange cmdlets run on the host endpoint after loading the Exchange snap-in there
(workers.exchange.session). Sessions come from the process-wide cache; failures are
`ExchangeError` subclasses (workers.exchange.errors).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from config.schema import OrgSettings
from workers.exchange.errors import (
    ExchangeEndpointBroken,
    ExchangeError,
    ExchangeUnreachable,
)
from workers.exchange.session import SESSIONS, Session, SessionCache
from workers.exchange.target import (
    READ_ONLY_VERBS,
    Endpoint,
    Params,
    Statement,
    exchange_target,
    host_target,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

R = TypeVar("R")


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
        return self.exchange_statements(
            fqdn, [Statement.of(cmdlet, params, select=select, **kwargs)]
        )

    def exchange_statements(self, fqdn: str, statements: Sequence[Statement]) -> list[Any]:
        """Several Exchange cmdlets in one invocation (one round trip) on that server: its
        Exchange endpoint, else host + snap-in; outputs in order, in one list."""
        # The fallback rule looks at one verb: a batch may move only when all of it reads.
        verb = statements[0].cmdlet if all(s.read_only for s in statements) else "Invoke"
        if fqdn.lower() not in self.fallbacks:
            try:
                return self.session(fqdn, "exchange").run_statements(statements)
            except ExchangeError as exc:
                if not _may_fall_back(exc, verb):
                    raise
                self._fall_back(fqdn, exc)
        host = self.session(fqdn, "host")
        host.ensure_snapin()
        return host.run_statements(statements)

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
            except BaseException:  # the job's deadline (workers.jobs.deadline): ask no one else
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
        return not exc.started or cmdlet.lower().startswith(READ_ONLY_VERBS)
    return exc.error_id is None and not exc.started

