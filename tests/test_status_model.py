"""The typed status (workers.status.report_model) keeps DESIGN.md's "Status JSON" exact.

Three proofs that moving from dicts to models changed no byte of the contract:
- every status document the dict-based builder wrote for the built-in scenarios
  (tests/fixtures/status-json/, captured before the change) reads into the model and
  dumps back byte-identically;
- `exauth status --json` of several scenarios, run as a user runs it, has exactly DESIGN's
  keys in DESIGN's order at every level and round-trips through the model byte-identically;
- the enums hold exactly DESIGN's closed sets, action kinds in the order to do them.
A document that is not a status is refused with one line naming the first bad key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.serve import LabHandle, write_config
from tests.test_cli import exauth
from workers.status.report_model import (
    ActionKind,
    BackendProblem,
    FindingCode,
    OrgStatus,
    Severity,
    StatusDocumentError,
    parse_status,
)

FIXTURES = Path(__file__).parent / "fixtures" / "status-json"

# DESIGN.md "Status JSON", key for key, in order.
TOP = ["org", "checked_at", "hybrid", "sites", "servers", "auth", "backend", "findings",
       "actions"]
SERVER = ["name", "fqdn", "site", "version", "roles", "reachable", "error"]
AUTH = ["current", "next", "previous"]
CERT = ["thumbprint", "subject", "not_before", "not_after", "days_left", "signature_hash",
        "key_size", "present_on", "missing_on", "unknown_on"]
BACKEND = ["server", "thumbprint", "not_after", "days_left", "problem"]
FINDING = ["code", "severity", "server", "message"]
ACTION = ["kind", "servers", "reason"]


def as_cli_prints(document: dict[str, Any]) -> str:
    """`exauth status --json` for one org (bot.cli.emit_json)."""
    return json.dumps(document, indent=2, default=str)


def assert_contract_keys(doc: dict[str, Any]) -> None:
    assert list(doc) == TOP
    assert all(list(server) == SERVER for server in doc["servers"])
    assert list(doc["auth"]) == AUTH
    for role in AUTH:
        cert = doc["auth"][role]
        if cert is not None:
            assert list(cert) == ([*CERT, "effective"] if role == "next" else CERT)
    assert all(list(entry) == BACKEND for entry in doc["backend"])
    assert all(list(item) == FINDING for item in doc["findings"])
    assert all(list(item) == ACTION for item in doc["actions"])


def fixture_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.json"))


def test_every_built_in_scenario_has_a_fixture() -> None:
    scenarios = sorted(p.stem for p in (Path(__file__).parent.parent / "lab" / "built_in_scenarios")
                       .glob("*.toml"))
    assert fixture_names() == scenarios


@pytest.mark.parametrize("name", fixture_names())
def test_documents_of_the_dict_builder_round_trip_byte_identically(name: str) -> None:
    text = (FIXTURES / f"{name}.json").read_text()
    document = json.loads(text)
    assert_contract_keys(document)
    status = parse_status(document)
    assert as_cli_prints(status.to_json()) + "\n" == text


@pytest.mark.parametrize("scenario", ["healthy", "staged", "unreachable", "backend-deleted",
                                      "expired"])
def test_status_json_of_the_cli_is_the_contract_and_round_trips(
    make_lab: Callable[..., LabHandle], tmp_path: Path, scenario: str,
) -> None:
    handle = make_lab(scenario)
    config = write_config(handle.info, str(tmp_path / "exauth.toml"))
    result = exauth("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode in (0, 1, 2), result.stderr
    document = json.loads(result.stdout)
    assert_contract_keys(document)
    again = parse_status(json.loads(result.stdout)).to_json()
    assert as_cli_prints(again) == result.stdout.rstrip("\n")


def test_enums_are_the_closed_sets_of_design() -> None:
    # DESIGN's sets, extended by issue 13 (the dedicated hybrid application; README
    # "Status findings"): upload_hybrid_key, severity unknown, six HYBRID_APP_* codes.
    assert [kind.value for kind in ActionKind] == [
        "blocked", "upload_hybrid_key", "replace_now", "publish_next", "import_current",
        "import_next", "stage_new", "wait_replication", "wait_for_publish", "repair_backend",
        "cleanup", "none"]
    assert [s.value for s in Severity] == ["critical", "warning", "unknown", "info"]
    assert [p.value for p in BackendProblem] == [
        "no_binding", "no_certificate", "not_in_store", "expired", "expiring", "unknown"]
    assert len(FindingCode) == 18 + 6
    assert len([c for c in FindingCode if c.name.startswith("HYBRID_APP_")]) == 6
    assert all(code.value == code.name for code in FindingCode)


def test_enums_dump_as_their_json_strings() -> None:
    status = parse_status(json.loads((FIXTURES / "unreachable.json").read_text()))
    assert status.actions[0].kind is ActionKind.BLOCKED
    assert status.findings[0].severity is Severity.CRITICAL
    dumped = status.to_json()
    assert type(dumped["actions"][0]["kind"]) is str
    assert type(dumped["findings"][0]["severity"]) is str


def _fixture(name: str = "staged") -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


@pytest.mark.parametrize(
    ("break_it", "needle"),
    [
        (lambda d: d["auth"]["current"].pop("thumbprint"),
         "auth.current.thumbprint: Field required"),
        (lambda d: d["actions"][0].update(kind="reboot"), "actions.0.kind: Input should be"),
        (lambda d: d["findings"].append({"code": "NOPE", "severity": "critical",
                                         "server": None, "message": "x"}),
         "code: Input should be"),
        (lambda d: d["servers"][0].update(colour="blue"), "servers.0.colour: Extra inputs"),
        (lambda d: d.update(hybrid="sometimes"), "hybrid: Input should be a valid boolean"),
    ],
    ids=["missing-key", "unknown-action", "unknown-code", "extra-key", "wrong-type"],
)
def test_an_invalid_document_is_one_line_naming_the_key(
    break_it: Callable[[dict[str, Any]], Any], needle: str,
) -> None:
    document = _fixture()
    break_it(document)
    with pytest.raises(StatusDocumentError) as caught:
        parse_status(document)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("not a status document: ")
    assert needle in text


def test_not_a_mapping_is_one_line() -> None:
    with pytest.raises(StatusDocumentError) as caught:
        parse_status(["not", "a", "status"])
    assert "\n" not in str(caught.value)


def test_a_model_passes_through() -> None:
    status = parse_status(_fixture())
    assert parse_status(status) is status
    assert isinstance(status, OrgStatus)
