"""The lab as the replica server of this process (`workers.rehearsal.replica_server`).

Here, in `bot/`, because this is where the two meet: `workers/` never imports the lab, and
the lab imports nothing of exauth.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.rehearsal import replica_server


@contextmanager
def serve(path: Path) -> Iterator[dict[str, Any]]:
    """Serve the scenario file on a free loopback port until the block ends."""
    from lab.serve import start  # only when a rehearsal runs: the lab is not small

    with start(path) as handle:
        yield {**handle.info, "writer": handle.writer}


def install() -> None:
    replica_server.use(serve)
