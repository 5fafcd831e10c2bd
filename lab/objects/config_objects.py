"""Org-wide AD configuration objects: Get-AuthConfig, Get-HybridConfiguration and
Get-AuthServer output."""

from __future__ import annotations

from datetime import datetime

from psrpcore.types import (
    PSList,
    PSObject,
)

from lab.objects.ad_context import Context
from lab.objects.psobject_parts import make, typed_list
from lab.objects.templates import stamped
from lab.objects.type_names import (
    ADMVP_ADOBJECTID,
    AUTH_CONFIG_TYPES,
    AUTH_SERVER_TYPES,
    HYBRID_TYPES,
    MVP_BASE,
    ObjectState,
)
from lab.scenario import ServerSpec


def auth_config(ctx: Context, *, current: str, next_thumbprint: str, previous: str,
                next_effective: datetime | None, changed: datetime) -> PSObject:
    key = ("AuthConfig", ctx.domain, ctx.signed, current, next_thumbprint, previous,
           next_effective)
    return stamped(key, lambda stamp: _auth_config(
        ctx, current=current, next_thumbprint=next_thumbprint, previous=previous,
        next_effective=next_effective, changed=stamp), changed)


def _auth_config(ctx: Context, *, current: str, next_thumbprint: str, previous: str,
                 next_effective: datetime | None, changed: datetime) -> PSObject:
    dn = f"CN=Auth Configuration,{ctx.exchange_dn}"
    identity = ctx.ad_object_id("Auth Configuration", "CN=Auth Configuration", ctx.org_name,
                                dn, 6, "Auth Configuration")
    return make(AUTH_CONFIG_TYPES, [
        ("CurrentCertificateThumbprint", current),
        ("PreviousCertificateThumbprint", previous),
        ("NextCertificateThumbprint", next_thumbprint),
        ("NextCertificateEffectiveDate", next_effective),
        ("ServiceName", "00000002-0000-0ff1-ce00-000000000000"), ("Realm", ""),
        ("DeploymentId", ""), ("IssuerIdentifier", ""), ("Name", "Auth Configuration"),
        ("AdminDisplayName", ""),
        ("ExchangeVersion", ctx.exchange_version("0.20 (15.0.0.0)", 0, 20, "15.0.0.0")),
        *ctx.ad_tail(identity, dn, "ms-Exch-Auth-Auth-Config",
                     ["top", "container", "msExchContainer", "msExchAuthAuthConfig"], changed),
        ("IsValid", True), ("ObjectState", ObjectState.Unchanged),
    ], ctx.ms(AUTH_CONFIG_TYPES[0]), "Auth Configuration")



def hybrid_configuration(ctx: Context, servers: list[ServerSpec], changed: datetime) -> PSObject:
    return stamped(("HybridConfiguration", ctx.domain, ctx.signed, tuple(servers)),
                    lambda stamp: _hybrid_configuration(ctx, servers, stamp), changed)


