"""The lab's template and CLIXML caches send exactly what its serializer would make.

`objects` builds big objects once per content and restamps their time; `LabPool`
reuses the template's CLIXML with only the time text swapped. Each check compares those
bytes with psrpcore's serialization (`<ToString>` escaped, as LabPool sends it) of the
same object built from scratch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest
from psrpcore.types import serialize

from lab import objects, scenario
from lab.cmdlets import select_object
from lab.objects import certificate_objects, config_objects, iis_objects, server_objects
from lab.org import Org
from lab.psrp.runspace_pool import LabPool, Rendered, escape_to_strings


def _clixml(value: object) -> bytes:
    """psrpcore's serialization, with `<ToString>` escaped as the lab sends it."""
    element = serialize(value, None)
    escape_to_strings(element)
    return ElementTree.tostring(element, encoding="utf-8", method="xml")


def _sent(pool: LabPool, value: object) -> bytes:
    rendered = pool.render(value)
    assert isinstance(rendered, Rendered)
    return rendered.clixml


@pytest.fixture(scope="module")
def org() -> Org:
    return Org(scenario.load("hybrid"))


@pytest.mark.parametrize("signed", [True, False])
def test_stamped_objects_render_as_fresh_builds(org: Org, signed: bool) -> None:
    ctx = objects.Context("contoso.lab", signed)
    pool = LabPool()
    for tick in range(2):  # the second pass reads every cache
        now = datetime(2026, 3, 4, 5, 6, 7, 123456 + tick, tzinfo=UTC)
        auth = {"current": "AB" * 20, "next_thumbprint": "CD" * 20, "previous": "",
                "next_effective": now + timedelta(days=2)}
        built = objects.auth_config(ctx, **auth, changed=now)
        fresh = config_objects._auth_config(ctx, **auth, changed=now)
        assert _sent(pool, built) == _clixml(built) == _clixml(fresh)
        for spec in org.servers():
            built = objects.exchange_server(spec, ctx, now)
            assert _sent(pool, built) == _clixml(server_objects._exchange_server(spec, ctx, now))
            assert built.WhenChanged == now
        built = objects.hybrid_configuration(ctx, org.servers(), now)
        assert _sent(pool, built) == _clixml(
            config_objects._hybrid_configuration(ctx, org.servers(), now))


def test_constant_objects_render_as_fresh_builds(org: Org) -> None:
    ctx = objects.Context("contoso.lab", True)
    pool = LabPool()
    for _ in range(2):
        for spec in org.servers():
            for stored in org.store(spec.name):
                material = stored.material
                assert _sent(pool, objects.exchange_certificate(material, ctx)) == _clixml(
                    certificate_objects._exchange_certificate(material, ctx))
                assert _sent(pool, objects.store_certificate(material)) == _clixml(
                    certificate_objects._store_certificate(material))
            for binding in org.bindings(spec.name):
                args = (binding.site, "https", binding.binding_information,
                        binding.certificate_hash, binding.store_name)
                assert _sent(pool, objects.web_binding(*args)) == _clixml(
                    iis_objects._web_binding(*args))


@pytest.mark.parametrize("wanted", [["Name", "Fqdn", "Site"], ["WhenChanged", "Name"], ["Is*"]])
def test_select_object_from_templates_matches_a_fresh_selection(org: Org,
                                                                 wanted: list[str]) -> None:
    ctx = objects.Context("contoso.lab", True)
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

    def select(item: object) -> object:
        return objects.selected(objects.first_type_name(item),
                                select_object._chosen(objects.properties_of(item), wanted, []))

    for spec in org.servers():
        item = objects.exchange_server(spec, ctx, now)
        for _ in range(2):
            derived = objects.derived(item, ("Select-Object", tuple(wanted), ()), select)
            assert _clixml(derived) == _clixml(select(item))
