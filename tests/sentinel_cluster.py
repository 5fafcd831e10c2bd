"""A real Redis master, one replica and three Sentinels on loopback, for failover tests.

Started from Debian's `redis-server` and `redis-sentinel` (.ci/run installs both), each on
a free port in a temporary directory; `kill_master` SIGKILLs the master, as a crashed host
would, and `wait_for_failover` waits until the Sentinels have promoted the replica.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SERVICE = "exauth"
REDIS_SERVER = shutil.which("redis-server")
REDIS_SENTINEL = shutil.which("redis-sentinel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SentinelCluster:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="exauth-sent-")))
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    sentinels: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    first_master: int = 0

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelCluster:
        assert REDIS_SERVER and REDIS_SENTINEL, "needs redis-server and redis-sentinel"
        self.first_master = self._server()
        replica = self._server("--replicaof", "127.0.0.1", str(self.first_master))
        for _ in range(3):
            port = free_port()
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.workdir}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.first_master} 2",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 10000",
                f"sentinel parallel-syncs {SERVICE} 1", ""]))
            self.sentinels[port] = subprocess.Popen(
                [REDIS_SENTINEL, str(conf)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        self._until(lambda: self._replica_in_sync(replica), "the replica synced")
        self._until(self._sentinels_know_each_other, "the Sentinels found each other")
        return self

    def master_port(self) -> int | None:
        for port in self.sentinels:
            try:
                address = self._sentinel(port).sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def kill_master(self) -> int:
        """SIGKILL the current master (no goodbye, as a crashed host); its port."""
        port = self.master_port()
        assert port is not None
        self.servers[port].send_signal(signal.SIGKILL)
        self.servers[port].wait()
        return port

    def wait_for_failover(self, old: int, timeout: float = 60.0) -> int:
        """The new master's port, once the Sentinels promoted one and it takes writes."""
        def promoted() -> int | None:
            port = self.master_port()
            if port is None or port == old:
                return None
            role = redis.Redis(port=port, socket_timeout=1).info("replication")["role"]
            return port if role == "master" else None
        return int(self._until(promoted, "the Sentinels promoted the replica", timeout))

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _server(self, *extra: str) -> int:
        assert REDIS_SERVER
        port = free_port()
        self.servers[port] = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._until(lambda: _pings(port), f"redis-server on {port} answered")
        return port

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, decode_responses=True)

    def _replica_in_sync(self, port: int) -> bool:
        info = redis.Redis(port=port, socket_timeout=1).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_know_each_other(self) -> bool:
        try:
            return all(len(self._sentinel(p).sentinel_sentinels(SERVICE)) == 2 and
                       self._sentinel(p).sentinel_slaves(SERVICE) for p in self.sentinels)
        except redis.RedisError:
            return False

    @staticmethod
    def _until(check: object, what: str, timeout: float = 30.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()  # type: ignore[operator]
            except redis.RedisError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False
