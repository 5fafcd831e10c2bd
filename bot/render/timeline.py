"""The certificate timeline: one bar per certificate across its validity, as a PNG.

Where people would rather look than read: the current, next and previous Auth
Certificates and each server's back end certificate as bars on one time axis, today's line
(the org's own clock: the status's `checked_at`), the staged certificate's effective date,
and each bar's warning bands (its last 60 days yellow, last 30 days red: HealthChecker's
yellow and red, DOMAIN.md section 3). Drawn with matplotlib's object API on the Agg canvas
(no pyplot, no display, no global state: safe in a worker's callback thread),
imported only when a picture is drawn (importing matplotlib registers exit hooks and costs
half a second: no process pays that for importing this module), sized for
Slack's preview: 800 px wide, labels at 13-15 pt, so it still reads when Slack shows it
about 400 px wide.

The status is read as the dict contract (DESIGN.md "Status JSON") through
workers.status.last_check's accessors. The status JSON gives a back end certificate's
NotAfter but not its NotBefore, so a back end bar starts at the left edge of the axis
(drawn fading in: its start is not known); a back end without a certificate is a red cross
on today's line with its problem named.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from workers.status import last_check

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH_IN = 8.0
DPI = 100
ROW_IN = 0.6
BASE_IN = 1.6
WARNING_DAYS = 60  # yellow from here
CRITICAL_DAYS = 30  # red from here
LABEL_ROW = -0.85  # the row above the bars that holds the line labels
MAX_BACKEND_BARS = 12  # more servers than this are summarised in the title
COLORS = {"current": "#1d6fb8", "next": "#2e9e4f", "previous": "#9aa0a6",
          "backend": "#6a4fb3", "expired": "#c62828"}
BAND_COLORS = {WARNING_DAYS: "#f9c74f", CRITICAL_DAYS: "#e63946"}


@dataclass(frozen=True)
class Bar:
    """One certificate's validity on the timeline."""

    key: str  # "auth:current", "backend:<server fqdn>" (the artist's gid is "bar:<key>")
    label: str
    start: datetime | None  # None: not known (back end): drawn from the axis' left edge
    end: datetime | None  # None: no certificate at all (a marker, not a bar)
    kind: str  # current | next | previous | backend
    note: str  # "no certificate", "expired", ...


def bars(status: dict[str, Any]) -> list[Bar]:
    """The bars of a status JSON, top to bottom: current, next, previous, back ends."""
    found = []
    for slot in last_check.SLOTS:
        cert = last_check.auth_cert(status, slot)
        if cert is None:
            continue
        start, end = last_check.cert_window(cert)
        found.append(Bar(f"auth:{slot}", f"Auth {slot}", start, end, slot,
                         "" if end else "not in any store"))
    for entry in last_check.backends(status)[:MAX_BACKEND_BARS]:
        server = str(entry.get("server") or "?")
        end = last_check.parse_time(entry.get("not_after"))
        problem = str(entry.get("problem") or "")
        found.append(Bar(f"backend:{server}", f"Back end {server.split('.')[0]}", None, end,
                         "backend", problem.replace("_", " ")))
    return found


def figure(status: dict[str, Any]) -> Figure:
    """The timeline as a matplotlib Figure (tests read its artists)."""
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = bars(status)
    now = last_check.checked_time(status)
    effective = last_check.next_effective(status)
    fig = Figure(figsize=(WIDTH_IN, BASE_IN + ROW_IN * max(len(rows), 1)), dpi=DPI,
                 layout="constrained")  # laid out while drawn: one draw, not two
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left, right = _span(rows, now, effective)
    ax.set_xlim(mdates.date2num(left), mdates.date2num(right))
    ax.set_ylim(len(rows) - 0.5, LABEL_ROW - 0.35)  # first row on top, a row for labels
    for y, bar in enumerate(rows):
        _draw(ax, y, bar, left, now)
    # today's and the effective date's lines, labelled in the top row away from each
    # other: "today" ends at its line, "next effective" starts at its own
    if now is not None:
        x = mdates.date2num(now)
        ax.axvline(x, color="#222222", linewidth=2, gid="today")
        ax.annotate(f"today {now:%Y-%m-%d} ", (x, LABEL_ROW), ha="right", va="center",
                    fontsize=13, fontweight="bold")
    if effective is not None:
        x = mdates.date2num(effective)
        ax.axvline(x, color=COLORS["next"], linewidth=2, linestyle="--", gid="effective")
        ax.annotate(f" next effective {effective:%Y-%m-%d}", (x, LABEL_ROW), ha="left",
                    va="center", fontsize=13, fontweight="bold", color=COLORS["next"])
    ax.set_yticks(range(len(rows)), [bar.label for bar in rows], fontsize=15)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=13)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(axis="x", color="#dddddd")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    more = len(last_check.backends(status)) - MAX_BACKEND_BARS
    title = f"{status.get('org', '?')}: certificates" + (
        f" ({more} more back ends not drawn)" if more > 0 else "")
    ax.set_title(title, fontsize=16, loc="left", pad=8)
    ax.legend(handles=[Patch(color=BAND_COLORS[WARNING_DAYS], label="< 60 days left"),
                       Patch(color=BAND_COLORS[CRITICAL_DAYS], label="< 30 days left")],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=12,
              frameon=False)
    return fig


