"""Certificate facts and Exchange objects read from real Exchange output (CLIXML fixtures).

Expected values come from the fixture README, from the `<ToString>` text Exchange itself
wrote into each object (independent of our DER parsing), or from the files' plain fields.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.clixml import FIXTURE_DIR, fixture_path, load_objects
from workers.exchange.parsing import (
    auth_config_from,
    backend_binding_from,
    facts_from_der,
    facts_from_exchange_certificate,
    hybrid_from,
    parse_datetime,
    server_from,
)
from workers.status.observation import AuthConfigObs


def _shown(obj: object, label: str) -> str:
    """A field of the certificate's own ToString ("[Thumbprint]\\r\\n  ABC...")."""
    shown = str(obj)
    match = re.search(rf"\[{re.escape(label)}\]\r?\n\s+([^\r\n]+)", shown)
    assert match, f"{label} not in ToString"
    return match.group(1).strip()


# --- AuthConfig ---------------------------------------------------------------------------


def test_auth_config_with_staged_next() -> None:
    auth = auth_config_from(load_objects("meac-GetAuthConfig.xml")[0])
    assert auth == AuthConfigObs(
        current="E1BDF9AE58C93C75E76C9DD882138FB8FF0FA786",
        next="BC6BF924D6EF046E64F8D1987DC1D7D2F4C0042A",
        next_effective=datetime(2023, 2, 3, 14, 16, 2, tzinfo=UTC),
        previous=None,
    )


def test_auth_config_without_next() -> None:
    auth = auth_config_from(load_objects("meac-GetAuthConfigNoNextCert.xml")[0])
    assert auth.current == "B22BD738BED13136D29B7F410CE2993C5313F8FA"
    assert auth.next is None
    assert auth.next_effective is None
    assert auth.previous is None


def test_auth_config_healthchecker_names_the_sha1_cert() -> None:
    auth = auth_config_from(load_objects("hc-e19-GetAuthConfig.xml")[0])
    assert auth.current == "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7"
    assert auth.next is None


def test_auth_config_from_plain_dict_normalises_thumbprints() -> None:
    auth = auth_config_from({
        "CurrentCertificateThumbprint": " e1bdf9ae58c93c75e76c9dd882138fb8ff0fa786 ",
        "NextCertificateThumbprint": "",
        "NextCertificateEffectiveDate": None,
        "PreviousCertificateThumbprint": None,
    })
    assert auth == AuthConfigObs(current="E1BDF9AE58C93C75E76C9DD882138FB8FF0FA786")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2023-02-03T14:16:02+00:00", datetime(2023, 2, 3, 14, 16, 2, tzinfo=UTC)),
        ("2023-02-03T15:16:02.1234567+01:00",
         datetime(2023, 2, 3, 14, 16, 2, 123456, tzinfo=UTC)),
        ("2023-02-03T14:16:02Z", datetime(2023, 2, 3, 14, 16, 2, tzinfo=UTC)),
        ("2023-02-03T14:16:02", datetime(2023, 2, 3, 14, 16, 2, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
    ids=["offset", "dotnet-7-digit-fraction", "zulu", "unspecified-kind-is-utc", "empty", "nil"],
)
def test_parse_datetime(raw: str | None, expected: datetime | None) -> None:
    assert parse_datetime(raw) == expected


def test_parse_datetime_garbage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an ISO 8601"):
        parse_datetime("next tuesday")


# --- Get-ExchangeCertificate --------------------------------------------------------------


def test_healthchecker_first_certificate_is_the_sha1_auth_cert() -> None:
    facts = facts_from_exchange_certificate(load_objects("hc-e19-GetExchangeCertificate.xml")[0])
    assert facts.thumbprint == "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7"
    assert facts.subject == "CN=Microsoft Exchange Server Auth Certificate"
    assert facts.signature_hash == "sha1"
    assert facts.key_size == 2048
    assert facts.not_after.date().isoformat() == "2024-11-06"
    assert facts.not_after.tzinfo is not None
    assert facts.not_after.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "name",
    [
        "hc-e19-GetExchangeCertificate.xml",
        "meac-GetExchangeCertificate.xml",
        "meac-GetExchangeCertificateBroken.xml",
        "meac-NewExchangeAuthCertificate.xml",
        "meac-GetInternalTransportCertificateFromServer.xml",
    ],
)
def test_every_certificate_matches_what_exchange_printed(name: str) -> None:
    objects = load_objects(name)
    assert objects
    for obj in objects:
        facts = facts_from_exchange_certificate(obj)
        assert facts.thumbprint == _shown(obj, "Thumbprint")
        assert facts.subject == _shown(obj, "Subject")
        # Exchange printed NotAfter in its local time zone; the date/time differs from
        # UTC by a whole number of hours (at most 14).
        shown = _shown(obj, "Not After")
        layout = "%m/%d/%Y %I:%M:%S %p" if shown.endswith(("AM", "PM")) else "%m/%d/%Y %H:%M:%S"
        printed = datetime.strptime(shown, layout)
        offset = facts.not_after.replace(tzinfo=None) - printed
        assert offset % timedelta(hours=1) == timedelta(0)
        assert abs(offset) <= timedelta(hours=14)


