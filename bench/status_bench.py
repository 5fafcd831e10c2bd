"""Status collection timings against the lab, with realistic per-request latency.

Prints, in one run:
  1. status time for a 1-server and a 50-server org with 20 ms injected latency per request,
     and their ratio (aim: <= 2x, i.e. servers are asked concurrently and cheaply);
  2. the client CPU per server of the large org's first status (aim: <= 10 ms), and where
     it goes: a cProfile of one more first status, its own time summed by layer; and the
     same first status's client CPU with no injected latency (the work without the waits);
  3. first vs second status in one process with a 1.5 s session open (aim: second <= 0.5x
     first, i.e. sessions are reused).

The machine's load average is printed first: on a shared machine the lab and the client
wait for a CPU, and every wall time grows with the load. CPU seconds grow far less, but
they do: a request that waited wakes up with cold caches (compare the two CPU figures).

The lab runs in its own process (`lab.serve.main`, exactly what `exauth lab serve` runs), so
the client's CPU is not shared with the lab's under one GIL - as with real Exchange, where
the servers do their own serializing. Beside each time the bench prints the CPU seconds the
client and the lab spent, which says whether a figure is bound by waiting or by work.
No assertions: these are figures to watch.

    .venv/bin/python bench/status_bench.py [--servers 50] [--workers N]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.lab_settings import settings_for_lab  # noqa: E402
from config.schema import OrgSettings  # noqa: E402
from workers.exchange.client import ExchangeClient, SessionCache  # noqa: E402
from workers.status.collect import collect  # noqa: E402
from workers.status.findings import AUTH_SUBJECT  # noqa: E402

LATENCY_MS = 20
AIM_RATIO = 2.0
AIM_CPU_MS_PER_SERVER = 10.0
# Where client CPU goes: a profiled function's file -> the layer it belongs to (first match).
LAYERS = (
    ("pypsrp/serializer", "PSRP objects <-> CLIXML (pypsrp serializer)"),
    ("pypsrp/messages", "PSRP messages pack/unpack"),
    ("pypsrp/", "pypsrp other (WS-Man envelopes, fragments, pool)"),
    ("xml/etree", "XML text <-> trees (ElementTree)"),
    ("requests/", "HTTP (requests, urllib3, http.client, sockets)"),
    ("urllib3/", "HTTP (requests, urllib3, http.client, sockets)"),
    ("http/client", "HTTP (requests, urllib3, http.client, sockets)"),
    ("socket", "HTTP (requests, urllib3, http.client, sockets)"),
    ("cryptography", "certificate parsing (cryptography)"),
    ("/workers/", "exauth (collect, parse, report)"),
    ("/config/", "exauth (collect, parse, report)"),
    ("threading.py", "threads (the bounded pool, locks)"),
    ("concurrent/", "threads (the bounded pool, locks)"),
    ("logging/", "logging"),
)
OPEN_MS = 1500
READY_TIMEOUT = 60.0
# The child process: serve a scenario file until SIGTERM, print the ready line first.
_SERVE = (
    "import sys; from lab.serve import main; "
    "sys.exit(main(sys.argv[1], latency_ms=int(sys.argv[2]), open_ms=int(sys.argv[3])))"
)


def scaled_toml(servers: int, sites: int = 2) -> str:
    """A healthy org of `servers` servers (the lab's scenario format, DESIGN.md), shaped
    like `lab.scenario.scaled` (which builds the same org in memory)."""
    names = [f"ex{i + 1}" for i in range(servers)]
    site = [f"Site-{chr(ord('A') + i % sites)}" for i in range(servers)]
    lines = [f"# healthy org with {servers} servers in {sites} sites (benchmark)", "[lab]",
             "serialization_signing = true",
             'replication = { same_site = "15m", cross_site = "24h" }', ""]
    for i, name in enumerate(names):
        lines += ["[[server]]", f'name = "{name}"', f'fqdn = "{name}.contoso.lab"',
                  f'site = "{site[i]}"', 'version = "Version 15.2 (Build 1544.4)"',
                  'roles = ["Mailbox"]', f"writer = {'true' if i == 0 else 'false'}", ""]
    installed = ", ".join(f'"{n}"' for n in names)
    lines += ["[[certificate]]", 'id = "auth"', f'subject = "{AUTH_SUBJECT}"',
              'friendly_name = "Microsoft Exchange Server Auth Certificate"',
              "days_left = 1100", 'signature = "sha256"', "key_size = 2048",
              'services = ["SMTP"]', f"installed_on = [{installed}]", ""]
    for name in names:
        lines += ["[[certificate]]", f'id = "backend-{name}"', f'subject = "CN={name}"',
                  'friendly_name = "Microsoft Exchange"',
                  f'sans = ["{name}", "{name}.contoso.lab"]', "days_left = 1500",
                  'signature = "sha256"', "key_size = 2048",
                  'services = ["IMAP", "POP", "IIS", "SMTP"]', f'installed_on = ["{name}"]', ""]
    lines += ["[auth_config]", 'current = "auth"', ""]
    for name in names:
        lines += ["[[backend]]", f'server = "{name}"', f'certificate = "backend-{name}"', ""]
    return "\n".join(lines)


# --- the lab in its own process -----------------------------------------------------------


@dataclass
class LabProcess:
    """A lab served by a child process: its ready line, and its CPU use so far."""

    process: subprocess.Popen[str]
    info: dict[str, Any]

    def org(self) -> OrgSettings:
        return settings_for_lab(self.info, str(self.info["password"])).org()

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the lab process (Linux /proc), None where unknown."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None


@contextmanager
def lab_process(scenario: Path | str, *, latency_ms: int = 0, open_ms: int = 0) -> Iterator[
    LabProcess
]:
    command = [sys.executable, "-c", _SERVE, str(scenario), str(latency_ms), str(open_ms)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield LabProcess(process, _ready_line(process))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=READY_TIMEOUT)
    except queue.Empty:
        raise SystemExit(f"the lab printed no ready line within {READY_TIMEOUT:.0f} s") from None
    if not line:
        raise SystemExit(f"the lab exited before it was ready (exit code {process.wait()})")
    return dict(json.loads(line))


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    client_cpu: float
    lab_cpu: float | None
    listed: int
    opened: int
    peak: int


def timed_status(lab: LabProcess, cache: SessionCache, workers: int | None) -> Run:
    org = lab.org()
    opens = cache.stats.opens
    cache.stats.reset_peak()
    lab_before = lab.cpu_seconds()
    cpu_before = time.process_time()
    began = time.perf_counter()
    obs = collect(org, client=ExchangeClient(org, cache=cache, max_workers=workers))
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - cpu_before
    lab_after = lab.cpu_seconds()
    lab_cpu = None if lab_before is None or lab_after is None else lab_after - lab_before
    listed = sum(1 for s in obs.servers if s.reachable and s.certificates is not None)
    return Run(elapsed, client_cpu, lab_cpu, listed, cache.stats.opens - opens,
               cache.stats.peak_in_flight)


def _line(label: str, run: Run) -> str:
    lab = f"{run.lab_cpu:5.2f} s" if run.lab_cpu is not None else "   ? s"
    return (f"{label} {run.seconds * 1000:7.0f} ms  (cpu: client {run.client_cpu:5.2f} s, "
            f"lab {lab}; {run.opened:3d} sessions opened, {run.peak:2d} at once, "
            f"{run.listed} servers listed)")


def scale_figures(workdir: Path, sizes: tuple[int, ...], workers: int | None,
                  repeat: int) -> None:
    times: dict[int, float] = {}
    cpu_per_server: dict[int, float] = {}
    for servers in sizes:
        path = workdir / f"scaled-{servers}.toml"
        path.write_text(scaled_toml(servers), encoding="utf-8")
        colds: list[Run] = []
        with lab_process(path, latency_ms=LATENCY_MS) as lab:
            for _ in range(repeat):  # a fresh session cache each time: a first status
                cache = SessionCache()
                cold = timed_status(lab, cache, workers)
                warm = timed_status(lab, cache, workers)
                cache.close_all()
                colds.append(cold)
                print(_line(f"  {servers:>3} server(s): first status", cold))
                print(_line(f"  {servers:>3} server(s): second status", warm))
            if servers == max(sizes):
                layers = profiled_layers(lab)
        times[servers] = statistics.median(c.seconds for c in colds)
        cpu_per_server[servers] = statistics.median(c.client_cpu for c in colds) / servers
    small, large = min(sizes), max(sizes)
    if small != large:
        ratio = times[large] / times[small]
        print(f"  ratio {large}/{small} (first status, median of {repeat}: "
              f"{times[large] * 1000:.0f} / {times[small] * 1000:.0f} ms): {ratio:.2f}x   "
              f"aim: <= {AIM_RATIO:g}x")
    print(f"  client CPU per server ({large} servers, first status, median of {repeat}): "
          f"{cpu_per_server[large] * 1000:.1f} ms   aim: <= {AIM_CPU_MS_PER_SERVER:g} ms")
    print(f"  where the client CPU goes ({large} servers, first status, one thread, cProfile "
          "own time by layer; C builtins and general stdlib count for their callers):")
    total = sum(layers.values()) or 1.0
    for layer, seconds in sorted(layers.items(), key=lambda kv: -kv[1]):
        print(f"    {100 * seconds / total:5.1f}%  {layer}")


def unwaited_cpu(workdir: Path, servers: int, workers: int | None, repeat: int) -> None:
    """The same first status with no injected latency: the client's CPU for the same work
    without waits. With 20 ms waits each request wakes up on a CPU whose caches other
    processes have used meanwhile, so the same Python code costs more CPU on a busy
    machine; the difference between the two figures is that cost, not work exauth does."""
    path = workdir / f"scaled-{servers}.toml"
    with lab_process(path, latency_ms=0) as lab:
        runs = []
        for _ in range(repeat):
            cache = SessionCache()
            runs.append(timed_status(lab, cache, workers))
            cache.close_all()
    cpu = statistics.median(r.client_cpu for r in runs) / servers
    print(f"  client CPU per server ({servers} servers, first status, no injected latency, "
          f"median of {repeat}): {cpu * 1000:.1f} ms   aim: <= {AIM_CPU_MS_PER_SERVER:g} ms "
          "(diagnostic: the same work without waits)")


def profiled_layers(lab: LabProcess) -> dict[str, float]:
    """One more first status (a fresh session cache), profiled on one thread (cProfile
    sees only the thread it runs in), CPU time only; own time summed by layer."""
    org = lab.org()
    cache = SessionCache()
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        collect(org, client=ExchangeClient(org, cache=cache, max_workers=1))
    finally:
        profile.disable()
        cache.close_all()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    layers: dict[str, float] = {}
    for func, (_cc, _nc, own, _cum, _callers) in stats.items():
        for layer, share in _layer_shares(stats, func, depth=0).items():
            layers[layer] = layers.get(layer, 0.0) + own * share
    return layers


def _layer_shares(stats: dict[Any, Any], func: Any, depth: int) -> dict[str, float]:
    """Which layers a function's own time belongs to: its file's layer, or - for C builtins
    and general-purpose stdlib (codecs, copy, os.environ, re...) - its callers' layers, in
    proportion to the time spent under each caller."""
    filename = func[0]
    layer = next((label for key, label in LAYERS if key in filename), None)
    if layer is not None:
        return {layer: 1.0}
    callers = stats[func][4]
    if depth >= 6 or not callers:
        return {"other (Python runtime, threads, logging)": 1.0}
    weights = {caller: entry[3] for caller, entry in callers.items()}
    total = sum(weights.values())
    shares: dict[str, float] = {}
    for caller, weight in weights.items():
        part = weight / total if total else 1 / len(weights)
        for name, sub in _layer_shares(stats, caller, depth + 1).items():
            shares[name] = shares.get(name, 0.0) + part * sub
    return shares


def reuse_figures(workers: int | None) -> None:
    with lab_process("healthy", open_ms=OPEN_MS) as lab:
        cache = SessionCache()
        first = timed_status(lab, cache, workers)
        second = timed_status(lab, cache, workers)
        cache.close_all()
    print(_line("  first status ", first))
    print(_line("  second status", second))
    print(f"  ratio second/first: {second.seconds / first.seconds:.2f}x   aim: <= 0.5x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50, help="size of the large org")
    parser.add_argument("--workers", type=int, default=None,
                        help="servers asked at once (default: the config's max_concurrency)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="first statuses per org size (the figures are their medians)")
    args = parser.parse_args(argv)
    bound = args.workers or "max_concurrency default"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)")
    print(f"status collection, {LATENCY_MS} ms latency per request, lab in its own process, "
          f"concurrency: {bound}:")
    with tempfile.TemporaryDirectory(prefix="exauth-bench-") as tmp:
        scale_figures(Path(tmp), (1, args.servers), args.workers, args.repeat)
        unwaited_cpu(Path(tmp), args.servers, args.workers, args.repeat)
    print(f"session reuse, {OPEN_MS} ms per session open:")
    reuse_figures(args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
