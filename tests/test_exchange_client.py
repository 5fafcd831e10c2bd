"""The Exchange client: sessions, bound parameters, error classes, fallback, reuse, bounds.

The first half needs no lab (classification, parameters, the concurrency bound, a closed
port, a server that answers 401); the second half drives the real pypsrp client against
the lab over WS-Man/PSRP on loopback.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from config.lab_settings import settings_for_lab
from config.load import settings_from_dict
from config.schema import OrgSettings
from workers.exchange.client import ExchangeClient
from workers.exchange.errors import (
    ExchangeAuthFailed,
    ExchangeEndpointBroken,
    ExchangeError,
    ExchangeFailed,
    ExchangeObjectMissing,
    ExchangeUnreachable,
    NoLanguageRefused,
    classify,
    from_error_record,
)
from workers.exchange.session import Secret, SessionCache, _parameter_value, _wsman
from workers.exchange.target import Target

# --------------------------------------------------------------------------------------------
# Without a lab
# --------------------------------------------------------------------------------------------

TARGET = Target(
    server="ex1.contoso.com",
    endpoint="exchange",
    url="https://ex1.contoso.com/PowerShell",
    auth="kerberos",
    username="svc@CONTOSO.COM",
)


def _org(
    url: str, auth: str = "basic", host_url: str | None = None, **exchange: Any
) -> OrgSettings:
    endpoints = {"ex1.contoso.com": {"host_url": host_url}} if host_url else {}
    return settings_from_dict(
        {
            "org": [
                {
                    "name": "t",
                    "writer": "ex1.contoso.com",
                    "exchange": {
                        "url": url,
                        "auth": auth,
                        "username": "u",
                        "password_env": "EXAUTH_TEST_PW",
                        "connection_timeout": 2,
                        **exchange,
                    },
                    "endpoints": endpoints,
                }
            ]
        }
    ).org()


@pytest.mark.parametrize(
    ("exc", "cls", "detail"),
    [
        (requests.ConnectionError("[Errno 111] Connection refused"), ExchangeUnreachable,
         "connection refused"),
        (requests.ConnectTimeout("timed out"), ExchangeUnreachable, "no answer within 30 s"),
        (requests.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end "
                                  "closed connection without response'))"), ExchangeUnreachable,
         "connection closed without an answer"),
        (AuthenticationError("Failed to authenticate the user u with basic"), ExchangeAuthFailed,
         "access denied for svc@CONTOSO.COM (kerberos)"),
        (WinRMTransportError("http", 401, ""), ExchangeAuthFailed, "access denied"),
        (WinRMTransportError("http", 500, "<f>[FailureCategory=Cafe-SendFailure] x</f>"),
         ExchangeEndpointBroken, "Cafe-SendFailure"),
        (WSManFaultError(500, "", "[ClientAccessServer=EX1] [FailureCategory=Cafe-SendFailure]",
                         "", "", ""), ExchangeEndpointBroken, "Cafe-SendFailure"),
        (WinRMTransportError("http", 503, "<h1>Service Unavailable</h1>"), ExchangeFailed,
         "HTTP 503 from https://ex1.contoso.com/PowerShell: Service Unavailable"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), ExchangeFailed,
         "TLS certificate"),
    ],
)
def test_transport_failures_are_classified(
    exc: Exception, cls: type[ExchangeError], detail: str
) -> None:
    err = classify(exc, TARGET, "opening the Exchange endpoint")
    assert type(err) is cls
    assert detail in err.detail
    line = str(err)
    assert line.startswith("ex1.contoso.com: opening the Exchange endpoint: ")
    assert "\n" not in line and "Traceback" not in line
    assert err.error_id is None  # transport failures are not cmdlet errors


def _record(message: str, error_id: str, reason: str) -> GenericComplexObject:
    """What pypsrp hands over for an ErrorRecord (only the fields the client reads)."""
    record = GenericComplexObject()
    exception = GenericComplexObject()
    exception.adapted_properties = {"Message": message}
    record.exception = exception  # type: ignore[attr-defined]
    record.fq_error = error_id  # type: ignore[attr-defined]
    record.reason = reason  # type: ignore[attr-defined]
    return record


@pytest.mark.parametrize(
    ("message", "error_id", "reason", "cls"),
    [
        ("A special Rpc error occurs on server EX2: The certificate with thumbprint AB12 "
         "was not found.", "2A7C5F0A,Microsoft.Exchange.Management.SystemConfigurationTasks."
         "GetExchangeCertificate", "InvalidOperationException", ExchangeObjectMissing),
        ("The syntax is not supported by this runspace. This can occur if the runspace is in "
         "no-language mode.", "ScriptsNotAllowed", "ParseException", NoLanguageRefused),
        ("The RPC server is unavailable.", "x,GetExchangeCertificate",
         "InvalidOperationException", ExchangeUnreachable),
        ("The effective date must be in the future.", "x,SetAuthConfig",
         "InvalidOperationException", ExchangeFailed),
    ],
)
def test_cmdlet_errors_are_classified(
    message: str, error_id: str, reason: str, cls: type[ExchangeError]
) -> None:
    err = from_error_record(_record(message, error_id, reason), TARGET, "Get-ExchangeCertificate")
    assert type(err) is cls
    assert err.error_id == error_id
    assert err.started
    assert message.split(".")[0] in str(err)


def test_parameter_values() -> None:
    assert _parameter_value(None) == ()
    assert _parameter_value(True) == (True,)  # a [bool]; a switch takes -Force:$true too
    assert _parameter_value(False) == (False,)  # -Confirm:$false
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert _parameter_value(when) == ("2030-01-02T03:04:05+00:00",)
    assert _parameter_value(b"\x01") == (b"\x01",)


def test_wsman_settings_follow_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAUTH_TEST_PW", "pw")
    lab = _org("http://127.0.0.1:4444/ex1.contoso.lab/PowerShell")
    from workers.exchange.target import exchange_target

    transport = _wsman(exchange_target(lab, "ex1.contoso.com")).transport
    assert (transport.server, transport.port, transport.path) == (
        "127.0.0.1", 4444, "ex1.contoso.lab/PowerShell")
    assert transport.ssl is False and transport.wrap_required is False  # encryption="never"
    prod = _org("http://ex1.contoso.com/PowerShell", auth="kerberos")
    transport = _wsman(exchange_target(prod, "ex2.contoso.com")).transport
    assert transport.endpoint == "http://ex2.contoso.com:80/PowerShell"
    assert transport.wrap_required is True  # Kerberos over http: message encryption stays on
    tls = _org("https://ex1.contoso.com/PowerShell", verify_tls=False)
    transport = _wsman(exchange_target(tls, "ex1.contoso.com")).transport
    assert transport.ssl is True and transport.cert_validation is False
    # Even if a target is built by hand, basic over plain http to a remote host is refused.
    hand_made = Target("ex9", "exchange", "http://ex9.contoso.com/PowerShell", "basic", "u")
    with pytest.raises(ExchangeFailed, match="refusing basic auth over plain http"):
        _wsman(hand_made)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closed_port_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAUTH_TEST_PW", "pw")
    org = _org(f"http://127.0.0.1:{_free_port()}/ex1.contoso.com/PowerShell")
    client = ExchangeClient(org, cache=SessionCache())
    with pytest.raises(ExchangeError) as err:
        client.session("ex1.contoso.com", "exchange").run("Get-AuthConfig")
    assert type(err.value) is ExchangeUnreachable
    assert str(err.value).startswith(
        "ex1.contoso.com: opening the Exchange endpoint: connection refused (")


@pytest.fixture()
def http_401() -> Iterator[int]:
    class Deny(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_401_is_auth_and_never_shows_the_password(
    http_401: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAUTH_TEST_PW", "do-not-show-me")
    org = _org(
        f"http://127.0.0.1:{http_401}/ex1.contoso.com/PowerShell",
        host_url=f"http://127.0.0.1:{http_401}/ex1.contoso.com/wsman",
    )
    client = ExchangeClient(org, cache=SessionCache())
    with pytest.raises(ExchangeError) as err:
        client.exchange("ex1.contoso.com", "Get-AuthConfig")
    # Both endpoints answer 401 here, so there is no fallback: the Exchange error stands.
    assert type(err.value) is ExchangeAuthFailed
    assert "do-not-show-me" not in str(err.value)
    assert "access denied for u (basic)" in str(err.value)


def test_map_respects_the_bound_and_keeps_order() -> None:
    org = _org("https://ex1.contoso.com/PowerShell")
    client = ExchangeClient(org, max_workers=3, cache=SessionCache())
    lock = threading.Lock()
    running = {"now": 0, "peak": 0}

    def work(i: int) -> int:
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        time.sleep(0.02)
        with lock:
            running["now"] -= 1
        if i == 4:
            raise ExchangeUnreachable(f"ex{i}", "x", "down")
        return i * 10

    results = client.map(work, list(range(12)))
    assert running["peak"] == 3
    assert [r if isinstance(r, int) else type(r) for r in results] == [
        0, 10, 20, 30, ExchangeUnreachable, 50, 60, 70, 80, 90, 100, 110]


# --------------------------------------------------------------------------------------------
# Against the lab (real WS-Man/PSRP on loopback)
# --------------------------------------------------------------------------------------------


def lab_org(handle: Any, **kw: Any) -> OrgSettings:
    return settings_for_lab(handle.info, handle.password, **kw).org()


def _server(handle: Any, index: int) -> dict[str, str]:
    return handle.info["servers"][index]


def test_sessions_on_both_endpoints(lab: Any) -> None:
    org = lab_org(lab)
    client = ExchangeClient(org, cache=SessionCache())
    fqdn = _server(lab, 0)["fqdn"]
    auth = client.session(fqdn, "exchange").run("Get-AuthConfig")
    assert len(auth) == 1
    assert "CurrentCertificateThumbprint" in auth[0].adapted_properties
    store = client.session(fqdn, "host").run("Get-ChildItem", Path="Cert:\\LocalMachine\\My")
    assert store, "the host endpoint lists the computer certificate store"
    endpoints = {(c["server"], c["endpoint"]) for c in lab.org.calls()}
    name = _server(lab, 0)["name"]
    assert (name, "exchange") in endpoints and (name, "host") in endpoints


def test_hostile_text_reaches_the_lab_literally(lab: Any) -> None:
    org = lab_org(lab)
    client = ExchangeClient(org, cache=SessionCache())
    fqdn = _server(lab, 0)["fqdn"]
    hostile = "'; Remove-Item -Recurse C:\\ ; $(Stop-Computer) #"
    with pytest.raises(ExchangeError) as err:
        client.exchange(fqdn, "Get-ExchangeCertificate", Server=fqdn, Thumbprint=hostile)
    assert isinstance(err.value, ExchangeObjectMissing | ExchangeFailed)
    last = [c for c in lab.org.calls() if c["command"] == "Get-ExchangeCertificate"][-1]
    assert last["parameters"]["Thumbprint"] == hostile
    assert last["parameters"]["Server"] == fqdn


def test_secret_travels_as_securestring_and_bools_and_positionals_bind(lab: Any) -> None:
    """-Password binds only to a SecureString (as on real Exchange); $true stays a value."""
    org = lab_org(lab)
    client = ExchangeClient(org, cache=SessionCache())
    fqdn = _server(lab, 0)["fqdn"]
    current = lab.org.state()["auth_config"]["current"]
    exported = client.exchange(fqdn, "Export-ExchangeCertificate", [
        ("Server", fqdn), ("Thumbprint", current), ("BinaryEncoded", None),
        ("Password", Secret("Pfx-Pa55; $(x)"))])
    assert exported
    with pytest.raises(ExchangeError) as err:  # a plain string cannot bind
        client.exchange(fqdn, "Export-ExchangeCertificate", [
            ("Server", fqdn), ("Thumbprint", current), ("BinaryEncoded", None),
            ("Password", "plain")])
    assert "SecureString" in str(err.value) and "plain" not in str(err.value)
    logged = [c for c in lab.org.calls() if c["command"] == "Export-ExchangeCertificate"]
    assert logged[0]["parameters"]["Password"] == "***"
    assert "Pfx-Pa55" not in json.dumps(lab.org.calls())
    client.session(fqdn, "host").run("iisreset", [(None, "/noforce")])
    assert [c for c in lab.org.calls() if c["command"] == "iisreset"][-1]["outcome"] == "ok"


def test_wrong_password_is_auth(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("healthy")
    org = settings_for_lab(handle.info, "not-the-password").org()
    client = ExchangeClient(org, cache=SessionCache())
    with pytest.raises(ExchangeError) as err:
        client.exchange(org.writer, "Get-AuthConfig")
    assert type(err.value) is ExchangeAuthFailed
    assert "not-the-password" not in str(err.value)


def test_unreachable_server_is_unreachable(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("unreachable")
    down = [s for s in handle.org.server_names() if not handle.org.server_info(s)["reachable"]]
    assert down, "the unreachable scenario has a server that is down"
    fqdn = handle.org.server_info(down[0])["fqdn"]
    client = ExchangeClient(lab_org(handle), cache=SessionCache())
    with pytest.raises(ExchangeError) as err:
        client.exchange(fqdn, "Get-ExchangeCertificate", Server=fqdn)
    assert type(err.value) is ExchangeUnreachable
    assert err.value.server == fqdn.lower()


def test_broken_backend_falls_back_to_host_with_snapin(make_lab: Callable[..., Any]) -> None:
    handle = make_lab("backend-deleted")
    broken = [s for s in handle.org.server_names() if handle.org.exchange_endpoint_failure(s)]
    assert broken, "the backend-deleted scenario breaks one Exchange endpoint"
    fqdn = handle.org.server_info(broken[0])["fqdn"]
    org = lab_org(handle)
    cache = SessionCache()
    client = ExchangeClient(org, cache=cache)
    with pytest.raises(ExchangeError) as err:
        client.session(fqdn, "exchange")
    assert type(err.value) is ExchangeEndpointBroken
    certs = client.exchange(fqdn, "Get-ExchangeCertificate", Server=fqdn)
    assert certs and all(c.adapted_properties.get("RawData") for c in certs)
    assert "endpoint_broken" not in client.fallbacks[fqdn.lower()]
    assert "Cafe-SendFailure" in client.fallbacks[fqdn.lower()]
    # The snap-in is loaded once, however many Exchange cmdlets follow.
    client.exchange(fqdn, "Get-ExchangeCertificate", Server=fqdn)
    client.exchange(fqdn, "Get-AuthConfig")
    snapins = [c for c in handle.org.calls() if c["command"] == "Add-PSSnapin"]
    assert len(snapins) == 1 and snapins[0]["endpoint"] == "host"
    via_host = [c for c in handle.org.calls()
                if c["command"] == "Get-ExchangeCertificate" and c["endpoint"] == "host"]
    assert len(via_host) == 2


def test_add_script_is_nolanguage(lab: Any) -> None:
    org = lab_org(lab)
    client = ExchangeClient(org, cache=SessionCache())
    session = client.session(org.writer, "exchange")
    from pypsrp.powershell import PowerShell

    from workers.exchange.errors import from_error_record

    # Misuse on purpose, through pypsrp directly: the client itself never sends scripts.
    with session.lock:
        ps = PowerShell(session._pool)  # type: ignore[arg-type]
        ps.add_script("Get-AuthConfig | Select-Object -ExpandProperty CurrentCertificateThumbprint")
        ps.invoke()
    assert ps.streams.error
    err = from_error_record(ps.streams.error[0], session.target, "a script")
    assert type(err) is NoLanguageRefused
    assert "bound parameters" in str(err)


def test_sessions_are_reused(lab: Any) -> None:
    org = lab_org(lab)
    cache = SessionCache()
    first = ExchangeClient(org, cache=cache)
    for server in lab.info["servers"]:
        first.exchange(server["fqdn"], "Get-ExchangeCertificate", Server=server["fqdn"])
    opened = cache.stats.opens
    assert opened == len(lab.info["servers"])
    second = ExchangeClient(org, cache=cache)  # a later job in the same process
    for server in lab.info["servers"]:
        second.exchange(server["fqdn"], "Get-ExchangeCertificate", Server=server["fqdn"])
    assert cache.stats.opens == opened


def test_broken_session_is_reopened_once(lab: Any) -> None:
    org = lab_org(lab)
    cache = SessionCache()
    client = ExchangeClient(org, cache=cache)
    session = client.session(org.writer, "exchange")
    session.run("Get-AuthConfig")
    # The server forgets the shell (restart, idle timeout): close it behind the client's back.
    assert session._pool is not None
    session._pool.close()
    assert session.run("Get-AuthConfig")
    assert cache.stats.opens == 2


def test_concurrent_pipelines_one_per_session(lab: Any) -> None:
    org = lab_org(lab)
    cache = SessionCache()
    client = ExchangeClient(org, max_workers=8, cache=cache)
    fqdns = [s["fqdn"] for s in lab.info["servers"]] * 4
    results = client.map(lambda f: client.exchange(f, "Get-ExchangeCertificate", Server=f), fqdns)
    assert all(isinstance(r, list) and r for r in results)
    # Never more pipelines at once than sessions: each session runs one at a time.
    assert cache.stats.peak_in_flight <= len(lab.info["servers"])
    assert cache.stats.opens == len(lab.info["servers"])


def test_exchange_error_keeps_the_decoded_message_and_no_raw_control_character(
        lab: Any) -> None:
    """Exchange text arrives with control characters escaped as `_xHHHH_`; the client reads
    the real message, drops colour sequences and shows any other control character as
    U+FFFD in its one line, and a literal `_x0041_` stays as written."""
    name, fqdn = _server(lab, 0)["name"], _server(lab, 0)["fqdn"]
    message = "Disk \x01 full; \x1b[31mred\x1b[0m text and a literal _x0041_ here"
    requests.post(f"{lab.base_url}/_lab/faults", json={
        "kind": "error", "server": name, "endpoint": "exchange", "cmdlet": "Get-AuthConfig",
        "message": message}, auth=(lab.username, lab.password), verify=lab.ca_file or False,
        timeout=10).raise_for_status()
    client = ExchangeClient(lab_org(lab), cache=SessionCache())
    with pytest.raises(ExchangeError) as err:
        client.exchange(fqdn, "Get-AuthConfig")
    assert type(err.value) is ExchangeFailed
    assert err.value.error_id and err.value.error_id.endswith("GetAuthConfig")
    assert err.value.detail == "Disk \ufffd full; red text and a literal _x0041_ here"
    assert str(err.value) == f"{fqdn}: Get-AuthConfig on the Exchange endpoint: {err.value.detail}"
