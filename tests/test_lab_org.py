"""The org model: servicelets, replication, pools, signing, reachability, faults, state."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from lab import scenario
from lab.certs import AUTH_SUBJECT
from lab.org import BACKEND_BINDING, BACKEND_SITE, Binding, Org, OrgError
from tests.fixtures_lab import LAB_NOW, fixed_org

NOW = LAB_NOW


def holders(org: Org, thumbprint: str) -> set[str]:
    return {n for n in org.server_names() if any(c.thumbprint == thumbprint
                                                 for c in org.store(n))}


def new_auth(org: Org, server: str = "ex1") -> str:
    return org.new_certificate(server, subject=AUTH_SUBJECT, friendly_name="auth", domains=[],
                               key_size=2048, exportable=True, services=[]).thumbprint


def test_clock_is_frozen_at_lab_now_and_advances() -> None:
    org = fixed_org("healthy")
    assert org.now() == NOW
    org.advance(timedelta(hours=3))
    org.advance("2d")
    assert org.now() == NOW + timedelta(days=2, hours=3)
    with pytest.raises(ValueError):
        org.advance(timedelta(seconds=-1))


def test_wall_clock_scenarios_tick() -> None:
    org = Org(scenario.load("healthy"))
    first = org.now()
    assert abs((first - datetime.now(UTC)).total_seconds()) < 60
    assert org.state()["clock"]["ticking"] is True


def test_replication_same_site_then_cross_site() -> None:
    org = fixed_org("healthy")
    thumb = new_auth(org)
    org.set_next(thumb, NOW + timedelta(days=30))
    assert holders(org, thumb) == {"ex1"}
    org.advance(timedelta(minutes=14))
    assert holders(org, thumb) == {"ex1"}
    org.advance(timedelta(minutes=1))
    assert holders(org, thumb) == {"ex1", "ex2"}
    org.advance(timedelta(hours=23, minutes=44))
    assert "ex3" not in holders(org, thumb)
    org.advance(timedelta(minutes=1))
    assert holders(org, thumb) == {"ex1", "ex2", "ex3"}
    copy = next(c for c in org.store("ex3") if c.thumbprint == thumb)
    assert copy.has_private_key  # the servicelet copies the key too


def test_certificates_not_named_in_auth_config_are_not_replicated() -> None:
    org = fixed_org("healthy")
    thumb = new_auth(org)
    org.advance(timedelta(days=3))
    assert holders(org, thumb) == {"ex1"}


def test_cross_site_never_leaves_the_other_site_without_it() -> None:
    org = fixed_org("missing-on-server")
    current = org.auth_config()["current"]
    assert holders(org, current) == {"ex1", "ex2"}
    org.advance(timedelta(days=30))
    assert holders(org, current) == {"ex1", "ex2"}


def test_an_import_in_the_other_site_becomes_a_source_there() -> None:
    loaded = scenario.load("missing-on-server")
    extra = scenario.ServerSpec(name="ex4", fqdn="ex4.contoso.lab", site="Site-B")
    org = Org(dataclasses.replace(loaded, servers=(*loaded.servers, extra),
                                  lab=dataclasses.replace(loaded.lab, now=NOW)))
    current = org.auth_config()["current"]
    material = next(c for c in org.store("ex1") if c.thumbprint == current).material
    org.import_certificate("ex3", material, exportable=True, friendly_name="auth")
    org.advance(timedelta(minutes=15))
    assert holders(org, current) == {"ex1", "ex2", "ex3", "ex4"}


def test_auth_admin_publishes_a_due_next_on_its_12_hour_tick() -> None:
    org = fixed_org("staged")  # next effective at +20h, AuthAdmin last ran at NOW
    before = org.auth_config()
    org.advance(timedelta(hours=23))
    assert org.auth_config()["next"] == before["next"]  # effective passed, no tick yet
    org.advance(timedelta(hours=1))  # the 24 h tick
    after = org.auth_config()
    assert after["current"] == before["next"]
    assert after["previous"] == before["current"]
    assert after["next"] == "" and after["next_effective"] is None
    published = [e for e in org.events() if e["id"] == 2014]
    assert len(published) == 1
    assert published[0]["source"] == "MSExchange AuthAdmin"
    assert before["next"] in published[0]["message"]
    assert published[0]["time"] == "2025-03-02T09:00:00Z"


def test_restarting_service_host_runs_auth_admin_now() -> None:
    org = fixed_org("staged")
    nxt = org.auth_config()["next"]
    org.restart_service("ex2", "MSExchangeServiceHost")
    assert org.auth_config()["next"] == nxt  # not yet effective
    org.advance(timedelta(hours=21))
    org.restart_service("ex2", "MSExchangeServiceHost")
    assert org.auth_config()["current"] == nxt
    assert org.auth_admin_last_run("ex2") == NOW + timedelta(hours=21)


def test_a_stuck_auth_admin_never_publishes_until_the_fault_is_cleared() -> None:
    org = fixed_org("publish-overdue")
    nxt = org.auth_config()["next"]
    org.advance(timedelta(days=2))
    assert org.auth_config()["next"] == nxt
    assert any(e["level"] == "Error" for e in org.events())
    org.clear_faults()
    org.advance(timedelta(hours=12))
    assert org.auth_config()["current"] == nxt


def test_pools_keep_the_old_cert_until_recycled() -> None:
    org = fixed_org("staged")
    assert org.pool_works("ex1", "MSExchangeOWAAppPool")
    org.publish_next()
    assert not org.pool_works("ex1", "MSExchangeOWAAppPool")
    assert not org.pool_works("ex1", "MSExchangeECPAppPool")
    org.restart_pool("ex1", "MSExchangeOWAAppPool")
    assert org.pool_works("ex1", "MSExchangeOWAAppPool")
    assert not org.pool_works("ex1", "MSExchangeECPAppPool")
    org.iisreset("ex2")
    assert org.state()["pools"]["ex2"]["MSExchangeECPAppPool"]["works"] is True
    with pytest.raises(OrgError):
        org.restart_pool("ex1", "DefaultAppPool")


def test_pools_fail_when_the_current_cert_is_expired() -> None:
    org = fixed_org("expired")
    assert not org.pool_works("ex1", "MSExchangeOWAAppPool")
    assert all(not p["works"] for p in org.state()["pools"]["ex3"].values())


def test_serialization_signing_breaks_the_exchange_endpoint_where_the_cert_is_bad() -> None:
    expired = fixed_org("expired")
    assert all(expired.signing_failure(n) for n in ("ex1", "ex2", "ex3"))
    assert "expired" in (expired.signing_failure("ex1") or "")
    missing = fixed_org("missing-on-server")
    assert missing.signing_failure("ex1") is None
    assert "was not found" in (missing.signing_failure("ex3") or "")
    off = fixed_org("expired", serialization_signing=False)
    assert off.signing_failure("ex1") is None


def test_broken_back_end_binding_fails_the_exchange_endpoint_until_repaired() -> None:
    org = fixed_org("backend-deleted")
    failure = org.exchange_endpoint_failure("ex2")
    assert failure is not None
    assert "ClientAccessServer=EX2" in failure and "Cafe-SendFailure" in failure
    assert "BackEndServer=ex2.contoso.lab" in failure
    assert org.exchange_endpoint_failure("ex1") is None
    cert = org.new_certificate("ex2", subject="CN=ex2", friendly_name="Microsoft Exchange",
                               domains=["ex2", "ex2.contoso.lab"], key_size=2048,
                               exportable=False, services=[])
    org.add_binding("ex2", Binding(BACKEND_SITE, BACKEND_BINDING, cert.thumbprint),
                    force=True)
    assert org.exchange_endpoint_failure("ex2") is not None  # HTTP.sys not updated yet
    org.iisreset("ex2")
    assert org.exchange_endpoint_failure("ex2") is None


def test_deleting_the_back_end_cert_breaks_the_endpoint() -> None:
    org = fixed_org("healthy")
    backend = org.state()["bindings"]["ex1"]["backend"]["certificate_hash"]
    org.remove_certificate("ex1", backend)
    assert org.exchange_endpoint_failure("ex1") is not None


def test_unreachable_servers_and_transport_faults() -> None:
    org = fixed_org("unreachable")
    assert org.transport_fault("ex3", "exchange") == "unreachable"
    assert org.transport_fault("ex3", "host") == "unreachable"
    assert org.server_info("ex3")["reachable"] is False
    with pytest.raises(OrgError) as info:
        org.target("ex3.contoso.lab", "ex1")
    assert info.value.kind == "unreachable" and "RPC server is unavailable" in info.value.message
    thumb = new_auth(org)
    org.set_next(thumb, NOW + timedelta(days=30))
    org.advance(timedelta(days=3))
    assert "ex3" not in holders(org, thumb)

    healthy = fixed_org("healthy")
    healthy.add_fault({"server": "ex2", "endpoint": "host", "kind": "auth_failure"})
    healthy.add_fault({"server": "ex2", "endpoint": "any", "kind": "latency", "latency_ms": 40})
    healthy.add_fault({"server": "ex2", "endpoint": "exchange", "kind": "latency",
                       "latency_ms": 2})
    assert healthy.transport_fault("ex2", "host") == "auth_failure"
    assert healthy.transport_fault("ex2", "exchange") is None
    assert healthy.latency_ms("ex2", "exchange") == 42
    assert healthy.latency_ms("ex2", "host") == 40
    healthy.add_fault({"server": "ex1", "kind": "unreachable"})
    assert healthy.server_info("ex1")["reachable"] is False
    healthy.clear_faults()
    assert healthy.transport_fault("ex2", "host") is None
    assert healthy.server_info("ex1")["reachable"] is True
    with pytest.raises(ValueError, match="unknown kind"):
        healthy.add_fault({"server": "ex1", "kind": "meteor"})


def test_command_faults_match_server_endpoint_and_cmdlet() -> None:
    org = fixed_org("healthy")
    org.add_fault({"server": "ex1", "endpoint": "exchange", "cmdlet": "Get-AuthConfig",
                   "kind": "error", "message": "boom"})
    assert org.command_fault("ex1", "exchange", "get-authconfig") == "boom"
    assert org.command_fault("ex1", "host", "Get-AuthConfig") is None
    assert org.command_fault("ex1", "exchange", "Get-ExchangeServer") is None


def test_reset_restores_the_scenario_as_loaded() -> None:
    org = fixed_org("staged")
    current = org.auth_config()["current"]
    org.publish_next()
    new_auth(org, "ex2")
    org.add_fault({"server": "ex1", "kind": "unreachable"})
    org.record_call(server="ex1", endpoint="exchange", command="Get-AuthConfig",
                    parameters={}, outcome="ok")
    org.advance(timedelta(days=1))
    org.reset()
    assert org.now() == NOW
    assert org.auth_config()["current"] == current
    assert org.calls() == [] and org.faults() == []
    assert len(org.store("ex2")) == 3  # auth, next, back end


def test_state_is_json_and_names_everything() -> None:
    org = fixed_org("backend-deleted")
    org.record_call(server="ex1", endpoint="exchange", command="Import-ExchangeCertificate",
                    parameters={"Password": "secret", "FileData": "<3 bytes>"}, outcome="ok")
    state = json.loads(json.dumps(org.state()))
    assert set(state) >= {"clock", "servers", "stores", "auth_config", "bindings", "pools",
                          "events", "faults"}
    assert state["clock"]["now"] == "2025-03-01T09:00:00Z"
    assert state["bindings"]["ex2"]["backend"]["certificate_hash"] == ""
    entry = state["stores"]["ex1"][0]
    assert set(entry) >= {"thumbprint", "subject", "not_after", "services", "has_private_key"}
    assert org.calls()[0]["parameters"]["Password"] == "***"
    assert "secret" not in json.dumps(org.calls())


def test_resolve_and_server_info() -> None:
    org = fixed_org("hybrid")
    assert org.resolve("EX1.contoso.lab") == "ex1"
    assert org.resolve("edge1") == "edge1"
    assert org.resolve("mail.contoso.lab") is None
    info = org.server_info("ex2010")
    assert info == {"name": "ex2010", "fqdn": "ex2010.contoso.lab", "site": "Site-A",
                    "roles": ["Mailbox", "ClientAccess"],
                    "version": "Version 14.3 (Build 123.4)", "reachable": True}
