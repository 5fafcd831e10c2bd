"""Who serves a replica scenario in this process: the lab, handed in by the process's owner.

A rehearsal serves its snapshot in-process, on loopback, for as long as it runs. The lab
is a separate package that `workers/` never imports (the client is tested against an
independent implementation), so the process that runs rehearsals hands its server in:
`exauth` (every command, the worker included) registers `bot.replica_lab.serve` at start,
tests register the same. A rehearsal asked for in a process that registered none says so
in one line instead of reaching for any other org.

A server is a context manager factory: scenario file path -> the lab's ready line
(`{"org", "username", "password", "control_url", "servers": [...]}` as `exauth lab serve`
prints it, plus "writer": the fqdn of the scenario's writer), served until the block ends.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from config.errors import ExauthError

ReplicaServer = Callable[[Path], AbstractContextManager[dict[str, Any]]]

_server: ReplicaServer | None = None


class NoReplicaServer(ExauthError):
    """This process has no lab to serve a replica on."""

    permanent = True


def use(server: ReplicaServer | None) -> None:
    """Register the server replicas are served on in this process (None: none)."""
    global _server
    _server = server


def serve(path: Path) -> AbstractContextManager[dict[str, Any]]:
    if _server is None:
        raise NoReplicaServer("this process cannot serve a replica to rehearse on "
                              "(start it with `exauth worker`, which brings the lab)")
    return _server(path)
