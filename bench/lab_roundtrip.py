"""How fast the lab answers the real pypsrp client on loopback.

Prints the median time to open a runspace pool on the Exchange endpoint and the median
round trip of single cmdlets, beside the aims (open <= 15 ms, cmdlet <= 10 ms). The aims
matter because every status check opens pools on every server and runs a handful of
cmdlets on each; the lab should never be what makes the tests slow. Figures, no asserts.

Beside each time: the mean CPU the lab and the client spent on one such operation. Both run
in this process; the client is this (main) thread and every other thread is the lab's, so
the lab's share is the process's CPU minus this thread's. CPU figures hold still when
another process competes for the cores; wall times do not.

    .venv/bin/python bench/lab_roundtrip.py [-n 50] [--scenario healthy] [--tls]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.serve import LabHandle, start

AIM_OPEN_MS = 15.0
AIM_CMDLET_MS = 10.0
CMDLETS = ("Get-AuthConfig", "Get-ExchangeCertificate")


def _connection(handle: LabHandle, fqdn: str) -> WSMan:
    return WSMan(
        server="127.0.0.1",
        port=handle.port,
        path=f"{fqdn}/PowerShell",
        ssl=handle.tls,
        cert_validation=handle.ca_file or False,
        auth="basic",
        encryption="never",
        username=handle.username,
        password=handle.password,
    )


@dataclass
class Samples:
    """Wall times of one kind of operation, and the CPU the lab and client spent on them."""

    wall: list[float] = field(default_factory=list)
    lab_cpu: float = 0.0
    client_cpu: float = 0.0

    def time(self, action: Callable[[], object]) -> None:
        process, thread = time.process_time(), time.thread_time()
        started = time.perf_counter()
        action()
        self.wall.append(time.perf_counter() - started)
        client = time.thread_time() - thread
        self.client_cpu += client
        self.lab_cpu += time.process_time() - process - client

    def figures(self) -> tuple[float, float, float]:
        """(median wall ms, mean lab CPU ms, mean client CPU ms)."""
        count = max(1, len(self.wall))
        return (statistics.median(self.wall) * 1000, self.lab_cpu / count * 1000,
                self.client_cpu / count * 1000)


def measure(handle: LabHandle, iterations: int) -> dict[str, Samples]:
    fqdn = handle.info["servers"][0]["fqdn"]
    opens = Samples()
    for _ in range(iterations):
        connection = _connection(handle, fqdn)
        pool = RunspacePool(connection, configuration_name="Microsoft.Exchange")
        opens.time(pool.open)
        pool.close()
        connection.close()

    results = {"pool open": opens}
    connection = _connection(handle, fqdn)
    with RunspacePool(connection, configuration_name="Microsoft.Exchange") as pool:
        for cmdlet in CMDLETS:
            samples = results[cmdlet] = Samples()
            for _ in range(iterations):
                ps = PowerShell(pool)
                ps.add_cmdlet(cmdlet)
                samples.time(ps.invoke)
                if ps.streams.error:
                    print(f"  note: {cmdlet} answered an error: {ps.streams.error[0]}")
                    break
    connection.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=50)
    parser.add_argument("--scenario", default="healthy")
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()

    with start(args.scenario, tls=args.tls) as handle:
        measure(handle, 3)  # warm up imports, caches and connections
        figures = measure(handle, args.iterations)

    print(f"lab round trips, pypsrp on loopback, median of {args.iterations}"
          f"{' (TLS)' if args.tls else ''}:")
    for name, samples in figures.items():
        wall, lab_cpu, client_cpu = samples.figures()
        aim = AIM_OPEN_MS if name == "pool open" else AIM_CMDLET_MS
        verdict = "ok" if wall <= aim else "over aim"
        print(f"  {name:<26} {wall:7.2f} ms   (aim <= {aim:.0f} ms, {verdict};"
              f"  cpu: lab {lab_cpu:5.2f} ms, client {client_cpu:5.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
