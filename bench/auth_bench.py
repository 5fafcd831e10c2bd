"""What message encryption and Negotiate cost: Basic beside NTLM and Kerberos with WinRM
message encryption (and NTLM over https), on the lab, in one run.

For each wire: the median time to open a runspace pool on the Exchange endpoint (the
Negotiate handshake is part of it) and the median of one cmdlet on an open pool, beside
the aim: per-cmdlet cost with encryption <= 2x Basic's. The handshake is paid once per
session: the lab counts completed handshakes, printed per pool opened. Kerberos tickets
come from a throwaway MIT KDC (k5test, as the tests use). Figures, no asserts.

    .venv/bin/python bench/auth_bench.py [-n 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.serve import LabHandle, start
from tests.fixtures_kerberos import KdcUnavailable, start_realm

AIM_RATIO = 2.0  # per-cmdlet cost with encryption <= 2x Basic
CMDLET = "Get-AuthConfig"


def _connection(handle: LabHandle, auth: str) -> WSMan:
    """The Exchange endpoint of the first server, with the options the product uses."""
    url = urlsplit(handle.info["servers"][0]["exchange_url"])
    return WSMan(
        server=url.hostname or "", port=url.port, path=url.path.lstrip("/"),
        ssl=url.scheme == "https", cert_validation=handle.ca_file or False, auth=auth,
        encryption="never" if auth == "basic" and url.scheme == "http" else "auto",
        username=handle.username, password=handle.password, no_proxy=True,
    )


def measure(handle: LabHandle, auth: str, iterations: int) -> dict[str, Any]:
    opens: list[float] = []
    before = handle.handshakes
    for _ in range(iterations):
        connection = _connection(handle, auth)
        pool = RunspacePool(connection, configuration_name="Microsoft.Exchange")
        started = time.perf_counter()
        pool.open()
        opens.append(time.perf_counter() - started)
        pool.close()
        connection.close()
    handshakes_per_open = (handle.handshakes - before) / iterations
    cmdlets: list[float] = []
    connection = _connection(handle, auth)
    with RunspacePool(connection, configuration_name="Microsoft.Exchange") as pool:
        before = handle.handshakes  # the pool is open: its one handshake is behind it
        for _ in range(iterations):
            ps = PowerShell(pool)
            ps.add_cmdlet(CMDLET)
            started = time.perf_counter()
            ps.invoke()
            cmdlets.append(time.perf_counter() - started)
    connection.close()
    return {
        "open_ms": statistics.median(opens) * 1000,
        "cmdlet_ms": statistics.median(cmdlets) * 1000,
        "handshakes_per_open": handshakes_per_open,
        "handshakes_after_open": handle.handshakes - before,
    }


@contextmanager
def kerberos_realm() -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="exauth-bench-kdc-") as tmp:
        kdc = start_realm(Path(tmp))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    try:
        realm = kerberos_realm()
        kdc = realm.__enter__()
    except KdcUnavailable as exc:
        print(f"auth_bench: {exc}", file=sys.stderr)
        return 1
    try:
        wires: list[tuple[str, str, dict[str, Any]]] = [
            ("basic (http)", "basic", {}),
            ("ntlm + encryption (http)", "ntlm", {"auth": "ntlm"}),
            ("kerberos + encryption (http)", "kerberos", {
                "auth": "kerberos", "keytab": kdc.keytab, "username": kdc.username,
                "password": kdc.password}),
            ("ntlm over https", "ntlm", {"auth": "ntlm", "tls": True}),
        ]
        for name, auth, options in wires:
            with start("healthy", **options) as handle:
                measure(handle, auth, 3)  # warm up imports, caches and connections
                results[name] = measure(handle, auth, args.iterations)
    finally:
        realm.__exit__(None, None, None)

    basic = results["basic (http)"]["cmdlet_ms"]
    print(f"auth on the wire, pypsrp against the lab on loopback, median of {args.iterations}:")
    for name, figures in results.items():
        ratio = figures["cmdlet_ms"] / basic if basic else float("nan")
        aim = "" if name.startswith("basic") else (
            f"  x{ratio:4.2f} Basic (aim <= {AIM_RATIO:.0f}x, "
            f"{'ok' if ratio <= AIM_RATIO else 'over aim'})")
        print(f"  {name:<30} pool open {figures['open_ms']:7.2f} ms"
              f" ({figures['handshakes_per_open']:.0f} handshake/open)"
              f"   {CMDLET} {figures['cmdlet_ms']:6.2f} ms{aim}"
              f"   handshakes after open: {figures['handshakes_after_open']} (aim 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
