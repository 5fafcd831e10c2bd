"""One WS-Man shell = one psrpcore `ServerRunspacePool` serving the lab's commands.

psrpcore keeps PSRP free of I/O: bytes go in with `receive_data`, events come out of
`next_event`, and replies queue up until `data_to_send` hands them out. This package is
the glue between that and WS-Man: it feeds Create/Command/Send payloads in, runs each
pipeline through `cmdlets.run_pipeline` when it is complete, and sorts the outgoing
fragments into one outbox per target (the pool itself or one pipeline), because WinRM
delivers a pipeline's output only to a Receive that names its CommandId.

`remote_shell` holds the WS-Man side (one `Shell` per WS-Man shell), `runspace_pool`
psrpcore's pool with its caches, `runs` when and how a pipeline runs, and `error_records`
the PowerShell errors it reports.
"""

from lab.psrp.remote_shell import ProtocolError, Shell, ShellClosed, UnknownCommand

__all__ = ["ProtocolError", "Shell", "ShellClosed", "UnknownCommand"]
