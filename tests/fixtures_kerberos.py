"""A throwaway MIT Kerberos realm for the tests, and labs that authenticate through it.

`kdc` starts a real KDC (k5test on Debian's krb5-kdc) once per session, with the lab's
service principals in a keytab (host/, WSMAN/ and HTTP/localhost: pypsrp asks for host/,
which Active Directory maps to the other two) and the lab account `exadmin@EXAUTH.LAB`.
The process environment points GSSAPI at the realm's krb5.conf for the session (Kerberos
reads it from there; there is no per-call switch), so the product's own client, unchanged,
gets its tickets from this KDC. When the KDC cannot start the tests
FAIL and say what is missing: they are never skipped.

krb5.conf turns off DNS/reverse-DNS canonicalization, as a real client should for WinRM:
the service principal is built from the name in the URL, so connecting by address finds
no principal, as it would against Active Directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.serve import LabHandle

REALM = "EXAUTH.LAB"
ACCOUNT = f"exadmin@{REALM}"
PASSWORD = "Lab-Kerberos-Pa55"
SERVICE_HOST = "localhost"
_NEEDED = ("krb5kdc", "kdb5_util", "kadmin.local")


@dataclass
class Kdc:
    realm: Any  # k5test.K5Realm
    env: dict[str, str]  # KRB5_CONFIG etc.: what a subprocess needs to use this realm
    keytab: str
    krb5_conf: str
    username: str = ACCOUNT
    password: str = PASSWORD

    def add_principal(self, name: str, password: str | None = None) -> None:
        self.realm.addprinc(name, password)


def _free_portbase() -> int:
    """A port p with p, p+1 and p+2 free (the KDC listens on p; p+1/p+2 stay unused)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + 2 > 65535:
            continue
        try:
            probes = []
            for offset in (1, 2):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise RuntimeError("no three consecutive free ports for the test KDC")


class KdcUnavailable(Exception):
    """The KDC could not start; the message says what is missing."""


def start_kdc(tmp: Path, *, kdc_env: dict[str, str] | None = None,
              libdefaults: dict[str, str] | None = None) -> Kdc:
    """A realm with the lab's principals (test failure when it cannot start)."""
    try:
        return start_realm(tmp, kdc_env=kdc_env, libdefaults=libdefaults)
    except KdcUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def start_realm(tmp: Path, *, kdc_env: dict[str, str] | None = None,
                libdefaults: dict[str, str] | None = None) -> Kdc:
    """A realm with the lab's principals; `kdc_env` is added to the KDC's environment.
    Raises KdcUnavailable (also for bench/ scripts, which have no pytest)."""
    missing = [name for name in _NEEDED if not shutil.which(name)
               and not Path("/usr/sbin", name).exists()]
    if missing:
        raise KdcUnavailable(
            f"Kerberos KDC cannot start: {', '.join(missing)} not installed "
            "(Debian: apt-get install krb5-kdc krb5-admin-server krb5-user; .ci/run does this)"
        )
    try:
        import k5test
    except ImportError as exc:
        raise KdcUnavailable(f"Kerberos KDC cannot start: {exc} (pip install -e '.[dev]')") \
            from exc
    defaults = {"rdns": "false", "dns_canonicalize_hostname": "false",
                "dns_lookup_realm": "false", **(libdefaults or {})}
    try:
        realm = k5test.K5Realm(
            realm=REALM, portbase=_free_portbase(), create_user=False, create_host=False,
            get_creds=False, start_kdc=False, krb5_conf={"libdefaults": defaults},
        )
        realm.start_kdc(env={**realm.env, **(kdc_env or {})})
        keytab = str(tmp / "lab.keytab")
        for service in ("host", "WSMAN", "HTTP"):
            principal = f"{service}/{SERVICE_HOST}@{REALM}"
            realm.addprinc(principal)
            realm.extract_keytab(principal, keytab)
        realm.addprinc(ACCOUNT, PASSWORD)
    except Exception as exc:
        raise KdcUnavailable(f"Kerberos KDC cannot start: {type(exc).__name__}: {exc}") from exc
    env = {key: realm.env[key] for key in ("KRB5_CONFIG", "KRB5RCACHEDIR")}
    # No kinit: the client gets its tickets from the password, into no shared cache.
    env["KRB5CCNAME"] = f"FILE:{tmp / 'no-ticket-ccache'}"
    return Kdc(realm, env, keytab, realm.env["KRB5_CONFIG"])


@pytest.fixture(scope="session")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    """The session's realm; the process environment uses it until the session ends."""
    kdc = start_kdc(tmp_path_factory.mktemp("kdc"))
    saved = {key: os.environ.get(key) for key in kdc.env}
    os.environ.update(kdc.env)
    try:
        yield kdc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        kdc.realm.stop()


@pytest.fixture()
def kerberos_lab(kdc: Kdc, make_lab: Callable[..., LabHandle]) -> Callable[..., LabHandle]:
    """Factory: a lab that takes Kerberos from the session KDC (`tls=True` for https)."""

    def _make(scenario: str = "healthy", **kw: Any) -> LabHandle:
        options: dict[str, Any] = {"auth": "kerberos", "keytab": kdc.keytab,
                                   "username": kdc.username, "password": kdc.password}
        return make_lab(scenario, **{**options, **kw})

    return _make
