"""Rendering for people at a terminal: status tables, plans and config checks.

Input is what the workers return (the status model of workers.status.report_model, plan
documents, check rows), so what a person sees is exactly what `--json` would give a
machine.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from workers.status.report_model import (
    AuthCert,
    KeyRole,
    NextAuthCert,
    OrgStatus,
    Overall,
    Severity,
)

SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow",
                  Severity.UNKNOWN: "magenta", Severity.INFO: "cyan"}
STATE_STYLE = {Overall.OK: "bold green", Overall.WARNING: "bold yellow",
               Overall.CRITICAL: "bold red", Overall.UNKNOWN: "bold magenta"}


def _console() -> Console:
    # Thumbprints are 40 characters and admins copy them: when output goes to a file or a
    # pipe (cron, monitoring), do not squeeze tables into 80 columns.
    # markup=False: names and Exchange's messages are printed as they are; with rich's
    # markup on, "[/x]" in one would crash the output and "[link=...]" would show a link.
    console = Console(highlight=False, soft_wrap=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=False, width=160, markup=False)
    return console


def _days(days: int | None) -> Text:
    if days is None:
        return Text("?", style="magenta")
    style = "red" if days < 30 else "yellow" if days < 60 else "green"
    # Whole days are floored, so -4 means "expired 3.x days ago": say only "expired" and
    # let the expiry date beside it tell when.
    label = "expired" if days < 0 else f"{days}d"
    return Text(label, style=style)


def _servers(names: list[str]) -> str:
    return ", ".join(name.split(".")[0] for name in names) or "-"


def cert_table(status: OrgStatus) -> Table:
    table = Table(title="Auth Certificate (Get-AuthConfig)", title_justify="left")
    table.add_column("")
    table.add_column("thumbprint", no_wrap=True, min_width=40)
    for column in ("expires", "left", "sig", "key", "present on", "missing on", "unknown"):
        table.add_column(column)
    auth = status.auth
    roles: tuple[tuple[str, AuthCert | None], ...] = (
        ("current", auth.current), ("next", auth.next), ("previous", auth.previous))
    for role, cert in roles:
        if cert is None:
            table.add_row(role, Text("(not set)", style="dim"), *[""] * 7)
            continue
        label = role
        if isinstance(cert, NextAuthCert) and cert.effective:
            label = f"next (effective {cert.effective})"
        table.add_row(
            label,
            cert.thumbprint or "?",
            (cert.not_after or "?")[:10],
            _days(cert.days_left),
            cert.signature_hash or "?",
            str(cert.key_size or "?"),
            _servers(cert.present_on),
            Text(_servers(cert.missing_on), style="red" if cert.missing_on else ""),
            Text(_servers(cert.unknown_on), style="magenta" if cert.unknown_on else ""),
        )
    return table


def hybrid_app_table(status: OrgStatus) -> Table | Text | None:
    """The dedicated hybrid application's keys (None for an org that is not hybrid)."""
    section = status.hybrid_app
    if section is None:
        return None
    if not section.configured:
        return Text("Hybrid application: not configured ([org.hybrid_app])", style="dim")
    if not section.read:
        return Text(f"Hybrid application {section.app_id}: could not be read: "
                    f"{section.error}", style="magenta")
    table = Table(title=f"Hybrid application {section.app_id} (Entra ID keyCredentials)",
                  title_justify="left")
    table.add_column("role")
    table.add_column("thumbprint", no_wrap=True, min_width=40)
    for column in ("from", "until", "name"):
        table.add_column(column)
    for key in section.keys:
        table.add_row(Text(key.role, style="dim" if key.role is KeyRole.STALE else ""),
                      key.thumbprint, (key.not_before or "?")[:10],
                      (key.not_after or "?")[:10], key.display_name)
    for which, cert in (("current", status.auth.current), ("next", status.auth.next)):
        if getattr(section, f"{which}_on_app") is False and cert is not None:
            table.add_row(Text(f"{which}: MISSING", style="bold red"), cert.thumbprint,
                          "", "", "")
    return table


def server_table(status: OrgStatus) -> Table:
    table = Table(title="Servers and back end certificates (Exchange Back End, *:444:)",
                  title_justify="left")
    for column in ("server", "site", "version", "reachable"):
        table.add_column(column)
    table.add_column("back end cert", no_wrap=True, min_width=40)
    for column in ("left", "problem"):
        table.add_column(column)
    backend = {row.server: row for row in status.backend}
    for server in status.servers:
        row = backend.get(server.fqdn) or backend.get(server.name)
        reachable = Text("yes", style="green") if server.reachable else Text(
            f"no: {server.error or 'unreachable'}", style="red")
        problem = row.problem if row is not None else None
        table.add_row(
            server.name,
            server.site or "?",
            server.version or "?",
            reachable,
            (row.thumbprint if row is not None else None) or "-",
            _days(row.days_left) if row is not None and row.not_after else Text("-"),
            Text(problem or "ok", style="red" if problem else "green"),
        )
    return table


