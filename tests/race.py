"""Races against real Redis: many callers, each on its own connection, released at once.

A compare-and-set is only proven by contention, so the concurrency tests of approvals,
operations and the writer lock share this one harness instead of each building threads,
a barrier and connections of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis


def race(n: int, redis_url: str, body: Callable[[redis.Redis, int], None]) -> None:
    """Run `body(connection, i)` for i in range(n) in n threads, all started together."""
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            barrier.wait()
            body(client, i)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
