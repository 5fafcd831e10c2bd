"""What a valid exauth config is: the pydantic models of every table and key (DESIGN.md)
and their checks; the rules across keys are in config/rules.py.

The file holds no secrets: Slack tokens come only from the environment, Exchange passwords
only from an environment variable or a file named in the config, and both are read at the
moment they are needed (connect time), so a typo shows up as one clear line then, and a
settings object can be printed or logged without leaking anything.

Models are strict and frozen, and unknown keys are errors. A table that can still raise an
error after loading knows its `Place`, handed to it during validation, so that error names
the file and key too. Finding and reading the file, and turning pydantic's errors into one
line, is config/load.py's job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.errors import ConfigError
from config.place import DEFAULT_FILE, Place
from config.rules import RULE_BROKEN, check_orgs

AuthMethod = Literal["kerberos", "negotiate", "ntlm", "basic", "credssp"]

# Slack user IDs (U..., W... on Enterprise Grid) and user group IDs (S...).
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored is a setting silently lost."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Located(_Strict):
    """Remembers where it came from, so errors raised later (connect time) still name the key."""

    # Handed in during validation (Settings/OrgSettings `_place_tables`), never by the file:
    # TOML cannot produce a Place, and config/load.py reports a "place" key as unknown.
    place: InstanceOf[Place] = Field(default=Place(), exclude=True, repr=False)


def _placed(table: Any, place: Place) -> Any:
    """`table` with its place, unless it is no table or names a "place" itself (refused)."""
    return {"place": place, **table} if isinstance(table, dict) else table


class _Credentials(_Located):
    """Who connects, and where the password comes from (never the password itself)."""

    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # Given only by settings_for_lab (the lab's throwaway password), never by a file: TOML
    # cannot produce a SecretStr, and config/load.py reports the key as unknown.
    lab_password: InstanceOf[SecretStr] | None = Field(default=None, exclude=True, repr=False)

    def password(self) -> str:
        """The password, read now from its environment variable or file."""
        if self.lab_password is not None:
            return self.lab_password.get_secret_value()
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise self.place.error(
                    "password_env", f"environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
            except FileNotFoundError:
                raise self.place.error("password_file", f"{path}: no such file") from None
            except OSError as exc:
                problem = f"{path}: cannot read ({exc.strerror})"
                raise self.place.error("password_file", problem) from None
            if not value:
                raise self.place.error("password_file", f"{path}: file is empty")
            return value
        problem = "no password source: set password_env or password_file"
        raise self.place.error("password_env", problem)
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


# Keys someone may write for the Graph client's secret; the file never holds it.
_SECRET_KEYS = ("secret", "client_secret", "password", "certificate_password")


class HybridAppSettings(_Located):
    """`[org.hybrid_app]`: the dedicated Exchange hybrid application in Entra ID, whose
    keyCredentials must hold the current and next Auth Certificate, and the Entra
    application exauth signs in as to read and update them.

    The sign-in credential is a certificate (`certificate_file`: one PEM with the private
    key and the certificate) or a secret from `secret_env` / `secret_file`, read when a
    token is needed, like the Exchange password. `authority` and `graph_url` are the
    national cloud's (or the lab's) sign-in and Graph hosts.
    """

    tenant_id: str
    app_id: str
    client_id: str
    certificate_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    authority: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    verify_tls: bool = True
    ca_bundle: str | None = None
    # Seconds one Graph or sign-in request may take.
    timeout: int = Field(default=30, ge=1, le=300)
    # Given only by settings_for_lab (the lab's throwaway client secret), never by a file.
    lab_secret: InstanceOf[SecretStr] | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _no_secret_in_file(cls, data: Any) -> Any:
        if isinstance(data, dict):
            place = data.get("place")
            for key in _SECRET_KEYS:
                if key in data:
                    where = place.child(key).key if isinstance(place, Place) else key
                    raise PydanticCustomError(RULE_BROKEN, "{problem}", {
                        "key": where,
                        "problem": "secrets never go in the file: set secret_env or "
                                   "secret_file (or certificate_file) instead"})
        return data

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not (_GUID.match(value) or _DOMAIN.match(value)):
            raise ValueError("must be the tenant's ID (a GUID) or its domain like "
                             f'contoso.onmicrosoft.com (got "{value}")')
        return value.lower()

    @field_validator("app_id", "client_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        if not _GUID.match(value):
            raise ValueError(f'must be an application (client) ID, a GUID (got "{value}")')
        return value.lower()

    @field_validator("authority", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f'must be an https:// URL (got "{value}")')
        if parts.query or parts.fragment or parts.path.strip("/"):
            raise ValueError(f'must be the host only, like "https://login.microsoftonline.us"'
                             f' (got "{value}")')
        return value.rstrip("/")

    @property
    def authority_url(self) -> str:
        """msal's authority: the sign-in host and the tenant."""
        return f"{self.authority}/{self.tenant_id}"

    @property
    def scope(self) -> str:
        """The client-credentials scope: Graph's resource with /.default."""
        return f"{self.graph_url}/.default"

    def cert_validation(self) -> bool | str:
        return _cert_validation(self.verify_tls, self.ca_bundle)

    def credential(self) -> str | dict[str, str]:
        """msal's client_credential, read now: the secret, or the certificate's PEM parts."""
        if self.lab_secret is not None:
            return self.lab_secret.get_secret_value()
        if self.certificate_file:
            text = _read_secret_file(self.place, "certificate_file", self.certificate_file)
            key = re.search(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END "
                            r"(?:RSA |EC )?PRIVATE KEY-----", text, re.S)
            cert = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                             text, re.S)
            if key is None or cert is None:
                raise self.place.error(
                    "certificate_file", f"{self.certificate_file}: must hold an unencrypted "
                    "private key and its certificate, both PEM")
            return {"private_key": key.group(0), "public_certificate": cert.group(0)}
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise self.place.error("secret_env",
                                       f"environment variable {self.secret_env} is not set")
            return value
        if self.secret_file:
            return _read_secret_file(self.place, "secret_file", self.secret_file).strip()
        raise self.place.error("secret_env", "no credential: set certificate_file, secret_env "
                               "or secret_file")


