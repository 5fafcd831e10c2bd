"""exauth settings: one TOML file plus the environment, validated before anything runs.

The file holds no secrets: Slack tokens come only from the environment, Exchange passwords
only from an environment variable or a file named in the config, and both are read at the
moment they are needed (connect time), so a typo shows up as one clear line then, and a
settings object can be printed or logged without leaking anything.

Every problem is a `ConfigError` whose text is one line naming the file and the key, e.g.
`exauth.toml: org[0].exchange.auth: must be one of kerberos, negotiate, ntlm, basic, credssp
(got "foo")`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.errors import ConfigError  # re-exported: code imports it from here

DEFAULT_FILE = "exauth.toml"
ENV_CONFIG = "EXAUTH_CONFIG"
AuthMethod = Literal["kerberos", "negotiate", "ntlm", "basic", "credssp"]

# Slack user IDs (U..., W... on Enterprise Grid) and user group IDs (S...).
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-]+$")

M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored is a setting silently lost."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Located(_Strict):
    """Remembers where it came from, so errors raised later (connect time) still name the key."""

    _source: str = PrivateAttr(default=DEFAULT_FILE)
    _key: str = PrivateAttr(default="")

    def _locate(self, source: str, key: str) -> None:
        self._source = source
        self._key = key

    def _error(self, field: str, problem: str) -> ConfigError:
        key = f"{self._key}.{field}" if self._key else field
        return ConfigError(self._source, key, problem)


class _Credentials(_Located):
    """Who connects, and where the password comes from (never the password itself)."""

    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # Set only by settings_for_lab(): the lab's throwaway password, never from a file.
    _password_value: SecretStr | None = PrivateAttr(default=None)

    def password(self) -> str:
        """The password, read now from its environment variable or file."""
        if self._password_value is not None:
            return self._password_value.get_secret_value()
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise self._error(
                    "password_env", f"environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
            except FileNotFoundError:
                raise self._error("password_file", f"{path}: no such file") from None
            except OSError as exc:
                problem = f"{path}: cannot read ({exc.strerror})"
                raise self._error("password_file", problem) from None
            if not value:
                raise self._error("password_file", f"{path}: file is empty")
            return value
        raise self._error("password_env", "no password source: set password_env or password_file")


class ExchangeSettings(_Credentials):
    """`[org.exchange]`: the remote PowerShell endpoint of Exchange and how to reach it."""

    url: str | None = None
    auth: AuthMethod = "kerberos"
    verify_tls: bool = True
    ca_bundle: str | None = None
    # Seconds to establish a connection / wait for an HTTP answer (pypsrp connection_timeout).
    connection_timeout: int = Field(default=30, ge=1, le=600)
    # Seconds one cmdlet may take from start to its last output before it is stopped.
    operation_timeout: int = Field(default=120, ge=5, le=3600)
    # How many servers are asked at the same time during status collection.
    max_concurrency: int = Field(default=16, ge=1, le=256)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    def cert_validation(self) -> bool | str:
        """pypsrp's `cert_validation`: False, True, or a CA bundle path."""
        return _cert_validation(self.verify_tls, self.ca_bundle)


class HostSettings(_Credentials):
    """`[org.host]`: the plain WinRM endpoint (local admin) of every server."""

    port: int = Field(default=5986, ge=1, le=65535)
    ssl: bool = True
    path: str = "wsman"
    # None = the same as [org.exchange].
    auth: AuthMethod | None = None
    verify_tls: bool | None = None
    ca_bundle: str | None = None


