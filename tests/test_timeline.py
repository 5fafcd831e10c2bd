"""The certificate timeline PNG: its bars are the status JSON's dates (read back from the
figure's artists), `exauth status --timeline` writes it, and `/exauth status` uploads it
(files_upload_v2) into the report's thread on the Slack mock."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from matplotlib import dates as mdates
from PIL import Image

from bot.render import timeline
from config.lab_settings import settings_for_lab
from lab.serve import LabHandle, config_toml
from tests.test_jobs_status import CHANNEL, Stack, stack_for  # noqa: F401 - a fixture
from workers.status.collect import status as collect_status

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lab_status(make_lab: Callable[..., LabHandle], scenario: str) -> dict[str, Any]:
    handle = make_lab(scenario)
    return collect_status(settings_for_lab(handle.info, handle.password).orgs[0]).to_json()


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def close(a: datetime, b: datetime) -> bool:
    return abs(a - b) < timedelta(seconds=1)


def artists(fig: Any) -> dict[str, Any]:
    ax = fig.axes[0]
    return {a.get_gid(): a for a in [*ax.patches, *ax.lines] if a.get_gid()}


def span(rect: Any) -> tuple[datetime, datetime]:
    return mdates.num2date(rect.get_x()), mdates.num2date(rect.get_x() + rect.get_width())


@pytest.mark.parametrize("scenario", ["staged", "backend-deleted", "expired"])
def test_bars_are_the_status_dates(make_lab: Callable[..., LabHandle], scenario: str) -> None:
    status = lab_status(make_lab, scenario)
    fig = timeline.figure(status)
    drawn = artists(fig)
    left = mdates.num2date(fig.axes[0].get_xlim()[0])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    expected_rows = []
    for slot in ("current", "next", "previous"):
        cert = status["auth"][slot]
        if cert is None:
            assert f"bar:auth:{slot}" not in drawn
            continue
        expected_rows.append(f"Auth {slot}")
        start, end = span(drawn[f"bar:auth:{slot}"])
        assert close(start, when(cert["not_before"])) and close(end, when(cert["not_after"]))
        band_start, band_end = span(drawn[f"band30:auth:{slot}"])
        assert close(band_end, end) and close(band_start, end - timedelta(days=30))
    for entry in status["backend"]:
        key = f"backend:{entry['server']}"
        expected_rows.append(f"Back end {entry['server'].split('.')[0]}")
        if entry["not_after"] is None:
            assert f"bar:{key}" not in drawn and f"missing:{key}" in drawn
            continue
        start, end = span(drawn[f"bar:{key}"])
        assert close(end, when(entry["not_after"])) and close(start, left)
    assert labels == expected_rows
    today = mdates.num2date(drawn["today"].get_xdata()[0])
    assert close(today, when(status["checked_at"]))
    effective = (status["auth"]["next"] or {}).get("effective")
    if effective:
        assert close(mdates.num2date(drawn["effective"].get_xdata()[0]), when(effective))
    else:
        assert "effective" not in drawn
    if scenario == "backend-deleted":
        assert any(e["not_after"] is None for e in status["backend"])
    png = timeline.png_bytes(status)
    assert png.startswith(PNG_MAGIC)
    width, height = Image.open(BytesIO(png)).size
    assert width == 800 and 300 <= height <= 800  # Slack's preview keeps it readable


def test_exauth_status_timeline_writes_the_png(make_lab: Callable[..., LabHandle],
                                               tmp_path: Path) -> None:
    handle = make_lab("staged")
    password = tmp_path / "lab.password"
    password.write_text(handle.password)
    config = tmp_path / "exauth.toml"
    config.write_text(config_toml(handle.info, str(password), writer=handle.writer))
    target = tmp_path / "out" / "timeline.png"
    target.parent.mkdir()
    done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config), "status",
                           "--json", "--timeline", str(target)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode in (0, 1, 2), done.stderr
    assert f"timeline of lab written to {target}" in done.stderr
    assert target.read_bytes().startswith(PNG_MAGIC)
    status = json.loads(done.stdout)
    assert status["auth"]["next"] is not None  # the file is of the status just printed
    unwritable = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config),
                                 "status", "--timeline", str(tmp_path / "no" / "x.png")],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert unwritable.returncode == 3 and "cannot write the timeline" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_the_slack_status_report_gets_the_timeline_in_its_thread(
        stack_for: Callable[..., Stack]) -> None:  # noqa: F811
    stack = stack_for("staged")
    update, _ = stack.report()
    complete = stack.slack.wait_for("files.completeUploadExternal")[0]
    assert complete.response.get("ok"), complete.response
    assert complete.params["channel_id"] == CHANNEL
    assert complete.params["thread_ts"] == update.params["ts"]  # beside the report
    asked = stack.slack.calls_of("files.getUploadURLExternal")[0]
    assert asked.params["filename"] == "exauth-lab-timeline.png"
    assert "Auth current until" in asked.params["alt_txt"]
    png = next(iter(stack.slack.uploads.values()))
    assert png.startswith(PNG_MAGIC) and int(asked.params["length"]) == len(png)
