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

from cryptography.hazmat.primitives import serialization

from lab import scenario as scenario_module
from lab.http import LabServer
from lab.http.graph_listener import GraphServer
from lab.http.negotiate_auth import AuthMode
from lab.org import Org

DEFAULT_USERNAME = "LAB\\exadmin"


class LabHandle:
    """A running lab: where it listens, how to log in, and the org behind it."""

    def __init__(self, server: LabServer, org: Org, info: dict[str, Any], writer: str,
                 graph: GraphServer | None = None) -> None:
        self._server = server
        self._graph = graph
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

    @property
    def graph(self) -> dict[str, Any] | None:
        """The ready line's "graph" entry: where the Graph stand-in is and how to sign in."""
        return self.info.get("graph")

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.stop()
            if self._graph is not None:
                self._graph.stop()

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


def _graph_info(graph: GraphServer, org: Org) -> dict[str, Any]:
    """Where the Graph stand-in listens and the client application's lab credentials."""
    directory = org.directory
    entra = org.scenario.entra
    assert directory is not None and entra is not None
    client = next(a for a in entra.applications if a.app_id == entra.client_id)
    info: dict[str, Any] = {
        "authority": graph.base_url,
        "graph_url": graph.base_url,
        "ca_file": str(graph.ca_file),
        "tenant_id": directory.tenant_id,
        "app_id": entra.hybrid_app_id,
        "client_id": client.app_id,
        "client_secret": client.secret or None,
        "client_certificate_file": None,
    }
    for cert_id in client.keys:
        material = org.scenario_material(cert_id)
        if material.key is None:
            continue
        path = graph.directory_path / "lab-client.pem"
        path.write_bytes(material.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()) + material.certificate.public_bytes(
            serialization.Encoding.PEM))
        path.chmod(0o600)
        info["client_certificate_file"] = str(path)
        break
    return info


def start(
    scenario: str | os.PathLike[str] | scenario_module.Scenario = "healthy",
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
    """Load the scenario and serve it on a background thread; a scenario with an
    `[entra]` tenant also gets its Graph stand-in, on its own HTTPS port (ready line "graph").

    `scenario` is a built-in name, a file, or an already loaded `Scenario` (tests build
    variants with `lab.scenario.from_dict`).

    `auth`: "basic" (Basic only), "ntlm" (Negotiate/NTLM, message encryption over http)
    or "kerberos" (Kerberos through `keytab`, default $KRB5_KTNAME, on the URLs' host
    name `url_host`, default localhost; the host endpoint takes NTLM too).

    Raises `lab.scenario.ScenarioError` for a bad scenario and `OSError` when the port
    cannot be bound.
    """
    loaded = scenario if isinstance(scenario, scenario_module.Scenario) \
        else scenario_module.load(scenario)
    org = Org(loaded)
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
    info = _info(server, org, username, password)
    graph = None
    if org.directory is not None:
        try:
            graph = GraphServer(org, host=host)
        except OSError:
            server.server_close()
            raise
        info["graph"] = _graph_info(graph, org)
        graph.start()
    server.start()
    return LabHandle(server, org, info, _writer_fqdn(org), graph)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def config_toml(
    info: dict[str, Any],
    password_file: str,
    *,
    writer: str | None = None,
    auth: AuthMode = "basic",
    ca_file: str | None = None,
    graph_secret_file: str | None = None,
    graph_ca_file: str | None = None,
) -> str:
    """An exauth config with one org named "lab" pointing at the lab in `info`.

    `writer` is a server name or fqdn; default: the first server (`LabHandle.writer` and
    `write_config` pass the scenario's writer). `auth` is the lab's; with `ca_file` (an
    https lab) the config verifies TLS against that CA. A lab with a Graph stand-in also
    gets `[org.hybrid_app]` when the files of its client secret and CA are given.
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
    graph = info.get("graph")
    if graph and graph_secret_file and graph_ca_file:
        lines += [
            "",
            "[org.hybrid_app]",
            f"tenant_id = {_toml_string(graph['tenant_id'])}",
            f"app_id = {_toml_string(graph['app_id'])}",
            f"client_id = {_toml_string(graph['client_id'])}",
            f"secret_file = {_toml_string(graph_secret_file)}",
            f"authority = {_toml_string(graph['authority'])}",
            f"graph_url = {_toml_string(graph['graph_url'])}",
            f"ca_bundle = {_toml_string(graph_ca_file)}",
        ]
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
    config names as `ca_bundle`; returns the path. A lab with a Graph stand-in also gets
    its client secret (`<path>.graph-secret`, 0600) and a copy of its CA
    (`<path>.graph-ca.pem`) beside the config."""
    target = Path(path)
    ca_copy = None
    if ca_file:
        ca_copy = target.with_name(target.name + ".ca.pem")
        shutil.copyfile(ca_file, ca_copy)
    password_path = target.with_name(target.name + ".password")
    _write_private(password_path, str(info["password"]))
    graph = info.get("graph")
    secret_file = graph_ca = None
    if graph and graph.get("client_secret"):
        secret_path = target.with_name(target.name + ".graph-secret")
        _write_private(secret_path, str(graph["client_secret"]))
        ca_path = target.with_name(target.name + ".graph-ca.pem")
        shutil.copyfile(graph["ca_file"], ca_path)
        secret_file, graph_ca = str(secret_path.resolve()), str(ca_path.resolve())
    target.write_text(
        config_toml(
            info, str(password_path.resolve()), writer=writer, auth=auth,
            ca_file=str(ca_copy.resolve()) if ca_copy else None,
            graph_secret_file=secret_file, graph_ca_file=graph_ca,
        ),
        encoding="utf-8",
    )
    return target


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


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
