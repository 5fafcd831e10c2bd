"""At a glance, at scale: /metrics scrape, Home tab build, timeline PNG. Prints figures beside
their aims; asserts nothing.

One real status of the lab (the `staged` scenario, read over WS-Man/PSRP) is stored as the
last check of N orgs (default 200) in Redis, with one open operation awaiting approval per
tenth org, then:
  1. a `/metrics` scrape (bot.metrics, rendered as Prometheus text): aim < 250 ms for 200
     orgs (Prometheus scrapes every 15-60 s; it must never be a load);
  2. building one Home tab (bot.home.org_cards + the view) for a user who sees 15 orgs:
     aim < 50 ms (the Home tab must be published well inside Slack's 3 s);
  3. drawing the timeline PNG of one org (matplotlib, Agg), first and warm: aim < 1.5 s
     first (imports matplotlib), < 300 ms warm.

Redis: $REDIS_URL, else redis://127.0.0.1:6379/13 (that database is flushed).
Run: .venv/bin/python bench/glance_bench.py [--orgs 200]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bot import home, metrics  # noqa: E402
from bot.render.home_view import home_view  # noqa: E402
from config.lab_settings import settings_for_lab  # noqa: E402
from config.load import settings_from_dict  # noqa: E402
from lab.serve import start  # noqa: E402
from workers.changes import approval, operation  # noqa: E402
from workers.status import last_check  # noqa: E402
from workers.status.collect import status as collect_status  # noqa: E402

AIM_SCRAPE_MS = 250
AIM_HOME_MS = 50
AIM_PNG_FIRST_MS = 1500
AIM_PNG_WARM_MS = 300


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=200)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    with start("staged") as lab:
        status = collect_status(settings_for_lab(lab.info, lab.password).orgs[0]).to_json()
    names = [f"org{i:03d}" for i in range(args.orgs)]
    settings = settings_from_dict({"org": [
        {"name": name, "channel": f"C{i:08d}", "approvers": ["U0BENCH"] if i < 15 else [],
         "writer": "ex1.contoso.lab",
         "exchange": {"url": "https://ex1.contoso.lab/PowerShell", "username": "svc",
                      "password_env": "EXAUTH_BENCH_UNUSED"}}
        for i, name in enumerate(names)]}, source="bench.toml")
    step = {"title": "Stage the next certificate", "cmdlet": "Set-AuthConfig",
            "changes_state": True, "kind": "stage_next", "endpoint": "exchange"}
    for i, name in enumerate(names):
        doc = copy.deepcopy(status)
        doc["org"] = name
        last_check.record_success(conn, doc)
        if i % 10 == 0:
            op = operation.create(conn, name, "stage_new", "UREQ", [step])
            operation.set_step(conn, op["id"], 0, "awaiting_approval")
            approval.request(conn, op["id"], 0, requester="UREQ", ttl_minutes=60)

    source = metrics.registry(settings, conn)
    scrapes = []
    for _ in range(10):
        began = time.perf_counter()
        body, _ = metrics.render(source)
        scrapes.append(time.perf_counter() - began)
    lines = len(body.splitlines())
    print(f"/metrics scrape, {args.orgs} orgs ({len(body) // 1024} KiB of text, "
          f"{lines} lines): median {ms(statistics.median(scrapes))}, "
          f"max {ms(max(scrapes))}   (aim < {AIM_SCRAPE_MS} ms)")

    visible = [org for org in settings.orgs if "U0BENCH" in org.approvers]
    builds = []
    for _ in range(20):
        began = time.perf_counter()
        now = datetime.now(UTC)
        view = home_view(home.org_cards(conn, visible, now=now,
                                        link_base="https://x.slack.com/"), now=now)
        builds.append(time.perf_counter() - began)
    print(f"Home tab build, {len(visible)} orgs ({len(view['blocks'])} blocks): median "
          f"{ms(statistics.median(builds))}   (aim < {AIM_HOME_MS} ms)")

    from bot.render import timeline

    began = time.perf_counter()
    png = timeline.png_bytes(status)
    first = time.perf_counter() - began
    warm = []
    for _ in range(5):
        began = time.perf_counter()
        timeline.png_bytes(status)
        warm.append(time.perf_counter() - began)
    print(f"timeline PNG ({len(png) // 1024} KiB): first {ms(first)} (aim < "
          f"{AIM_PNG_FIRST_MS} ms), warm median {ms(statistics.median(warm))} "
          f"(aim < {AIM_PNG_WARM_MS} ms)")
    conn.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
