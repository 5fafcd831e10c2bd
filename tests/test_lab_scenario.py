"""Scenario files: every built-in loads, and every mistake names file, key and problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lab import scenario
from lab.org import Org
from lab.scenario import ScenarioError

GOOD = """
[lab]
now = "2025-03-01T09:00:00Z"

[[server]]
name = "ex1"
fqdn = "ex1.contoso.lab"
site = "Site-A"
writer = true

[[certificate]]
id = "auth"
subject = "CN=Microsoft Exchange Server Auth Certificate"
days_left = 100
installed_on = ["ex1"]

[auth_config]
current = "auth"

[[backend]]
server = "ex1"
certificate = ""
"""


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_builtin_names_start_with_the_default_and_all_load() -> None:
    names = scenario.builtin_names()
    assert names[0] == "healthy"
    for required in ("healthy", "expiring-sha1", "expired", "staged", "missing-on-server",
                     "backend-deleted", "unreachable", "hybrid"):
        assert required in names
    for name in names:
        loaded = scenario.load(name)
        assert loaded.name == name
        assert scenario.describe(name) == loaded.description != ""
        assert Org(loaded).server_names()  # certificates really generate


def test_healthy_is_a_two_site_org_with_a_writer() -> None:
    healthy = scenario.load("healthy")
    assert [(s.name, s.site) for s in healthy.servers] == [
        ("ex1", "Site-A"), ("ex2", "Site-A"), ("ex3", "Site-B")]
    assert [s.name for s in healthy.servers if s.writer] == ["ex1"]
    auth = healthy.certificate(healthy.auth_config.current)
    assert auth.signature == "sha256" and auth.key_size == 2048
    assert auth.days_left is not None and auth.days_left > 365 * 2.5
    assert healthy.auth_config.next == ""
    assert all(s.in_scope for s in healthy.servers)


def test_hybrid_marks_edge_and_2010_out_of_scope() -> None:
    hybrid = scenario.load("hybrid")
    assert hybrid.lab.hybrid is True
    scope = {s.name: s.in_scope for s in hybrid.servers}
    assert scope["edge1"] is False and scope["ex2010"] is False and scope["ex1"] is True


def test_relative_times_resolve_against_the_lab_clock(tmp_path: Path) -> None:
    text = GOOD.replace('current = "auth"', 'current = ""\nnext = "auth"\n'
                        'next_effective = "+30d"')
    org = Org(scenario.load(write(tmp_path, text, "ok.toml")))
    now = datetime(2025, 3, 1, 9, tzinfo=UTC)
    assert org.now() == now
    assert org.auth_config()["next_effective"] == now + timedelta(days=30)
    cert = org.store("ex1")[0].material
    assert cert.not_after == now + timedelta(days=100)


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(ScenarioError) as info:
        scenario.load("no-such-scenario")
    assert str(info.value).startswith("no-such-scenario: scenario: ")
    assert "healthy" in str(info.value)


def test_scaled_builds_a_large_healthy_org() -> None:
    big = scenario.scaled(50, sites=3)
    assert len(big.servers) == 50
    assert {s.site for s in big.servers} == {"Site-A", "Site-B", "Site-C"}
    org = Org(big)
    current = org.auth_config()["current"]
    assert all(any(c.thumbprint == current for c in org.store(n)) for n in org.server_names())


BAD_CASES = [
    ("unknown top-level key", GOOD + "\n[extra]\nx = 1\n", "extra", "unknown key"),
    ("unknown server key", GOOD.replace('writer = true', 'writer = true\ncolour = "red"'),
     "server[0].colour", "unknown key"),
    ("missing site", GOOD.replace('site = "Site-A"\n', ""), "server[0].site", "missing"),
    ("wrong type", GOOD.replace("writer = true", 'writer = "yes"'), "server[0].writer",
     "must be true or false"),
    ("bad role", GOOD.replace('writer = true', 'writer = true\nroles = ["Hub"]'),
     "server[0].roles[0]", "unknown role 'Hub'"),
    ("bad version", GOOD.replace('writer = true', 'writer = true\nversion = "15.2"'),
     "server[0].version", "is not like"),
    ("unknown cert id", GOOD.replace('current = "auth"', 'current = "nope"'),
     "auth_config.current", "unknown certificate id 'nope'"),
    ("unknown server in installed_on", GOOD.replace('["ex1"]', '["ex9"]'),
     "certificate[0].installed_on[0]", "unknown server 'ex9'"),
    ("unknown backend server", GOOD.replace('server = "ex1"\ncertificate = ""',
                                            'server = "ex7"\ncertificate = ""'),
     "backend[0].server", "unknown server 'ex7'"),
    ("both days_left and not_after",
     GOOD.replace("days_left = 100", 'days_left = 100\nnot_after = "2026-01-01T00:00:00Z"'),
     "certificate[0].days_left", "either days_left or not_after"),
    ("no expiry at all", GOOD.replace("days_left = 100\n", ""), "certificate[0].not_after",
     "missing"),
    ("bad ISO date", GOOD.replace('now = "2025-03-01T09:00:00Z"', 'now = "March 1st"'),
     "lab.now", "is not an ISO-8601 time"),
    ("bad duration",
     GOOD.replace('[lab]', '[lab]\nreplication = { same_site = "soon" }'),
     "lab.replication.same_site", "is not a duration"),
    ("bad relative effective date",
     GOOD.replace('current = "auth"', 'next = "auth"\nnext_effective = "+3x"'),
     "auth_config.next_effective", "is not a duration"),
    ("next without effective date", GOOD.replace('current = "auth"', 'next = "auth"'),
     "auth_config.next_effective", "missing (next is set)"),
    ("bad thumbprint reference", GOOD.replace('current = "auth"', 'current = "thumbprint:XYZ"'),
     "auth_config.current", "40 hex digits"),
    ("bad signature", GOOD.replace("days_left = 100", 'days_left = 100\nsignature = "md5"'),
     "certificate[0].signature", "unknown signature 'md5'"),
    ("bad key size", GOOD.replace("days_left = 100", "days_left = 100\nkey_size = 512"),
     "certificate[0].key_size", "512 is not one of"),
    ("bad service", GOOD.replace("days_left = 100", 'days_left = 100\nservices = ["WWW"]'),
     "certificate[0].services[0]", "unknown service 'WWW'"),
    ("duplicate certificate id", GOOD + '\n[[certificate]]\nid = "auth"\nsubject = "CN=x"\n'
                                        'days_left = 3\n',
     "certificate[1].id", "duplicate id 'auth'"),
    ("duplicate server", GOOD + '\n[[server]]\nname = "EX1"\nfqdn = "ex1.other.lab"\n'
                                'site = "S"\n',
     "server[1].name", "duplicate server name"),
    ("two writers", GOOD + '\n[[server]]\nname = "ex2"\nfqdn = "ex2.contoso.lab"\n'
                           'site = "S"\nwriter = true\n',
     "server[1].writer", "only one server can be the writer"),
    ("bad fault kind", GOOD + '\n[[fault]]\nserver = "ex1"\nkind = "explode"\n',
     "fault[0].kind", "unknown kind 'explode'"),
    ("latency without ms", GOOD + '\n[[fault]]\nserver = "ex1"\nkind = "latency"\n',
     "fault[0].latency_ms", "missing"),
    ("days_left nan", GOOD.replace("days_left = 100", "days_left = nan"),
     "certificate[0].days_left", "must be a number of days from -36500 to 36500 (got nan)"),
    ("days_left inf", GOOD.replace("days_left = 100", "days_left = -inf"),
     "certificate[0].days_left", "(got -inf)"),
    ("days_left 1e308", GOOD.replace("days_left = 100", "days_left = 1e308"),
     "certificate[0].days_left", "(got 1e+308)"),
    ("days_left past year 9999", GOOD.replace("days_left = 100", "days_left = 3000000"),
     "certificate[0].days_left", "(got 3000000)"),
    ("latency_ms too large", GOOD + '\n[[fault]]\nserver = "ex1"\nkind = "latency"\n'
                                    'latency_ms = 9223372036854775807\n',
     "fault[0].latency_ms", "must be at most 60000"),
    ("duration too long",
     GOOD.replace('[lab]', '[lab]\nreplication = { cross_site = "99999999999999999999d" }'),
     "lab.replication.cross_site", "is longer than 36500 days"),
    ("relative date too far",
     GOOD.replace('current = "auth"', 'next = "auth"\nnext_effective = "+999999999w"'),
     "auth_config.next_effective", "is longer than 36500 days"),
    ("no servers", '[lab]\nhybrid = true\n', "server", "at least one"),
    ("entry not a table", 'server = ["ex2"]\n', "server[0]", "must be a table, not a string"),
    ("not an array of tables", 'server = 1\n', "server",
     "must be an array of tables ([[server]]), not a number"),
    ("unknown lab key lists the keys", GOOD.replace('[lab]', '[lab]\nspeed = 1'), "lab.speed",
     "unknown key (allowed: now, hybrid, serialization_signing, auth_admin_last_run, "
     "replication)"),
    ("unknown certificate key lists the keys",
     GOOD.replace("days_left = 100", "days_left = 100\ncolour = 1"), "certificate[0].colour",
     "(allowed: id, subject, friendly_name, sans, not_before, not_after, days_left, "
     "signature, key_size, services, installed_on)"),
    ("not_before after not_after",
     GOOD.replace("days_left = 100", 'not_before = "2027-01-01T00:00:00Z"\n'
                                     'not_after = "2026-01-01T00:00:00Z"'),
     "certificate[0].not_before", "must be earlier than not_after"),
    ("string where a number goes", GOOD.replace("days_left = 100", 'days_left = "100"'),
     "certificate[0].days_left", "must be a number, not a string"),
    ("edge writer", GOOD.replace('writer = true', 'writer = true\nroles = ["Edge"]'),
     "server[0].writer", "the writer must be an Exchange 2013+"),
    ("first of two problems wins", GOOD.replace('site = "Site-A"\n', "")
     .replace('current = "auth"', 'current = "nope"'), "server[0].site", "missing"),
    ("toml syntax", GOOD + "\n[[server]\n", "toml", ""),
]


@pytest.mark.parametrize(("label", "text", "key", "problem"), BAD_CASES,
                         ids=[c[0] for c in BAD_CASES])
def test_bad_files_name_file_key_and_problem(tmp_path: Path, label: str, text: str, key: str,
                                             problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        scenario.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_runtime_faults_are_validated_like_scenario_faults() -> None:
    with pytest.raises(ValueError, match=r"fault\.server: unknown server 'ex9'"):
        scenario.validate_fault({"server": "ex9", "kind": "unreachable"}, {"ex1"})
    with pytest.raises(ValueError) as info:
        scenario.validate_fault({"server": "ex1", "kind": "error", "when": 1}, {"ex1"})
    assert str(info.value) == ("fault: fault.when: unknown key (allowed: server, endpoint, "
                               "cmdlet, kind, message, latency_ms)")
    spec = scenario.validate_fault({"server": "ex1", "kind": "latency", "latency_ms": 5},
                                   {"ex1"})
    assert spec.latency_ms == 5 and spec.endpoint == "any"
