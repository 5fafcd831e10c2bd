"""Start and stop a lab org: `start()` for tests and the CLI, `main()` for `exauth lab serve`.

The ready line printed by `main()` and `LabHandle.info` are one and the same JSON object
(DESIGN.md), so a script can start the lab, read one line, and connect.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lab import scenario as scenario_module
from lab.http import LabServer
from lab.http.negotiate_auth import AuthMode
from lab.org import Org

DEFAULT_USERNAME = "LAB\\exadmin"


class LabHandle:
    """A running lab: where it listens, how to log in, and the org behind it."""

    def __init__(self, server: LabServer, org: Org, info: dict[str, Any], writer: str) -> None:
        self._server = server
        self.org = org
        self.info = info
        self.writer = writer  # fqdn of the server that creates certificates
        self._stopped = False

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def username(self) -> str:
        return str(self.info["username"])

    @property
    def password(self) -> str:
        return str(self.info["password"])

    @property
    def tls(self) -> bool:
        return self._server.ssl_context is not None

    @property
    def ca_file(self) -> str | None:
        """PEM of the lab CA that issued the server certificate (TLS labs only)."""
        return str(self._server.ca_file) if self._server.ca_file else None

    @property
    def auth(self) -> AuthMode:
        return self._server.authenticator.mode

    @property
    def handshakes(self) -> int:
        """Negotiate handshakes completed so far (session reuse keeps this at one per pool)."""
        return self._server.authenticator.handshakes

    def write_config(self, path: str | os.PathLike[str]) -> Path:
        """`write_config` for this lab: its writer, auth and CA."""
        return write_config(self.info, path, writer=self.writer, auth=self.auth,
                            ca_file=self.ca_file)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.stop()

    def __enter__(self) -> LabHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _writer_fqdn(org: Org) -> str:
    """The scenario's writer=true server, else the first server."""
    specs = org.servers()
    return next((s.fqdn for s in specs if s.writer), specs[0].fqdn)


def _info(server: LabServer, org: Org, username: str, password: str) -> dict[str, Any]:
    base = server.base_url
    servers = [
        {
            "name": spec.name,
            "fqdn": spec.fqdn,
            "exchange_url": f"{base}/{spec.fqdn}/PowerShell",
            "host_url": f"{base}/{spec.fqdn}/wsman",
        }
        for spec in org.servers()
    ]
    return {
        "org": "lab",
        "username": username,
        "password": password,
        "control_url": f"{base}/_lab",
        "servers": servers,
    }


def start(
    scenario: str | os.PathLike[str] = "healthy",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: int = 0,
    open_ms: int = 0,
    tls: bool = False,
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    auth: AuthMode = "basic",
    keytab: str | None = None,
    url_host: str | None = None,
) -> LabHandle:
    """Load the scenario and serve it on a background thread.

    `auth`: "basic" (Basic only), "ntlm" (Negotiate/NTLM, message encryption over http)
    or "kerberos" (Kerberos through `keytab`, default $KRB5_KTNAME, on the URLs' host
    name `url_host`, default localhost; the host endpoint takes NTLM too).

    Raises `lab.scenario.ScenarioError` for a bad scenario and `OSError` when the port
    cannot be bound.
    """
    org = Org(scenario_module.load(scenario))
    password = password if password is not None else secrets.token_urlsafe(12)
    server = LabServer(
        org,
        username=username,
        password=password,
        host=host,
        port=port,
        latency_ms=latency_ms,
        open_ms=open_ms,
        tls=tls,
        auth=auth,
        keytab=keytab,
        url_host=url_host,
    )
    server.start()
    return LabHandle(server, org, _info(server, org, username, password), _writer_fqdn(org))


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def config_toml(
    info: dict[str, Any],
    password_file: str,
    *,
    writer: str | None = None,
    auth: AuthMode = "basic",
    ca_file: str | None = None,
) -> str:
    """An exauth config with one org named "lab" pointing at the lab in `info`.

    `writer` is a server name or fqdn; default: the first server (`LabHandle.writer` and
    `write_config` pass the scenario's writer). `auth` is the lab's; with `ca_file` (an
    https lab) the config verifies TLS against that CA.
    """
    servers = info["servers"]
    chosen = servers[0]
    if writer:
        for entry in servers:
            if writer.lower() in (entry["name"].lower(), entry["fqdn"].lower()):
                chosen = entry
                break
    lines = [
        "# Written by `exauth lab serve --write-config`: one org named \"lab\" on this lab.",
        "[[org]]",
        'name = "lab"',
        'channel = ""',
        f"writer = {_toml_string(chosen['fqdn'])}",
        "",
        "[org.exchange]",
        f"url = {_toml_string(chosen['exchange_url'])}",
        f"auth = {_toml_string(auth)}",
        f"username = {_toml_string(info['username'])}",
        f"password_file = {_toml_string(password_file)}",
    ]
    if ca_file:
        lines += ["verify_tls = true", f"ca_bundle = {_toml_string(ca_file)}"]
    else:
        lines += ["verify_tls = false"]
    for entry in servers:
        lines += [
            "",
            f"[org.endpoints.{_toml_string(entry['fqdn'])}]",
            f"exchange_url = {_toml_string(entry['exchange_url'])}",
            f"host_url = {_toml_string(entry['host_url'])}",
        ]
    return "\n".join(lines) + "\n"


def write_config(
    info: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    writer: str | None = None,
    auth: AuthMode = "basic",
    ca_file: str | None = None,
) -> Path:
    """Write the config and its password (`<path>.password`, mode 0600), and for an https
    lab a copy of its CA (`<path>.ca.pem`, outliving the lab's own temporary copy) that the
    config names as `ca_bundle`; returns the path."""
    target = Path(path)
    ca_copy = None
    if ca_file:
        ca_copy = target.with_name(target.name + ".ca.pem")
        shutil.copyfile(ca_file, ca_copy)
    password_path = target.with_name(target.name + ".password")
    fd = os.open(password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(str(info["password"]))
    os.chmod(password_path, 0o600)
    target.write_text(
        config_toml(
            info, str(password_path.resolve()), writer=writer, auth=auth,
            ca_file=str(ca_copy.resolve()) if ca_copy else None,
        ),
        encoding="utf-8",
    )
    return target


def main(
    scenario: str | os.PathLike[str] = "healthy",
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: int = 0,
    open_ms: int = 0,
    write_config_path: str | os.PathLike[str] | None = None,
    auth: AuthMode = "basic",
    tls: bool = False,
    keytab: str | None = None,
    username: str | None = None,
    password_file: str | None = None,
    url_host: str | None = None,
) -> int:
    """`exauth lab serve`: start, print the ready line, serve until SIGINT/SIGTERM."""
    password = None
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            print(f"exauth: cannot read password file {password_file!r}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        handle = start(
            scenario, host=host, port=port, latency_ms=latency_ms, open_ms=open_ms, tls=tls,
            auth=auth, keytab=keytab, username=username or DEFAULT_USERNAME, password=password,
            url_host=url_host,
        )
    except scenario_module.ScenarioError as exc:
        print(f"exauth: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"exauth: scenario {str(scenario)!r} not found ({exc.strerror})", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. kerberos without a keytab
        print(f"exauth: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"exauth: port {port} on {host} is already in use", file=sys.stderr)
        else:
            print(f"exauth: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        if write_config_path:
            try:
                handle.write_config(write_config_path)
            except OSError as exc:
                print(
                    f"exauth: cannot write config {str(write_config_path)!r}: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 2
        sys.stdout.write(json.dumps(handle.info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        handle.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
