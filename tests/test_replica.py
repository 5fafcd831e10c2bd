"""`exauth lab snapshot`: a lab scenario that reproduces an org as status reads it.

Every built-in scenario plays "the real org": it is served, snapshotted through the wire
by the real command, the snapshot is served, and `exauth status --json` on both must give
the same findings and actions, thumbprints aside (the replica's certificates are stand-ins).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.scenario import builtin_names, load
from lab.serve import LabHandle, write_config
from tests.test_cli import exauth

THUMB = re.compile(r"[0-9A-F]{40}|[0-9A-F]{8}…")


def thumbprints_aside(value: Any) -> str:
    return THUMB.sub("<thumbprint>", json.dumps(value, sort_keys=True, ensure_ascii=False))


def status_json(handle: LabHandle, tmp_path: Path, name: str) -> dict[str, Any]:
    config = write_config(handle.info, tmp_path / f"{name}.toml", writer=handle.writer)
    result = exauth("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode in (0, 1, 2), result.stderr
    return dict(json.loads(result.stdout))


def snapshot(handle: LabHandle, tmp_path: Path) -> Path:
    config = write_config(handle.info, tmp_path / "real.toml", writer=handle.writer)
    out = tmp_path / "replica.toml"
    result = exauth("--config", str(config), "lab", "snapshot", "--out", str(out),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "replica" in result.stderr
    return out


@pytest.mark.parametrize("scenario", builtin_names())
def test_a_replica_shows_the_same_findings_and_actions(
        make_lab: Callable[..., LabHandle], tmp_path: Path, scenario: str) -> None:
    real = make_lab(scenario)
    out = snapshot(real, tmp_path)
    before = status_json(real, tmp_path, "real-status")
    replica = make_lab(str(out))
    after = status_json(replica, tmp_path, "replica-status")

    assert thumbprints_aside(after["findings"]) == thumbprints_aside(before["findings"])
    assert thumbprints_aside(after["actions"]) == thumbprints_aside(before["actions"])
    assert thumbprints_aside(after["servers"]) == thumbprints_aside(before["servers"])
    assert thumbprints_aside(after["auth"]) == thumbprints_aside(before["auth"])
    assert after["hybrid"] == before["hybrid"]

    # Stand-ins, not copies: no real thumbprint is a replica's, and the file names each
    # real one it replaces.
    real_thumbs = {c["thumbprint"] for store in real.org.state()["stores"].values()
                   for c in store}
    replica_thumbs = {c["thumbprint"] for store in replica.org.state()["stores"].values()
                      for c in store}
    assert not real_thumbs & replica_thumbs
    text = out.read_text()
    for which in ("current", "next"):
        named = before["auth"].get(which)
        if named and named.get("thumbprint") and named.get("present_on"):
            assert f"stands in for {named['thumbprint']}" in text


def test_the_replica_keeps_dates_key_sizes_and_algorithms(
        make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    real = make_lab("expiring-sha1")
    out = snapshot(real, tmp_path)
    data = tomllib.loads(out.read_text())
    replica = load(str(out))
    real_current = real.org.state()["auth_config"]["current"]
    real_cert = next(c for c in real.org.state()["stores"]["ex1"]
                     if c["thumbprint"] == real_current)
    stand_in = replica.certificate(data["auth_config"]["current"])
    assert stand_in.signature == "sha1" and stand_in.key_size == 2048
    assert stand_in.not_after is not None
    assert stand_in.not_after.isoformat().replace("+00:00", "Z") == real_cert["not_after"]
    assert stand_in.installed_on == ("ex1", "ex2", "ex3")
    assert data["lab"]["now"]  # the org's own clock, so "days left" reads the same
    assert [s["name"] for s in data["server"] if s.get("writer")] == ["ex1"]


def test_a_binding_naming_a_certificate_no_store_holds(
        make_lab: Callable[..., LabHandle], tmp_path: Path) -> None:
    """A scenario may name such a binding by thumbprint; the replica keeps it that way."""
    source = (Path(__file__).resolve().parent.parent / "lab" / "built_in_scenarios"
              / "healthy.toml").read_text()
    gone = "AB" * 20
    broken = source.replace('server = "ex2"\ncertificate = "backend-ex2"',
                            f'server = "ex2"\ncertificate = "thumbprint:{gone}"')
    assert broken != source
    (tmp_path / "gone.toml").write_text(broken)
    real = make_lab(str(tmp_path / "gone.toml"))
    before = status_json(real, tmp_path, "real-status")
    assert "BACKEND_CERT_NOT_IN_STORE" in {f["code"] for f in before["findings"]}
    out = snapshot(real, tmp_path)
    assert f'certificate = "thumbprint:{gone}"' in out.read_text()
    after = status_json(make_lab(str(out)), tmp_path, "replica-status")
    assert thumbprints_aside(after["findings"]) == thumbprints_aside(before["findings"])
    assert thumbprints_aside(after["actions"]) == thumbprints_aside(before["actions"])


def test_snapshot_of_several_orgs_needs_one_named(tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    org = ('[[org]]\nname = "{n}"\nchannel = ""\nwriter = "ex1.contoso.lab"\n'
           '[org.exchange]\nurl = "http://127.0.0.1:9/ex1.contoso.lab/PowerShell"\n'
           'auth = "basic"\nusername = "u"\npassword_env = "NOPE"\n')
    config.write_text(org.format(n="a") + org.format(n="b"))
    result = exauth("--config", str(config), "lab", "snapshot", "--out",
                    str(tmp_path / "x.toml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "--org" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.toml").exists()
