"""exauth's Graph client against the lab's Graph stand-in, over HTTPS with the lab's CA:
reads, a PATCH that never drops a key it did not mean to, Retry-After honoured, Graph's
reason in every failure line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from config.lab_settings import settings_for_lab
from config.schema import HybridAppSettings
from lab.serve import LabHandle
from tests.fixtures_lab import control
from workers.hybrid_app.graph_client import (
    MAX_WAIT,
    GraphClient,
    GraphDenied,
    GraphNotFound,
    GraphRejected,
    GraphSignInFailed,
    GraphUnavailable,
    read_keys,
)
from workers.hybrid_app.keys import keys_from, unintended_changes, with_key_added, without_keys


class Sleeps(list[float]):
    """Records the waits the client asks for, without waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture()
def hybrid(make_lab: Callable[..., LabHandle]) -> LabHandle:
    return make_lab("hybrid")


def _settings(handle: LabHandle, **changes: Any) -> HybridAppSettings:
    settings = settings_for_lab(handle.info, handle.password).org().hybrid_app
    assert settings is not None
    return settings.model_copy(update=changes) if changes else settings


def _client(handle: LabHandle, sleeps: Sleeps | None = None, **changes: Any) -> GraphClient:
    return GraphClient(_settings(handle, **changes), sleep=sleeps if sleeps is not None
                       else Sleeps())


def _new_cert(handle: LabHandle) -> bytes:
    stored = handle.org.new_certificate(
        "ex1", subject="CN=Microsoft Exchange Server Auth Certificate",
        friendly_name="Microsoft Exchange Server Auth Certificate", domains=[], key_size=2048,
        exportable=True, services=[])
    return stored.material.der


def _graph_calls(handle: LabHandle) -> list[tuple[str, str]]:
    return [(c["command"].split(" ")[0], c["outcome"].split(":")[0])
            for c in handle.org.calls() if c["endpoint"] == "graph"
            and "oauth2" not in c["command"]]


def test_reads_the_keys_with_thumbprints_from_the_certificates(hybrid: LabHandle) -> None:
    read = read_keys(_settings(hybrid))
    assert read.error is None and read.keys is not None
    assert [k.thumbprint for k in read.keys] == [hybrid.org.auth_config()["current"]]
    assert all(k.der is not None for k in read.keys)


def test_adding_a_key_keeps_every_other_and_removing_one_only_that(hybrid: LabHandle) -> None:
    current = hybrid.org.auth_config()["current"]
    with _client(hybrid) as client:
        before = keys_from(client.read_application())
        der = _new_cert(hybrid)
        added = keys_from({"keyCredentials": [with_key_added([], der)[0]]})[0].thumbprint
        client.replace_key_credentials(with_key_added(before, der))
        after = keys_from(client.read_application())
        assert sorted(k.thumbprint for k in after) == sorted([current, added])
        assert unintended_changes(before, after, added=[added]) == []
        # The key that stayed is the same credential (same keyId), not a re-upload.
        assert {k.key_id for k in after} >= {k.key_id for k in before}
        client.replace_key_credentials(without_keys(after, [current]))
        last = keys_from(client.read_application())
        assert [k.thumbprint for k in last] == [added]
        assert unintended_changes(after, last, removed=[current]) == []
        assert unintended_changes(after, last) == [
            f"key {current} (CN=Microsoft Exchange Server Auth Certificate) is gone"]


def test_a_429_is_retried_after_the_seconds_graph_names(hybrid: LabHandle) -> None:
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "throttled",
                                       "retry_after": 3, "times": 2, "operation": "read"})
    sleeps = Sleeps()
    with _client(hybrid, sleeps) as client:
        assert client.read_application()["appId"] == _settings(hybrid).app_id
    assert sleeps == [3.0, 3.0]
    assert _graph_calls(hybrid) == [("GET", "429 TooManyRequests")] * 2 + [("GET", "ok")]


