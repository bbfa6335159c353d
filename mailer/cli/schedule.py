"""`mailer schedule`."""

from __future__ import annotations

import click

from mailer import schedule as schedule_mod
from mailer.cli.common import Context, now_option, pass_ctx, warn
from mailer.compose import load
from mailer.compose.issue import slug_of
from mailer.state.ledger import existing_ledger, open_ledger
from mailer.when import parse_when, zone


@click.command("schedule")
@click.argument("issue", required=False)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="When: '2026-12-01 09:00' (with --tz) or ISO 8601 with an offset.",
)
@click.option("--tz", metavar="ZONE", help="IANA time zone for --at, e.g. Europe/Berlin.")
@click.option("--list", "show", is_flag=True, help="List scheduled issues, their times and states.")
@click.option("--cancel", is_flag=True, help="Cancel ISSUE's schedule.")
@click.option("--now", "now_text", metavar="TIME", help="Pretend it is TIME (for --list).")
@pass_ctx
def schedule(
    ctx: Context,
    issue: str | None,
    at: str | None,
    tz: str | None,
    show: bool,
    cancel: bool,
    now_text: str | None,
) -> None:
    """Schedule ISSUE for a time; cron's `mailer send --due --yes` sends it then.

    \b
    A `send_at:` key in the issue's front matter schedules it too.
    In crontab (every 5 minutes; it does nothing when nothing is due):
      */5 * * * * cd /path/to/newsletter && mailer send --due --yes >> .mailer/cron.log 2>&1
    """
    now = now_option(now_text)
    settings = ctx.settings
    if show or (issue is None and not at and not cancel):
        ledger = existing_ledger(settings)
        entries, problems = schedule_mod.entries(settings, ledger)
        if ledger is not None:
            ledger.close()
        for problem in problems:
            warn(problem)
        if not entries:
            click.echo("nothing scheduled")
        for e in entries:
            at_utc = f"{e.send_at:%Y-%m-%d %H:%M} UTC"
            click.echo(
                f"{e.issue:<24} {at_utc}  {e.status(now, settings.max_late):<9} ({e.source})"
            )
        return
    if issue is None:
        raise click.UsageError("name the ISSUE to schedule or cancel")
    slug = slug_of(load.resolve(issue, settings.root))
    if cancel:
        with open_ledger(settings) as ledger:
            source = schedule_mod.cancel(settings, ledger, slug)
        if source == schedule_mod.FRONT_MATTER:
            click.echo(f"{slug}: schedule cancelled (its front matter send_at is now ignored)")
        else:
            click.echo(f"{slug}: schedule cancelled")
        return
    if not at:
        raise click.UsageError("give --at TIME (and --tz ZONE), --list or --cancel")
    try:
        when = parse_when(at, tz)
        where = zone(tz) if tz else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at/--tz") from None
    with open_ledger(settings) as ledger:
        schedule_mod.set_time(ledger, slug, when)
    local = f" ({when.astimezone(where):%Y-%m-%d %H:%M %Z})" if where else ""
    click.echo(f"{slug}: scheduled for {when:%Y-%m-%d %H:%M} UTC{local}")
    if when < now:
        warn(
            "that time has passed: the next `mailer send --due` sends it"
            " (unless it is older than max_late)"
        )