def test_meac_store_has_current_and_next_of_its_auth_config() -> None:
    thumbprints = {
        facts_from_exchange_certificate(obj).thumbprint
        for obj in load_objects("meac-GetExchangeCertificate.xml")
    }
    auth = auth_config_from(load_objects("meac-GetAuthConfig.xml")[0])
    assert auth.current in thumbprints
    assert auth.next in thumbprints


def test_broken_fixture_doubly_deserialized_still_gives_correct_facts() -> None:
    objects = load_objects("meac-GetExchangeCertificateBroken.xml")
    assert objects[0].types[0].startswith("Deserialized.")
    facts = [facts_from_exchange_certificate(obj) for obj in objects]
    by_thumb = {f.thumbprint: f for f in facts}
    # A 7-letter country name ("Germany") is invalid X.509 but must not stop the read.
    odd = by_thumb["63F480EA98F26E6F8AE7BB5311B33BB2C692D3CA"]
    assert odd.subject == "CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany"
    assert odd.sans == ("domain.com", "sub.domain.com")
    assert by_thumb["8BFE845E6DCA42BBDC8F872672CDA1A4E0C3EBF1"].not_after == datetime(
        2024, 1, 5, 7, 56, 58, tzinfo=UTC
    )


def test_backend_style_certificate_has_name_and_fqdn_sans() -> None:
    facts = facts_from_exchange_certificate(
        load_objects("meac-GetInternalTransportCertificateFromServer.xml")[0]
    )
    assert facts.sans == ("E2k16-1", "E2k16-1.Contoso.lab")


