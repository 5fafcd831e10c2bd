"""The terminal is not Slack, but rich reads "[...]" in a string as markup: a "[/x]" in a
server name crashed the status table with a traceback, and "[link=...]" in a reason printed a
link. Names and Exchange's words are printed as they are.
"""

from __future__ import annotations

import pytest

from bot.render import terminal
from tests.test_outside_text import hostile_status
from workers.status.report_model import parse_status


def test_terminal_prints_outside_text_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    status = hostile_status()
    status["servers"][0]["name"] = "ex1[/oops]"
    status["servers"][0]["site"] = "[bold]Berlin"
    status["actions"][0]["reason"] = "see [link=https://evil.example]here[/link]"
    status["findings"][0]["message"] = "[red]m[/red]"
    terminal.print_status(parse_status(status))
    out = capsys.readouterr().out
    assert "ex1[/oops]" in out and "[bold]Berlin" in out
    assert "see [link=https://evil.example]here[/link]" in out and "[red]m[/red]" in out