class EndpointOverride(_Strict):
    """`[org.endpoints."<fqdn>"]`: where DNS names or ports differ from the defaults."""

    exchange_url: str | None = None
    host_url: str | None = None

    @field_validator("exchange_url", "host_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


class WarningSettings(_Strict):
    """`[org.warnings]`: when the daily sweep runs and at which days-left it speaks up."""

    cron: str = "0 8 * * *"
    bands_days: list[int] = Field(default_factory=lambda: [60, 30, 14, 7, 3, 1, 0])

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f'must be a 5-field cron expression like "0 8 * * *" (got "{value}")')
        return value

    @field_validator("bands_days")
    @classmethod
    def _bands(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one number of days")
        if any(v < 0 for v in value):
            raise ValueError(f"days must be 0 or more (got {value})")
        if len(set(value)) != len(value):
            raise ValueError(f"days must not repeat (got {value})")
        return sorted(value, reverse=True)


class OrgSettings(_Located):
    """One `[[org]]`: an Exchange organization and the Slack channel that manages it."""

    # Typed in `/exauth status <org>` and used in Redis keys: one word, no spaces.
    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    channel: str = ""
    approvers: list[str] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    approval_ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    writer: str = Field(min_length=1)
    exchange: ExchangeSettings
    host: HostSettings = Field(default_factory=HostSettings)
    endpoints: dict[str, EndpointOverride] = Field(default_factory=dict)
    warnings: WarningSettings = Field(default_factory=WarningSettings)

    @field_validator("approvers", "operators")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _SLACK_ID.match(item):
                raise ValueError(
                    "must be Slack user IDs (U…/W…) or user group IDs (S…), "
                    f'not names (got "{item}")'
                )
        return value

    @field_validator("writer")
    @classmethod
    def _writer(cls, value: str) -> str:
        if "/" in value or ":" in value or " " in value:
            raise ValueError(f'must be a server FQDN, not a URL (got "{value}")')
        return value.lower()

    def _override(self, fqdn: str) -> EndpointOverride | None:
        wanted = fqdn.lower()
        for name, override in self.endpoints.items():
            if name.lower() == wanted:
                return override
        return None

    def exchange_url(self, fqdn: str | None = None) -> str:
        """The Exchange endpoint of one named server (never a load-balanced name)."""
        fqdn = (fqdn or self.writer).lower()
        override = self._override(fqdn)
        if override and override.exchange_url:
            return override.exchange_url
        base = self.exchange.url
        if base is None:
            return f"https://{fqdn}/PowerShell"
        parts = urlsplit(base)
        if fqdn == self.writer or fqdn == (parts.hostname or "").lower():
            return base
        # Same shape as the org's URL (scheme, port, path), with this server's name.
        netloc = fqdn if parts.port is None else f"{fqdn}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def host_url(self, fqdn: str | None = None) -> str:
        """The plain WinRM endpoint of one server."""
        fqdn = (fqdn or self.writer).lower()
        override = self._override(fqdn)
        if override and override.host_url:
            return override.host_url
        scheme = "https" if self.host.ssl else "http"
        return f"{scheme}://{fqdn}:{self.host.port}/{self.host.path.lstrip('/')}"

    def host_auth(self) -> str:
        return self.host.auth or self.exchange.auth

    def host_username(self) -> str | None:
        return self.host.username or self.exchange.username

    def host_password(self) -> str:
        """Host credentials default to the Exchange ones, as a whole (user and password)."""
        if self.host.username or self.host.password_env or self.host.password_file:
            return self.host.password()
        return self.exchange.password()

    def host_cert_validation(self) -> bool | str:
        verify = self.exchange.verify_tls if self.host.verify_tls is None else self.host.verify_tls
        return _cert_validation(verify, self.host.ca_bundle or self.exchange.ca_bundle)


class _EnvFirst(BaseSettings):
    """Environment variables win over the file (deployments override without editing it)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


_SLACK_SECRETS = {
    "bot_token": "SLACK_BOT_TOKEN",
    "app_token": "SLACK_APP_TOKEN",
    "signing_secret": "SLACK_SIGNING_SECRET",
}


class SlackSettings(_EnvFirst):
    """`[slack]`: only api_url may be in the file; the tokens come from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="SLACK_", extra="forbid", env_ignore_empty=True, frozen=True
    )

    api_url: str | None = None
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


class RedisSettings(_EnvFirst):
    """`[redis]`: `$REDIS_URL` overrides the file."""

    model_config = SettingsConfigDict(
        env_prefix="REDIS_", extra="forbid", env_ignore_empty=True, frozen=True
    )

    url: str = "redis://127.0.0.1:6379/0"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f'must be a redis://, rediss:// or unix:// URL (got "{value}")')
        return value


