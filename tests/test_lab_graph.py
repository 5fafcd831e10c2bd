"""The lab's Microsoft Graph stand-in over the wire: a real msal client signs in (secret,
certificate, with and without instance discovery) against the lab's authority over HTTPS
with the lab's own CA, and Graph's keyCredentials semantics, errors and faults hold."""

from __future__ import annotations

import base64
import copy
import tomllib
from collections.abc import Callable
from typing import Any

import msal
import pytest
import requests

from lab import scenario
from lab.scenario import SCENARIO_DIR, ScenarioError
from lab.serve import LabHandle
from tests.fixtures_lab import control


class _Verifying(requests.Session):
    """A session that checks TLS against one CA file even when $REQUESTS_CA_BUNDLE is set
    (requests lets that variable override a session's own `verify`)."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.ca_file
        kwargs.setdefault("timeout", 10)
        return super().request(method, url, *args, **kwargs)


def _msal(graph: dict[str, Any], credential: Any = None, **kw: Any) -> msal.ClientApplication:
    kw.setdefault("instance_discovery", False)
    return msal.ConfidentialClientApplication(
        graph["client_id"], client_credential=credential or graph["client_secret"],
        authority=f"{graph['authority']}/{graph['tenant_id']}",
        http_client=_Verifying(graph["ca_file"]), **kw)


def _token(graph: dict[str, Any], credential: Any = None, **kw: Any) -> str:
    result = _msal(graph, credential, **kw).acquire_token_for_client(
        [graph["graph_url"] + "/.default"])
    assert "access_token" in result, result
    return str(result["access_token"])


def _session(graph: dict[str, Any], token: str | None = None) -> _Verifying:
    session = _Verifying(graph["ca_file"])
    session.headers["Authorization"] = f"Bearer {token or _token(graph)}"
    return session


def _app_url(graph: dict[str, Any], app_id: str | None = None) -> str:
    return f"{graph['graph_url']}/v1.0/applications(appId='{app_id or graph['app_id']}')"


def _hybrid_data() -> dict[str, Any]:
    return tomllib.loads((SCENARIO_DIR / "hybrid.toml").read_text(encoding="utf-8"))


@pytest.fixture()
def hybrid(make_lab: Callable[..., LabHandle]) -> LabHandle:
    return make_lab("hybrid")


def test_ready_line_names_the_graph_stand_in_and_its_ca(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    assert graph["authority"].startswith("https://127.0.0.1:")
    assert graph["graph_url"].startswith("https://")
    # Only the lab's CA vouches for it: the system trust store does not.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(graph["authority"] + "/common/discovery/instance", timeout=10,
                     verify=True)
    answer = requests.get(f"{graph['authority']}/{graph['tenant_id']}/v2.0/.well-known/"
                          "openid-configuration", verify=graph["ca_file"], timeout=10)
    assert answer.json()["token_endpoint"] == (
        f"{graph['authority']}/{graph['tenant_id']}/oauth2/v2.0/token")


def test_a_scenario_without_entra_has_no_graph(lab: LabHandle) -> None:
    assert lab.graph is None and "graph" not in lab.info
    assert control(lab, "GET", "state")["entra"] is None


def test_msal_signs_in_with_secret_certificate_and_instance_discovery(
        hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    _token(graph)
    with open(graph["client_certificate_file"], encoding="ascii") as handle:
        pem = handle.read()
    certificate = pem[pem.index("-----BEGIN CERTIFICATE"):]
    _token(graph, {"private_key": pem, "public_certificate": certificate})  # PS256, x5t#S256
    _token(graph, {"private_key": pem, "thumbprint": _sha1_thumbprint(certificate)})  # RS256
    _token(graph, instance_discovery=f"{graph['authority']}/common/discovery/instance")
    tokens = [c for c in hybrid.org.calls() if c["command"].endswith("/oauth2/v2.0/token")]
    assert [c["parameters"]["credential"] for c in tokens] == \
        ["secret", "assertion", "assertion", "secret"]
    assert all(c["outcome"] == "ok" for c in tokens)


def _sha1_thumbprint(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()


def test_wrong_secret_unknown_client_and_unknown_tenant_answer_like_entra(
        hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    wrong = _msal(graph, "not-the-secret").acquire_token_for_client(
        [graph["graph_url"] + "/.default"])
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]
    unknown = dict(graph, client_id="00000000-0000-0000-0000-000000000001")
    answer = _msal(unknown).acquire_token_for_client([graph["graph_url"] + "/.default"])
    assert answer["error"] == "unauthorized_client" and "AADSTS700016" in \
        answer["error_description"]
    with pytest.raises(ValueError, match="tenant name or GUID"):
        _msal(dict(graph, tenant_id="00000000-0000-0000-0000-000000000002"))


def test_get_shows_the_seeded_auth_certificate_and_key_only_with_select(
        hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    session = _session(graph)
    current = hybrid.org.auth_config()["current"]
    plain = session.get(_app_url(graph)).json()
    assert [k["customKeyIdentifier"] for k in plain["keyCredentials"]] == [current]
    assert plain["keyCredentials"][0]["key"] is None
    selected = session.get(_app_url(graph), params={"$select": "id,keyCredentials"}).json()
    assert set(selected) == {"@odata.context", "id", "keyCredentials"}
    der = base64.b64decode(selected["keyCredentials"][0]["key"])
    stored = hybrid.org.find_certificate("ex1", current).material
    assert der == stored.der
    by_object = session.get(f"{graph['graph_url']}/v1.0/applications/{selected['id']}")
    assert by_object.json()["appId"] == graph["app_id"]
    missing = session.get(_app_url(graph, "00000000-0000-0000-0000-000000000009"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"
    bad = session.get(_app_url(graph), params={"$select": "passwordCredentials"})
    assert bad.status_code == 400 and "passwordCredentials" in bad.json()["error"]["message"]
    assert requests.get(_app_url(graph), verify=graph["ca_file"], timeout=10).status_code == 401


def _new_key(hybrid: LabHandle, server: str = "ex1") -> tuple[dict[str, Any], str]:
    stored = hybrid.org.new_certificate(
        hybrid.org.resolve(server) or server,
        subject="CN=Microsoft Exchange Server Auth Certificate",
        friendly_name="Microsoft Exchange Server Auth Certificate", domains=[], key_size=2048,
        exportable=True, services=[])
    material = stored.material
    return ({"type": "AsymmetricX509Cert", "usage": "Verify",
             "key": base64.b64encode(material.der).decode(),
             "customKeyIdentifier": material.thumbprint,
             "displayName": "CN=Microsoft Exchange Server Auth Certificate",
             "startDateTime": material.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "endDateTime": material.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")},
            material.thumbprint)


def test_patch_replaces_the_whole_collection(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    session = _session(graph)
    current = hybrid.org.auth_config()["current"]
    existing = session.get(_app_url(graph)).json()["keyCredentials"]
    new, thumbprint = _new_key(hybrid)
    kept = {"keyId": existing[0]["keyId"], "type": "AsymmetricX509Cert", "usage": "Verify"}
    answer = session.patch(_app_url(graph), json={"keyCredentials": [kept, new]})
    assert answer.status_code == 204, answer.text
    keys = session.get(_app_url(graph)).json()["keyCredentials"]
    assert sorted(k["customKeyIdentifier"] for k in keys) == sorted([current, thumbprint])
    # Sending only the new one drops the old: PATCH replaces, it does not add.
    assert session.patch(_app_url(graph), json={"keyCredentials": [new]}).status_code == 204
    state = control(hybrid, "GET", "state")["entra"]
    hybrid_app = next(a for a in state["applications"] if a["app_id"] == graph["app_id"])
    assert [k["thumbprint"] for k in hybrid_app["keys"]] == [thumbprint]
    control(hybrid, "POST", "reset")
    state = control(hybrid, "GET", "state")["entra"]
    hybrid_app = next(a for a in state["applications"] if a["app_id"] == graph["app_id"])
    assert [k["thumbprint"] for k in hybrid_app["keys"]] == [current]


@pytest.mark.parametrize(("change", "needle"), [
    ({"key": "not base64!"}, "'key'"),
    ({"key": base64.b64encode(b"not a certificate").decode()}, "'key'"),
    ({"key": None}, "'key'"),
    ({"type": "Symmetric"}, "'type'"),
    ({"usage": "Sign"}, "'usage'"),
    ({"keyId": "nope"}, "'keyId'"),
    ({"endDateTime": "2999-01-01T00:00:00Z"}, "end date"),
    ({"secretText": "x"}, "secretText"),
])
def test_patch_refuses_a_malformed_key_with_400_and_changes_nothing(
        hybrid: LabHandle, change: dict[str, Any], needle: str) -> None:
    graph = hybrid.graph
    assert graph is not None
    session = _session(graph)
    before = session.get(_app_url(graph)).json()["keyCredentials"]
    new, _ = _new_key(hybrid)
    new.update(change)
    answer = session.patch(_app_url(graph), json={"keyCredentials": [new]})
    assert answer.status_code == 400
    assert needle in answer.json()["error"]["message"]
    assert session.get(_app_url(graph)).json()["keyCredentials"] == before


def test_patch_refuses_duplicates_and_a_body_that_is_no_json(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    session = _session(graph)
    new, _ = _new_key(hybrid)
    twice = session.patch(_app_url(graph), json={"keyCredentials": [new, dict(new)]})
    assert twice.status_code == 400 and "duplicate" in twice.json()["error"]["message"]
    broken = session.patch(_app_url(graph), data=b"{", headers={"Content-Type":
                                                              "application/json"})
    assert broken.status_code == 400


def _with_entra(change: Callable[[dict[str, Any]], None]) -> scenario.Scenario:
    data = _hybrid_data()
    change(data)
    return scenario.from_dict(copy.deepcopy(data), source="graph-test.toml")




def test_403_without_the_permission_or_ownership(make_lab: Callable[..., LabHandle],
                                                  tmp_path: Any) -> None:
    def no_owner(data: dict[str, Any]) -> None:
        data["entra"]["application"][0]["owners"] = []
    handle = make_lab(_scenario_file(tmp_path, no_owner))
    graph = handle.graph
    assert graph is not None
    session = _session(graph)
    answer = session.get(_app_url(graph))
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "Authorization_RequestDenied"
    new, _ = _new_key(handle)
    assert session.patch(_app_url(graph), json={"keyCredentials": [new]}).status_code == 403


def test_a_tenant_policy_refuses_keys_that_live_too_long(make_lab: Callable[..., LabHandle],
                                                          tmp_path: Any) -> None:
    def one_year(data: dict[str, Any]) -> None:
        data["entra"]["max_key_lifetime_days"] = 365
    handle = make_lab(_scenario_file(tmp_path, one_year))
    graph = handle.graph
    assert graph is not None
    new, _ = _new_key(handle)  # a 5-year certificate, as New-ExchangeCertificate makes
    answer = _session(graph).patch(_app_url(graph), json={"keyCredentials": [new]})
    assert answer.status_code == 400 and "lifetime" in answer.json()["error"]["message"]


def _scenario_file(tmp_path: Any, change: Callable[[dict[str, Any]], None]) -> str:
    text = (SCENARIO_DIR / "hybrid.toml").read_text(encoding="utf-8")
    data = _hybrid_data()
    change(data)
    entra = data["entra"]
    head = text[:text.index("[entra]")]
    lines = [head, "[entra]"]
    for key in ("tenant_id", "hybrid_app_id", "client_id", "max_key_lifetime_days"):
        if key in entra:
            lines.append(f"{key} = {_toml(entra[key])}")
    for app in entra["application"]:
        lines.append("[[entra.application]]")
        lines += [f"{k} = {_toml(v)}" for k, v in app.items()]
    path = tmp_path / "graph-test.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _toml(value: Any) -> str:
    import json
    return json.dumps(value)


def test_faults_403_429_with_retry_after_5xx_and_unreachable(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    session = _session(graph)
    url = _app_url(graph)
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "throttled",
                                       "retry_after": 2, "times": 1, "operation": "read"})
    throttled = session.get(url)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert session.get(url).status_code == 200  # used up after one request
    control(hybrid, "POST", "faults", [
        {"endpoint": "graph", "kind": "server_error", "status": 502, "operation": "write"},
        {"endpoint": "graph", "kind": "forbidden", "operation": "read", "times": 1}])
    denied = session.get(url)
    assert denied.status_code == 403
    assert denied.json()["error"]["message"] == \
        "Insufficient privileges to complete the operation."
    new, _ = _new_key(hybrid)
    assert session.patch(url, json={"keyCredentials": [new]}).status_code == 502
    state = control(hybrid, "GET", "state")
    assert [f["kind"] for f in state["entra"]["faults"]] == ["server_error"]
    assert any(f.get("endpoint") == "graph" for f in state["faults"])
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "unreachable"})
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url)
    control(hybrid, "POST", "faults", {"clear": True})
    assert session.get(url).status_code == 200
    assert control(hybrid, "GET", "state")["entra"]["faults"] == []


def test_a_throttled_token_request_tells_msal_when_to_retry(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "throttled",
                                       "operation": "token", "retry_after": 7, "times": 1})
    answer = _msal(graph).acquire_token_for_client([graph["graph_url"] + "/.default"])
    assert answer["error"] == "temporarily_unavailable"


@pytest.mark.parametrize(("fault", "needle"), [
    ({"endpoint": "graph", "kind": "sleepy"}, "kind"),
    ({"endpoint": "graph", "kind": "forbidden", "retry_after": 3}, "retry_after"),
    ({"endpoint": "graph", "kind": "server_error", "status": 404}, "status"),
    ({"endpoint": "graph", "kind": "throttled", "operation": "delete"}, "operation"),
    ({"endpoint": "graph", "kind": "throttled", "times": -1}, "times"),
])
def test_control_api_refuses_a_bad_graph_fault(hybrid: LabHandle, fault: dict[str, Any],
                                               needle: str) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        control(hybrid, "POST", "faults", fault)
    assert caught.value.response.status_code == 400
    assert needle in caught.value.response.json()["error"]


def test_graph_faults_need_a_tenant(lab: LabHandle) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        control(lab, "POST", "faults", {"endpoint": "graph", "kind": "forbidden"})
    assert "[entra]" in caught.value.response.json()["error"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["entra"]["application"][0].update(keys=["nope"]),
     "entra.application[0].keys[0]: unknown certificate id 'nope'"),
    (lambda d: d["entra"].update(hybrid_app_id="00000000-0000-0000-0000-000000000000"),
     "entra.hybrid_app_id: no [[entra.application]] has app_id"),
    (lambda d: d["entra"].update(tenant_id="contoso"), "entra.tenant_id: 'contoso' is not a GUID"),
    (lambda d: d["entra"]["application"][1].update(permissions=["Mail.Send"]),
     "entra.application[1].permissions[0]: unknown permission 'Mail.Send'"),
    (lambda d: d["entra"].pop("client_id"), "entra.client_id: missing"),
    (lambda d: d["entra"].update(fault=[{"kind": "throttled", "status": 503}]),
     "entra.fault[0].status: only a \"server_error\" fault takes a status"),
    (lambda d: d["entra"].update(max_key_lifetime_days=0),
     "entra.max_key_lifetime_days: must be 1 to"),
])
def test_scenario_entra_mistakes_are_one_line(change: Callable[[dict[str, Any]], None],
                                              message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        _with_entra(change)
    assert str(caught.value).startswith("graph-test.toml: " + message), str(caught.value)
