"""The audit stream: entries per org, newest first, and never a secret in them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from workers import audit, redis_keys

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

PASSWORD = "Hunter2-Corr3ct-H0rse"
BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
APP_TOKEN = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n"
PFX_BYTES = b"\x30\x82\x0a\x1fSECRET-PFX-CONTENT"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
SECRETS = [PASSWORD, BOT_TOKEN, APP_TOKEN, PEM_BODY, "SECRET-PFX-CONTENT", SIGNING]


def hostile_detail() -> dict[str, object]:
    cyclic: dict[str, object] = {"name": "loop"}
    cyclic["self"] = cyclic
    return {
        "cmdlet": "Import-ExchangeCertificate",
        "Password": PASSWORD,
        "-FileData": PFX_BYTES,
        "nested": {"deeper": [{"client_secret": SIGNING}, {"note": f"token={BOT_TOKEN}"}]},
        "parameters": [["FileData", PFX_BYTES], ["PrivateKeyExportable", True]],
        "message": f"Import failed: -Password {PASSWORD} was rejected; key was {PEM}",
        "url": f"https://LAB\\exadmin:{PASSWORD}@mail.contoso.com/PowerShell",
        "header": f"Authorization: Basic {PASSWORD}QUJDRA==",
        "json_text": json.dumps({"password": PASSWORD, "app": APP_TOKEN}),
        "raw_key": bytearray(b"key material"),
        "loop": cyclic,
        7: "non-string key",
        "obj": object(),
        "when": T0,
        "thumbprint": "A" * 40,
        "key_size": 2048,
        "step": "Export-ExchangeCertificate -Password <secret:pfx-password>",
    }


def test_redact_masks_secret_keys_bytes_and_text() -> None:
    cleaned = audit.redact(hostile_detail())

    text = json.dumps(cleaned)
    for secret in SECRETS:
        assert secret not in text
    assert cleaned["Password"] == "***"
    assert cleaned["-FileData"] == "***"
    assert cleaned["nested"]["deeper"][0]["client_secret"] == "***"
    assert cleaned["parameters"][0] == ["FileData", "***"]
    assert cleaned["raw_key"] == "***"
    assert cleaned["loop"]["self"] == "<cycle>"
    assert cleaned["obj"] == "<object>"
    assert cleaned["7"] == "non-string key"
    # What is not secret survives, so the entry still says what happened.
    assert cleaned["thumbprint"] == "A" * 40
    assert cleaned["key_size"] == 2048
    assert cleaned["parameters"][1] == ["PrivateKeyExportable", True]
    assert cleaned["cmdlet"] == "Import-ExchangeCertificate"
    assert cleaned["when"] == T0.isoformat()
    assert "Import failed" in cleaned["message"]
    assert "mail.contoso.com" in cleaned["url"]
    assert cleaned["step"].endswith("<secret:pfx-password>")  # a reference is not a secret


def test_redact_survives_absurd_nesting() -> None:
    deep: dict[str, object] = {"password": PASSWORD}
    for _ in range(200):
        deep = {"x": deep}
    text = json.dumps(audit.redact(deep))
    assert PASSWORD not in text
    assert "<too deep>" in text


def test_record_and_read_back_newest_first_per_org(conn: redis.Redis) -> None:
    ids = []
    for i, org in enumerate(["contoso", "fabrikam", "contoso"]):
        ids.append(
            audit.record(
                conn,
                org=org,
                actor=f"U{i}",
                action="approve",
                target=f"op1/step{i}",
                outcome="ok",
                detail={"n": i},
                now=T0,
            )
        )

    everything = audit.entries(conn)
    assert [e["id"] for e in everything] == list(reversed(ids))
    contoso = audit.entries(conn, org="contoso")
    assert [e["id"] for e in contoso] == [ids[2], ids[0]]  # same ids as in the global stream
    assert contoso[0] == {
        "id": ids[2],
        "ts": T0.isoformat(),
        "org": "contoso",
        "actor": "U2",
        "action": "approve",
        "target": "op1/step2",
        "outcome": "ok",
        "detail": {"n": 2},
    }
    assert audit.entries(conn, org="fabrikam", limit=5)[0]["detail"] == {"n": 1}
    assert len(audit.entries(conn, limit=2)) == 2
    assert audit.entries(conn, org="nobody") == []


def test_no_secret_reaches_the_stream_or_the_jsonl_mirror(
    conn: redis.Redis, tmp_path: Path
) -> None:
    mirror = tmp_path / "audit.jsonl"
    for _ in range(2):
        audit.record(
            conn,
            org="contoso",
            actor="U1",
            action=f"import with password={PASSWORD}",
            target=f"cert via {BOT_TOKEN}",
            outcome=f"failed: -Password '{PASSWORD}'",
            detail=hostile_detail(),
            now=T0,
            mirror=mirror,
        )

    raw_dump = b""
    for key in (redis_keys.audit_stream(), audit.org_stream("contoso")):
        for _id, fields in conn.xrange(key):
            raw_dump += b"".join(k + b"=" + v + b"\n" for k, v in fields.items())
    file_text = mirror.read_text()
    assert raw_dump and file_text
    for secret in SECRETS:
        assert secret.encode() not in raw_dump
        assert secret not in file_text
    lines = file_text.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["id"] for line in lines] == [
        e["id"] for e in reversed(audit.entries(conn, org="contoso"))
    ]
    assert mirror.stat().st_mode & 0o777 == 0o600


def test_record_refuses_naive_time_and_writes_nothing(conn: redis.Redis) -> None:
    with pytest.raises(ValueError):
        audit.record(
            conn,
            org="contoso",
            actor="U1",
            action="a",
            target="t",
            outcome="ok",
            now=datetime(2025, 1, 1),
        )
    assert conn.exists(redis_keys.audit_stream()) == 0


def test_format_entry_is_one_line() -> None:
    line = audit.format_entry(
        {
            "ts": "t",
            "org": "o",
            "actor": "U1",
            "action": "approve",
            "target": "op/1",
            "outcome": "ok",
            "detail": {"a": 1},
        }
    )
    assert "\n" not in line
    assert line.startswith("t o U1 approve op/1 -> ok")


def test_a_configured_mirror_gets_every_entry_the_process_records(
    conn: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from bot.cli import main

    mirror = tmp_path / "audit.jsonl"
    config = tmp_path / "exauth.toml"
    config.write_text(f'[redis]\nurl = "{redis_url}"\n[audit]\njsonl = "{mirror}"\n')
    try:
        # env: --config becomes $EXAUTH_CONFIG; CliRunner puts this process's back after.
        result = CliRunner(env={"EXAUTH_CONFIG": None}).invoke(
            main, ["--config", str(config), "audit", "--json"])
        assert result.exit_code == 0, result.output
        assert not mirror.exists()  # reading the log records nothing
        entry_id = audit.record(conn, org="contoso", actor="U1", action="approval.approve",
                                target="op-1", outcome="ok", now=T0)
    finally:
        audit.use_mirror(None)
    assert [json.loads(line)["id"] for line in mirror.read_text().splitlines()] == [entry_id]
    audit.record(conn, org="contoso", actor="U1", action="approval.deny", target="op-2",
                 outcome="ok", now=T0)
    assert len(mirror.read_text().splitlines()) == 1  # use_mirror(None): Redis only again
