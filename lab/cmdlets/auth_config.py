"""Get-AuthConfig and Set-AuthConfig: the org-wide Auth Configuration.

Set-AuthConfig reads the certificate from the server it runs on, refuses an effective date
in the past, and asks (so fails on a remote host) for less than 48 h notice without -Force.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lab import objects
from lab.cmdlets.binder import Call, binding_error
from lab.org import OrgError

MIN_NOTICE = timedelta(hours=48)


def get_auth_config(call: Call) -> list[Any]:
    auth = call.org.auth_config()
    return [objects.auth_config(call.context(), current=auth["current"],
                                next_thumbprint=auth["next"], previous=auth["previous"],
                                next_effective=auth["next_effective"],
                                changed=call.org.now())]


def _local_auth_cert(call: Call, thumbprint: str) -> str:
    """Set-AuthConfig reads the certificate from the server the cmdlet runs on."""
    thumb = thumbprint.strip().upper()
    server = call.session.server
    try:
        stored = call.org.find_certificate(server, thumb)
    except OrgError:
        raise call.fail(f"The certificate with thumbprint {thumb} couldn't be found on server "
                        f"{server.upper()}. Create or import it on this server first.",
                        category="ObjectNotFound", target=thumb) from None
    if not stored.has_private_key:
        raise call.fail(f"The certificate with thumbprint {thumb} on server {server.upper()} "
                        "has no private key.", target=thumb)
    if stored.material.not_after <= call.org.now():
        raise call.fail(f"The certificate with thumbprint {thumb} expired on "
                        f"{stored.material.not_after:%Y-%m-%d %H:%M:%S} UTC.", target=thumb)
    return thumb


def set_auth_config(call: Call) -> list[Any]:
    sets = [name for name in ("NewCertificateThumbprint", "PublishCertificate",
                              "ClearPreviousCertificate", "CertificateThumbprint")
            if call.get(name)]
    if call.has("NewCertificateEffectiveDate") and "NewCertificateThumbprint" not in sets:
        sets.append("NewCertificateEffectiveDate")
    if len(sets) != 1 or (sets == ["NewCertificateThumbprint"]
                          and not call.has("NewCertificateEffectiveDate")):
        raise binding_error(call.command, "Parameter set cannot be resolved using the "
                                           "specified named parameters.", "AmbiguousParameterSet")
    org = call.org
    if sets == ["PublishCertificate"]:
        try:
            org.publish_next()
        except OrgError as error:
            raise call.org_failure(error) from None
        return []
    if sets == ["ClearPreviousCertificate"]:
        org.clear_previous()
        return []
    if sets == ["CertificateThumbprint"]:
        org.set_current(_local_auth_cert(call, call.get("CertificateThumbprint")))
        return []
    thumb = _local_auth_cert(call, call.get("NewCertificateThumbprint"))
    effective: datetime = call.get("NewCertificateEffectiveDate")
    now = org.now()
    if effective <= now:
        raise call.fail(f"The new certificate effective date {effective:%Y-%m-%d %H:%M:%S} UTC "
                        f"is in the past. Specify a date later than {now:%Y-%m-%d %H:%M:%S} "
                        "UTC.", category="InvalidArgument")
    if effective < now + MIN_NOTICE and not call.get("Force"):
        raise call.prompt('The new certificate effective date is not at least "48" hours in '
                          "the future and may not be deployed on all necessary servers. Do you "
                          "wish to continue?")
    org.set_next(thumb, effective)
    return []
