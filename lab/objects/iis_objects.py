"""IIS output on the host endpoint: Get-WebBinding and Get-IISSiteBinding bindings."""

from __future__ import annotations

from typing import Any

from psrpcore.types import (
    PSIEnumerable,
    PSNoteProperty,
    PSObject,
)

from lab.objects.psobject_parts import make
from lab.objects.templates import constant
from lab.objects.type_names import (
    SITE_BINDING_TYPES,
    WEB_BINDING_TYPES,
)
from lab.org import BACKEND_SITE


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

    return constant(("WebBinding", site, protocol, binding_information, certificate_hash,
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

