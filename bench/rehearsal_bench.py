"""Wall time of a rehearsal: a 3-server org's staged rotation on its replica, waits included.

The "real org" is a lab (3 servers, 2 AD sites) whose Auth Certificate has 20 days left, so
the staged rotation sets the shortest effective date (49 h): the rehearsal snapshots it,
serves the replica in-process, runs every step with its approvals granted, and moves the
replica's clock through cross-site replication, the 49 h to publication and the 24 h before
the old certificate may go. Printed: the wall time (aim <= 30 s), the virtual time passed,
and each step's virtual duration. Needs a Redis ($REDIS_URL, default db 0 on localhost).
No assertions: figures to watch.

    .venv/bin/python bench/rehearsal_bench.py [--latency-ms 0] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bot import replica_lab  # noqa: E402
from bot.render.messages import span  # noqa: E402
from config.lab_settings import settings_for_lab  # noqa: E402
from lab.serve import start  # noqa: E402
from workers.rehearsal.run_through import rehearse  # noqa: E402

AIM_SECONDS = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="delay the real org's lab adds to every request (its replica's is 0)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    conn = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    conn.ping()
    replica_lab.install()
    healthy = (ROOT / "lab" / "built_in_scenarios" / "healthy.toml").read_text()
    scenario = healthy.replace("days_left = 1100", "days_left = 20", 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "three-servers.toml"
        path.write_text(scenario)
        with start(path, latency_ms=args.latency_ms) as real:
            org = settings_for_lab(real.info, real.password, writer=real.writer).orgs[0]
            for run in range(1, args.runs + 1):
                began = time.perf_counter()
                report = rehearse(org, conn, kind="stage_new", requester="bench")
                wall = time.perf_counter() - began
                waits = [s for s in report["steps"] if (s["virtual_seconds"] or 0) >= 3600]
                print(f"run {run}: staged rotation of a 3-server org rehearsed in {wall:.2f} s "
                      f"wall (aim <= {AIM_SECONDS:.0f} s: "
                      f"{'met' if wall <= AIM_SECONDS else 'MISSED'}); "
                      f"{span(report['virtual_seconds'])} virtual; "
                      f"{len(report['steps'])} steps; verdict: {report['verdict']}")
                for step in waits:
                    print(f"    waited {span(step['virtual_seconds']):>12}  {step['title']}")
            reads = all(c["command"].startswith(("Get-", "Select-", "Add-PSSnapin"))
                        for c in real.org.calls())
            print(f"the real org saw {len(real.org.calls())} calls, all reads: {reads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
