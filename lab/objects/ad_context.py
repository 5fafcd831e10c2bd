"""The AD context every Exchange configuration object is built in: names, ids, shared parts.

An org's domain fixes its AD distinguished names, object ids and GUIDs; `Context` derives
them once and builds the nested objects (schema ids, versions, organization id) that every
configuration object repeats.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from psrpcore.types import (
    PSObject,
)

from lab.objects.psobject_parts import make, serialization_data, typed_list
from lab.objects.templates import cached_template
from lab.objects.type_names import (
    AD_OBJECT_ID,
    MVP_STRING,
)

_PARTITION_GUID = uuid.UUID("59ce2f71-eaa2-4ddf-a4fa-f25069d0b324")


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
        return cached_template(("shared", self.domain, self.signed, *key), build)

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