def write_png(status: dict[str, Any], target: str | Path | BinaryIO) -> None:
    figure(status).savefig(target, format="png", dpi=DPI)


def png_bytes(status: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    write_png(status, buffer)
    return buffer.getvalue()


def alt_text(status: dict[str, Any]) -> str:
    """What the picture shows, in words (Slack's alt text; screen readers)."""
    parts = []
    for bar in bars(status):
        if bar.end is None:
            parts.append(f"{bar.label}: {bar.note or 'no certificate'}")
        else:
            parts.append(f"{bar.label} until {bar.end:%Y-%m-%d}")
    return ("Certificate timeline of " + str(status.get("org", "?")) + ": "
            + "; ".join(parts))[:1000]


def _span(rows: Sequence[Bar], now: datetime | None,
          effective: datetime | None) -> tuple[datetime, datetime]:
    points = [p for bar in rows for p in (bar.start, bar.end) if p is not None]
    points += [p for p in (now, effective) if p is not None]
    if not points:
        raise ValueError("a timeline needs at least one date")
    low, high = min(points), max(points)
    pad = max((high - low) * 0.04, timedelta(days=14))
    return low - pad, high + pad


def _draw(ax: Any, y: int, bar: Bar, left: datetime, now: datetime | None) -> None:
    from matplotlib import dates as mdates

    if bar.end is None:  # nothing to draw a bar for: say what is wrong on today's line
        x = mdates.date2num(now or left)
        ax.plot([x], [y], marker="X", markersize=14, color=COLORS["expired"],
                gid=f"missing:{bar.key}")
        ax.annotate(bar.note or "no certificate", (x, y), xytext=(10, 0),
                    textcoords="offset points", va="center", fontsize=13,
                    color=COLORS["expired"])
        return
    start = bar.start or left
    expired = now is not None and bar.end <= now
    color = COLORS["expired"] if expired else COLORS[bar.kind]
    x0, x1 = mdates.date2num(start), mdates.date2num(bar.end)
    ax.barh(y, x1 - x0, left=x0, height=0.56, color=color, alpha=0.9 if bar.start else 0.55,
            gid=f"bar:{bar.key}")
    for days in (WARNING_DAYS, CRITICAL_DAYS):
        band_start = max(x0, x1 - days)
        ax.barh(y, x1 - band_start, left=band_start, height=0.56, color=BAND_COLORS[days],
                gid=f"band{days}:{bar.key}")
    days_left = (bar.end - now).days if now is not None else None
    text = f"{bar.end:%Y-%m-%d}"
    if days_left is not None:
        text += f" ({days_left} d)" if days_left >= 0 else " (expired)"
    if bar.note and not expired:
        text += f", {bar.note}"
    low, high = ax.get_xlim()
    inside_right = x1 > high - (high - low) * 0.3  # no room after the bar: write inside,
    anchor = max(x0, x1 - WARNING_DAYS) if inside_right else x1  # before its bands
    ax.annotate(text, (anchor, y), xytext=(-4 if inside_right else 6, 0),
                textcoords="offset points", va="center",
                ha="right" if inside_right else "left", fontsize=13,
                color="white" if inside_right else "#222222",
                fontweight="bold" if inside_right else "normal")
