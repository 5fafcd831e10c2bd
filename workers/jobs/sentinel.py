"""`redis+sentinel://` URLs: a Redis behind Sentinel, for the bot, the workers and cron.

    redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/<master name>[/<db>]
        [?sentinel_password=...]

The hosts are the Sentinels (port 26379 when left out), the first path part is the name
the Sentinels monitor the master under (`sentinel monitor <name> ...`), the second the
database number (0 when left out). The user and password are the Redis server's (master
and replicas alike); `sentinel_password` is the Sentinels' own `requirepass`, when they
have one. Example: `redis+sentinel://:s3cret@sentinel-1,sentinel-2,sentinel-3/exauth/0`.

The client is redis-py's Sentinel `master_for`: each new connection asks the Sentinels
where the master is now, and a connection to a master that was demoted (READONLY) or died
is dropped and made again, so a failover costs the processes a reconnect, never a
restart. How long each process waits through one is its retry policy (workers.jobs.queues).

RQ rebuilds its scheduler's client in a forked process from the pool's connection class
and keyword arguments alone (rq.connections.parse_connection), which is not enough to
make a Sentinel pool again; the client class made here knows its URL and builds the
Sentinel pool itself when RQ does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme == SCHEME


def parse(url: str) -> SentinelURL:
    """The parts of a `redis+sentinel://` URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = tuple(_host_port(item) for item in hostlist.split(",") if item.strip())
    if not sentinels:
        raise ValueError("names no Sentinel host")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("needs /<master name>[/<db>] after the Sentinel hosts")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f'database must be a number (got "{path[1]}")')
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: sentinel_password)")
    return SentinelURL(
        sentinels=sentinels,
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=(query.get("sentinel_password") or [None])[0],
    )


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
    if not host:
        raise ValueError(f'"{item}" is not host[:port]')
    if port and not port.isdigit():
        raise ValueError(f'port of "{item}" is not a number')
    return host, int(port) if port else DEFAULT_PORT


def client(url: str, **connection_kwargs: Any) -> Redis:
    """A Redis client on the current master of the URL's Sentinels. `connection_kwargs`
    (timeouts, retry) apply to the master connections and to the Sentinel lookups."""
    parsed = parse(url)
    pool = _pool(url, parsed, connection_kwargs)
    return _client_class(url)(connection_pool=pool)


def _pool(url: str, parsed: SentinelURL, kwargs: dict[str, Any]) -> SentinelConnectionPool:
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if "retry" in kwargs:
        sentinel_kwargs["retry"] = kwargs["retry"]
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    manager = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    return SentinelConnectionPool(parsed.service, manager, db=parsed.db,
                                  username=parsed.username, password=parsed.password,
                                  **kwargs)


class SentinelRedis(Redis):
    """A Redis client that can be rebuilt by RQ in a forked process (module docstring)."""

    url: ClassVar[str] = ""

    def __init__(self, *args: Any, connection_pool: Any = None, **kwargs: Any) -> None:
        if (connection_pool is not None
                and not isinstance(connection_pool, SentinelConnectionPool)
                and issubclass(connection_pool.connection_class, SentinelManagedConnection)):
            # RQ's ConnectionPool(connection_class=SentinelManagedConnection, **kwargs):
            # the same options, on a Sentinel pool made again from the URL.
            options = {k: v for k, v in connection_pool.connection_kwargs.items()
                       if k in _REBUILT_OPTIONS}
            connection_pool = _pool(self.url, parse(self.url), options)
        super().__init__(*args, connection_pool=connection_pool, **kwargs)


# What a rebuilt pool keeps of RQ's copy of the connection options (the URL gives the rest).
_REBUILT_OPTIONS = ("socket_timeout", "socket_connect_timeout", "retry", "health_check_interval")

_CLASSES: dict[str, type[SentinelRedis]] = {}


def _client_class(url: str) -> type[SentinelRedis]:
    """One client class per URL, so a rebuilt client knows which Sentinels to ask."""
    if url not in _CLASSES:
        _CLASSES[url] = type("SentinelRedis", (SentinelRedis,),
                             {"url": url, "__module__": __name__})
    return _CLASSES[url]
