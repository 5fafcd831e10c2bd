"""Secrets out of logs: one `logging.Filter`, put on the handlers when a process starts.

Libraries log what they send: pypsrp logs every PSRP message at DEBUG (an exported PFX as
`<BA N="FileData">`, its password as an `<SS>`), redis-py and requests may log URLs with
credentials, an exception can carry a token. Rather than turning loggers down while a call
carries a secret (which also hid everything else they said), every record that reaches a
handler is scrubbed: its message with its arguments, its traceback and stack text, by the
same masker as the audit log (`audit.mask_secrets`) and by the literal secrets this process
holds (`secrets_of(settings)`).

Nothing here runs at import: the entry points (`exauth bot`, `worker`, `cron`, and the CLI
for its own commands) call `install` once their handlers exist.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from config.schema import Settings
from workers.audit import MASK, mask_secrets

MIN_LITERAL = 4  # a shorter "secret" would mask common words all over every log line
_FORMATTER = logging.Formatter()


class SecretsFilter(logging.Filter):
    """Scrub every record in place (it never drops one): shapes of secrets, and `secrets`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.remember(secrets)

    def remember(self, secrets: Iterable[str]) -> None:
        """Add literal values to mask (longest first, so no part of one stays visible)."""
        known = set(self.secrets) | {s for s in secrets if len(s) >= MIN_LITERAL}
        self.secrets = tuple(sorted(known, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for value in self.secrets:
            if value in text:
                text = text.replace(value, MASK)
        return mask_secrets(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_exauth_scrubbed", False):  # a second handler sees it scrubbed
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: the "Logging error" report would print them raw
            message = f"{record.msg} (arguments not shown: they did not fit the format)"
        record.msg = self.scrub(str(message))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        record._exauth_scrubbed = True
        return True


def install(secrets: Iterable[str] = ()) -> SecretsFilter:
    """Put the process's one SecretsFilter on every handler it logs through now: the root
    logger's, those of loggers that do not propagate (rq's), and logging.lastResort (what
    prints warnings when nothing is configured). Called again, it adds `secrets` to the
    filter already there and covers handlers added since."""
    handlers = _handlers()
    present = [f for h in handlers for f in h.filters if isinstance(f, SecretsFilter)]
    chosen = present[0] if present else SecretsFilter()
    chosen.remember(secrets)
    for handler in handlers:
        if chosen not in handler.filters:
            for other in [f for f in handler.filters if isinstance(f, SecretsFilter)]:
                handler.removeFilter(other)
            handler.addFilter(chosen)
    return chosen


def install_for(settings: Settings) -> SecretsFilter:
    return install(secrets_of(settings))


def _handlers() -> list[logging.Handler]:
    found: list[logging.Handler] = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate:
            found.extend(logger.handlers)
    if logging.lastResort is not None:
        found.append(logging.lastResort)
    return list(dict.fromkeys(found))


def secrets_of(settings: Settings) -> list[str]:
    """The secrets this process holds by its configuration: Slack tokens and signing
    secret, the Redis password, each org's Exchange and host passwords and its Graph client
    secret or certificate key (those that can be read now; one that cannot is not in use
    either)."""
    found: list[str] = []
    _collect(settings, found)
    password = urlsplit(settings.redis.url).password
    if password:
        found.append(password)
    return found


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in ("password", "credential"):  # Exchange passwords, the Graph secret
            reader = getattr(value, name, None)
            if callable(reader):
                with contextlib.suppress(Exception):  # not readable now: not in use either
                    secret = reader()
                    if isinstance(secret, str):
                        found.append(secret)
                    elif isinstance(secret, dict) and secret.get("private_key"):
                        found.append(str(secret["private_key"]))
        for name in type(value).model_fields:
            _collect(getattr(value, name, None), found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
