"""The lab's transport driven by the real pypsrp client: WS-Man, PSRP, auth, faults.

Everything here goes over a loopback socket to a lab started by the `lab`/`make_lab`
fixtures; nothing in the transport is mocked.
"""

from __future__ import annotations

import base64
import re
import struct
import threading
import time
from xml.etree import ElementTree

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool, RunspacePoolState
from pypsrp.shell import SignalCode

from lab import wsman
from lab.serve import LabHandle
from tests.fixtures_lab import control, pool_for, wsman_for

RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NO_LANGUAGE = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in "
    "no-language mode."
)
SNAPIN = "Microsoft.Exchange.Management.PowerShell.SnapIn"
PARSER_ERROR = 17  # System.Management.Automation.ErrorCategory.ParserError


def _invoke(pool: RunspacePool, command: str, **parameters: object) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(command)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    ps.invoke()
    return ps


def test_pools_open_on_both_endpoints_of_every_server(lab: LabHandle) -> None:
    for entry in lab.info["servers"]:
        for endpoint in ("exchange", "host"):
            with pool_for(lab, entry["fqdn"], endpoint) as pool:
                assert pool.state == RunspacePoolState.OPENED
                assert pool.protocol_version == "2.3"
                assert pool.is_alive()


def test_exchange_cmdlet_runs_and_is_logged_against_its_server(lab: LabHandle) -> None:
    with pool_for(lab, "ex2") as pool:
        ps = _invoke(pool, "Get-AuthConfig")
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.streams.error
    calls = control(lab, "GET", "calls")
    assert [(c["server"], c["endpoint"], c["command"]) for c in calls] == [
        ("ex2", "exchange", "Get-AuthConfig")
    ]