def test_raw_data_as_base64_text_is_accepted() -> None:
    obj = load_objects("hc-e19-GetExchangeCertificate.xml")[0]
    text_form = {"RawData": base64.b64encode(obj.adapted_properties["RawData"]).decode()}
    assert facts_from_exchange_certificate(text_form).thumbprint == (
        "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7"
    )


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "no RawData"),
        ({"RawData": "%%% not base64 %%%"}, "not base64"),
        ({"RawData": b"\x30\x03\x02\x01\x00"}, "not a readable DER"),
        ({"RawData": b""}, "empty"),
        ({"RawData": 42}, "unexpected type"),
    ],
    ids=["missing", "bad-base64", "not-a-certificate", "empty", "wrong-type"],
)
def test_garbage_raises_a_clear_value_error(obj: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        facts_from_exchange_certificate(obj)


def test_truncated_real_certificate_is_a_value_error() -> None:
    raw = load_objects("hc-e19-GetExchangeCertificate.xml")[0].adapted_properties["RawData"]
    with pytest.raises(ValueError, match="not a readable DER"):
        facts_from_der(raw[: len(raw) // 2])


def _make_cert(key: object, digest: hashes.HashAlgorithm | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=10))
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.sign(key, digest).public_bytes(Encoding.DER)  # type: ignore[arg-type]


def test_generated_certificate_key_size_and_hash() -> None:
    der = _make_cert(rsa.generate_private_key(65537, 1024), hashes.SHA256())
    facts = facts_from_der(der)
    assert (facts.key_size, facts.signature_hash) == (1024, "sha256")
    assert facts.sans == ()
    ec_facts = facts_from_der(_make_cert(ec.generate_private_key(ec.SECP384R1()),
                                         hashes.SHA384()))
    assert (ec_facts.key_size, ec_facts.signature_hash) == (384, "sha384")


# --- Get-ExchangeServer / hybrid / bindings ----------------------------------------------


def test_servers_healthchecker() -> None:
    (server,) = load_objects("hc-e19-GetExchangeServer.xml")
    assert server_from(server) == (
        "SOLO-E19A", "Solo-E19A.Solo.com", "Default-First-Site-Name",
        "Version 15.2 (Build 986.5)", ("Mailbox",),
    )


def test_servers_meac_two_2016_servers() -> None:
    servers = [server_from(obj) for obj in load_objects("meac-GetExchangeServer.xml")]
    assert [s[:4] for s in servers] == [
        ("E2k16-1", "E2k16-1.Contoso.lab", "Default-First-Site-Name",
         "Version 15.1 (Build 2507.18)"),
        ("E2k16-2", "E2k16-2.Contoso.lab", "Default-First-Site-Name",
         "Version 15.1 (Build 2507.18)"),
    ]
    assert all(s[4] == ("Mailbox",) for s in servers)


@pytest.mark.parametrize(
    ("obj", "roles"),
    [
        ({"Name": "a", "ServerRole": "Mailbox, ClientAccess"}, ("Mailbox", "ClientAccess")),
        ({"Name": "b", "ServerRole": "Edge", "IsEdgeServer": True}, ("Edge",)),
        ({"Name": "c", "IsMailboxServer": True, "IsClientAccessServer": True},
         ("Mailbox", "ClientAccess")),
        ({"Name": "d"}, ()),
    ],
    ids=["2013-multirole", "edge", "flags-only", "nothing"],
)
def test_roles_from_server_role_or_flags(obj: dict, roles: tuple[str, ...]) -> None:
    assert server_from(obj)[4] == roles


def test_site_as_plain_path_and_missing_fqdn() -> None:
    name, fqdn, site, _, _ = server_from({"Name": "ex9", "Site": "c.com/Configuration/Sites/B"})
    assert (name, fqdn, site) == ("ex9", "ex9", "B")


def test_hybrid_configuration() -> None:
    assert hybrid_from(load_objects("hc-e19-GetHybridConfiguration.xml")) is True
    assert hybrid_from([]) is False


def test_backend_binding_from_get_webbinding() -> None:
    bindings = load_objects("hc-e19-GetWebBinding.xml")
    assert len(bindings) == 6
    assert backend_binding_from(bindings) == (True, "12FD38FA8F58C8A74B3039962882DEFE4199D453")


def test_backend_binding_ignores_other_sites_and_protocols() -> None:
    bindings = load_objects("hc-e19-GetWebBinding.xml")
    front_end_only = [b for b in bindings if "Exchange Back End" not in str(
        b.extended_properties.get("ItemXPath"))]
    assert backend_binding_from(front_end_only) == (False, None)


@pytest.mark.parametrize(
    ("objs", "expected"),
    [
        ([{"protocol": "https", "bindingInformation": "*:444:", "certificateHash": ""}],
         (True, None)),
        ([{"Protocol": "https", "BindingInformation": "*:444:",
           "CertificateHash": bytes.fromhex("12fd38fa")}], (True, "12FD38FA")),
        ([{"protocol": "http", "bindingInformation": "*:81:"}], (False, None)),
    ],
    ids=["binding-without-certificate", "iis-site-binding-bytes", "http-only"],
)
def test_backend_binding_shapes(objs: list[dict], expected: tuple[bool, str | None]) -> None:
    assert backend_binding_from(objs) == expected


def test_every_fixture_is_read_from_inside_the_repo() -> None:
    """A fresh clone with nothing beside it must find every file a test reads."""
    repo = Path(__file__).resolve().parents[1]
    names = sorted(p.name for p in FIXTURE_DIR.glob("*.xml"))
    assert len(names) == 12
    for name in names:
        path = fixture_path(name)
        assert path.is_relative_to(repo / "tests" / "fixtures"), path
        assert path.is_file()
    with pytest.raises(ValueError, match="fixtures are read only from"):
        fixture_path("../../../outside/meac-GetAuthConfig.xml")  # beside the checkout
