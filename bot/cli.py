"""The `exauth` command line.

Thin on purpose: parse options, load settings, call the worker functions inline (no Redis
for `status`/`plan`), render. Every failure becomes one line on stderr and an exit code,
never a traceback. Exit codes of `status` follow the monitoring-plugin convention
(0 ok, 1 warning, 2 critical, 3 could not check) so cron and monitoring can use it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from config.errors import ConfigError
from config.load import config_path, load_settings, use_config
from config.schema import OrgSettings, Settings
from workers.exchange.errors import ExchangeError

EXIT_UNKNOWN = 3  # monitoring "could not check": also used for config errors


@dataclass
class Context:
    """What every subcommand needs: where the config is (None: look it up)."""

    config: str | None


def fail(message: str, code: int = EXIT_UNKNOWN) -> NoReturn:
    """End the command with one readable line; tracebacks never reach the user."""
    click.echo(f"exauth: {message}", err=True)
    sys.exit(code)


def configured(ctx: Context, org_name: str | None = None, *, needs_org: bool = True) -> Settings:
    """The settings from the config file, and `org_name` (if given) must be one of its orgs;
    any problem ends the command in one line."""
    from workers import audit, log_filter

    try:
        settings = load_settings(ctx.config)
    except ConfigError as exc:
        fail(str(exc))
    if needs_org and not settings.orgs:  # all but the audit log work on an org: say where
        fail(f"no [[org]] in {settings.source}")
    if org_name is not None:
        selected_orgs(settings, org_name)
    audit.use_mirror(settings.audit.jsonl)
    log_filter.install_for(settings)  # the process starts here: its secrets stay out of logs
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $EXAUTH_CONFIG, else ./exauth.toml).",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """exauth: keep Exchange's Auth Certificate and back end certificates healthy."""
    if config_file is not None:  # also the config of every job and callback this process runs
        use_config(config_file)
    from bot import replica_lab

    replica_lab.install()  # rehearsals (here or in `exauth worker`) serve replicas in-process
    ctx.obj = Context(config=config_file)


# --- settings, or the built-in lab when nothing is configured ---------------------------


@contextlib.contextmanager
def settings_or_lab(ctx: Context) -> Iterator[Settings]:
    """Load the configured settings; with no config file at all, serve the default lab.

    The fallback lets a fresh install show a real status table without any setup; it is
    announced on stderr so nobody mistakes the lab for their org.
    """
    if config_path(ctx.config) is not None or ctx.config is not None:
        yield configured(ctx)
        return

    from config.lab_settings import settings_for_lab
    from lab.serve import start

    # NTLM with message encryption, as Exchange expects: the first run already takes the
    # path a real deployment takes (Basic stays an explicit `lab serve --auth basic`).
    with start("healthy", auth="ntlm") as handle:
        click.echo(
            "exauth: no config file (--config, $EXAUTH_CONFIG or ./exauth.toml); "
            "showing the built-in lab org (scenario 'healthy') served on "
            f"{handle.base_url}",
            err=True,
        )
        yield settings_for_lab(handle.info, handle.info["password"], auth="ntlm")


def selected_orgs(settings: Settings, name: str | None) -> list[OrgSettings]:
    if name is None:
        if not settings.orgs:
            fail("no [[org]] is configured")
        return list(settings.orgs)
    try:
        return [settings.org(name)]
    except ConfigError:
        known = ", ".join(o.name for o in settings.orgs) or "none"
        fail(f"unknown org {name!r} (configured: {known})")


def emit_json(documents: list[dict[str, Any]]) -> None:
    """One org prints its object; several print an array of them."""
    payload: Any = documents[0] if len(documents) == 1 else documents
    click.echo(json.dumps(payload, indent=2, default=str))


