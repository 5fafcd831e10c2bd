"""Secrets out of logs (workers.log_filter) and no process state changed by an import."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.lab_settings import settings_for_lab
from lab.serve import LabHandle
from workers import log_filter
from workers.changes import execute
from workers.changes.operation import Step
from workers.exchange.client import ExchangeClient
from workers.exchange.parsing import prop
from workers.exchange.session import Secret

REPO = Path(__file__).resolve().parent.parent
ORG_PASSWORD = "Org-Passw0rd-4-exchange"
BOT_TOKEN = "xoxb-1111-2222-abcdefabcdef"
SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"


@pytest.fixture()
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged at DEBUG into a buffer, through the installed filter, as a process
    set up by an entry point would log; the filter is taken off every handler after."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for each in log_filter._handlers():
            for installed in [f for f in each.filters
                              if isinstance(f, log_filter.SecretsFilter)]:
                each.removeFilter(installed)


def test_the_process_secrets_are_found_in_the_settings(make_lab: Callable[..., LabHandle]
                                                       ) -> None:
    handle = make_lab("healthy")
    settings = settings_for_lab(handle.info, ORG_PASSWORD, writer=handle.writer)
    settings = settings.model_copy(update={
        "slack": settings.slack.model_copy(update={
            "bot_token": SecretStr(BOT_TOKEN), "signing_secret": SecretStr(SIGNING_SECRET)}),
        "redis": settings.redis.model_copy(update={"url": "redis://:r3dis-pw@10.0.0.5:6379/0"}),
    })
    found = log_filter.secrets_of(settings)
    assert {ORG_PASSWORD, BOT_TOKEN, SIGNING_SECRET, "r3dis-pw"} <= set(found)


def test_records_with_secrets_in_message_args_and_traceback_are_masked(
        debug_log: io.StringIO) -> None:
    log_filter.install([ORG_PASSWORD, SIGNING_SECRET])
    # What libraries log at DEBUG: request bodies, URLs, headers (slack_sdk, redis, requests).
    wire = logging.getLogger("urllib3.connectionpool")
    wire.debug("Sending a request - body: %s, headers: %s",
               {"token": BOT_TOKEN, "text": "hello"}, {"Authorization": "Bearer abcdef0123456789"})
    logging.getLogger("redis.connection").debug("connecting to %s",
                                                "redis://:r3dis-pw@10.0.0.5:6379/0")
    logging.getLogger("pypsrp.wsman").debug("signing secret %s, password=%s in %r",
                                            SIGNING_SECRET, ORG_PASSWORD, ["x"])
    try:
        raise RuntimeError(f"logon failed for admin with {ORG_PASSWORD}")
    except RuntimeError:
        logging.getLogger("workers.exchange.client").exception("open failed")
    logging.getLogger("odd").debug("%s %s", "only one")  # bad args: not printed raw
    text = debug_log.getvalue()
    for secret in (BOT_TOKEN, "abcdef0123456789", "r3dis-pw", SIGNING_SECRET, ORG_PASSWORD):
        assert secret not in text, secret
    # The records themselves stay: only the secrets are gone.
    assert "Sending a request" in text and "'text': 'hello'" in text
    assert "redis://:***@10.0.0.5:6379/0" in text
    assert "Traceback" in text and "RuntimeError: logon failed for admin with ***" in text
    assert "open failed" in text and "only one" not in text


def test_pypsrp_debug_logs_of_an_export_are_kept_without_the_pfx_or_its_password(
        make_lab: Callable[..., LabHandle], debug_log: io.StringIO) -> None:
    """The export of a certificate with its private key, over the real wire: pypsrp logs the
    request (the password as a SecureString) and the response (the PFX as a byte array) at
    DEBUG. These records used to be hidden by turning pypsrp's level up; now they are
    logged, scrubbed."""
    password = "Export-pw-0123456789abcdef"
    log_filter.install([password])
    handle = make_lab("healthy")
    org = settings_for_lab(handle.info, handle.password, writer=handle.writer).orgs[0]
    client = ExchangeClient(org)
    thumbprint = prop(client.exchange(handle.writer, "Get-AuthConfig", [])[0],
                      "CurrentCertificateThumbprint")
    step = Step.model_construct(
        server=handle.writer, endpoint="exchange", cmdlet="Export-ExchangeCertificate",
        parameters=[["Server", handle.writer], ["Thumbprint", thumbprint],
                    ["BinaryEncoded", None], ["Password", "<secret:export>"]])
    output = execute.invoke(client, step, [("Server", handle.writer),
                                           ("Thumbprint", thumbprint),
                                           ("BinaryEncoded", None),
                                           ("Password", Secret(password))])
    pfx = prop(output[0], "FileData")
    assert isinstance(pfx, bytes) and len(pfx) > 100
    text = debug_log.getvalue()
    assert "Packing PSRP message" in text and "Export-ExchangeCertificate" in text
    assert "Received message" in text
    assert base64.b64encode(pfx).decode()[:64] not in text
    assert '<BA N="FileData">***</BA>' in text
    assert '<SS N="V">***</SS>' in text
    assert not re.search(r"<(BA|SS)\b[^>]*>[^<*]", text)  # no byte array or SecureString
    assert password not in text
    # The WS-Man envelopes carry the same PSRP messages base64-encoded: masked whole (their
    # decoded form is logged, scrubbed, by "Packing/Unpacking PSRP message").
    assert "<rsp:Stream" in text and "<rsp:Arguments>***</rsp:Arguments>" in text
    assert not re.search(r"<rsp:(Stream|Arguments)\b[^>]*>[^<*]", text)


_PROBE = """
import atexit, importlib, json, logging, pkgutil, signal, sys
import slack_bolt, slack_bolt.adapter.socket_mode, slack_sdk, pypsrp.powershell, psrpcore
import rq, rq.logutils, redis, pydantic, click, waitress, requests

def state():
    loggers = {name: [logger.level, [repr(f) for f in logger.filters],
                      [repr(h) for h in logger.handlers], logger.disabled, logger.propagate]
               for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    root = logging.getLogger()
    return {
        "loggers": {n: v for n, v in loggers.items() if v != [0, [], [], False, True]},
        "root": [root.level, [repr(f) for f in root.filters], [repr(h) for h in root.handlers]],
        "last_resort": [repr(f) for f in logging.lastResort.filters],
        "disable": logging.root.manager.disable,
        "signals": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                    if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "atexit": atexit._ncallbacks(),
    }

before = state()
names = []
for package in ("config", "workers", "bot"):
    module = importlib.import_module(package)
    names += [package] + [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "before": before, "after": state()}))
"""


def test_importing_every_module_leaves_logging_signals_and_exit_hooks_as_they_were() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"bot.app", "bot.cli", "workers.exchange.client", "workers.jobs.worker_process",
            "workers.jobs.cron", "workers.log_filter", "config.load"} <= set(result["modules"])
    for part in result["before"]:
        assert result["after"][part] == result["before"][part], part


def test_the_graph_client_secret_is_a_process_secret(make_lab: Callable[..., LabHandle]
                                                     ) -> None:
    handle = make_lab("hybrid")
    settings = settings_for_lab(handle.info, ORG_PASSWORD, writer=handle.writer)
    assert handle.graph is not None
    assert handle.graph["client_secret"] in log_filter.secrets_of(settings)
