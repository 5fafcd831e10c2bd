"""Lua scripts run through redis-py's `Script` (EVALSHA; loaded again on NOSCRIPT).

Each module keeps its Lua text next to the code that reads its answer and declares it once
as a `LuaScript`. redis-py's `Script` takes its encoder from a client when it is made, so a
`LuaScript` registers itself on the first connection that runs it (as redis-py's own `Lock`
does) and then runs on whichever connection each call passes: the script body travels once
per server, later calls send only its SHA1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script


class LuaScript:
    """One Lua script, registered with redis-py on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._script: Script | None = None

    def __call__(self, conn: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        script = self._script
        if script is None:  # two threads racing here register equal scripts: harmless
            script = self._script = conn.register_script(self.text)
        return script(keys=list(keys), args=list(args), client=conn)
