"""The steps each action would run (DOMAIN.md sections 5, 6, 7) and how they render."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from tests.test_findings import CUR, NOW, NXT, PREV, cert, fqdn, org, server
from workers.changes.plan import (
    EXPORTED_FILE_DATA,
    NEW_THUMBPRINT,
    Step,
    effective_date,
    plan,
    quote,
    secret_ref,
    steps,
)
from workers.changes.step_kind import StepKind
from workers.status.findings import iso
from workers.status.observation import BackendObs, OrgObs
from workers.status.report import build_status
from workers.status.report_model import Action, ActionKind, OrgStatus, ServerStatus

E1, E2, E3 = fqdn("ex1"), fqdn("ex2"), fqdn("ex3")

NEW_AUTH_CERT_LINE = (
    "New-ExchangeCertificate -Server ex1.contoso.lab -KeySize 2048 -PrivateKeyExportable $true "
    "-SubjectName 'cn=Microsoft Exchange Server Auth Certificate' "
    "-FriendlyName 'Microsoft Exchange Server Auth Certificate' -DomainName @() -Services None"
)


def status_of(obs: OrgObs) -> OrgStatus:
    return build_status(obs)


def three(cur_days: float, *, hybrid: bool = False, **kwargs: Any) -> OrgStatus:
    """ex1 (writer) + ex2 in Site-A, ex3 in Site-B, an Edge server; current has cur_days."""
    current = cert(CUR, cur_days)
    return status_of(org(
        server("ex1", current), server("ex2", current), server("ex3", current, site="Site-B"),
        server("edge", roles=("Edge",), listed=False, back=None),
        hybrid=hybrid, **kwargs,
    ))


def plan_for(status: OrgStatus, kind: str, servers: list[str] | None = None) -> list[Step]:
    action = Action(kind=ActionKind(kind), servers=servers or [], reason="test")
    return steps(status, action, writer="ex1.contoso.lab", now=NOW)


def lines(found: list[Step]) -> list[str]:
    return [step.render() for step in found]


def by_cmdlet(found: list[Step], cmdlet: str) -> list[Step]:
    return [step for step in found if step.cmdlet == cmdlet]


# --- rendering ----------------------------------------------------------------------------


def test_stage_new_renders_section_5_exactly() -> None:
    found = plan_for(three(50), "stage_new")
    assert found[0].render() == "Get-AuthConfig"
    assert found[0].changes_state is False
    assert found[1].render() == NEW_AUTH_CERT_LINE
    assert (found[1].server, found[1].endpoint, found[1].changes_state) == (E1, "exchange", True)
    assert found[2].render() == (
        "Set-AuthConfig -NewCertificateThumbprint '<new thumbprint>' "
        "-NewCertificateEffectiveDate '2025-02-14T12:00:00Z' -Force"
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("ex1.contoso.lab", "ex1.contoso.lab"),
        ("None", "None"),
        ("*:444:", "'*:444:'"),
        ("Cert:\\LocalMachine\\My", "'Cert:\\LocalMachine\\My'"),
        ("x'; Remove-Item C:\\ -Recurse; '", "'x''; Remove-Item C:\\ -Recurse; '''"),
        ("$(Stop-Computer)", "'$(Stop-Computer)'"),
        ("a\u2019; calc; \u2018", "'a\u2019\u2019; calc; \u2018\u2018'"),
        ("-Force", "'-Force'"),
        ("two words", "'two words'"),
        ("line1\nline2 $x `y \"z\"", '"line1`nline2 `$x ``y `"z`""'),
        ("bell\x07", '"bell$([char]0x07)"'),
        ("12FD38FA", "'12FD38FA'"),
        ("", "''"),
    ],
    ids=["fqdn-bare", "enum-bare", "binding-quoted", "path-quoted", "single-quote-breakout",
         "subexpression", "smart-quotes", "looks-like-a-parameter", "spaces", "newline-and-$",
         "control-char", "starts-with-digit", "empty"],
)
def test_values_render_safely(value: str, rendered: str) -> None:
    step = Step("t", "s", "exchange", "Get-Thing", (("Identity", value),), False,
                kind=StepKind.COMMAND)
    assert step.render() == f"Get-Thing -Identity {rendered}"


@pytest.mark.parametrize(
    ("parameters", "rendered"),
    [
        ((("Force", None),), "-Force"),
        ((("Confirm", False),), "-Confirm:$false"),
        ((("PrivateKeyExportable", True),), "-PrivateKeyExportable $true"),
        ((("DomainName", ()),), "-DomainName @()"),
        ((("DomainName", ("a.com", "it's")),), "-DomainName @('a.com', 'it''s')"),
        ((("KeySize", 2048),), "-KeySize 2048"),
        ((("", "/noforce"),), "/noforce"),
        ((("Password", secret_ref("pfx")),), "-Password (Read-Host -AsSecureString -Prompt 'pfx')"),
        ((("Identity", "<secret:x>"),), "-Identity '<secret:x>'"),
    ],
    ids=["switch", "switch-false", "bool", "empty-array", "array-elements-quoted", "int",
         "positional", "secret-ref-is-prompted", "secret-ref-only-for-password"],
)
def test_parameter_forms(parameters: tuple, rendered: str) -> None:
    step = Step("t", "s", "host", "Do-It", parameters, True, kind=StepKind.COMMAND)
    assert step.render() == f"Do-It {rendered}"


def test_quote_doubles_every_single_quote_form() -> None:
    doubled = "''\u2018\u2018\u2019\u2019\u201a\u201a\u201b\u201b"
    assert quote("'\u2018\u2019\u201a\u201b") == f"'{doubled}'"


def test_hostile_server_name_from_status_stays_one_quoted_argument() -> None:
    hostile = "ex9'; Remove-ExchangeCertificate -Thumbprint X -Confirm:$false; '"
    status = three(1000)
    status.servers.append(ServerStatus(name=hostile, fqdn=hostile, site="Site-A",
                                       version="Version 15.2 (Build 1.1)", roles=["Mailbox"],
                                       reachable=True, error=None))
    found = plan_for(status, "import_current", [hostile])
    imports = by_cmdlet(found, "Import-ExchangeCertificate")
    assert imports[0].render().startswith(
        "Import-ExchangeCertificate -Server 'ex9''; Remove-ExchangeCertificate -Thumbprint X "
        "-Confirm:$false; ''' -FileData"
    )


# --- effective date of stage_new ----------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(days=33), NOW + timedelta(days=30)),
        (timedelta(days=32, minutes=1), NOW + timedelta(days=30)),
        (timedelta(days=32), NOW + timedelta(hours=49)),
        (timedelta(hours=62), NOW + timedelta(hours=49)),
        (timedelta(hours=61), None),
        (timedelta(hours=60), None),
    ],
    ids=["33d", "32d1m", "32d-exactly", "62h", "61h-exactly", "60h"],
)
def test_effective_date_rule(left: timedelta, expected: object) -> None:
    assert effective_date(NOW + left, NOW) == expected


@pytest.mark.parametrize(
    ("cur_days", "effective"),
    [(33, "2025-02-14T12:00:00Z"), (32, "2025-01-17T13:00:00Z"),
     (62 / 24, "2025-01-17T13:00:00Z")],
    ids=["33d->+30d", "32d->+49h", "62h->+49h"],
)
def test_stage_new_uses_the_rule(cur_days: float, effective: str) -> None:
    (stage,) = [s for s in plan_for(three(cur_days), "stage_new")
                if s.cmdlet == "Set-AuthConfig" and dict(s.parameters).get(
                    "NewCertificateEffectiveDate")]
    assert dict(stage.parameters)["NewCertificateEffectiveDate"] == effective


def test_stage_new_with_60h_left_takes_the_emergency_path() -> None:
    found = plan_for(three(60 / 24), "stage_new")
    assert "emergency" in found[0].note
    rendered = lines(found)
    assert "Set-AuthConfig -PublishCertificate -Confirm:$false" in rendered
    assert "Restart-Service -Name MSExchangeServiceHost -Force" in rendered
    assert "Set-AuthConfig -NewCertificateThumbprint '<new thumbprint>' " \
           "-NewCertificateEffectiveDate '2025-01-15T12:01:00Z' -Force" in rendered


def test_stage_new_full_sequence() -> None:
    found = plan_for(three(50), "stage_new")
    cmdlets = [s.cmdlet for s in found]
    # verify on every in-scope server (never Edge), then watch, then post-publish
    verify = by_cmdlet(found, "Get-ExchangeCertificate")
    assert [s.server for s in verify] == [E1, E2, E3]
    assert all(dict(s.parameters)["Thumbprint"] == NEW_THUMBPRINT for s in verify)
    clear = cmdlets.index("Set-AuthConfig", 3)
    assert dict(found[clear].parameters) == {"ClearPreviousCertificate": None, "Confirm": False}
    pools = by_cmdlet(found, "Restart-WebAppPool")
    assert sorted((s.server, dict(s.parameters)["Name"]) for s in pools) == sorted(
        (srv, pool) for srv in (E1, E2, E3)
        for pool in ("MSExchangeOWAAppPool", "MSExchangeECPAppPool")
    )
    assert all(s.endpoint == "host" for s in pools)
    removes = by_cmdlet(found, "Remove-ExchangeCertificate")
    assert [s.render() for s in removes] == [
        f"Remove-ExchangeCertificate -Server {srv} -Thumbprint {CUR} -Confirm:$false"
        for srv in (E1, E2, E3)
    ]
    assert all("2025-02-15T12:00:00Z" in s.note for s in removes)  # effective + 24 h
    assert "Get-HybridConfiguration" not in cmdlets  # not hybrid


@pytest.mark.parametrize("kind", ["stage_new", "replace_now", "publish_next"])
def test_hybrid_adds_hcw_reminder_to_actions_that_change_current(kind: str) -> None:
    status = three(50, hybrid=True)
    found = plan_for(status, kind)
    hcw = [s for s in found if "Hybrid Configuration Wizard" in s.title]
    assert len(hcw) == 1 and hcw[0].changes_state is False
    assert "Free/Busy" in hcw[0].note
    assert not [s for s in plan_for(three(50), kind) if "Hybrid" in s.title]


@pytest.mark.parametrize("kind", ["import_current", "cleanup", "repair_backend"])
def test_no_hcw_for_actions_that_keep_current(kind: str) -> None:
    found = plan_for(three(50, hybrid=True), kind, [E2])
    assert not [s for s in found if "Hybrid" in s.title]


def test_replace_now_section_6() -> None:
    found = plan_for(three(-1, hybrid=True), "replace_now")
    rendered = lines(found)
    assert rendered[:6] == [
        "Get-AuthConfig",
        NEW_AUTH_CERT_LINE,
        "Set-AuthConfig -NewCertificateThumbprint '<new thumbprint>' "
        "-NewCertificateEffectiveDate '2025-01-15T12:01:00Z' -Force",
        "Set-AuthConfig -PublishCertificate -Confirm:$false",
        "Set-AuthConfig -ClearPreviousCertificate -Confirm:$false",
        "Restart-Service -Name MSExchangeServiceHost -Force",
    ]
    assert (found[5].server, found[5].endpoint) == (E1, "host")
    assert all("host endpoint" in s.note for s in found[:5])
    pools = by_cmdlet(found, "Restart-WebAppPool")
    assert len(pools) == 6 and all("not fatal" in s.note for s in pools)
    assert any("up to an hour" in s.note for s in found)
    assert "Hybrid" in found[-1].title


def test_publish_next_then_post_publish() -> None:
    current = cert(CUR, -1)
    obs = org(server("ex1", current, cert(NXT)), server("ex2", current, cert(NXT)), next=NXT,
              effective=NOW + timedelta(days=3))
    status = status_of(obs)
    found = plan_for(status, "publish_next")
    assert lines(found)[:3] == [
        "Get-AuthConfig",
        "Set-AuthConfig -PublishCertificate -Confirm:$false",
        "Set-AuthConfig -ClearPreviousCertificate -Confirm:$false",
    ]
    assert NXT in found[0].note
    assert {s.server for s in by_cmdlet(found, "Restart-WebAppPool")} == {E1, E2}


def test_import_current_exports_from_writer_and_imports_on_missing() -> None:
    obs = org(server("ex1", cert(CUR)), server("ex2"), server("ex3", cert(CUR)))
    found = plan_for(status_of(obs), "import_current", [E2])
    export = by_cmdlet(found, "Export-ExchangeCertificate")[0]
    assert export.render() == (
        f"Export-ExchangeCertificate -Server {E1} -Thumbprint {CUR} -BinaryEncoded "
        "-Password (Read-Host -AsSecureString -Prompt 'current-auth-certificate-export')"
    )
    (imp,) = by_cmdlet(found, "Import-ExchangeCertificate")
    params = dict(imp.parameters)
    assert (imp.server, params["Server"], params["FileData"]) == (E2, E2, EXPORTED_FILE_DATA)
    assert params["Password"] == "<secret:current-auth-certificate-export>"
    assert imp.changes_state is True
    assert {s.server for s in by_cmdlet(found, "Restart-WebAppPool")} == {E2}


def test_import_next_source_is_a_server_that_has_it() -> None:
    obs = org(server("ex1", cert(CUR)), server("ex2", cert(CUR)),
              server("ex3", cert(CUR), cert(NXT)), next=NXT, effective=NOW + timedelta(days=9))
    found = plan_for(status_of(obs), "import_next", [E1, E2])
    export = by_cmdlet(found, "Export-ExchangeCertificate")[0]
    assert dict(export.parameters)["Server"] == E3
    assert [s.server for s in by_cmdlet(found, "Import-ExchangeCertificate")] == [E1, E2]
    assert not by_cmdlet(found, "Restart-WebAppPool")


@pytest.mark.parametrize(
    ("back", "removes_binding"),
    [(BackendObs(False), False), (BackendObs(True, ""), True), (BackendObs(True, "F" * 40), True)],
    ids=["no-binding", "no-certificate", "not-in-store"],
)
def test_repair_backend_section_7(back: BackendObs, removes_binding: bool) -> None:
    obs = org(server("ex1", cert(CUR)), server("ex2", cert(CUR), back=back))
    found = plan_for(status_of(obs), "repair_backend", [E2])
    rendered = lines(found)
    assert "New-ExchangeCertificate -Server ex2.contoso.lab -Services None" in rendered
    assert (
        "New-IISSiteBinding -Name 'Exchange Back End' -BindingInformation '*:444:' "
        "-Protocol https -CertificateThumbPrint '<new thumbprint>' "
        "-CertStoreLocation 'Cert:\\LocalMachine\\My'"
    ) in rendered
    assert rendered.index("iisreset /noforce") > rendered.index(
        next(r for r in rendered if r.startswith("New-IISSiteBinding")))
    assert any(r.startswith("Remove-IISSiteBinding") for r in rendered) is removes_binding
    assert not [r for r in rendered if "Enable-ExchangeCertificate" in r]
    assert {s.server for s in found if s.endpoint == "host"} == {E2}


def test_repair_backend_of_the_writer_uses_its_host_endpoint() -> None:
    obs = org(server("ex1", cert(CUR), back=BackendObs(True, "")), server("ex2", cert(CUR)))
    found = plan_for(status_of(obs), "repair_backend", [E1])
    (new_cert,) = by_cmdlet(found, "New-ExchangeCertificate")
    assert (new_cert.server, new_cert.endpoint) == (E1, "host")
    assert "Add-PSSnapin" in new_cert.note


def test_cleanup_clears_and_removes_previous_never_current() -> None:
    obs = org(server("ex1", cert(CUR), cert(PREV)), server("ex2", cert(CUR), cert(PREV)),
              previous=PREV)
    found = plan_for(status_of(obs), "cleanup", [E1, E2])
    assert lines(found)[1:] == [
        "Set-AuthConfig -ClearPreviousCertificate -Confirm:$false",
        f"Remove-ExchangeCertificate -Server {E1} -Thumbprint {PREV} -Confirm:$false",
        f"Remove-ExchangeCertificate -Server {E2} -Thumbprint {PREV} -Confirm:$false",
    ]
    assert all("24 h" in s.note for s in by_cmdlet(found, "Remove-ExchangeCertificate"))


@pytest.mark.parametrize("kind", ["wait_replication", "wait_for_publish", "blocked", "none"])
def test_explanatory_actions_change_nothing(kind: str) -> None:
    found = plan_for(three(1000), kind, [E3])
    assert found
    assert not any(step.changes_state for step in found)


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="kind"):
        Action.model_validate({"kind": "reboot", "servers": [], "reason": ""})


def test_plan_json_for_every_action_of_the_status() -> None:
    obs = org(server("ex1", cert(CUR, 50)), server("ex2", back=BackendObs(False)), hybrid=True)
    status = status_of(obs)
    document = plan(status, writer="ex1", now=NOW)
    assert [a["kind"] for a in document] == [a.kind for a in status.actions]
    assert [a["kind"] for a in document] == ["repair_backend", "import_current", "stage_new"]
    text = json.dumps(document)
    assert "Read-Host" in text  # rendered export/import lines ask for the password
    for item in document:
        assert item["steps"]
        for step in item["steps"]:
            assert set(step) == {"title", "kind", "server", "endpoint", "cmdlet", "parameters",
                                 "changes_state", "note", "command"}
            assert type(step["kind"]) is str and StepKind(step["kind"])
            assert all(isinstance(p, list) and len(p) == 2 for p in step["parameters"])
            assert step["server"] and step["endpoint"] in {"exchange", "host"}


def test_missing_writer_falls_back_to_a_reachable_in_scope_server() -> None:
    found = steps(three(50), Action(kind=ActionKind.STAGE_NEW, servers=[], reason=""),
                  writer="", now=NOW)
    assert found[1].server == E1


# --- issue 13: the dedicated hybrid application and the certificate's lifetime -----------


def _hybrid_app_status(*held: str, **kwargs: Any) -> dict[str, Any]:
    from tests.test_findings import app
    return three(45, hybrid=True, app=app(*held), **kwargs)


def test_stage_new_uploads_the_next_key_between_staging_and_publication() -> None:
    found = plan_for(_hybrid_app_status(CUR), "stage_new")
    kinds = [s.kind for s in found]
    upload = found[kinds.index(StepKind.UPLOAD_HYBRID_KEY)]
    assert kinds.index(StepKind.STAGE_NEXT) < kinds.index(StepKind.UPLOAD_HYBRID_KEY) \
        < kinds.index(StepKind.WATCH_PUBLICATION)
    assert (upload.endpoint, upload.changes_state) == ("graph", True)
    assert upload.title == "Upload the next Auth Certificate to the hybrid application"
    assert upload.render() == ("PATCH /v1.0/applications(appId='app') -Keep 'every key it "
                               "holds, unchanged' -Add '<new thumbprint>'")
    assert kinds[-1] is StepKind.REMOVE_STALE_HYBRID_KEYS


def test_replace_now_uploads_before_it_publishes() -> None:
    kinds = [s.kind for s in plan_for(_hybrid_app_status(CUR), "replace_now")]
    assert kinds.index(StepKind.UPLOAD_HYBRID_KEY) < kinds.index(StepKind.PUBLISH_NEXT)


def test_no_graph_step_without_a_configured_hybrid_app() -> None:
    for status in (three(45, hybrid=True), three(45)):
        kinds = {s.kind for s in plan_for(status, "stage_new")}
        assert not kinds & {StepKind.UPLOAD_HYBRID_KEY, StepKind.REMOVE_STALE_HYBRID_KEYS}


def test_fix_uploads_what_the_app_lacks() -> None:
    status = _hybrid_app_status(PREV)
    assert status.actions[0].kind is ActionKind.UPLOAD_HYBRID_KEY
    found = plan_for(status, "upload_hybrid_key")
    assert [(s.kind, dict(s.parameters).get("Add")) for s in found] == [
        (StepKind.REREAD_AUTH_CONFIG, None), (StepKind.UPLOAD_HYBRID_KEY, CUR)]


def test_lifetime_days_creates_with_new_self_signed_certificate_on_the_host() -> None:
    action = Action(kind=ActionKind.STAGE_NEW, servers=[], reason="test")
    found = steps(three(45), action, writer="ex1.contoso.lab", now=NOW, lifetime_days=365)
    create = next(s for s in found if s.kind is StepKind.CREATE_AUTH_CERT_WITH_LIFETIME)
    assert (create.endpoint, create.cmdlet, create.server) == (
        "host", "New-SelfSignedCertificate", E1)
    params = dict(create.parameters)
    assert params["Subject"] == "CN=Microsoft Exchange Server Auth Certificate"
    assert params["KeyExportPolicy"] == "Exportable" and params["KeyLength"] == 2048
    start = NOW - timedelta(minutes=10)
    assert (params["NotBefore"], params["NotAfter"]) == (
        iso(start), iso(start + timedelta(days=365)))
    assert not by_cmdlet(found, "New-ExchangeCertificate")
