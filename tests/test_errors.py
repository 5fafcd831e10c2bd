"""The exception hierarchy: one root for every product exception, Exchange failures by class.

Every exception class defined in bot/, workers/ and config/ is found by importing those
modules, so a new one that forgets the root fails here. The Exchange failure classes keep
the kind strings that travel in `exauth check --json` (tests/test_check.py reads them over
the wire), and whether a job retries is the class's own `permanent`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import config.place
from config.errors import ConfigError, ExauthError
from workers.exchange.errors import (
    ExchangeAuthFailed,
    ExchangeEndpointBroken,
    ExchangeError,
    ExchangeFailed,
    ExchangeObjectMissing,
    ExchangeUnreachable,
    NoLanguageRefused,
)
from workers.jobs import read_jobs
from workers.jobs.deadline import JobDeadline

ROOT = Path(__file__).resolve().parent.parent

# Each Exchange failure class, the kind string it stands for, and whether retrying can help.
EXCHANGE_CLASSES: dict[type[ExchangeError], tuple[str, bool]] = {
    ExchangeUnreachable: ("unreachable", False),
    ExchangeAuthFailed: ("auth", True),
    ExchangeEndpointBroken: ("endpoint_broken", False),
    NoLanguageRefused: ("nolanguage", True),
    ExchangeObjectMissing: ("missing", True),
    ExchangeFailed: ("error", True),
}


def _product_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in ("config", "workers", "bot"):
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_product_exception_derives_from_one_root() -> None:
    classes = _product_exceptions()
    names = {c.__name__ for c in classes}
    # The scan sees them all (a scan that finds nothing would prove nothing).
    assert {"ConfigError", "LockBusy", "StepRefused", "NothingToDo", "OperationError",
            "OperationBusy", "StaleOperation", "ApprovalError", "CronConfigError",
            "SlackNotConfigured", "NotStarted", "JobDeadline", *(
                c.__name__ for c in EXCHANGE_CLASSES)} <= names
    outside = [c for c in classes if not issubclass(c, ExauthError) and c is not JobDeadline]
    assert outside == []


def test_job_deadline_stays_out_of_reach_of_except_exception() -> None:
    assert issubclass(JobDeadline, BaseException)
    assert not issubclass(JobDeadline, Exception)


def test_stdlib_bases_are_kept_and_config_error_is_one_class() -> None:
    from bot.slack import SlackNotConfigured
    from workers.jobs.cron import CronConfigError

    assert config.place.ConfigError is ConfigError  # what Place.error raises
    assert issubclass(ConfigError, ValueError) and issubclass(CronConfigError, ValueError)
    assert issubclass(SlackNotConfigured, RuntimeError)


@pytest.mark.parametrize("cls", list(EXCHANGE_CLASSES), ids=lambda c: c.__name__)
def test_each_exchange_failure_class_keeps_its_kind_and_says_if_permanent(
    cls: type[ExchangeError],
) -> None:
    kind, permanent = EXCHANGE_CLASSES[cls]
    err = cls("ex1.contoso.com", "Get-AuthConfig on the Exchange endpoint", "went\nwrong")
    assert isinstance(err, ExchangeError) and isinstance(err, ExauthError)
    assert err.kind == cls.kind == kind
    assert cls.permanent is permanent and read_jobs.is_permanent(err) is permanent
    assert str(err).startswith("ex1.contoso.com: Get-AuthConfig on the Exchange endpoint: "
                               "went wrong")


def test_exchange_failure_classes_are_all_known_and_the_base_is_never_raised() -> None:
    assert set(ExchangeError.__subclasses__()) == set(EXCHANGE_CLASSES)
    assert len({kind for kind, _ in EXCHANGE_CLASSES.values()}) == len(EXCHANGE_CLASSES)
    with pytest.raises(TypeError):
        ExchangeError("ex1.contoso.com", "x", "y")


def test_recast_keeps_the_failure_and_takes_the_new_class_hint() -> None:
    err = ExchangeUnreachable("ex1.contoso.com", "opening the Exchange endpoint", "refused",
                              endpoint="exchange", error_id="x", started=True)
    broken = err.recast(ExchangeEndpointBroken)
    assert type(broken) is ExchangeEndpointBroken
    assert (broken.server, broken.what, broken.detail, broken.endpoint, broken.error_id,
            broken.started) == ("ex1.contoso.com", "opening the Exchange endpoint", "refused",
                                "exchange", "x", True)
    assert broken.line().endswith("(its Exchange Back End binding or auth certificate is "
                                  "likely broken)")
