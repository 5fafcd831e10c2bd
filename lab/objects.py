"""psrpcore objects shaped like real Exchange and IIS output.

The bot parses what pypsrp deserializes, so the lab's objects carry the type names
(`<TN>`) of real Exchange 2016/2019 output and put each property where real output puts
it: adapted properties in `<Props>`, extended/note properties in `<MS>` (compare the
CLIXML fixtures in `tests/fixtures/exchange-clixml/`). Where the real wire is
sparse the lab is sparse too: an `ExchangeCertificate` carries only `RawData` in Props
and Exchange's opaque `SerializationData` in MS, exactly as the fixtures show, so a client
that reads `Thumbprint` or `Status` off the object fails here as it would against real
Exchange; everything must be computed from RawData. (`PSComputerName`, `RunspaceId` and
`PSShowComputerName` in the fixtures are added by the PowerShell client, not sent.)

`SerializationData` starts with "#sig#" when serialization signing is on, as in the
signed fixtures; the rest is a placeholder, not a real BinaryFormatter payload.
Objects with no fixture (Get-IISSiteBinding's `Binding`, Export-ExchangeCertificate's
`BinaryFileDataObject`, Get-ExchangeDiagnosticInfo's result) follow what those commands
emit over PowerShell remoting as closely as known; their type names are best guesses.
"""

from __future__ import annotations

import enum
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psrpcore.types import (
    PSFlagBase,
    PSIEnumerable,
    PSList,
    PSNoteProperty,
    PSObject,
    PSType,
    serialize,
)

from lab.certs import CertMaterial
from lab.org import BACKEND_SITE
from lab.scenario import ServerSpec

