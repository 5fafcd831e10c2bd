"""Get-ExchangeServer, Get-HybridConfiguration, Get-AuthServer and Get-ExchangeDiagnosticInfo.

What the org says about its servers: their versions and roles, whether it is hybrid, and
(through the ServiceHost diagnostics) when the AuthAdmin servicelet last ran on a server.
"""

from __future__ import annotations

from typing import Any

from lab import objects
from lab.cmdlets.binder import Call


def get_exchange_server(call: Call) -> list[Any]:
    ctx, now = call.context(), call.org.now()
    identity = call.get("Identity")
    specs = call.org.servers()
    if identity is not None:
        name = call.org.resolve(str(identity))
        if name is None:
            raise call.fail(f"The operation couldn't be performed because object '{identity}' "
                            f"couldn't be found on 'DC-1.{ctx.domain}'.", category="NotSpecified",
                            exception_type="Microsoft.Exchange.Configuration.Tasks."
                                           "ManagementObjectNotFoundException", target=identity)
        specs = [s for s in specs if s.name == name]
    return [objects.exchange_server(spec, ctx, now) for spec in specs]


def get_hybrid_configuration(call: Call) -> list[Any]:
    if not call.org.hybrid():
        return []
    return [objects.hybrid_configuration(call.context(), call.org.servers(), call.org.now())]


def get_auth_server(call: Call) -> list[Any]:
    """A hybrid org with an [entra] tenant has its EvoSTS Auth Server, naming the dedicated
    hybrid application Exchange uses (`[entra] exchange_app_id`, default hybrid_app_id)."""
    entra = call.org.scenario.entra
    if not call.org.hybrid() or entra is None:
        return []
    return [objects.evo_sts_auth_server(call.context(), tenant_id=entra.tenant_id,
                                        app_id=entra.exchange_app_id, changed=call.org.now())]


def get_exchange_diagnostic_info(call: Call) -> list[Any]:
    server = call.server()
    process = call.get("Process") or "Microsoft.Exchange.ServiceHost"
    last_run = call.org.auth_admin_last_run(server) \
        if process.lower() == "microsoft.exchange.servicehost" else None
    if process.lower() not in ("microsoft.exchange.servicehost", "msexchangeservicehost"):
        raise call.fail(f"Process {process} isn't running on server {server.upper()}.",
                        category="ObjectNotFound")
    return [objects.diagnostic_info(server, process, last_run, call.context())]
