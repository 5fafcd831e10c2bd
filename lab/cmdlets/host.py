"""The Windows host commands: certificate store, clock, services and snap-ins.

Restarting MSExchangeServiceHost runs the AuthAdmin servicelet (the org does that);
`Add-PSSnapin` makes the Exchange cmdlets available on the host endpoint's session.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from lab import objects
from lab.cmdlets.binder import Call, missing_mandatory

SNAPINS = ("Microsoft.Exchange.Management.PowerShell.SnapIn",
           "Microsoft.Exchange.Management.PowerShell.E2010")
KNOWN_SERVICES = ("MSExchangeServiceHost", "W3SVC", "WAS", "MSExchangeIS",
                  "MSExchangeTransport", "MSExchangeFrontEndTransport", "MSExchangeADTopology")
CERT_STORE = "Cert:\\LocalMachine\\My"


def get_child_item(call: Call) -> list[Any]:
    path = str(call.get("Path") or call.get("LiteralPath") or "").strip().rstrip("\\")
    base = CERT_STORE.lower()
    thumbprint = None
    if path.lower().startswith(base + "\\"):
        thumbprint = path[len(base) + 1:].upper()
    elif path.lower() != base:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    out = []
    for stored in call.org.store(call.session.server):
        if thumbprint is None or stored.thumbprint == thumbprint:
            out.append(objects.store_certificate(stored.material))
    if thumbprint is not None and not out:
        raise call.fail(f"Cannot find path '{path}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound", target=path,
                        exception_type="System.Management.Automation.ItemNotFoundException")
    return out


def get_date(call: Call) -> list[Any]:
    """The server's clock, which in the lab is the virtual clock (moved by /_lab/clock).

    `-Format o` is the round-trip format Windows PowerShell 5.1 prints: local time with 7
    fractional digits and the offset; the lab's servers run on UTC. Without -Format a
    DateTime object comes back, as from the real cmdlet.
    """
    now = call.org.now().astimezone(UTC)
    fmt = call.get("Format")
    if fmt is None:
        return [now]
    if str(fmt) not in ("o", "O"):
        raise call.fail(f"Get-Date: the lab knows -Format o, not '{fmt}'.",
                        category="InvalidArgument", code="FormatNotSupported")
    return [now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"]


def restart_service(call: Call) -> list[Any]:
    names = call.get("Name") or []
    if not names:
        raise missing_mandatory(call.command, "Name")
    for name in names:
        service = next((s for s in KNOWN_SERVICES if s.lower() == name.strip().lower()), None)
        if service is None:
            raise call.fail(f"Cannot find any service with service name '{name}'.",
                            category="ObjectNotFound", code="NoServiceFoundForGivenName",
                            exception_type="Microsoft.PowerShell.Commands."
                                           "ServiceCommandException", target=name)
        call.org.restart_service(call.session.server, service)
    return []


def add_ps_snapin(call: Call) -> list[Any]:
    names = call.get("Name") or []
    for name in names:
        if not any(name.strip().lower() == s.lower() for s in SNAPINS):
            raise call.fail(f"The Windows PowerShell snap-in '{name}' is not installed on this "
                            "computer.", category="InvalidArgument", code="AddPSSnapInRead",
                            exception_type="System.Management.Automation."
                                           "PSArgumentException", target=name)
    call.session.snapin_loaded = True
    return []
