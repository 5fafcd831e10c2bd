"""The lab's HTTP server object: one port for the whole org, a thread per request.

It owns what outlives a request: the org, the credentials and timing knobs, the TLS
context, the open connections (so `stop` can end keep-alive ones) and the open shells
(forgotten ones expire after WinRM's idle timeout).
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from pathlib import Path

from lab import psrp
from lab.http.negotiate_auth import Authenticator, AuthMode, channel_binding
from lab.http.request_handler import LabRequestHandler
from lab.http.threaded_server import ThreadedServer
from lab.http.tls_certificate import make_certificates
from lab.org import Org

log = logging.getLogger(__name__)

IDLE_SHELL_TIMEOUT = 7200.0  # WinRM's default shell IdleTimeOut: forgotten shells go away


class LabServer(ThreadedServer):
    """The server object: the org, credentials, timing knobs and the open shells."""

    def __init__(
        self,
        org: Org,
        *,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        open_ms: int = 0,
        tls: bool = False,
        auth: AuthMode = "basic",
        keytab: str | None = None,
        url_host: str | None = None,
    ) -> None:
        self.org = org
        self.username = username
        self.password = password
        self.latency_ms = max(0, int(latency_ms))
        self.open_ms = max(0, int(open_ms))
        self.shells: dict[str, psrp.Shell] = {}
        self.shells_lock = threading.Lock()
        self.stopping = threading.Event()
        self.ssl_context: ssl.SSLContext | None = None
        self.ca_file: Path | None = None
        # The host name in the URLs the lab hands out: Kerberos needs a name with a service
        # principal (WSMAN/<name>), never a bare address.
        self.url_host = url_host or ("localhost" if auth == "kerberos" else host)
        self._tmp = tempfile.TemporaryDirectory(prefix="exauth-lab-")
        binding = None
        if tls:
            certs = make_certificates(Path(self._tmp.name), self.url_host)
            self.ca_file = certs.ca_file
            binding = channel_binding(certs.der)
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(certs.cert_file, certs.key_file)
        self.authenticator = Authenticator(
            auth, username=username, password=password, directory=Path(self._tmp.name),
            keytab=keytab, tls_binding=binding,
        )
        super().__init__((host, port), LabRequestHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    @property
    def base_url(self) -> str:
        host = f"[{self.url_host}]" if ":" in self.url_host else self.url_host
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting, end every shell (waking long polls) and free the port."""
        self.stopping.set()
        self.stop_accepting()
        with self.shells_lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.close()
        self.end_connections()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def add_shell(self, shell: psrp.Shell) -> None:
        now = time.monotonic()
        with self.shells_lock:
            idle = [s for s in self.shells.values() if now - s.last_used > IDLE_SHELL_TIMEOUT]
            for stale in idle:
                del self.shells[stale.id]
            self.shells[shell.id] = shell
        for stale in idle:
            stale.close()

    def get_shell(self, shell_id: str | None) -> psrp.Shell | None:
        if not shell_id:
            return None
        with self.shells_lock:
            return self.shells.get(shell_id.upper())

    def remove_shell(self, shell_id: str) -> None:
        with self.shells_lock:
            self.shells.pop(shell_id.upper(), None)
