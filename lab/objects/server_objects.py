"""Per-server output: Get-ExchangeServer and Get-ExchangeDiagnosticInfo."""

from __future__ import annotations

from datetime import UTC, datetime

from psrpcore.types import (
    PSObject,
)

from lab.objects.ad_context import Context
from lab.objects.psobject_parts import make, typed_list
from lab.objects.templates import stamped
from lab.objects.type_names import (
    DIAGNOSTIC_TYPE,
    EXCHANGE_SERVER_TYPES,
    MVP_STRING,
    ObjectState,
    ServerEditionType,
    ServerRole,
)
from lab.scenario import ServerSpec


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

    return stamped(("ExchangeServer", spec, ctx.domain, ctx.signed),
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