EXCHANGE_CERTIFICATE_TYPES = [
    "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
    "System.Security.Cryptography.X509Certificates.X509Certificate2",
    "System.Security.Cryptography.X509Certificates.X509Certificate",
    "System.Object",
]
X509_TYPES = EXCHANGE_CERTIFICATE_TYPES[1:]
AD_CONFIG_TYPES = [
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
AUTH_CONFIG_TYPES = ["Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig",
                     *AD_CONFIG_TYPES]
HYBRID_TYPES = ["Microsoft.Exchange.Data.Directory.SystemConfiguration.HybridConfiguration",
                *AD_CONFIG_TYPES]
EXCHANGE_SERVER_TYPES = [
    "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    *AD_CONFIG_TYPES[1:],
]
WEB_BINDING_TYPES = ["Microsoft.IIs.PowerShell.Framework.ConfigurationElement#bindings#binding",
                     "Microsoft.IIs.PowerShell.Framework.ConfigurationElement", "System.Object"]
SITE_BINDING_TYPES = ["Microsoft.Web.Administration.Binding",
                      "Microsoft.Web.Administration.ConfigurationElement", "System.Object"]
AD_OBJECT_ID = ["Microsoft.Exchange.Data.Directory.ADObjectId",
                "Microsoft.Exchange.Data.ObjectId", "System.Object"]
MVP_STRING = ("Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, "
              "Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]")
MVP_BASE = ["Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"]
ADMVP_ADOBJECTID = (
    "Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1[[Microsoft.Exchange.Data."
    "Directory.ADObjectId, Microsoft.Exchange.Data.Directory, Version=15.0.0.0, "
    "Culture=neutral, PublicKeyToken=31bf3856ad364e35]]")
CUSTOM_OBJECT_TYPES = ["System.Management.Automation.PSCustomObject", "System.Object"]
DIAGNOSTIC_TYPE = ("Microsoft.Exchange.Management.SystemConfigurationTasks."
                   "ExchangeDiagnosticInfoResult")
_PARTITION_GUID = uuid.UUID("59ce2f71-eaa2-4ddf-a4fa-f25069d0b324")


@PSType(["Microsoft.Exchange.Data.Directory.SystemConfiguration.ServerRole"])
class ServerRole(PSFlagBase):
    """Exchange's ServerRole flags (only the members the lab uses)."""

    Mailbox = 2
    ClientAccess = 4
    Edge = 64


@PSType(["Microsoft.Exchange.Data.ObjectState"])
class ObjectState(PSFlagBase):
    Unchanged = 1


@PSType(["Microsoft.Exchange.Data.ServerEditionType"])
class ServerEditionType(PSFlagBase):
    Standard = 2
    Enterprise = 3


def make(type_names: list[str], props: list[tuple[str, Any]] | None = None,
         ms: list[tuple[str, Any]] | None = None, to_string: str | None = None) -> PSObject:
    """A PSObject with the given type names, adapted (Props) and extended (MS) properties."""
    obj = PSObject()
    obj.PSObject.type_names = list(type_names)
    for name, value in props or []:
        obj.PSObject.adapted_properties.append(PSNoteProperty(name, value))
    for name, value in ms or []:
        obj.PSObject.extended_properties.append(PSNoteProperty(name, value))
    if to_string is not None:
        obj.PSObject.to_string = to_string
    return obj


# ---------------------------------------------------------------------------------------
# Templates: the big objects are built (and serialized, see `lab.psrp`) once per content.
#
# An object is a pure function of what it is built from, except the time stamps some carry
# (WhenChanged is "now" on every read). So each is built once with STAMP standing in for
# its time; a read gets a shallow copy with the real time in those top-level slots, sharing
# the template's (read-only) properties and nested objects, so the same instances repeat
# within an object exactly as in a fresh build. Its `Recipe` lets the transport reuse the
# template's CLIXML with only the time text swapped. Nothing here is ever mutated after it
# is built: psrpcore's serializer and Select-Object only read.

STAMP = datetime(1601, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # no real object carries this time


def clixml_time(value: datetime) -> bytes:
    """A DateTime's text exactly as psrpcore serializes it."""
    return (serialize(value, None).text or "").encode()


STAMP_TEXT = clixml_time(STAMP)
STAMP_SHOWN = "1601"  # any text form of STAMP (ToString, @{...}) has its year


@dataclass(frozen=True)
class Recipe:
    """How an output object was made: `template` (serialized once) plus its `stamp`."""

    key: tuple[Any, ...]
    template: PSObject
    stamp: datetime | None


_RECIPES: weakref.WeakKeyDictionary[Any, Recipe] = weakref.WeakKeyDictionary()
_TEMPLATES: OrderedDict[tuple[Any, ...], PSObject] = OrderedDict()
_TEMPLATES_SIZE = 1024
_lock = threading.Lock()


def recipe_of(value: Any) -> Recipe | None:
    """The recipe of an object a template made, None for anything else."""
    if not isinstance(value, PSObject):
        return None
    with _lock:
        return _RECIPES.get(value)


def _template(key: tuple[Any, ...], build: Callable[[], PSObject]) -> PSObject:
    with _lock:
        template = _TEMPLATES.get(key)
        if template is not None:
            _TEMPLATES.move_to_end(key)
            return template
    template = build()
    with _lock:
        template = _TEMPLATES.setdefault(key, template)
        while len(_TEMPLATES) > _TEMPLATES_SIZE:
            _TEMPLATES.popitem(last=False)
    return template


def _constant(key: tuple[Any, ...], build: Callable[[], PSObject]) -> PSObject:
    """An object with no time stamp: every read gets the template itself (read-only)."""
    template = _template(key, build)
    with _lock:
        if template not in _RECIPES:
            _RECIPES[template] = Recipe(key, template, None)
    return template


def _stamped(key: tuple[Any, ...], build: Callable[[datetime], PSObject],
             stamp: datetime) -> PSObject:
    """`build(stamp)`, made from the template `build(STAMP)`."""
    template = _template(key, lambda: build(STAMP))
    meta = template.PSObject
    obj = PSObject()
    obj.PSObject.type_names = list(meta.type_names)
    for source, target in ((meta.adapted_properties, obj.PSObject.adapted_properties),
                           (meta.extended_properties, obj.PSObject.extended_properties)):
        for prop in source:  # note properties hold only a name and a value: share them
            stamped = prop.get_value(template) is STAMP
            target.append(PSNoteProperty(prop.name, stamp) if stamped else prop)
    if meta.to_string is not None:
        obj.PSObject.to_string = meta.to_string
    with _lock:
        _RECIPES[obj] = Recipe(key, template, stamp)
    return obj


def derived(source: Any, how: tuple[Any, ...], build: Callable[[Any], PSObject]) -> PSObject:
    """`build(source)` (e.g. Select-Object's output), made once per template of `source`.

    Built from the template when `source` has one, and reused while the result does not show
    the template's time stamp; otherwise (or when it does) built from `source` itself.
    """
    recipe = recipe_of(source)
    if recipe is None:
        return build(source)
    key = ("derived", how, recipe.key)
    template = _template(key, lambda: build(recipe.template))
    if recipe.stamp is not None and _shows_stamp(template):
        return build(source)
    with _lock:
        if template not in _RECIPES:
            _RECIPES[template] = Recipe(key, template, None)
    return template


def _shows_stamp(value: PSObject) -> bool:
    meta = value.PSObject
    if STAMP_SHOWN in (meta.to_string or ""):
        return True
    for holder in (meta.adapted_properties, meta.extended_properties):
        for prop in holder:
            found = prop.get_value(value)
            if found is STAMP or (isinstance(found, list) and any(v is STAMP for v in found)):
                return True
    return False


def typed_list(type_name: str, items: list[Any], base: list[str] | None = None) -> PSList:
    value = PSList(items)
    value.PSObject.type_names = [type_name, *(base or MVP_BASE)]
    return value


def serialization_data(type_name: str, signed: bool) -> bytes:
    """Placeholder for Exchange's BinaryFormatter payload ("#sig#" prefix when signed)."""
    body = b"\x00\x01\x00\x00\x00\xff\xff\xff\xff\x01\x00\x00\x00" + type_name.encode()
    return (b"#sig#" if signed else b"") + body


class Context:
    """What every Exchange object needs: the org's AD names and whether data is signed."""

    def __init__(self, domain: str, signed: bool) -> None:
        self.domain = domain
        self.signed = signed
        self.org_name = domain.split(".")[0].capitalize() + " Lab"
        self.config_dn = "CN=Configuration," + ",".join(f"DC={p}" for p in domain.split("."))
        self.exchange_dn = f"CN={self.org_name},CN=Microsoft Exchange,CN=Services,{self.config_dn}"
        self.created = datetime(2021, 7, 29, 5, 20, 48, tzinfo=UTC)

    def ms(self, type_name: str) -> list[tuple[str, Any]]:
        return [("SerializationData", serialization_data(type_name, self.signed))]

    def ad_object_id(self, name: str, rdn: str, parent: str, dn: str, depth: int,
                     to_string: str) -> PSObject:
        return make(AD_OBJECT_ID, [
            ("OrgHierarchyToIgnore", None), ("IsDeleted", False), ("Rdn", rdn),
            ("Parent", parent), ("Depth", depth), ("DistinguishedName", dn),
            ("IsRelativeDn", False), ("DomainId", self.domain), ("PartitionGuid", _PARTITION_GUID),
            ("PartitionFQDN", self.domain), ("ObjectGuid", _guid(dn)), ("Name", name),
        ], self.ms(AD_OBJECT_ID[0]), to_string)

    # The parts below occur at most once in any object, so one instance can serve every
    # object (sharing within one object would turn its second use into a <Ref>).

    def shared(self, key: tuple[Any, ...], build: Callable[[], PSObject]) -> PSObject:
        return _template(("shared", self.domain, self.signed, *key), build)

    def schema_id(self, class_name: str) -> PSObject:
        dn = f"CN={class_name},CN=Schema,{self.config_dn}"
        return self.shared(("schema_id", class_name), lambda: self.ad_object_id(
            class_name, f"CN={class_name}", f"{self.domain}/Configuration/Schema", dn, 4,
            f"{self.domain}/Configuration/Schema/{class_name}"))

    def exchange_version(self, text: str, major: int, minor: int, build: str) -> PSObject:
        return self.shared(("exchange_version", text, major, minor, build), lambda: make(
            ["Microsoft.Exchange.Data.ExchangeObjectVersion", "System.Object"], [
                ("NextMajorVersion", "1.0 (0.0.0.0)"),
                ("NextMinorVersion", f"0.{minor + 1} (0.0.0.0)"),
                ("Major", major), ("Minor", minor), ("ExchangeBuild", build),
            ], self.ms("Microsoft.Exchange.Data.ExchangeObjectVersion"), text))

    def organization_id(self) -> PSObject:
        return self.shared(("organization_id",), lambda: make(
            ["Microsoft.Exchange.Data.Directory.OrganizationId", "System.Object"], [
                ("OrganizationalUnit", None), ("ConfigurationUnit", None),
                ("IsConsumerOrganization", False), ("IdForEventLog", ""),
            ], self.ms("Microsoft.Exchange.Data.Directory.OrganizationId")))

    def ad_tail(self, identity: PSObject, dn: str, category: str,
                classes: list[str], changed: datetime) -> list[tuple[str, Any]]:
        """The properties every AD configuration object ends with, in fixture order."""
        return [
            ("DistinguishedName", dn), ("Identity", identity), ("Guid", _guid(dn)),
            ("ObjectCategory", self.schema_id(category)),
            ("ObjectClass", typed_list(MVP_STRING, classes)),
            ("WhenChanged", changed), ("WhenCreated", self.created),
            ("WhenChangedUTC", changed), ("WhenCreatedUTC", self.created),
            ("OrganizationId", self.organization_id()), ("Id", identity),
            ("OriginatingServer", f"DC-1.{self.domain}"),
        ]


def _guid(seed: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, seed.lower())


def _net_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%m/%d/%Y %H:%M:%S")


# ---------------------------------------------------------------------------------------
# Exchange endpoint objects


def certificate_to_string(material: CertMaterial) -> str:
    """X509Certificate.ToString(): the block the fixtures carry in <ToString>."""
    return (f"[Subject]\r\n  {material.subject}\r\n\r\n[Issuer]\r\n  {material.issuer}\r\n\r\n"
            f"[Serial Number]\r\n  {material.serial_hex}\r\n\r\n"
            f"[Not Before]\r\n  {_net_date(material.not_before)}\r\n\r\n"
            f"[Not After]\r\n  {_net_date(material.not_after)}\r\n\r\n"
            f"[Thumbprint]\r\n  {material.thumbprint}\r\n")


def exchange_certificate(material: CertMaterial, ctx: Context) -> PSObject:
    """Get-/New-/Import-ExchangeCertificate output: RawData only, as real Exchange sends."""
    return _constant(("ExchangeCertificate", material.der, ctx.domain, ctx.signed),
                     lambda: _exchange_certificate(material, ctx))


def _exchange_certificate(material: CertMaterial, ctx: Context) -> PSObject:
    return make(EXCHANGE_CERTIFICATE_TYPES, [("RawData", material.der)],
                ctx.ms(EXCHANGE_CERTIFICATE_TYPES[0]), certificate_to_string(material))


def auth_config(ctx: Context, *, current: str, next_thumbprint: str, previous: str,
                next_effective: datetime | None, changed: datetime) -> PSObject:
    key = ("AuthConfig", ctx.domain, ctx.signed, current, next_thumbprint, previous,
           next_effective)
    return _stamped(key, lambda stamp: _auth_config(
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


def _server_version(version: str, ctx: Context) -> PSObject:
    numbers = [int(x) for x in version.replace("Version ", "").replace("(Build ", "")
               .replace(")", "").replace(" ", ".").split(".") if x]
    major, minor, build, revision = [*numbers, 0, 0, 0, 0][:4]
    return make(["Microsoft.Exchange.Data.ServerVersion", "System.Object"], [
        ("Major", major), ("Minor", minor), ("Build", build), ("Revision", revision),
        ("FilePatchLevelDescription", None),
    ], ctx.ms("Microsoft.Exchange.Data.ServerVersion"), version)


def _server_role(roles: tuple[str, ...]) -> ServerRole:
    value = ServerRole(0)
    for role in roles:
        value |= ServerRole[role]
    return value


def exchange_server(spec: ServerSpec, ctx: Context, changed: datetime) -> PSObject:
    """Get-ExchangeServer output with the fixture's 60 adapted properties in order."""
    return _stamped(("ExchangeServer", spec, ctx.domain, ctx.signed),
                    lambda stamp: _exchange_server(spec, ctx, stamp), changed)


def _exchange_server(spec: ServerSpec, ctx: Context, changed: datetime) -> PSObject:
    domain = spec.fqdn.split(".", 1)[1]
    edge = "Edge" in spec.roles
    mailbox = "Mailbox" in spec.roles
    cas = "ClientAccess" in spec.roles or mailbox
    major = int(spec.version.split()[1].split(".")[0])
    group = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
    dn = (f"CN={spec.name},CN=Servers,CN={group},CN=Administrative Groups,{ctx.exchange_dn}")
    identity = ctx.ad_object_id(spec.name, f"CN={spec.name}", "Servers", dn, 9, spec.name)
    site_dn = f"CN={spec.site},CN=Sites,{ctx.config_dn}"
    site = ctx.shared(("site", spec.site), lambda: ctx.ad_object_id(
        spec.site, f"CN={spec.site}", f"{ctx.domain}/Configuration/Sites", site_dn, 4,
        f"{ctx.domain}/Configuration/Sites/{spec.site}"))
    data_path = ctx.shared(("data_path",), lambda: make(
        ["Microsoft.Exchange.Data.LocalLongFullPath", "Microsoft.Exchange.Data.LongPath",
         "System.Object"], [
            ("PathName", r"C:\Program Files\Microsoft\Exchange Server\V15\Mailbox"),
            ("IsLocalFull", True), ("IsUnc", False), ("DriveName", "C:"),
        ], ctx.ms("Microsoft.Exchange.Data.LocalLongFullPath"),
        r"C:\Program Files\Microsoft\Exchange Server\V15\Mailbox"))
    trial = ctx.shared(("trial",), lambda: make(
        ["Microsoft.Exchange.Data.EnhancedTimeSpan", "System.ValueType", "System.Object"], [
            ("Days", 0), ("Hours", 0), ("Milliseconds", 0), ("Minutes", 0), ("Seconds", 0),
            ("Ticks", 0), ("TotalDays", 0.0), ("TotalHours", 0.0), ("TotalMilliseconds", 0.0),
            ("TotalMinutes", 0.0), ("TotalSeconds", 0.0), ("Sign", 0),
        ], ctx.ms("Microsoft.Exchange.Data.EnhancedTimeSpan"), "00:00:00"))
    network = typed_list(
        "Microsoft.Exchange.Data.NetworkAddressCollection",
        [make(["Microsoft.Exchange.Data.CustomNetworkAddress",
               "Microsoft.Exchange.Data.NetworkAddress", "Microsoft.Exchange.Data.ProtocolAddress",
               "System.Object"], [("ProtocolType", proto), ("AddressString", address)],
              to_string=f"{proto}:{address}")
         for proto, address in (("ncacn_vns_spp", spec.name), ("netbios", spec.name),
                                ("ncacn_np", spec.name), ("ncalrpc", spec.name),
                                ("ncacn_ip_tcp", spec.fqdn))])
    return make(EXCHANGE_SERVER_TYPES, [
        ("Name", spec.name), ("DataPath", data_path), ("Domain", domain),
        ("Edition", ServerEditionType.Enterprise),
        ("ExchangeLegacyDN", f"/o={ctx.org_name}/ou={group}/cn=Configuration/cn=Servers/"
                             f"cn={spec.name}"),
        ("ExchangeLegacyServerRole", 0), ("Fqdn", spec.fqdn), ("CustomerFeedbackEnabled", None),
        ("InternetWebProxy", None), ("InternetWebProxyBypassList", None),
        ("IsHubTransportServer", mailbox or edge), ("IsClientAccessServer", cas),
        ("IsExchange2007OrLater", True), ("IsEdgeServer", edge), ("IsMailboxServer", mailbox),
        ("IsE14OrLater", major >= 14), ("IsE15OrLater", major >= 15),
        ("IsProvisionedServer", False), ("IsUnifiedMessagingServer", False),
        ("IsFrontendTransportServer", cas), ("NetworkAddress", network),
        ("OrganizationalUnit", f"{domain}/{spec.name}"),
        ("AdminDisplayVersion", ctx.shared(("server_version", spec.version),
                                           lambda: _server_version(spec.version, ctx))),
        ("Site", site),
        ("ServerRole", _server_role(spec.roles)), ("ErrorReportingEnabled", None),
        ("MitigationsEnabled", True), ("MitigationsAppliedTime", changed),
        ("StaticDomainControllers", typed_list(MVP_STRING, [])),
        ("StaticGlobalCatalogs", typed_list(MVP_STRING, [])),
        ("StaticConfigDomainController", ""),
        ("StaticExcludedDomainControllers", typed_list(MVP_STRING, [])),
        ("MonitoringGroup", ""), ("CurrentDomainControllers", typed_list(MVP_STRING, [])),
        ("CurrentGlobalCatalogs", typed_list(MVP_STRING, [])),
        ("CurrentConfigDomainController", ""), ("ProductID", "00000-000-0000000-00000"),
        ("IsExchangeTrialEdition", False), ("IsExpiredExchangeTrialEdition", False),
        ("MailboxProvisioningAttributes", None), ("RemainingTrialPeriod", trial),
        ("MitigationsApplied", typed_list(MVP_STRING, ["PING1"])),
        ("MitigationsBlocked", None), ("DataCollectionEnabled", True),
        ("Identity", identity), ("IsValid", True),
        ("ExchangeVersion", ctx.exchange_version("0.1 (8.0.535.0)", 0, 1, "8.0.535.0")),
        *[p for p in ctx.ad_tail(identity, dn, "ms-Exch-Exchange-Server",
                                 ["top", "server", "msExchExchangeServer"], changed)
          if p[0] not in ("Identity",)],
        ("ObjectState", ObjectState.Unchanged),
    ], ctx.ms(EXCHANGE_SERVER_TYPES[0]), spec.name)


def hybrid_configuration(ctx: Context, servers: list[ServerSpec], changed: datetime) -> PSObject:
    return _stamped(("HybridConfiguration", ctx.domain, ctx.signed, tuple(servers)),
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


def binary_file_data(data: bytes, ctx: Context) -> PSObject:
    """Export-ExchangeCertificate output; FileData holds the PKCS#12 (or DER) bytes."""
    return make(["Microsoft.Exchange.Data.BinaryFileDataObject",
                 "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"],
                [("FileData", data), ("Identity", None), ("IsValid", True)],
                ctx.ms("Microsoft.Exchange.Data.BinaryFileDataObject"),
                "Microsoft.Exchange.Data.BinaryFileDataObject")


def diagnostic_info(server: str, process: str, last_run: datetime | None,
                    ctx: Context) -> PSObject:
    """Get-ExchangeDiagnosticInfo: `Result` is XML; `[xml]` of the object reads ToString."""
    stamp = last_run.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z") if last_run else ""
    xml = ("<Diagnostics><ProcessInfo><id>4242</id><serverName>"
           f"{server.upper()}</serverName><name>{process}</name></ProcessInfo><Components>"
           "<AnchorApplication><AnchorServiceComponents><CacheScheduler>"
           f"<lastRunTime>{stamp}</lastRunTime><runFrequency>12:00:00</runFrequency>"
           "</CacheScheduler></AnchorServiceComponents></AnchorApplication></Components>"
           "</Diagnostics>")
    return make([DIAGNOSTIC_TYPE, "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"],
                [("Result", xml), ("Server", server.upper()), ("Identity", None),
                 ("IsValid", True)], ctx.ms("ExchangeDiagnosticInfoResult"), xml)


# ---------------------------------------------------------------------------------------
# Host endpoint objects


def _item_xpath(site: str) -> str:
    site_id = 2 if site == BACKEND_SITE else 1
    return f"/system.applicationHost/sites/site[@name='{site}' and @id='{site_id}']"


def _iis_collection(type_name: str, items: list[PSObject], count: int) -> PSObject:
    value = PSIEnumerable(items)
    value.PSObject.type_names = [type_name, "System.Object"]
    value.PSObject.adapted_properties.extend([
        PSNoteProperty("Count", count), PSNoteProperty("SyncRoot", "System.Object"),
        PSNoteProperty("IsSynchronized", False)])
    return value


def web_binding(site: str, protocol: str, binding_information: str,
                certificate_hash: str, store_name: str) -> PSObject:
    """Get-WebBinding output: the binding's attributes are note properties (MS)."""
    return _constant(("WebBinding", site, protocol, binding_information, certificate_hash,
                      store_name),
                     lambda: _web_binding(site, protocol, binding_information, certificate_hash,
                                          store_name))


def _web_binding(site: str, protocol: str, binding_information: str,
                 certificate_hash: str, store_name: str) -> PSObject:
    values: list[tuple[str, str, Any, bool]] = [
        ("protocol", "System.String", protocol, False),
        ("bindingInformation", "System.String", binding_information, False),
        ("sslFlags", "System.Int64", 0, False),
        ("isDsMapperEnabled", "System.Boolean", False, True),
        ("certificateHash", "System.String", certificate_hash, True),
        ("certificateStoreName", "System.String", store_name, True),
    ]
    attributes = _iis_collection(
        "Microsoft.IIs.PowerShell.Framework.ConfigurationAttributeCollection",
        [make(["Microsoft.IIs.PowerShell.Framework.ConfigurationAttribute", "System.Object"], [
            ("IsInheritedFromDefaultValue", name == "sslFlags"), ("IsProtected", False),
            ("Name", name), ("TypeName", type_name),
            ("Schema", "Microsoft.IIs.PowerShell.Framework.ConfigurationAttributeSchema"),
            ("Value", value), ("IsExtended", extended)],
            to_string="Microsoft.IIs.PowerShell.Framework.ConfigurationAttribute")
         for name, type_name, value, extended in values], len(values))
    children = _iis_collection(
        "Microsoft.IIs.PowerShell.Framework.ConfigurationChildElementCollection", [], 0)
    methods = _iis_collection(
        "Microsoft.IIs.PowerShell.Framework.ConfigurationMethodCollection",
        [make(["Microsoft.IIs.PowerShell.Framework.ConfigurationMethod", "System.Object"], [
            ("Name", name),
            ("Schema", "Microsoft.IIs.PowerShell.Framework.ConfigurationMethodSchema")],
            to_string="Microsoft.IIs.PowerShell.Framework.ConfigurationMethod")
         for name in ("EnableDsMapper", "DisableDsMapper", "GetCertificateBinding",
                      "AddSslCertificate", "RemoveSslCertificate")], 5)
    schema = make(["Microsoft.IIs.PowerShell.Framework.ConfigurationElementSchema",
                   "System.Object"], [
        ("AllowUnrecognizedAttributes", False),
        ("AttributeSchemas", "Microsoft.IIs.PowerShell.Framework."
                             "ConfigurationAttributeSchemaCollection"),
        ("ChildElementSchemas", None), ("CollectionSchema", None),
        ("IsCollectionDefault", False), ("Name", "binding")],
        to_string="Microsoft.IIs.PowerShell.Framework.ConfigurationElementSchema")
    return make(WEB_BINDING_TYPES, [
        ("Attributes", attributes), ("ChildElements", children), ("ElementTagName", "binding"),
        ("Methods", methods), ("Schema", schema),
    ], [
        ("protocol", protocol), ("bindingInformation", binding_information), ("sslFlags", 0),
        ("isDsMapperEnabled", False), ("certificateHash", certificate_hash),
        ("certificateStoreName", store_name), ("ItemXPath", _item_xpath(site)),
    ], "Microsoft.IIs.PowerShell.Framework.ConfigurationElement")


def site_binding(protocol: str, binding_information: str, certificate_hash: str,
                 store_name: str) -> PSObject:
    """Get-IISSiteBinding / New-IISSiteBinding output (IISAdministration module)."""
    host = binding_information.split(":", 2)[2] if binding_information.count(":") >= 2 else ""
    hash_bytes = bytes.fromhex(certificate_hash) if certificate_hash else None
    shown = (f"{protocol} {binding_information}" if not certificate_hash
             else f"{protocol} {binding_information} sslFlags=None")
    return make(SITE_BINDING_TYPES, [
        ("Protocol", protocol), ("BindingInformation", binding_information),
        ("CertificateHash", hash_bytes), ("CertificateStoreName", store_name),
        ("EndPoint", binding_information.rsplit(":", 1)[0] if binding_information else ""),
        ("Host", host), ("IsIPPortHostBinding", True), ("SslFlags", 0),
        ("UseDsMapper", False), ("IsLocallyStored", True),
    ], None, shown)


def store_certificate(material: CertMaterial) -> PSObject:
    """Get-ChildItem Cert:\\LocalMachine\\My item.

    PowerShell serializes an X509Certificate2 as RawData alone (the fixture of a plain
    X509Certificate2 shows it; PowerShell rehydrates it from those bytes), plus the note
    properties the certificate provider attaches to every item.
    """
    return _constant(("StoreCertificate", material.der), lambda: _store_certificate(material))


def _store_certificate(material: CertMaterial) -> PSObject:
    parent = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My"
    return make(X509_TYPES, [("RawData", material.der)], [
        ("PSPath", f"{parent}\\{material.thumbprint}"), ("PSParentPath", parent),
        ("PSChildName", material.thumbprint), ("PSDrive", "Cert"),
        ("PSProvider", "Microsoft.PowerShell.Security\\Certificate"), ("PSIsContainer", False),
    ], certificate_to_string(material))


# ---------------------------------------------------------------------------------------
# Select-Object output


def first_type_name(value: Any) -> str:
    """The most specific .NET type name of a pipeline object (for `Selected.<type>`)."""
    names = getattr(getattr(value, "PSObject", None), "type_names", None)
    if names:
        return str(names[0])
    natives: list[tuple[type, str]] = [
        (bool, "System.Boolean"), (int, "System.Int32"), (float, "System.Double"),
        (str, "System.String"), (bytes, "System.Byte[]"), (datetime, "System.DateTime"),
        (uuid.UUID, "System.Guid"), (timedelta, "System.TimeSpan")]
    return next((name for kind, name in natives if isinstance(value, kind)), "System.Object")


def properties_of(value: Any) -> list[tuple[str, Any]]:
    """The (name, value) properties an object shows to Select-Object, adapted then extended.

    The lab's objects model the wire, so a property real Exchange keeps only on the live
    object (an ExchangeCertificate's Thumbprint) is not there to select; it comes out $null.
    """
    meta = getattr(value, "PSObject", None)
    if meta is None:
        return []
    found: list[tuple[str, Any]] = []
    for holder in (meta.adapted_properties, meta.extended_properties):
        for member in holder:
            found.append((member.name, member.get_value(value)))
    return found


def flattened(value: Any) -> Any:
    """A note property value as remoting sends it from a custom object (depth 1).

    A PSCustomObject has no type-specific serialization depth, so PowerShell's default of
    one level applies: primitives (strings, numbers, bytes, dates) travel as themselves,
    collections as lists of such, and anything richer (an ADObjectId, a ServerVersion, an
    enum) as its ToString text - which is why `Site` arrives as
    "contoso.lab/Configuration/Sites/Site-A" after Select-Object.
    """
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return _enum_text(value)
    if isinstance(value, str | bytes | bool | int | float | datetime | uuid.UUID | timedelta):
        return value
    if isinstance(value, list | tuple):
        return [_text_of(item) for item in value]
    return _text_of(value)


def _text_of(value: Any) -> Any:
    if value is None or isinstance(value, str | bytes | bool | int | float | datetime):
        return value
    if isinstance(value, enum.Enum):
        return _enum_text(value)
    meta = getattr(value, "PSObject", None)
    shown = getattr(meta, "to_string", None)
    if shown is not None:
        return str(shown)
    return first_type_name(value) if meta is not None else str(value)


def _enum_text(value: enum.Enum) -> str:
    if isinstance(value, enum.Flag):
        names = [m.name for m in type(value) if m.value and m in value and m.name]
        return ", ".join(names) or "None"
    return str(value.name)


def selected(source_type: str, values: list[tuple[str, Any]]) -> PSObject:
    """Select-Object -Property output: a PSCustomObject with the chosen note properties."""
    shown = "@{" + "; ".join(f"{name}={_shown(value)}" for name, value in values) + "}"
    return make([f"Selected.{source_type}", *CUSTOM_OBJECT_TYPES], None, values, shown)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return "System.Byte[]"  # PowerShell names arrays inside @{...} by their type
    if isinstance(value, list):
        return "System.Object[]"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, datetime):
        return _net_date(value)
    return str(value)