def _hybrid_configuration(ctx: Context, servers: list[ServerSpec],
                          changed: datetime) -> PSObject:
    dn = f"CN=Hybrid Configuration,CN=Hybrid Configuration,{ctx.exchange_dn}"
    identity = ctx.ad_object_id("Hybrid Configuration", "CN=Hybrid Configuration",
                                "Hybrid Configuration", dn, 7, "Hybrid Configuration")

    def server_ids(specs: list[ServerSpec]) -> PSList:
        return typed_list(ADMVP_ADOBJECTID, [
            ctx.ad_object_id(s.name, f"CN={s.name}", "Servers", f"CN={s.name},{ctx.exchange_dn}",
                             9, s.name) for s in specs], ["Microsoft.Exchange.Data."
            "MultiValuedProperty`1[[Microsoft.Exchange.Data.Directory.ADObjectId]]", *MVP_BASE])

    transport = [s for s in servers if s.in_scope][:1]
    edges = [s for s in servers if "Edge" in s.roles]
    smart_host = make(["Microsoft.Exchange.Data.SmtpDomain", "System.Object"],
                      [("Domain", f"mail.{ctx.domain}")], to_string=f"mail.{ctx.domain}")
    tls = make(["Microsoft.Exchange.Data.SmtpX509Identifier", "System.Object"], [
        ("CertificateSubject", f"CN=mail.{ctx.domain}"),
        ("CertificateIssuer", "CN=Lab Issuing CA"), ("SubjectCommonName", f"mail.{ctx.domain}"),
    ], to_string=f"<I>CN=Lab Issuing CA<S>CN=mail.{ctx.domain}")
    return make(HYBRID_TYPES, [
        ("ClientAccessServers", server_ids([])), ("EdgeTransportServers", server_ids(edges)),
        ("ReceivingTransportServers", server_ids(transport)),
        ("SendingTransportServers", server_ids(transport)),
        ("OnPremisesSmartHost", smart_host),
        ("Domains", typed_list("Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft."
                               "Exchange.Data.AutoDiscoverSmtpDomain]]", [ctx.domain])),
        ("Features", typed_list("Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1"
                                "[[HybridFeature]]", ["FreeBusy", "MoveMailbox", "Mailtips",
                                                      "MessageTracking", "OwaRedirection",
                                                      "OnlineArchive", "SecureMail", "Photos"])),
        ("ExternalIPAddresses", typed_list("Microsoft.Exchange.Data.MultiValuedProperty`1"
                                           "[[Microsoft.Exchange.Data.IPRange]]", [])),
        ("TlsCertificateName", tls), ("ServiceInstance", 0), ("AdminDisplayName", ""),
        ("ExchangeVersion", ctx.exchange_version("0.20 (15.0.0.0)", 0, 20, "15.0.0.0")),
        ("Name", "Hybrid Configuration"),
        *ctx.ad_tail(identity, dn, "ms-Exch-Coexistence-Relationship",
                     ["top", "msExchCoexistenceRelationship"], changed),
        ("IsValid", True), ("ObjectState", ObjectState.Unchanged),
    ], ctx.ms(HYBRID_TYPES[0]), "Hybrid Configuration")



def evo_sts_auth_server(ctx: Context, *, tenant_id: str, app_id: str,
                        changed: datetime) -> PSObject:
    """The "EvoSts - {tenant}" Auth Server the Hybrid Configuration Wizard creates; since the
    dedicated hybrid application, its ApplicationIdentifier names that application (set by
    ConfigureExchangeHybridApplication.ps1 with Set-AuthServer -ApplicationIdentifier)."""
    name = f"EvoSts - {tenant_id}"
    dn = f"CN={name},CN=Auth Servers,CN=Auth Configuration,{ctx.exchange_dn}"
    identity = ctx.ad_object_id(name, f"CN={name}", "Auth Servers", dn, 7, name)
    return make(AUTH_SERVER_TYPES, [
        ("Name", name), ("Type", "AzureAD"), ("Realm", tenant_id),
        ("IssuerIdentifier", "00000001-0000-0000-c000-000000000000"),
        ("TokenIssuingEndpoint", f"https://login.windows.net/{tenant_id}/oauth2/token"),
        ("AuthMetadataUrl", f"https://login.windows.net/{tenant_id}/federationmetadata/"
                            "2007-06/federationmetadata.xml"),
        ("ApplicationIdentifier", app_id), ("Enabled", True),
        ("IsDefaultAuthorizationEndpoint", False),
        ("ExchangeVersion", ctx.exchange_version("0.20 (15.0.0.0)", 0, 20, "15.0.0.0")),
        *ctx.ad_tail(identity, dn, "ms-Exch-Auth-Auth-Server",
                     ["top", "msExchAuthAuthServer"], changed),
        ("IsValid", True), ("ObjectState", ObjectState.Unchanged),
    ], ctx.ms(AUTH_SERVER_TYPES[0]), name)
