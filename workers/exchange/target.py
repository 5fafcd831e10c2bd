"""Where a command goes and what it is: a server's endpoint (`Target`) and a `Statement`.

Everything reaches PowerShell as a cmdlet with bound parameters (add_cmdlet +
add_parameter): the Exchange endpoint is NoLanguage, and chat or config text must never
become script. A read may be followed by `| Select-Object -Property ...` (a pipeline of
commands is legal in NoLanguage): real Exchange objects are 100-200 KB of CLIXML each and
reading them costs far more client CPU than asking for them, so callers that need a few
properties say which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from config.schema import OrgSettings

Endpoint = Literal["exchange", "host"]

Params = Sequence[tuple[str, Any]]

EXCHANGE_CONFIGURATION = "Microsoft.Exchange"

HOST_CONFIGURATION = "Microsoft.PowerShell"

SNAPIN = "Microsoft.Exchange.Management.PowerShell.SnapIn"

# Verbs whose cmdlets can be re-run safely after a broken connection.
READ_ONLY_VERBS = ("get-", "test-")


@dataclass(frozen=True)
class Target:
    """One endpoint of one server, and how to log on to it."""

    server: str  # fqdn, for messages
    endpoint: Endpoint
    url: str
    auth: str
    username: str | None
    cert_validation: bool | str = True
    connection_timeout: int = 30
    operation_timeout: int = 120
    password: Callable[[], str] = field(default=lambda: "", repr=False, compare=False)

    @property
    def configuration(self) -> str:
        return EXCHANGE_CONFIGURATION if self.endpoint == "exchange" else HOST_CONFIGURATION

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.url.lower(), self.configuration, (self.username or "").lower())

    @property
    def label(self) -> str:
        return "Exchange endpoint" if self.endpoint == "exchange" else "host endpoint"


def exchange_target(org: OrgSettings, fqdn: str) -> Target:
    ex = org.exchange
    return Target(
        server=fqdn.lower(),
        endpoint="exchange",
        url=org.exchange_url(fqdn),
        auth=ex.auth,
        username=ex.username,
        cert_validation=ex.cert_validation(),
        connection_timeout=ex.connection_timeout,
        operation_timeout=ex.operation_timeout,
        password=ex.password,
    )


def host_target(org: OrgSettings, fqdn: str) -> Target:
    ex = org.exchange
    return Target(
        server=fqdn.lower(),
        endpoint="host",
        url=org.host_url(fqdn),
        auth=org.host_auth(),
        username=org.host_username(),
        cert_validation=org.host_cert_validation(),
        connection_timeout=ex.connection_timeout,
        operation_timeout=ex.operation_timeout,
        password=org.host_password,
    )


@dataclass(frozen=True)
class Statement:
    """One cmdlet with bound parameters, optionally piped into `Select-Object -Property`."""

    cmdlet: str
    params: tuple[tuple[str, Any], ...] = ()
    select: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        cmdlet: str,
        params: Params = (),
        /,
        *,
        select: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Statement:
        return cls(cmdlet, (*params, *kwargs.items()), tuple(select or ()))

    @property
    def read_only(self) -> bool:
        return self.cmdlet.lower().startswith(READ_ONLY_VERBS)

    def whole(self) -> Statement:
        return Statement(self.cmdlet, self.params)

