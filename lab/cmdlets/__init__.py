"""The commands each endpoint serves, with the semantics of real Exchange and IIS.

A rehearsal is only worth something if the lab refuses what real Exchange refuses, in the
same words. So parameters are bound the way PowerShell binds them (case-insensitive,
unique prefixes, positional arguments, switches as `-Name`, `-Name:$false`), a remote host
that cannot answer a prompt fails like PowerShell's non-interactive host, and each cmdlet
checks what its real counterpart checks (DOMAIN.md). Values are only ever data: a
friendly name such as `'; Remove-Item $()` is stored as text, never evaluated.

Endpoints: the Exchange endpoint (NoLanguage) serves the Exchange cmdlets; the host
endpoint serves IIS, certificate store, service and `iisreset` commands, and the Exchange
cmdlets as well after `Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn`.
Both serve `Select-Object`, the one command that takes pipeline input (Exchange's restricted
runspace exposes it, and a pipeline of commands is legal in NoLanguage).
Every command is recorded in the org's call log with its outcome.

Where things are: `binder` binds an invocation's parameters to a command (PowerShell's
rules and error texts); `pipeline` runs a pipeline of bound commands and records it; the
cmdlets live by area - `auth_config` (Get/Set-AuthConfig), `certificates` (the
*-ExchangeCertificate cmdlets), `exchange_servers` (servers, hybrid, diagnostics), `web`
(IIS bindings, app pools, iisreset), `host` (certificate store, clock, services,
snap-ins), `select_object` (Select-Object); `table` names every command with its
parameters.
"""

from lab.cmdlets.binder import Call, Command, CommandError, Invocation, Session
from lab.cmdlets.pipeline import run_pipeline
from lab.cmdlets.table import COMMANDS

__all__ = ["COMMANDS", "Call", "Command", "CommandError", "Invocation", "Session",
           "run_pipeline"]