def _read_secret_file(place: Place, key: str, name: str) -> str:
    path = Path(name).expanduser()
    try:
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise place.error(key, f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise place.error(key, f"{path}: cannot read ({getattr(exc, 'strerror', exc)})") \
            from None
    if not value.strip():
        raise place.error(key, f"{path}: file is empty")
    return value


class RotationSettings(_Strict):
    """`[org.rotation]`: how new Auth Certificates are made.

    `lifetime_days` (optional) gives them that lifetime instead of New-ExchangeCertificate's
    five years, for tenants whose policy refuses longer-lived application keys (README
    "Auth Certificate lifetime"). At least 180: the decision stages a new certificate while
    the next one has 120 days or less left (DOMAIN.md section 4, rule 4), so a shorter
    lifetime would have it stage again the moment it staged.
    """

    lifetime_days: int | None = Field(default=None, ge=180, le=1826)


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
    # The dedicated Exchange hybrid application; None: exauth never calls Graph.
    hybrid_app: HybridAppSettings | None = None
    rotation: RotationSettings = Field(default_factory=RotationSettings)

    @model_validator(mode="before")
    @classmethod
    def _place_tables(cls, data: Any) -> Any:
        """Hand this org's place on to its exchange, host and hybrid_app tables (host even
        when absent, as the table of defaults it then is)."""
        place = data.get("place") if isinstance(data, dict) else None
        if not isinstance(place, Place):
            return data
        data = dict(data)
        if "exchange" in data:
            data["exchange"] = _placed(data["exchange"], place.child("exchange"))
        data["host"] = _placed(data.get("host", {}), place.child("host"))
        if "hybrid_app" in data:
            data["hybrid_app"] = _placed(data["hybrid_app"], place.child("hybrid_app"))
        return data

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
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
            raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL "
                             f'(got "{value}")')
        if scheme == "redis+sentinel" and "/" not in value.split("://", 1)[1].strip("/"):
            raise ValueError("a redis+sentinel:// URL names its master after the Sentinel "
                             "hosts: redis+sentinel://host1,host2,host3/<master name>[/<db>]")
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

    # Handed in during validation, like _Located.place: the file, from the validation
    # context ({"source": ...}) that config/load.py passes.
    place: InstanceOf[Place] = Field(default=Place(), exclude=True, repr=False)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _place_tables(cls, data: Any, info: ValidationInfo) -> Any:
        """Tell the whole config and each `[[org]]` where they sit: the file and `org[i]`."""
        if not isinstance(data, dict):
            return data
        source = (info.context or {}).get("source", DEFAULT_FILE)
        data = _placed(data, Place(source))
        for name in ("org", "orgs"):  # the alias, or the field name (populate_by_name)
            orgs = data.get(name)
            if isinstance(orgs, list):
                data[name] = [_placed(o, Place(source, f"org[{i}]")) for i, o in enumerate(orgs)]
        return data

    @model_validator(mode="after")
    def _rules(self) -> Settings:
        """Rules across keys, checked once every key is valid on its own."""
        check_orgs(self.orgs)
        return self

    @property
    def source(self) -> str:
        """The file these settings came from ("lab" for settings_for_lab)."""
        return self.place.source

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




def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f'must be an http:// or https:// URL (got "{value}")')
    return value


def _cert_validation(verify_tls: bool, ca_bundle: str | None) -> bool | str:
    if not verify_tls:
        return False
    return str(Path(ca_bundle).expanduser()) if ca_bundle else True