def guarded(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run work that talks to Exchange; turn any escaped error into one line."""
    try:
        return func(*args, **kwargs)
    except (ConfigError, ExchangeError) as exc:
        fail(str(exc))
    except Exception as exc:  # the user sees one line, not a traceback
        fail(f"{type(exc).__name__}: {exc}")


# --- status / plan -----------------------------------------------------------------------


@main.command()
@click.option("--org", "org_name", default=None, help="Only this org (default: every org).")
@click.option("--json", "as_json", is_flag=True, help="Print the status JSON.")
@click.option("--timeline", "timeline", default=None, type=click.Path(dir_okay=False),
              help="Also draw the certificate timeline as a PNG here (several orgs: one "
                   "file each, the org's name added).")
@click.pass_obj
def status(ctx: Context, org_name: str | None, as_json: bool, timeline: str | None) -> None:
    """Collect and print the certificate status of each org."""
    from bot.render.terminal import print_status
    from workers.status.collect import status as collect_status
    from workers.status.report import exit_code

    with settings_or_lab(ctx) as settings:
        results = [guarded(collect_status, org) for org in selected_orgs(settings, org_name)]
    if timeline is not None:
        write_timelines(results, timeline)
    if as_json:
        emit_json([result.to_json() for result in results])
    else:
        for result in results:
            print_status(result)
    sys.exit(max(exit_code(r) for r in results))


def write_timelines(statuses: list[Any], path: str) -> None:
    """One PNG per org (bot.render.timeline); the path(s) written are said on stderr."""
    from pathlib import Path

    from bot.render.timeline import write_png
    from workers.status.last_check import as_document

    target = Path(path)
    results = [as_document(status) for status in statuses]
    for result in results:
        out = target if len(results) == 1 else target.with_name(
            f"{target.stem}-{result['org']}{target.suffix or '.png'}")
        try:
            write_png(result, out)
        except OSError as exc:
            fail(f"cannot write the timeline to {out}: {exc.strerror or exc}")
        click.echo(f"exauth: timeline of {result['org']} written to {out}", err=True)


@main.command()
@click.option("--org", "org_name", default=None, help="Only this org (default: every org).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def plan(ctx: Context, org_name: str | None, as_json: bool) -> None:
    """Show the decision and the exact cmdlets a fix would run, without running them."""
    from bot.render.terminal import print_plan
    from workers.changes.plan import plan as make_plan
    from workers.status.collect import status as collect_status
    from workers.status.report import checked_at

    documents = []
    with settings_or_lab(ctx) as settings:
        for org in selected_orgs(settings, org_name):
            result = guarded(collect_status, org)
            # Plan against the time the org was read, so dates in the steps match the status.
            steps = make_plan(result, writer=org.writer or "", now=checked_at(result),
                              lifetime_days=org.rotation.lifetime_days)
            documents.append({"org": org.name, "checked_at": result.checked_at,
                              "actions": steps})
    if as_json:
        emit_json(documents)
    else:
        for document in documents:
            print_plan(document)


# --- config --------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command("check")
@click.pass_obj
def config_check(ctx: Context) -> None:
    """Validate the config file and try every configured endpoint."""
    from bot.render.terminal import print_check
    from workers.exchange.connection_check import check

    if config_path(ctx.config) is None:
        fail("no config file found (--config, $EXAUTH_CONFIG or ./exauth.toml)")
    rows = guarded(check, configured(ctx))
    ok = print_check(rows)
    sys.exit(0 if ok else 2)


# --- lab -----------------------------------------------------------------------------------


@main.group("lab")
def lab_group() -> None:
    """The built-in simulated Exchange org (real WS-Man/PSRP on loopback)."""


@lab_group.command("serve")
@click.option("--scenario", default="healthy", show_default=True,
              help="A built-in scenario name or a path to a scenario TOML file.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--latency-ms", default=0, show_default=True, type=click.IntRange(0, 60_000),
              help="Delay added to every request.")
@click.option("--open-ms", default=0, show_default=True, type=click.IntRange(0, 600_000),
              help="Extra delay when a session is opened (Exchange's is seconds).")
@click.option("--write-config", "write_config", default=None, type=click.Path(dir_okay=False),
              help="Write an exauth config with one org named 'lab' pointing at this lab "
                   "(and, with --tls, the lab CA beside it as <PATH>.ca.pem).")
@click.option("--auth", "auth", default="ntlm", show_default=True,
              type=click.Choice(["basic", "ntlm", "kerberos"]),
              help="basic: Basic only (loopback rehearsals); ntlm/kerberos: Negotiate with "
                   "message encryption over http, as Exchange and WinRM expect.")
@click.option("--tls", is_flag=True, help="Serve https with a certificate from a lab CA.")
@click.option("--keytab", default=None, type=click.Path(dir_okay=False),
              help="Keytab with WSMAN/<host> (kerberos; default $KRB5_KTNAME).")
@click.option("--username", default=None, help="The lab account (default LAB\\exadmin; "
              "for kerberos the principal, e.g. exadmin@REALM).")
@click.option("--password-file", default=None, type=click.Path(dir_okay=False),
              help="The account's password (default: a random one, in the ready line).")
@click.option("--url-host", default=None,
              help="Host name in the URLs handed out (kerberos default: localhost).")
def lab_serve(scenario: str, host: str, port: int, latency_ms: int, open_ms: int,
              write_config: str | None, auth: str, tls: bool, keytab: str | None,
              username: str | None, password_file: str | None, url_host: str | None) -> None:
    """Serve a lab org; prints one JSON line with its endpoints when ready."""
    from lab.serve import main as serve_main

    sys.exit(serve_main(scenario, host, port, latency_ms, open_ms, write_config,
                        auth=auth, tls=tls, keytab=keytab, username=username,  # type: ignore[arg-type]
                        password_file=password_file, url_host=url_host))


@lab_group.command("snapshot")
@click.option("--org", "org_name", default=None, help="The org to copy (default: the only one).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the scenario TOML.")
@click.pass_obj
def lab_snapshot(ctx: Context, org_name: str | None, out: str) -> None:
    """Write a lab scenario that reproduces the org as status reads it (stand-in certificates)."""
    from workers.rehearsal.replica import snapshot

    settings = configured(ctx, org_name)
    orgs = selected_orgs(settings, org_name)
    if len(orgs) > 1:
        fail(f"{len(orgs)} orgs are configured; name one with --org "
             f"({', '.join(o.name for o in orgs)})")
    obs = guarded(snapshot, orgs[0], out)
    click.echo(f"exauth: wrote {out}: a replica of {orgs[0].name} as read at "
               f"{obs.checked_at.isoformat()}; serve it with "
               f"`exauth lab serve --scenario {out}`", err=True)


@lab_group.command("scenarios")
def lab_scenarios() -> None:
    """List the built-in scenarios."""
    from lab.scenario import builtin_names, describe

    for name in builtin_names():
        click.echo(f"{name:<20} {describe(name)}")


# --- long-running processes ----------------------------------------------------------------


@main.command("bot")
@click.option("--http", "http_mode", is_flag=True,
              help="Serve Slack's HTTP requests instead of Socket Mode.")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def bot_command(ctx: Context, http_mode: bool, port: int) -> None:
    """Run the Slack bot (Socket Mode when $SLACK_APP_TOKEN is set, else --http)."""
    from bot.app import run
    from bot.slack import SlackNotConfigured

    settings = configured(ctx)

    def start() -> int:
        try:
            return run(settings, http=http_mode, port=port)
        except SlackNotConfigured as exc:  # a token or Slack itself: say which, plainly
            fail(str(exc))

    sys.exit(guarded(start))


@main.command("metrics")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.pass_obj
def metrics_command(ctx: Context, host: str, port: int) -> None:
    """Serve Prometheus metrics (GET /metrics) from Redis: for Socket Mode deployments,
    whose bot has no HTTP port (in HTTP mode the bot serves /metrics itself)."""
    from bot.metrics import serve

    sys.exit(guarded(serve, configured(ctx), host, port))


@main.command("worker")
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then exit.")
@click.pass_obj
def worker_command(ctx: Context, burst: bool) -> None:
    """Run an RQ worker for the exauth queues."""
    from workers.jobs.worker_process import run

    sys.exit(guarded(run, configured(ctx), burst=burst))


@main.command("rehearse")
@click.option("--org", "org_name", default=None, help="The org (default: the only one).")
@click.option("--action", "kind", default=None,
              type=click.Choice(["stage_new", "replace_now", "publish_next", "import_current",
                                 "import_next", "cleanup", "repair_backend"]),
              help="The change to rehearse (default: the one the status recommends).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def rehearse_command(ctx: Context, org_name: str | None, kind: str | None,
                     as_json: bool) -> None:
    """Try a change on a fresh replica of the org first (nothing reaches the org but the
    snapshot's reads): every step, its outcome and time on the replica's clock."""
    import getpass

    from bot.render.terminal import print_rehearsal
    from workers.jobs.queues import connect
    from workers.rehearsal.run_through import rehearse

    settings = configured(ctx, org_name)
    orgs = selected_orgs(settings, org_name)
    if len(orgs) > 1:
        fail(f"{len(orgs)} orgs are configured; name one with --org "
             f"({', '.join(o.name for o in orgs)})")
    conn = connect(settings.redis.url)
    report = guarded(rehearse, orgs[0], conn, kind=kind,
                     requester=f"local:{getpass.getuser()}")
    if as_json:
        emit_json([report])
    else:
        print_rehearsal(report)
    sys.exit(0 if report.get("ok") else 1)


@main.command("fix")
@click.option("--org", "org_name", default=None, help="The org (default: the only one).")
@click.pass_obj
def fix_command(ctx: Context, org_name: str | None) -> None:
    """Break-glass: run the recommended operation from a terminal, confirming each step."""
    from bot.breakglass import run

    sys.exit(guarded(run, configured(ctx, org_name), org_name))


@main.command("audit")
@click.option("--org", "org_name", default=None, help="Only this org (default: every org).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.pass_obj
def audit_command(ctx: Context, org_name: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log: every decision and step outcome, newest first."""
    from workers import audit
    from workers.jobs.queues import connect

    settings = configured(ctx, org_name, needs_org=False)
    entries = guarded(audit.entries, connect(settings.redis.url), org_name, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
    elif not entries:
        click.echo(f"No audit entries{f' for {org_name}' if org_name else ''}.")
    else:
        for entry in entries:
            click.echo(audit.format_entry(entry))


@main.command("cron")
@click.pass_obj
def cron_command(ctx: Context) -> None:
    """Run the single scheduler that enqueues each org's warning sweep on its cron."""
    from workers.jobs.cron import run

    sys.exit(guarded(run, configured(ctx)))


if __name__ == "__main__":  # pragma: no cover
    main()
