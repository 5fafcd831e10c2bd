"""IIS on the host endpoint: site bindings, application pools and iisreset.

Bindings are the back end's https binding on port 444 that the repair rebinds; the OWA/ECP
pools cache the auth certificate until recycled (Restart-WebAppPool) or IIS is reset.
"""

from __future__ import annotations

from typing import Any

from lab import objects
from lab.cmdlets.binder import Call, missing_mandatory
from lab.cmdlets.host import CERT_STORE
from lab.org import BACKEND_SITE, FRONTEND_SITE, POOLS, Binding, OrgError

SITES = (FRONTEND_SITE, BACKEND_SITE)


def _site(call: Call, name: Any, *, required: bool) -> str | None:
    if name is None:
        if required:
            raise missing_mandatory(call.command, "Name")
        return None
    site = next((s for s in SITES if s.lower() == str(name).strip().lower()), None)
    if site is None:
        raise call.fail(f"Web site '{name}' does not exist.", category="ObjectNotFound",
                        exception_type="System.ArgumentException", code="SiteNotFound")
    return site


def get_web_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=False)
    port = call.get("Port")
    out = []
    for binding in call.org.bindings(call.session.server):
        if site is not None and binding.site != site:
            continue
        if call.has("Protocol") and binding.protocol.lower() != call.get("Protocol").lower():
            continue
        if port is not None and binding.binding_information.split(":")[1:2] != [str(port)]:
            continue
        out.append(objects.web_binding(binding.site, binding.protocol,
                                       binding.binding_information, binding.certificate_hash,
                                       binding.store_name))
    return out


def get_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    out = []
    for binding in call.org.bindings(call.session.server):
        if binding.site != site:
            continue
        if call.has("Protocol") and binding.protocol.lower() != call.get("Protocol").lower():
            continue
        if call.has("BindingInformation") and \
                binding.binding_information != call.get("BindingInformation"):
            continue
        out.append(objects.site_binding(binding.protocol, binding.binding_information,
                                        binding.certificate_hash, binding.store_name))
    return out


def _store_name(call: Call) -> str:
    location = str(call.get("CertStoreLocation") or CERT_STORE).rstrip("\\")
    prefix = "cert:\\localmachine\\"
    if not location.lower().startswith(prefix):
        raise call.fail(f"Cannot find path '{location}' because it does not exist.",
                        category="ObjectNotFound", code="PathNotFound",
                        exception_type="System.Management.Automation.ItemNotFoundException")
    return location[len(prefix):]


def new_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    assert site is not None
    information = call.get("BindingInformation")
    if not information or information.count(":") < 2:
        raise call.fail(f"The binding information '{information}' is not valid; use "
                        "\"<ip>:<port>:<host>\", e.g. \"*:444:\".", category="InvalidArgument",
                        exception_type="System.ArgumentException", code="InvalidBinding")
    protocol = (call.get("Protocol") or "http").lower()
    thumbprint = (call.get("CertificateThumbPrint") or "").strip().upper()
    store = _store_name(call) if thumbprint else ""
    if protocol == "https":
        if not thumbprint:
            raise call.fail("A certificate thumbprint is required for an https binding.",
                            category="InvalidArgument", exception_type="System.ArgumentException",
                            code="CertificateRequired")
        try:
            call.org.find_certificate(call.session.server, thumbprint)
        except OrgError:
            raise call.fail(f"The certificate with thumbprint '{thumbprint}' was not found in "
                            f"'{CERT_STORE}'.", category="ObjectNotFound",
                            exception_type="System.ArgumentException",
                            code="CertificateNotFound") from None
    try:
        call.org.add_binding(call.session.server,
                             Binding(site, information, thumbprint, store, protocol=protocol),
                             force=bool(call.get("Force")))
    except OrgError as error:
        raise call.fail(error.message, category="ResourceExists", code="BindingExists",
                        exception_type="System.ArgumentException") from None
    if call.get("Passthru"):
        return [objects.site_binding(protocol, information, thumbprint, store)]
    return []


def remove_iis_site_binding(call: Call) -> list[Any]:
    site = _site(call, call.get("Name"), required=True)
    assert site is not None
    information = call.get("BindingInformation") or ""
    protocol = (call.get("Protocol") or "http").lower()
    if call.get("Confirm", True) and not call.get("Force"):
        raise call.prompt(f"Are you sure you want to remove the binding '{information}' "
                          f"({protocol}) of site '{site}'?")
    try:
        call.org.remove_binding(call.session.server, site, information, protocol)
    except OrgError as error:
        raise call.fail(error.message, category="ObjectNotFound", code="BindingNotFound",
                        exception_type="System.ArgumentException") from None
    return []


def restart_web_app_pool(call: Call) -> list[Any]:
    name = call.get("Name")
    pool = next((p for p in POOLS if p.lower() == str(name or "").strip().lower()), None)
    if pool is None:
        raise call.fail(f"Cannot find an application pool named '{name}'.",
                        category="ObjectNotFound", code="PoolNotFound",
                        exception_type="System.ArgumentException", target=str(name))
    call.org.restart_pool(call.session.server, pool)
    return []


def iisreset(call: Call) -> list[Any]:
    option = " ".join(str(call.get(k) or "") for k in ("Option", "Option2")).strip().lower()
    if option not in ("", "/noforce", "/restart", "/restart /noforce", "/noforce /restart"):
        raise call.fail(f"iisreset: unsupported option '{option}' (the lab knows /noforce).",
                        category="InvalidArgument", code="NativeCommandError")
    call.org.iisreset(call.session.server)
    return ["", "Attempting stop...", "Internet services successfully stopped",
            "Attempting start...", "Internet services successfully restarted"]
