"""Rules across keys: what a config must satisfy beyond each key being valid on its own
(unique org names and channels, a password source, CA bundles that exist, no Basic auth over
plain http). `Settings` checks them once every key is valid; each broken rule names the one
key to fix, as a pydantic error of type RULE_BROKEN whose context holds that key
(config/load.py turns it into the one-line message).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError

from config.network_policy import BASIC_OVER_HTTP, refuses_basic

if TYPE_CHECKING:
    from config.schema import ExchangeSettings, HostSettings, HybridAppSettings, OrgSettings

# The pydantic error type of a broken rule.
RULE_BROKEN = "config_rule"


def _broken(key: str, problem: str) -> PydanticCustomError:
    """A broken rule as a validation error; config/load.py reads the key from its context."""
    return PydanticCustomError(RULE_BROKEN, "{problem}", {"key": key, "problem": problem})


def check_orgs(orgs: list[OrgSettings]) -> None:
    """Raise the first broken rule, org by org: one error, the first one, is reported."""
    names: dict[str, int] = {}
    channels: dict[str, int] = {}
    for i, org in enumerate(orgs):
        at = f"org[{i}]"
        if org.name in names:
            problem = f'duplicate org name "{org.name}" (also org[{names[org.name]}])'
            raise _broken(f"{at}.name", problem)
        names[org.name] = i
        if org.channel:
            if org.channel in channels:
                raise _broken(
                    f"{at}.channel",
                    f'channel "{org.channel}" already belongs to org[{channels[org.channel]}]',
                )
            channels[org.channel] = i
        _check_credentials(f"{at}.exchange", org.exchange, required=True)
        _check_credentials(f"{at}.host", org.host, required=False)
        for table, bundle in (("exchange", org.exchange.ca_bundle), ("host", org.host.ca_bundle)):
            if bundle and not Path(bundle).expanduser().is_file():
                raise _broken(f"{at}.{table}.ca_bundle", f"{bundle}: no such file")
        _check_basic_over_http(at, org)
        if org.hybrid_app is not None:
            _check_hybrid_app(f"{at}.hybrid_app", org.hybrid_app)


def _check_credentials(at: str, creds: ExchangeSettings | HostSettings, *, required: bool) -> None:
    if creds.password_env and creds.password_file:
        raise _broken(f"{at}.password_file", "set password_env or password_file, not both")
    if required and not creds.username:
        raise _broken(f"{at}.username", "missing")
    has_source = creds.password_env or creds.password_file or creds.lab_password is not None
    if required and not has_source:
        raise _broken(f"{at}.password_env", "missing (set password_env or password_file)")
    if not required and (creds.password_env or creds.password_file) and not creds.username:
        raise _broken(f"{at}.username", "missing (a host password needs a username)")


def _check_hybrid_app(at: str, app: HybridAppSettings) -> None:
    """One credential source; files that must exist when the config is read do."""
    sources = [k for k in ("certificate_file", "secret_env", "secret_file") if getattr(app, k)]
    if len(sources) > 1:
        raise _broken(f"{at}.{sources[1]}", f"set one of certificate_file, secret_env or "
                      f"secret_file, not {' and '.join(sources)}")
    if not sources and app.lab_secret is None:
        raise _broken(f"{at}.secret_env",
                      "missing (set certificate_file, secret_env or secret_file)")
    if app.app_id == app.client_id:
        raise _broken(f"{at}.client_id", "must be exauth's own application, not the "
                      "dedicated hybrid application itself (app_id)")
    for key in ("certificate_file", "ca_bundle"):
        name = getattr(app, key)
        if name and not Path(name).expanduser().is_file():
            raise _broken(f"{at}.{key}", f"{name}: no such file")


def _check_basic_over_http(at: str, org: OrgSettings) -> None:
    """config/network_policy.py's rule, for every URL this org's config names or implies."""
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
        if refuses_basic(url, auth):
            raise _broken(key, BASIC_OVER_HTTP)
