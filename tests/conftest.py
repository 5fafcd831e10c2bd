"""Shared test fixtures.

Tests run against real components: a real Redis (the local one, or a throwaway
`redis-server` this file starts) and the lab over real WS-Man/PSRP. Nothing is skipped
silently: when a component cannot be had, the run stops and says what is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

pytest_plugins = ["tests.fixtures_lab", "tests.fixtures_kerberos", "tests.slack_mock"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Each test run takes its own database (unless told) so two runs on one machine, e.g. two
# developers' or a developer's and CI's, never flush each other's data.
TEST_DB = int(os.environ.get("EXAUTH_TEST_REDIS_DB", str(1 + os.getpid() % 15)))


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A Redis base URL: $REDIS_URL, the local default, or a throwaway server."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if _reachable(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"Redis is not reachable at {url} and no `redis-server` is on PATH to start a "
            "throwaway one. Install Redis (Debian: apt-get install redis-server) or set "
            "REDIS_URL to a reachable server.",
            returncode=3,
        )
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="exauth-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _reachable(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.exit(f"Started {binary} on port {port} but it never answered.", returncode=3)
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A clean test database on the Redis server (flushed before and after each test)."""
    base = redis_server_url.rsplit("/", 1)[0]
    url = f"{base}/{TEST_DB}"
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    try:
        yield url
    finally:
        conn.flushdb()
        conn.close()


@pytest.fixture()
def conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