def test_script_on_exchange_endpoint_is_refused_as_no_language(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-AuthConfig | Select-Object -ExpandProperty CurrentCertificateThumbprint")
        output = ps.invoke()
    assert output == []
    assert ps.state == PSInvocationState.FAILED and ps.had_errors  # refused before running
    [error] = ps.streams.error
    assert str(error) == NO_LANGUAGE
    assert error.fq_error == "ScriptsNotAllowed"
    assert error.category == PARSER_ERROR
    assert error.reason == "RemoteException"
    assert error.exception.adapted_properties["Message"] == NO_LANGUAGE
    assert error.exception.types[0] == "System.Management.Automation.RemoteException"


def test_unknown_command_arrives_as_an_error_record_not_a_transport_failure(
    lab: LabHandle,
) -> None:
    with pool_for(lab, "ex1") as pool:
        ps = _invoke(pool, "Get-NoSuchThing")
        assert ps.state == PSInvocationState.FAILED and ps.had_errors
        assert len(ps.streams.error) == 1
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"
        assert "Get-NoSuchThing" in str(ps.streams.error[0])
        # the pool is still usable afterwards
        assert _invoke(pool, "Get-AuthConfig").streams.error == []


def test_several_statements_in_one_pipeline_run_in_order(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-AuthConfig").add_statement()
        ps.add_cmdlet("Get-ExchangeServer")
        ps.invoke()
    assert ps.state == PSInvocationState.COMPLETED
    commands = [c["command"] for c in control(lab, "GET", "calls")]
    assert commands == ["Get-AuthConfig", "Get-ExchangeServer"]


def test_sequential_and_concurrent_pipelines_share_one_pool(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        for _ in range(3):
            assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED
        started = []
        for command in ("Get-AuthConfig", "Get-ExchangeServer", "Get-ExchangeCertificate"):
            ps = PowerShell(pool)
            ps.add_cmdlet(command)
            ps.begin_invoke()
            started.append(ps)
        for ps in reversed(started):  # collect in another order than started
            ps.end_invoke()
            assert ps.state == PSInvocationState.COMPLETED
            ps.close()  # Signal Terminate frees the pipeline on the server
    commands = [c["command"] for c in control(lab, "GET", "calls")]
    assert commands[:3] == ["Get-AuthConfig"] * 3
    assert sorted(commands[3:]) == sorted(
        ["Get-AuthConfig", "Get-ExchangeServer", "Get-ExchangeCertificate"]
    )


def test_receive_with_nothing_to_say_answers_wsman_timed_out(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        started = time.monotonic()
        with pytest.raises(WSManFaultError) as caught:
            pool.shell.receive("stdout", timeout=1)
        waited = time.monotonic() - started
        assert caught.value.code == wsman.ERROR_OPERATION_TIMEDOUT == 2150858793
        assert "OperationTimeout" in str(caught.value)
        assert waited >= 0.9  # it really long-polled instead of answering at once
        # pypsrp treats that fault as "nothing yet" and the pool stays usable
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED


def test_long_poll_does_not_block_other_clients(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as waiting_pool:
        waiter_done = threading.Event()
        faults: list[BaseException] = []

        def wait() -> None:
            try:
                waiting_pool.shell.receive("stdout", timeout=3)
            except WSManFaultError as exc:
                faults.append(exc)
            waiter_done.set()

        thread = threading.Thread(target=wait)
        thread.start()
        with pool_for(lab, "ex2") as other:
            assert _invoke(other, "Get-AuthConfig").state == PSInvocationState.COMPLETED
        assert not waiter_done.is_set()  # served while the other request still waited
        thread.join(10)
    assert len(faults) == 1 and faults[0].code == wsman.ERROR_OPERATION_TIMEDOUT


def test_terminated_pipeline_and_deleted_shell_are_gone(lab: LabHandle) -> None:
    connection = wsman_for(lab, "ex1")
    pool = RunspacePool(connection, configuration_name="Microsoft.Exchange")
    pool.open()
    ps = _invoke(pool, "Get-AuthConfig")
    command_id = ps._command_id
    ps.close()
    with pytest.raises(WSManFaultError) as caught:
        pool.shell.receive("stdout", command_id=command_id, timeout=1)
    assert "not found" in str(caught.value)
    with pytest.raises(WSManFaultError):
        pool.shell.signal(SignalCode.TERMINATE, command_id)
    pool.close()
    with pytest.raises(WSManFaultError) as caught:
        pool.shell.receive("stdout", timeout=1)
    assert caught.value.code == wsman.ERROR_UNEXPECTED_SELECTORS
    connection.close()


def test_ctrl_c_on_a_finished_pipeline_is_harmless(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        ps = _invoke(pool, "Get-AuthConfig")
        pool.shell.signal(SignalCode.PS_CTRL_C, ps._command_id)
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED


def test_closed_pool_reports_not_alive(lab: LabHandle) -> None:
    connection = wsman_for(lab, "ex1")
    pool = RunspacePool(connection, configuration_name="Microsoft.Exchange")
    pool.open()
    shell_selector = pool.shell._selector_set
    assert pool.is_alive()
    pool.close()
    pool.shell._selector_set = shell_selector  # ask about the deleted shell again
    pool.state = RunspacePoolState.OPENED
    assert not pool.is_alive()
    connection.close()


def test_wrong_configuration_name_is_refused(lab: LabHandle) -> None:
    connection = wsman_for(lab, "ex1", "exchange")
    with pytest.raises(WSManFaultError) as caught:
        RunspacePool(connection, configuration_name="Microsoft.PowerShell").open()
    assert caught.value.code == wsman.ERROR_INVALID_RESOURCE_URI
    assert "Cannot find the Microsoft.PowerShell session configuration" in str(caught.value)
    host = wsman_for(lab, "ex1", "host")
    with pytest.raises(WSManFaultError):
        RunspacePool(host, configuration_name="Microsoft.Exchange").open()


def test_unknown_server_or_path_is_404(lab: LabHandle) -> None:
    connection = wsman_for(lab, "ex1", path="nosuch.contoso.lab/PowerShell")
    with pytest.raises(Exception) as caught:
        RunspacePool(connection, configuration_name="Microsoft.Exchange").open()
    assert "404" in str(caught.value)


def test_wrong_password_is_401_basic_wsman(lab: LabHandle) -> None:
    with pytest.raises(AuthenticationError), pool_for(lab, "ex1", password="not-the-password"):
        pass
    response = requests.post(
        lab.info["servers"][0]["exchange_url"], data=b"<x/>", auth=("LAB\\exadmin", "nope")
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="WSMAN"'


def test_auth_failure_fault_rejects_good_credentials(lab: LabHandle) -> None:
    fault = {"server": "ex2", "endpoint": "exchange", "kind": "auth_failure"}
    control(lab, "POST", "faults", fault)
    with pytest.raises(AuthenticationError), pool_for(lab, "ex2", "exchange"):
        pass
    with pool_for(lab, "ex2", "host") as pool:  # only the named endpoint is affected
        assert pool.state == RunspacePoolState.OPENED


def test_unreachable_server_drops_the_connection(lab: LabHandle) -> None:
    control(lab, "POST", "faults", [{"server": "ex3", "endpoint": "any", "kind": "unreachable"}])
    for endpoint in ("exchange", "host"):
        with pytest.raises(requests.exceptions.ConnectionError), pool_for(lab, "ex3", endpoint):
            pass
    with pool_for(lab, "ex1") as pool:  # other servers are unaffected
        assert pool.state == RunspacePoolState.OPENED
    control(lab, "POST", "faults", {"clear": True})
    with pool_for(lab, "ex3") as pool:
        assert pool.state == RunspacePoolState.OPENED


def test_eight_concurrent_clients(lab: LabHandle) -> None:
    servers = [entry["fqdn"] for entry in lab.info["servers"]]
    errors: list[BaseException] = []
    completed: list[int] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        try:
            endpoint = "exchange" if index % 2 == 0 else "host"
            with pool_for(lab, servers[index % len(servers)], endpoint) as pool:
                if endpoint == "host":
                    _invoke(pool, "Add-PSSnapin", Name=SNAPIN)
                for command in ("Get-AuthConfig", "Get-ExchangeServer", "Get-ExchangeCertificate"):
                    ps = _invoke(pool, command)
                    assert ps.state == PSInvocationState.COMPLETED
                    assert not ps.streams.error, [str(e) for e in ps.streams.error]
            with lock:
                completed.append(index)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(completed) == list(range(8))
    assert len(control(lab, "GET", "calls")) == 8 * 3 + 4


def test_tls_lab_verifies_with_its_own_certificate(make_lab) -> None:
    lab = make_lab("healthy", tls=True)
    assert lab.base_url.startswith("https://127.0.0.1:")
    assert lab.ca_file is not None
    with pool_for(lab, "ex1", cert_validation=lab.ca_file) as pool:
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(lab.info["control_url"] + "/state", auth=(lab.username, lab.password))
    assert control(lab, "GET", "state")


def test_latency_and_open_cost_still_serve_correctly(make_lab) -> None:
    lab = make_lab("healthy", latency_ms=5, open_ms=20)
    started = time.monotonic()
    with pool_for(lab, "ex1") as pool:
        opened = time.monotonic() - started
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED
    assert opened >= 0.02  # the open cost was actually paid (a floor, not a speed goal)


def test_key_exchange_and_pool_control_messages(lab: LabHandle) -> None:
    with pool_for(lab, "ex1") as pool:
        pool.exchange_keys()  # PublicKey -> EncryptedSessionKey; SecureStrings now work
        assert pool._serializer.cipher is not None
        pool.reset_runspace_state()  # a ci-tagged request answered with RunspaceAvailability
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED


def test_psrp_data_the_server_cannot_process_is_a_fault_and_the_pool_survives(
    lab: LabHandle,
) -> None:
    # pypsrp 0.9.1 sends SetMaxRunspaces in a shape psrpcore 0.3.1 cannot read; the lab
    # answers with a WS-Man fault (as a server rejecting the data would), not a dropped
    # connection, and the pool keeps working.
    with pool_for(lab, "ex1") as pool:
        with pytest.raises(WSManFaultError) as caught:
            pool.max_runspaces = 2
        assert "PowerShell Remoting data was rejected" in str(caught.value)
        assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED


def test_stopped_lab_serves_no_one_even_on_kept_alive_connections(make_lab) -> None:
    lab = make_lab("healthy")
    connection = wsman_for(lab, "ex1")
    pool = RunspacePool(connection, configuration_name="Microsoft.Exchange")
    pool.open()
    assert _invoke(pool, "Get-AuthConfig").state == PSInvocationState.COMPLETED
    lab.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        _invoke(pool, "Get-AuthConfig")
    connection.close()


def test_latency_fault_slows_only_its_server_and_endpoint(lab: LabHandle) -> None:
    control(lab, "POST", "faults",
            {"server": "ex2", "endpoint": "host", "kind": "latency", "latency_ms": 300})
    started = time.monotonic()
    with pool_for(lab, "ex2", "host") as pool:  # Create + Receive, each delayed
        opened = time.monotonic() - started
        assert _invoke(pool, "Get-WebBinding").state == PSInvocationState.COMPLETED
    assert opened >= 0.6  # a floor proving the delay is applied, not a speed goal


# --- strings as PowerShell writes them: control characters as _xHHHH_ -------------------

HOSTILE_MESSAGE = "Disk \x01 full; \x1b[31mred\x1b[0m text and a literal _x0041_ here"


def _wire_messages(bodies: list[bytes]) -> list[bytes]:
    """The CLIXML of every PSRP message in WS-Man Receive answers, as it crossed the wire.

    A Receive answer carries base64 <rsp:Stream> fragments (MS-PSRP 2.2.4: object id,
    fragment id, flags, length, data); a message is its fragments' data joined, and its
    CLIXML follows the 40-byte message header.
    """
    pieces: dict[int, bytearray] = {}
    for body in bodies:
        for stream in ElementTree.fromstring(body).iter(f"{{{RSP}}}Stream"):
            data = base64.b64decode(stream.text or "")
            while data:
                object_id, _, _, length = struct.unpack(">QQBI", data[:21])
                pieces.setdefault(object_id, bytearray()).extend(data[21:21 + length])
                data = data[21 + length:]
    return [bytes(message[40:]) for message in pieces.values()]


def _capture_receives(pool: RunspacePool) -> list[bytes]:
    """Keep every HTTP answer the pool's WS-Man session gets from now on."""
    bodies: list[bytes] = []
    session = pool.connection.transport.session
    assert session is not None
    session.hooks["response"].append(lambda response, *_, **__: bodies.append(response.content))
    return bodies


def test_error_text_travels_escaped_as_powershell_writes_it(lab: LabHandle) -> None:
    control(lab, "POST", "faults", {"kind": "error", "server": "ex1", "endpoint": "exchange",
                                    "cmdlet": "Get-AuthConfig", "message": HOSTILE_MESSAGE})
    with pool_for(lab, "ex1") as pool:
        bodies = _capture_receives(pool)
        ps = _invoke(pool, "Get-AuthConfig")
    [error] = ps.streams.error
    assert error.exception.adapted_properties["Message"] == HOSTILE_MESSAGE  # decoded, whole
    assert str(error) == HOSTILE_MESSAGE  # the record's ToString

    [record] = [m for m in _wire_messages(bodies) if b"ErrorRecord" in m]
    assert b"Disk _x0001_ full; _x001B_[31mred_x001B_[0m text and a literal _x005F_x0041_ here" \
        in record
    assert record.count(b"_x0001_") == 2  # the message, and the record's <ToString>
    assert not re.search(rb"[\x00-\x1f\x7f]", record), "a raw control character on the wire"


def test_terminating_error_text_travels_escaped(lab: LabHandle) -> None:
    """PowerShell's own errors (here: an unknown command named with a control character)
    end the pipeline with the record inside PIPELINE_STATE; its text is escaped too."""
    with pool_for(lab, "ex1") as pool:
        bodies = _capture_receives(pool)
        ps = _invoke(pool, "Get-No\x01Such")
    assert ps.state == PSInvocationState.FAILED
    [error] = ps.streams.error
    assert "'Get-No\x01Such'" in str(error)
    [state] = [m for m in _wire_messages(bodies) if b"ExceptionAsErrorRecord" in m]
    assert b"Get-No_x0001_Such" in state
    assert not re.search(rb"[\x00-\x1f\x7f]", state), "a raw control character on the wire"


def test_certificate_to_string_keeps_its_crlf_as_exchange_sends_it(lab: LabHandle) -> None:
    """The fixtures' <ToString> of a certificate reads "[Subject]_x000D__x000A_  CN=...";
    sent raw, XML would have turned each CRLF into a bare LF."""
    with pool_for(lab, "ex1") as pool:
        ps = _invoke(pool, "Get-ExchangeCertificate")
    assert ps.output
    text = ps.output[0].to_string
    assert text.startswith("[Subject]\r\n  CN=") and "\r\n\r\n[Issuer]\r\n" in text
