"""Finding, reading and validating the config: `--config`, else $EXAUTH_CONFIG, else
./exauth.toml; TOML plus the environment's secrets; every problem as one line.

Jobs and RQ callbacks run inside a worker, by name, and are never handed settings: they
call `load_settings()` with no argument, so the lookup order here is what makes one
`--config` the config of a whole process tree (see `use_config`).

Every problem is a `ConfigError` whose text is one line naming the file and the key, e.g.
`exauth.toml: org[0].exchange.auth: must be one of kerberos, negotiate, ntlm, basic, credssp
(got "foo")`: pydantic's first error is translated here, by its type, never by its text.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from config.errors import ConfigError
from config.place import DEFAULT_FILE
from config.rules import RULE_BROKEN
from config.schema import RedisSettings, Settings, SlackSettings

ENV_CONFIG = "EXAUTH_CONFIG"

M = TypeVar("M", bound=BaseModel)

_SLACK_SECRETS = {
    "bot_token": "SLACK_BOT_TOKEN",
    "app_token": "SLACK_APP_TOKEN",
    "signing_secret": "SLACK_SIGNING_SECRET",
}


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
    # Jobs load their settings each time they run (see the module docstring); a fleet's
    # config of hundreds of orgs costs tens of ms of CPU to parse and validate, more than
    # the sweep of one org itself. The same text and environment validate the same way
    # (the models are frozen), so the last result is kept per process and reused until
    # either changes; the file is still read every time, so an edit is seen at once.
    # Relative paths in the file count from where it lies: its place and ours are keys too.
    key = (source, str(chosen.absolute().resolve()), os.getcwd(),
           hashlib.sha256(text.encode()).digest(), _environment_digest())
    with _LAST_LOCK:
        if _LAST and _LAST[0] == key:
            return _LAST[1]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    settings = settings_from_dict(data, source=source)
    with _LAST_LOCK:
        _LAST[:] = [key, settings]
    return settings


_LAST_LOCK = threading.Lock()
_LAST: list[Any] = []  # [key, Settings] of the last load_settings(), when there was one


def _environment_digest() -> bytes:
    """The environment counts too: it wins over the file for secrets and Redis."""
    items = "\0".join(f"{k}={v}" for k, v in sorted(os.environ.items()))
    return hashlib.sha256(items.encode()).digest()


def settings_from_dict(data: dict[str, Any], *, source: str = DEFAULT_FILE) -> Settings:
    """Validate already-parsed TOML; the same checks as load_settings."""
    data = dict(data)
    slack_table = _table(source, data, "slack")
    for key in slack_table:
        if key in _SLACK_SECRETS:
            problem = f"secrets never go in the file: set ${_SLACK_SECRETS[key]} instead"
            raise ConfigError(source, f"slack.{key}", problem)
    # Built first, from the file's table and the environment (which wins): see _EnvFirst.
    data["slack"] = _build(source, "slack", SlackSettings, slack_table)
    data["redis"] = _build(source, "redis", RedisSettings, _table(source, data, "redis"))
    return _build(source, "", Settings, data)


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
        if issubclass(model, BaseSettings):
            return model(**data)
        # The source tells every table where it sits (Settings._place_tables).
        return model.model_validate(data, context={"source": source})
    except ValidationError as exc:
        raise _as_config_error(source, prefix, exc) from None


def _as_config_error(source: str, prefix: str, exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == RULE_BROKEN:  # a rule across keys names its own key
        return ConfigError(source, first["ctx"]["key"], first["ctx"]["problem"])
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
    # is_instance_of: a key only the program sets (where a table sits, the lab's password),
    # which no file may name; TOML cannot produce the object it needs.
    if kind in ("extra_forbidden", "is_instance_of"):
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