def print_status(status: OrgStatus) -> None:
    from workers.status.report import overall

    console = _console()
    state = overall(status)
    header = Text.assemble(
        ("exauth status  ", "bold"), (status.org or "?", "bold"), "  ",
        (state.upper(), STATE_STYLE.get(state, "")),
        f"   checked {status.checked_at or '?'}",
        "   hybrid" if status.hybrid else "",
    )
    console.print(header)
    console.print(cert_table(status))
    hybrid_app = hybrid_app_table(status)
    if hybrid_app is not None:
        console.print(hybrid_app)
    console.print(server_table(status))
    if status.findings:
        console.print(Text("Findings", style="bold"))
        for finding in status.findings:
            where = f" [{finding.server}]" if finding.server else ""
            console.print(Text.assemble(
                (f"  {finding.severity:<8} ", SEVERITY_STYLE.get(finding.severity, "")),
                f"{finding.code}{where}: {finding.message}"))
    console.print(Text("Recommended", style="bold"))
    for action in status.actions:
        servers = f" ({_servers(action.servers)})" if action.servers else ""
        console.print(f"  {action.kind}{servers}: {action.reason}")


def print_plan(document: dict[str, Any]) -> None:
    console = _console()
    console.print(Text.assemble(("exauth plan  ", "bold"), (document["org"], "bold"),
                                f"   from status checked {document['checked_at']}"))
    for action in document["actions"]:
        servers = f" ({_servers(action['servers'])})" if action.get("servers") else ""
        console.print(Text(f"\n{action['kind']}{servers}: {action['reason']}", style="bold"))
        for number, step in enumerate(action.get("steps", []), start=1):
            gate = "APPROVAL" if step["changes_state"] else "read-only"
            console.print(Text.assemble(
                f"  {number}. ", (f"[{gate}] ", "yellow" if step["changes_state"] else "dim"),
                step["title"], (f"  on {step['server']} ({step['endpoint']})", "dim")))
            if step.get("command"):
                console.print(Text(f"       {step['command']}", style="cyan"))
            if step.get("note"):
                console.print(Text(f"       {step['note']}", style="dim"))


def print_rehearsal(report: dict[str, Any]) -> None:
    """A rehearsal: each step with its outcome and its time on the replica's clock, the
    status afterwards, and what differed from the plan."""
    from bot.render.messages import span

    console = _console()
    ok = bool(report.get("ok"))
    console.print(Text.assemble(
        ("exauth rehearse  ", "bold"), (str(report.get("org", "?")), "bold"), "  ",
        (str(report.get("kind") or "nothing"), "bold"), "  ",
        ("OK" if ok else "NOT AS PLANNED", "green" if ok else "red"),
        f"   snapshot {report.get('snapshot_at', '?')}"))
    if not report.get("steps"):
        console.print(f"  {report.get('verdict', '')}")
        return
    for step in report["steps"]:
        took = step.get("virtual_seconds")
        style = {"done": "green", "skipped": "yellow", "failed": "red"}.get(step["state"], "")
        console.print(Text.assemble(
            f"  {int(step['index']) + 1:>2}. ", (f"{step['state']:<8}", style),
            f" {'not reached' if took is None else span(took):>12}  ", step["title"]))
        if step.get("outcome"):
            console.print(Text(f"               {step['outcome']}", style="dim"))
    console.print(f"Replica's clock moved {span(report.get('virtual_seconds'))}; "
                  f"{report.get('wall_seconds', '?')} s of real time.")
    after = report.get("status_after") or {}
    console.print(Text("Status afterwards", style="bold"))
    for finding in after.get("findings", []):
        console.print(f"  {finding['severity']:<8} {finding['code']}: {finding['message']}")
    for action in after.get("actions", []):
        console.print(f"  {action['kind']}: {action['reason']}")
    console.print(Text("Differed from the plan", style="bold"))
    for line in report.get("differences") or ["nothing"]:
        console.print(f"  {line}")


def print_check(rows: list[dict[str, Any]]) -> bool:
    """Print `config check` rows; True when every endpoint answered and authenticated."""
    console = _console()
    table = Table(title="exauth config check", title_justify="left")
    for column in ("org", "server", "endpoint", "url", "result"):
        table.add_column(column)
    ok = True
    for row in rows:
        good = bool(row.get("ok"))
        ok = ok and good
        table.add_row(row.get("org", ""), row.get("server", ""), row.get("endpoint", ""),
                      row.get("url", ""),
                      Text("ok" if good else row.get("message") or "failed",
                           style="green" if good else "red"))
    console.print(table)
    return ok