def test_a_5xx_is_retried_with_backoff_and_then_the_patch_lands(hybrid: LabHandle) -> None:
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "server_error",
                                       "status": 503, "times": 1, "operation": "write"})
    sleeps = Sleeps()
    with _client(hybrid, sleeps) as client:
        before = keys_from(client.read_application())
        der = _new_cert(hybrid)
        client.replace_key_credentials(with_key_added(before, der))
        assert len(keys_from(client.read_application())) == 2
    assert sleeps == [1.0]


def test_a_demand_to_wait_too_long_ends_the_call_with_the_figure(hybrid: LabHandle) -> None:
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "throttled",
                                       "retry_after": int(MAX_WAIT) + 240,
                                       "operation": "read"})
    sleeps = Sleeps()
    with pytest.raises(GraphUnavailable, match=r"asks to wait 300 s") as caught, \
            _client(hybrid, sleeps) as client:
        client.read_application()
    assert sleeps == [] and caught.value.permanent is False


def test_403_is_one_line_with_graphs_reason(hybrid: LabHandle) -> None:
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "forbidden",
                                       "operation": "write"})
    with _client(hybrid) as client:
        before = keys_from(client.read_application())
        with pytest.raises(GraphDenied) as caught:
            client.replace_key_credentials(with_key_added(before, _new_cert(hybrid)))
    line = str(caught.value)
    assert line == (f"Microsoft Graph: update application {_settings(hybrid).app_id}"
                    ": 403 Authorization_RequestDenied: Insufficient privileges to complete "
                    "the operation.")
    assert "\n" not in line and caught.value.permanent is True
    read = read_keys(_settings(hybrid))
    assert read.keys is not None and len(read.keys) == 1  # nothing changed


def test_unknown_app_malformed_key_unreachable_and_wrong_secret(hybrid: LabHandle) -> None:
    with _client(hybrid) as client:
        with pytest.raises(GraphNotFound, match="Request_ResourceNotFound"):
            client.read_application("00000000-0000-0000-0000-000000000042")
        with pytest.raises(GraphRejected, match="Invalid value specified for property 'key'"):
            client.replace_key_credentials([{"type": "AsymmetricX509Cert", "usage": "Verify",
                                             "key": "bm90IGEgY2VydA=="}])
    control(hybrid, "POST", "faults", {"endpoint": "graph", "kind": "unreachable",
                                       "operation": "read"})
    sleeps = Sleeps()
    read = read_keys(_settings(hybrid), _client(hybrid, sleeps))
    assert read.keys is None and read.error is not None
    assert "no connection" in read.error and len(sleeps) == 3
    control(hybrid, "POST", "faults", {"clear": True})
    wrong = _client(hybrid, lab_secret=SecretStr("wrong"))
    with pytest.raises(GraphSignInFailed, match="AADSTS7000215"):
        wrong.read_application()


def test_signs_in_with_a_certificate_file_too(hybrid: LabHandle) -> None:
    graph = hybrid.graph
    assert graph is not None
    settings = _settings(hybrid, lab_secret=None,
                         certificate_file=graph["client_certificate_file"])
    read = read_keys(settings)
    assert read.keys is not None, read.error
    tokens = [c for c in hybrid.org.calls() if "oauth2" in c["command"]]
    assert tokens[-1]["parameters"]["credential"] == "assertion"


def test_upload_then_remove_stale_keeps_what_must_stay(hybrid: LabHandle) -> None:
    from workers.hybrid_app.key_updates import remove_stale, upload

    current = hybrid.org.auth_config()["current"]
    der = _new_cert(hybrid)
    with _client(hybrid) as client:
        assert upload(client, der).startswith("uploaded ")
        assert upload(client, der).endswith("is already on the application (2 keys)")
        new = keys_from({"keyCredentials": [with_key_added([], der)[0]]})[0].thumbprint
        assert remove_stale(client, [current, new]).startswith("no stale keys")
        detail = remove_stale(client, [new])
        assert detail.startswith(f"removed {current[:8]}")
        assert [k.thumbprint for k in keys_from(client.read_application())] == [new]
    patches = [c for c in hybrid.org.calls() if c["command"].startswith("PATCH")]
    assert [c["parameters"]["key_count"] for c in patches] == [2, 1]
