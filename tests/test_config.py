"""Settings: the schema of DESIGN.md, one-line errors naming file and key, no leaked secrets."""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from config import schema
from config.errors import ConfigError
from config.lab_settings import settings_for_lab
from config.load import config_path, load_settings, settings_from_dict, use_config
from config.schema import OrgSettings, Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "exauth.example.toml"

MINIMAL: dict[str, Any] = {
    "org": [
        {
            "name": "contoso",
            "channel": "C0123",
            "writer": "ex1.contoso.com",
            "exchange": {
                "url": "https://ex1.contoso.com/PowerShell",
                "username": "svc@CONTOSO.COM",
                "password_env": "EXAUTH_TEST_PW",
            },
        }
    ]
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one key set (dotted path, [n] for list items); value DELETE removes it."""
    data = copy.deepcopy(MINIMAL)
    node: Any = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "EXAUTH_CONFIG", "SLACK_API_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET", "REDIS_URL", "EXAUTH_TEST_PW",
    ):
        monkeypatch.delenv(name, raising=False)


def test_example_file_loads_with_every_section() -> None:
    settings = load_settings(EXAMPLE)
    org = settings.org("contoso")
    assert settings.slack.api_url == "https://slack.com/api/"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert org.writer == "ex1.contoso.com"
    assert org.exchange.auth == "kerberos"
    assert org.approvers and org.operators
    assert org.warnings.bands_days == [60, 30, 14, 7, 3, 1, 0]
    assert org.host.port == 5986
    assert org.exchange_url("ex3.contoso.com") == "http://ex3-mgmt.contoso.com/PowerShell"
    assert org.host_url("ex3.contoso.com") == "https://ex3-mgmt.contoso.com:5986/wsman"
    assert settings.org_for_channel("C0123456789") is org
    assert settings.org_for_channel("C999") is None


def test_minimal_org_gets_documented_defaults() -> None:
    org = settings_from_dict(MINIMAL).org()
    assert org.allow_self_approval is False
    assert org.approval_ttl_minutes == 60
    assert org.exchange.auth == "kerberos"
    assert org.exchange.verify_tls is True
    assert (org.host.port, org.host.ssl, org.host.path) == (5986, True, "wsman")
    assert org.warnings.cron == "0 8 * * *"
    assert org.exchange.connection_timeout == 30
    assert org.exchange.operation_timeout == 120
    assert org.exchange.max_concurrency == 16


def test_audit_mirror_is_off_unless_configured(tmp_path: Path) -> None:
    assert settings_from_dict(MINIMAL).audit.jsonl is None
    target = tmp_path / "audit.jsonl"
    assert settings_from_dict(with_change("audit.jsonl", str(target))).audit.jsonl == str(target)


def test_per_server_urls() -> None:
    data = with_change("org[0].endpoints", {"EX9.contoso.com": {"host_url": "https://h9:1/w"}})
    org = settings_from_dict(data).org()
    assert org.exchange_url() == "https://ex1.contoso.com/PowerShell"
    assert org.exchange_url("EX1.contoso.com") == "https://ex1.contoso.com/PowerShell"
    assert org.exchange_url("ex2.contoso.com") == "https://ex2.contoso.com/PowerShell"
    assert org.host_url("ex2.contoso.com") == "https://ex2.contoso.com:5986/wsman"
    assert org.host_url("ex9.contoso.com") == "https://h9:1/w"
    # An override without exchange_url keeps the default for that endpoint.
    assert org.exchange_url("ex9.contoso.com") == "https://ex9.contoso.com/PowerShell"


BAD_CONFIGS = [
    ("org[0].exchange.auth", "foo",
     'org[0].exchange.auth: must be one of kerberos, negotiate, ntlm, basic, credssp (got "foo")'),
    ("org[0].exchange.password", "hunter2", "org[0].exchange.password: unknown key"),
    ("org[0].colour", "blue", "org[0].colour: unknown key"),
    ("org[0].name", DELETE, "org[0].name: missing"),
    ("org[0].name", "contoso prod", "org[0].name: must be one word of letters, digits"),
    ("org[0].name", "_operations", "org[0].name: must be one word of letters, digits"),
    ("org[0].writer", DELETE, "org[0].writer: missing"),
    ("org[0].writer", "https://ex1/PowerShell", "org[0].writer: must be a server FQDN"),
    ("org[0].approvers", ["U0AAA", "alice"], 'org[0].approvers: must be Slack user IDs'),
    ("org[0].operators", ["#general"], "org[0].operators: must be Slack user IDs"),
    ("org[0].approval_ttl_minutes", 0, "org[0].approval_ttl_minutes: must be at least 1"),
    ("org[0].allow_self_approval", "yes", "org[0].allow_self_approval: must be true or false"),
    ("org[0].exchange.url", "ex1.contoso.com", "org[0].exchange.url: must be an http:// or"),
    ("org[0].exchange.username", DELETE, "org[0].exchange.username: missing"),
    ("org[0].exchange.password_env", DELETE, "org[0].exchange.password_env: missing"),
    ("org[0].exchange.password_file", "/run/pw", "org[0].exchange.password_file: set "),
    ("org[0].exchange.ca_bundle", "/nonexistent/ca.pem", "org[0].exchange.ca_bundle: "),
    ("org[0].exchange.operation_timeout", "soon", "org[0].exchange.operation_timeout: must be"),
    ("org[0].host.port", 70000, "org[0].host.port: must be at most 65535"),
    ("org[0].host.password_env", "HOSTPW", "org[0].host.username: missing"),
    ("org[0].endpoints", {"ex2.contoso.com": {"url": "https://x/"}},
     'org[0].endpoints."ex2.contoso.com".url: unknown key'),
    ("org[0].warnings.cron", "daily", "org[0].warnings.cron: must be a 5-field cron"),
    ("org[0].warnings.bands_days", [30, -1], "org[0].warnings.bands_days: days must be 0 or"),
    ("org[0].warnings.bands_days", [30, 30], "org[0].warnings.bands_days: days must not repeat"),
    ("slack.bot_token", "xoxb-1", "slack.bot_token: secrets never go in the file"),
    ("slack.signing_secret", "s", "slack.signing_secret: secrets never go in the file"),
    ("slack.api_url", "not a url", "slack.api_url: must be an http:// or https:// URL"),
    ("redis.url", "http://redis", "redis.url: must be a redis://"),
    ("redis.db", 3, "redis.db: unknown key"),
    ("audit.jsonl", "/nonexistent-dir/audit.jsonl",
     'audit.jsonl: directory "/nonexistent-dir" does not exist'),
    ("audit.jsonl", "/tmp", 'audit.jsonl: must name a file (got "/tmp")'),
    ("audit.path", "/tmp/a.jsonl", "audit.path: unknown key"),
    # Set only by the program (where a table sits, the lab's in-memory password), never a file.
    ("org[0].place", "x", "org[0].place: unknown key"),
    ("org[0].exchange.place", {"key": "x"}, "org[0].exchange.place: unknown key"),
    ("org[0].exchange.lab_password", "hunter2", "org[0].exchange.lab_password: unknown key"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_CONFIGS)
def test_bad_config_names_file_and_key(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(with_change(path, value), source="bad.toml")
    message = str(err.value)
    assert message.startswith(f"bad.toml: {expected}"), message
    assert "\n" not in message


def test_duplicate_org_names_and_channels_refused() -> None:
    data = copy.deepcopy(MINIMAL)
    data["org"].append(copy.deepcopy(data["org"][0]))
    with pytest.raises(ConfigError, match=r'^x.toml: org\[1\].name: duplicate org name "contoso"'):
        settings_from_dict(data, source="x.toml")
    data["org"][1]["name"] = "fabrikam"
    with pytest.raises(ConfigError, match=r"^x.toml: org\[1\].channel: channel \"C0123\""):
        settings_from_dict(data, source="x.toml")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/ex1/PowerShell", True),
        ("http://localhost/PowerShell", True),
        ("http://[::1]:5985/wsman", True),
        ("https://ex1.contoso.com/PowerShell", True),
        ("http://ex1.contoso.com/PowerShell", False),
        ("http://10.0.0.5/PowerShell", False),
    ],
)
def test_basic_over_plain_http_only_to_loopback(url: str, allowed: bool) -> None:
    data = with_change("org[0].exchange.url", url)
    data["org"][0]["exchange"]["auth"] = "basic"
    if allowed:
        assert settings_from_dict(data).org().exchange.url == url
    else:
        with pytest.raises(ConfigError, match=r"org\[0\]\.exchange\.url: basic auth over plain"):
            settings_from_dict(data)


def test_basic_over_http_also_checked_for_overrides_and_host() -> None:
    data = with_change("org[0].exchange.auth", "basic")
    data["org"][0]["endpoints"] = {"ex2.contoso.com": {"host_url": "http://ex2.contoso.com/wsman"}}
    with pytest.raises(ConfigError, match=r'endpoints\."ex2.contoso.com"\.host_url: basic auth'):
        settings_from_dict(data)
    data = with_change("org[0].exchange.auth", "basic")
    data["org"][0]["host"] = {"ssl": False, "port": 5985}
    with pytest.raises(ConfigError, match=r"org\[0\]\.host\.ssl: basic auth"):
        settings_from_dict(data)
    # Kerberos over http is fine: pypsrp encrypts the messages.
    data["org"][0]["exchange"]["auth"] = "kerberos"
    assert settings_from_dict(data).org().host_url("ex2.contoso.com").startswith("http://")


def test_password_read_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    org = settings_from_dict(MINIMAL, source="e.toml").org()
    with pytest.raises(ConfigError) as err:
        org.exchange.password()
    assert str(err.value) == (
        "e.toml: org[0].exchange.password_env: environment variable EXAUTH_TEST_PW is not set"
    )
    monkeypatch.setenv("EXAUTH_TEST_PW", "s3cret-from-env")
    assert org.exchange.password() == "s3cret-from-env"
    # The host endpoint defaults to the same credentials.
    assert org.host_password() == "s3cret-from-env"
    assert org.host_username() == "svc@CONTOSO.COM"

    pw_file = tmp_path / "pw"
    data = with_change("org[0].exchange.password_env", DELETE)
    data["org"][0]["exchange"]["password_file"] = str(pw_file)
    org = settings_from_dict(data, source="f.toml").org()
    with pytest.raises(ConfigError, match=r"^f.toml: org\[0\].exchange.password_file: .*no such"):
        org.exchange.password()
    pw_file.write_text("s3cret-from-file\n")
    assert org.exchange.password() == "s3cret-from-file"


def test_secrets_never_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-very-secret")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-very-secret")
    monkeypatch.setenv("EXAUTH_TEST_PW", "password-very-secret")
    settings = settings_from_dict(MINIMAL)
    lab = settings_for_lab(_lab_info(), "lab-password-very-secret")
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get_secret_value() == "xoxb-very-secret"
    assert settings.org().exchange.password() == "password-very-secret"
    assert lab.org().exchange.password() == "lab-password-very-secret"
    for shown in (repr(settings), str(settings), repr(lab), str(lab),
                  settings.model_dump_json(), lab.model_dump_json()):
        assert "very-secret" not in shown


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    data = copy.deepcopy(MINIMAL)
    data["slack"] = {"api_url": "https://slack.com/api/"}
    data["redis"] = {"url": "redis://file:6379/0"}
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9999/api/")
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/2")
    settings = settings_from_dict(data)
    assert settings.slack.api_url == "http://127.0.0.1:9999/api/"
    assert settings.redis.url == "redis://env:6379/2"
    monkeypatch.delenv("REDIS_URL")
    assert settings_from_dict(data).redis.url == "redis://file:6379/0"


def test_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path() is None
    with pytest.raises(ConfigError, match=r"^exauth.toml: no such file"):
        load_settings()
    text = textwrap.dedent(
        """
        [[org]]
        name = "{name}"
        writer = "ex1.contoso.com"
        [org.exchange]
        username = "u"
        password_env = "EXAUTH_TEST_PW"
        """
    )
    (tmp_path / "exauth.toml").write_text(text.format(name="cwd"))
    (tmp_path / "env.toml").write_text(text.format(name="env"))
    (tmp_path / "arg.toml").write_text(text.format(name="arg"))
    assert config_path() == Path("exauth.toml")
    assert load_settings().org().name == "cwd"
    monkeypatch.setenv("EXAUTH_CONFIG", str(tmp_path / "env.toml"))
    assert load_settings().org().name == "env"
    assert load_settings(tmp_path / "arg.toml").org().name == "arg"
    assert config_path(tmp_path / "missing.toml") is None


def test_use_config_is_the_process_config_wherever_it_goes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """After `--config`, a job's load_settings() reads the file typed, once the directory
    changed too, and never the one $EXAUTH_CONFIG named before."""
    text = ('[[org]]\nname = "{name}"\nwriter = "ex1.contoso.com"\n'
            '[org.exchange]\nusername = "u"\npassword_env = "EXAUTH_TEST_PW"\n')
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "etc" / "exauth.toml").write_text(text.format(name="given"))
    (tmp_path / "env.toml").write_text(text.format(name="env"))
    monkeypatch.setenv("EXAUTH_CONFIG", str(tmp_path / "env.toml"))  # and put back after
    monkeypatch.chdir(tmp_path / "elsewhere")
    chosen = use_config(Path("..", "etc", "exauth.toml"))
    assert chosen.is_absolute() and chosen.samefile(tmp_path / "etc" / "exauth.toml")
    assert os.environ["EXAUTH_CONFIG"] == str(chosen)  # child processes inherit it
    monkeypatch.chdir(tmp_path)
    assert load_settings().org().name == "given"


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[org]\nname = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: not valid TOML")
    assert "\n" not in str(err.value)


def test_org_lookup() -> None:
    data = copy.deepcopy(MINIMAL)
    second = copy.deepcopy(data["org"][0])
    second.update(name="fabrikam", channel="C0999")
    data["org"].append(second)
    settings: Settings = settings_from_dict(data, source="s.toml")
    assert settings.org("fabrikam").channel == "C0999"
    assert settings.org_for_channel("C0999") is settings.org("fabrikam")
    with pytest.raises(ConfigError, match='no org named "nope"'):
        settings.org("nope")
    with pytest.raises(ConfigError, match="several orgs configured"):
        settings.org()


def _lab_info() -> dict[str, Any]:
    return {
        "org": "lab",
        "username": "LAB\\exadmin",
        "password": "ignored-here",
        "control_url": "http://127.0.0.1:4000/_lab",
        "servers": [
            {"name": "ex1", "fqdn": "ex1.contoso.lab",
             "exchange_url": "http://127.0.0.1:4000/ex1.contoso.lab/PowerShell",
             "host_url": "http://127.0.0.1:4000/ex1.contoso.lab/wsman"},
            {"name": "ex2", "fqdn": "ex2.contoso.lab",
             "exchange_url": "http://127.0.0.1:4000/ex2.contoso.lab/PowerShell",
             "host_url": "http://127.0.0.1:4000/ex2.contoso.lab/wsman"},
        ],
    }


def test_settings_for_lab_points_every_server_at_the_lab() -> None:
    settings = settings_for_lab(_lab_info(), "pw")
    org = settings.org()
    assert org.name == "lab"
    assert org.writer == "ex1.contoso.lab"
    assert org.exchange.auth == "basic"
    assert org.exchange.username == "LAB\\exadmin"
    assert org.exchange_url("ex2.contoso.lab") == "http://127.0.0.1:4000/ex2.contoso.lab/PowerShell"
    assert org.host_url("ex2.contoso.lab") == "http://127.0.0.1:4000/ex2.contoso.lab/wsman"
    assert settings_for_lab(_lab_info(), "pw", writer="ex2").org().writer == "ex2.contoso.lab"
    with pytest.raises(ConfigError, match='no lab server named "ex7"'):
        settings_for_lab(_lab_info(), "pw", writer="ex7")


def test_models_are_built_whole_never_changed_after() -> None:
    """Every config model is frozen and has no private attributes to set behind its back:
    where a table sits and the lab's password are fields, given while it is validated."""
    models = [cls for cls in vars(schema).values()
              if isinstance(cls, type) and issubclass(cls, BaseModel)
              and cls.__module__ == schema.__name__ and cls.model_config.get("frozen") is not None]
    assert Settings in models and OrgSettings in models and len(models) >= 10
    for cls in models:
        assert cls.model_config.get("frozen") is True, cls
        assert not cls.__private_attributes__, cls


def test_validating_the_schema_alone_places_tables_and_checks_rules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`Settings.model_validate` is the whole check, not half of one the loader completes."""
    settings = Settings.model_validate(copy.deepcopy(MINIMAL), context={"source": "v.toml"})
    assert settings.source == "v.toml"
    with pytest.raises(ConfigError) as err:
        settings.org().exchange.password()
    assert str(err.value) == (
        "v.toml: org[0].exchange.password_env: environment variable EXAUTH_TEST_PW is not set"
    )
    data = copy.deepcopy(MINIMAL)
    data["org"][0]["host"] = {"username": "admin", "password_env": "EXAUTH_TEST_HOST_PW"}
    monkeypatch.delenv("EXAUTH_TEST_HOST_PW", raising=False)
    with pytest.raises(ConfigError, match=r"^v.toml: org\[0\]\.host\.password_env: environment"):
        Settings.model_validate(data, context={"source": "v.toml"}).org().host_password()
    data = copy.deepcopy(MINIMAL)
    data["org"].append(copy.deepcopy(data["org"][0]))
    with pytest.raises(ValidationError, match='duplicate org name "contoso"'):
        Settings.model_validate(data)
