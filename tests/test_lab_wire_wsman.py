"""The sans-IO pieces of the lab's transport: WS-Man durations and faults, control input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pypsrp.wsman import WSMan

from lab import wsman
from lab.http import ControlError, parse_advance


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT20S", 20.0), ("PT1M30.5S", 90.5), ("P1DT2H", 93600.0), ("PT0.250S", 0.25)],
)
def test_operation_timeout_durations(text: str, seconds: float) -> None:
    assert wsman.parse_duration(text) == seconds


def test_bad_duration_and_bad_envelopes_are_wsman_errors() -> None:
    with pytest.raises(wsman.WSManError, match="xs:duration"):
        wsman.parse_duration("20 seconds")
    with pytest.raises(wsman.WSManError, match="not XML"):
        wsman.parse_request(b"<Envelope")
    with pytest.raises(wsman.WSManError, match="Header and Body"):
        wsman.parse_request(b"<Envelope/>")


@pytest.mark.parametrize(
    ("fault", "code", "needle"),
    [
        (wsman.timed_out("ex1.contoso.lab"), 2150858793, "OperationTimeout"),
        (wsman.shell_not_found("ex1.contoso.lab", "ABC"), 2150858843, "ShellId ABC"),
        (
            wsman.unknown_configuration(
                "ex1.contoso.lab", "http://schemas.microsoft.com/powershell/Foo"
            ),
            2150858770,
            "Cannot find the Foo session configuration",
        ),
        (wsman.generic("ex1.contoso.lab", "[FailureCategory=Cafe-SendFailure] "), None,
         "Cafe-SendFailure"),
    ],
)
def test_faults_read_back_by_pypsrp(fault: wsman.Fault, code: int | None, needle: str) -> None:
    error = WSMan._parse_wsman_fault(wsman.fault_response(fault).decode())
    assert error.code == (code if code is not None else fault.code)
    assert error.machine == "ex1.contoso.lab"
    assert needle in error.reason


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("49h", timedelta(hours=49)),
        ("30m", timedelta(minutes=30)),
        ("2d", timedelta(days=2)),
        ("90s", timedelta(seconds=90)),
        ("1d 12h", timedelta(hours=36)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_clock_advance_durations(text: str, delta: timedelta) -> None:
    assert parse_advance(text) == delta


@pytest.mark.parametrize("text", ["", "49", "h", "49x", "-1h", "1h and more", 49, None])
def test_bad_clock_advance_is_named(text: object) -> None:
    with pytest.raises(ControlError, match="advance"):
        parse_advance(text)
