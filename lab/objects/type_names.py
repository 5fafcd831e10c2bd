""".NET type names and enums of the Exchange and IIS objects the lab sends.

Each list is a `<TN>` chain exactly as real Exchange 2016/2019 output carries it (most
specific first), so the bot sees the types it would see against a real server.
"""

from __future__ import annotations

from psrpcore.types import (
    PSFlagBase,
    PSType,
)

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
AUTH_SERVER_TYPES = ["Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthServer",
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