class AuditSettings(_Strict):
    """`[audit]`: the audit log lives in Redis; `jsonl` also appends each entry to a file.

    A file outside Redis survives a lost Redis and can be shipped to a SIEM; its directory
    must exist when the config is read, so a typo fails at start, not at the first entry.
    """

    jsonl: str | None = None

    @field_validator("jsonl")
    @classmethod
    def _jsonl(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        if not value.strip() or path.is_dir():
            raise ValueError(f'must name a file (got "{value}")')
        if not path.parent.is_dir():
            raise ValueError(f'directory "{path.parent}" does not exist')
        return str(path)


class Settings(_Strict):
    """The whole configuration."""

    slack: SlackSettings = Field(default_factory=SlackSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    orgs: list[OrgSettings] = Field(default_factory=list, alias="org")

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
    _source: str = PrivateAttr(default=DEFAULT_FILE)

    @property
    def source(self) -> str:
        """The file these settings came from ("lab" for settings_for_lab)."""
        return self._source

    def org(self, name: str | None = None) -> OrgSettings:
        """The named org; with no name, the only one (an error when there are several)."""
        if name is None:
            if len(self.orgs) == 1:
                return self.orgs[0]
            if not self.orgs:
                raise ConfigError(self.source, "org", "no [[org]] is configured")
            names = ", ".join(o.name for o in self.orgs)
            raise ConfigError(self.source, "org", f"several orgs configured, pick one of: {names}")
        for org in self.orgs:
            if org.name == name:
                return org
        known = ", ".join(o.name for o in self.orgs) or "none"
        raise ConfigError(self.source, "org", f'no org named "{name}" (configured: {known})')

    def org_for_channel(self, channel_id: str) -> OrgSettings | None:
        """The org managed from this Slack channel, if any."""
        for org in self.orgs:
            if org.channel and org.channel == channel_id:
                return org
        return None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file that would be used (`--config`, `$EXAUTH_CONFIG`, ./exauth.toml),
    or None when there is none at all (the CLI then falls back to the lab)."""
    chosen = _chosen_path(path)
    return chosen if chosen.is_file() else None


def use_config(path: str | os.PathLike[str]) -> Path:
    """Make `path` (the `--config` option) the config file of this process and its children.

    Jobs and RQ callbacks are not handed settings: they run inside a worker, by name, and
    call `load_settings()` with no argument, which reads $EXAUTH_CONFIG. So `--config` is
    made absolute once, against the directory it was typed in, and exported as
    $EXAUTH_CONFIG: every later `load_settings()` of this process, and every process it
    starts, reads that one file. Absolute, not resolved: a symlinked config (a mounted
    ConfigMap) is still followed to its current target at each load.
    """
    chosen = Path(path).expanduser().absolute()
    os.environ[ENV_CONFIG] = str(chosen)
    return chosen


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the config file; raises ConfigError (one line) on any problem.

    With no `path`: the process's config file, $EXAUTH_CONFIG (which `use_config` sets from
    `--config`), else ./exauth.toml. This is how jobs and callbacks find their settings.
    """
    chosen = _chosen_path(path)
    source = str(path) if path is not None else (os.environ.get(ENV_CONFIG) or DEFAULT_FILE)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return settings_from_dict(data, source=source)


def settings_from_dict(data: dict[str, Any], *, source: str = DEFAULT_FILE) -> Settings:
    """Validate already-parsed TOML; the same checks as load_settings."""
    return _validated(data, source, lab_password=None)


def _validated(data: dict[str, Any], source: str, lab_password: str | None) -> Settings:
    data = dict(data)
    slack_table = _table(source, data, "slack")
    for key in slack_table:
        if key in _SLACK_SECRETS:
            problem = f"secrets never go in the file: set ${_SLACK_SECRETS[key]} instead"
            raise ConfigError(source, f"slack.{key}", problem)
    slack = _build(source, "slack", SlackSettings, slack_table)
    redis = _build(source, "redis", RedisSettings, _table(source, data, "redis"))
    data["slack"] = slack
    data["redis"] = redis
    settings = _build(source, "", Settings, data)
    settings._source = source
    for i, org in enumerate(settings.orgs):
        _locate_org(org, source, i)
        if lab_password is not None:
            org.exchange._password_value = SecretStr(lab_password)
    _check_orgs(settings)
    return settings


def settings_for_lab(info: dict[str, Any], password: str, writer: str | None = None) -> Settings:
    """Settings for a running lab (its ready-line dict), built in memory, for the CLI's
    no-config fallback. The writer is the first server unless named."""
    servers = info.get("servers") or []
    if not servers:
        raise ConfigError("lab", "servers", "the lab reported no servers")
    fqdns = [s["fqdn"] for s in servers]
    chosen = (writer or fqdns[0]).lower()
    by_fqdn = {s["fqdn"].lower(): s for s in servers}
    by_name = {s["name"].lower(): s for s in servers}
    match = by_fqdn.get(chosen) or by_name.get(chosen)
    if match is None:
        raise ConfigError("lab", "writer", f'no lab server named "{writer}"')
    data = {
        "org": [
            {
                "name": info.get("org", "lab"),
                "channel": "",
                "writer": match["fqdn"],
                "exchange": {
                    "url": match["exchange_url"],
                    "auth": "basic",
                    "username": info["username"],
                    "verify_tls": False,
                },
                "endpoints": {
                    s["fqdn"]: {"exchange_url": s["exchange_url"], "host_url": s["host_url"]}
                    for s in servers
                },
            }
        ]
    }
    return _validated(data, "lab", lab_password=password)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _chosen_path(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_CONFIG)
    return Path(env).expanduser() if env else Path(DEFAULT_FILE)


def _table(source: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(source, key, "must be a table")
    return value


def _build(source: str, prefix: str, model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data) if not issubclass(model, BaseSettings) else model(**data)
    except ValidationError as exc:
        raise _as_config_error(source, prefix, exc) from None


def _as_config_error(source: str, prefix: str, exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    loc: Sequence[Any] = first["loc"]
    key = _key_path([prefix, *loc] if prefix else list(loc))
    return ConfigError(source, key, _problem(first))


def _key_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part and not re.match(r"^[A-Za-z0-9_\-]+$", part):
            out += f'."{part}"'
        elif part != "":
            out += f".{part}" if out else str(part)
    return out


_WANTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


def _problem(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    got = f' (got "{value}")' if isinstance(value, str) else f" (got {value!r})"
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = ", ".join(re.findall(r"'([^']*)'", expected)) or expected
        return f"must be one of {choices}{got}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in _WANTED:
        return f"must be {_WANTED[kind]}{got}"
    if kind == "string_pattern_mismatch":  # only org names have a pattern
        return f"must be one word of letters, digits, '.', '_' or '-'{got}"
    if kind in ("greater_than_equal", "less_than_equal"):
        ctx = error.get("ctx", {})
        bound = f"at least {ctx['ge']}" if "ge" in ctx else f"at most {ctx.get('le')}"
        return f"must be {bound}{got}"
    return f"{str(error['msg']).lower()}{got}"


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f'must be an http:// or https:// URL (got "{value}")')
    return value


def _cert_validation(verify_tls: bool, ca_bundle: str | None) -> bool | str:
    if not verify_tls:
        return False
    return str(Path(ca_bundle).expanduser()) if ca_bundle else True


def _locate_org(org: OrgSettings, source: str, index: int) -> None:
    org._locate(source, f"org[{index}]")
    org.exchange._locate(source, f"org[{index}].exchange")
    org.host._locate(source, f"org[{index}].host")


def _check_orgs(settings: Settings) -> None:
    """Rules across keys; each error still names the one key to fix."""
    source = settings.source
    names: dict[str, int] = {}
    channels: dict[str, int] = {}
    for i, org in enumerate(settings.orgs):
        at = f"org[{i}]"
        if org.name in names:
            problem = f'duplicate org name "{org.name}" (also org[{names[org.name]}])'
            raise ConfigError(source, f"{at}.name", problem)
        names[org.name] = i
        if org.channel:
            if org.channel in channels:
                raise ConfigError(
                    source,
                    f"{at}.channel",
                    f'channel "{org.channel}" already belongs to org[{channels[org.channel]}]',
                )
            channels[org.channel] = i
        _check_credentials(source, f"{at}.exchange", org.exchange, required=True)
        _check_credentials(source, f"{at}.host", org.host, required=False)
        for table, bundle in (("exchange", org.exchange.ca_bundle), ("host", org.host.ca_bundle)):
            if bundle and not Path(bundle).expanduser().is_file():
                raise ConfigError(source, f"{at}.{table}.ca_bundle", f"{bundle}: no such file")
        _check_basic_over_http(source, at, org)


def _check_credentials(source: str, at: str, creds: _Credentials, *, required: bool) -> None:
    if creds.password_env and creds.password_file:
        problem = "set password_env or password_file, not both"
        raise ConfigError(source, f"{at}.password_file", problem)
    if required and not creds.username:
        raise ConfigError(source, f"{at}.username", "missing")
    has_value = creds._password_value is not None
    if required and not (creds.password_env or creds.password_file or has_value):
        raise ConfigError(
            source, f"{at}.password_env", "missing (set password_env or password_file)"
        )
    if not required and (creds.password_env or creds.password_file) and not creds.username:
        raise ConfigError(source, f"{at}.username", "missing (a host password needs a username)")


_BASIC_HTTP = "basic auth over plain http is refused except to a loopback address (use https)"


def _check_basic_over_http(source: str, at: str, org: OrgSettings) -> None:
    checks: list[tuple[str, str | None, str]] = [
        (f"{at}.exchange.url", org.exchange.url, org.exchange.auth)
    ]
    for fqdn, override in org.endpoints.items():
        key = f'{at}.endpoints."{fqdn}"'
        checks.append((f"{key}.exchange_url", override.exchange_url, org.exchange.auth))
        checks.append((f"{key}.host_url", override.host_url, org.host_auth()))
    if not org.host.ssl:
        checks.append((f"{at}.host.ssl", org.host_url(org.writer), org.host_auth()))
    for key, url, auth in checks:
        if url and auth == "basic" and plain_http_to_remote(url):
            raise ConfigError(source, key, _BASIC_HTTP)


def plain_http_to_remote(url: str) -> bool:
    """True when a URL is plain http to anything but a loopback address."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname)
