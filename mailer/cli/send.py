"""`mailer send`: parse the flags, call the campaign, print what it did."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from mailer import campaign, cron
from mailer.campaign import Plan
from mailer.cli.common import (
    Context,
    bounded,
    confirm,
    human,
    now_option,
    pass_ctx,
    print_notices,
    rate_text,
    shown,
    span,
)
from mailer.config import format_duration, with_overrides
from mailer.cron import DueEvent
from mailer.deliver.options import SendOptions
from mailer.deliver.summary import Progress, Summary


@click.command()
@click.argument("issue", required=False)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do everything but connect: print the plan, write sample .eml files.",
)
@click.option(
    "--to", "to", metavar="ADDRESS", help="Send one test copy to ADDRESS (no ledger entry)."
)
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option(
    "--subscribers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Subscriber CSV [the `subscribers` setting: subscribers.csv, or the store].",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Only readers with this tag (repeat: any of them) [the front matter's segment:].",
)
@click.option(
    "--rate",
    type=bounded("rate"),
    metavar="RATE",
    help=f"Pace over all connections: N/s, N/min, N/h ({span('rate')}), or 'off' [10/s].",
)
@click.option(
    "--batch-size",
    type=bounded("batch_size"),
    metavar="N",
    help=f"Messages per connection before reconnecting ({span('batch_size')}) [100].",
)
@click.option(
    "--pause",
    type=bounded("pause"),
    metavar="SECONDS",
    help=f"Seconds to wait between batches ({span('pause')}) [0].",
)
@click.option(
    "--connections",
    type=bounded("connections"),
    metavar="N",
    help=f"Parallel SMTP connections ({span('connections')}) [1].",
)
@click.option(
    "--max-attempts",
    type=bounded("max_attempts"),
    metavar="N",
    help=f"Tries per recipient on 4xx replies ({span('max_attempts')}) [5].",
)
@click.option(
    "--retry-delay",
    type=bounded("retry_delay"),
    metavar="SECONDS",
    help=f"Seconds before the first retry, doubling after ({span('retry_delay')}) [30].",
)
@click.option(
    "--retry-failed", is_flag=True, help="Also resend to recipients whose server said 5xx."
)
@click.option(
    "--due", is_flag=True, help="Send every scheduled issue whose time has come (for cron)."
)
@click.option("--force", is_flag=True, help="With --due: also send schedules older than max_late.")
@click.option(
    "--ledger-was-reset",
    is_flag=True,
    help="Send although the ledger is not the one earlier runs of the issue recorded in "
    "(deleted, replaced, or restored from an older backup): readers already sent may get it again.",
)
@click.option(
    "--now",
    "now_text",
    metavar="TIME",
    help="Pretend it is TIME (ISO 8601 with offset), for testing schedules.",
)
@pass_ctx
def send(
    ctx: Context,
    issue: str | None,
    dry_run: bool,
    to: str | None,
    yes: bool,
    subscribers: Path | None,
    tags: tuple[str, ...],
    rate: float | None,
    batch_size: int | None,
    pause: float | None,
    connections: int | None,
    max_attempts: int | None,
    retry_delay: float | None,
    retry_failed: bool,
    due: bool,
    force: bool,
    ledger_was_reset: bool,
    now_text: str | None,
) -> None:
    """Send ISSUE to every subscriber who has not had it yet.

    \b
    Without ISSUE: the newest issue in issues/ not yet sent to everyone.
    Re-running is always safe: the ledger (.mailer/ledger.db) remembers who got
    what, so an interrupted send resumes where it stopped, without duplicates.

    \b
    Examples:
      mailer send issue-2 --dry-run            the plan and sample .eml files
      mailer send issue-2 --to me@example.org  one test copy
      mailer send issue-2 --yes --rate 20/s --batch-size 200 --connections 2
      mailer send --due --yes                  from cron (see `mailer schedule --help`)
      mailer send issue-3 --tag paid           only readers tagged paid (the store's list)

    \b
    Exit codes: 0 all sent, 1 some failed for good (5xx), 75 some deferred
    (retry later) or another run holds the lock, 2 usage/config, 65 bad input,
    69 server unreachable, 77 login refused.
    """
    settings = with_overrides(
        ctx.settings,
        rate=rate,
        batch_size=batch_size,
        pause=pause,
        connections=connections,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
    )
    ctx.settings = settings
    options = SendOptions.from_settings(settings, retry_failed=retry_failed)
    if due:
        now = now_option(now_text)
        sys.exit(_due(ctx, options, now, force, dry_run, subscribers, ledger_was_reset))
    if to:
        sys.exit(_test_copy(ctx, issue, to, dry_run))
    listed = campaign.roster(settings, subscribers, dry_run=dry_run)
    path = listed.path
    if subscribers is None and path is not None and path != settings.root / settings.subscribers:
        click.echo(f"no {settings.subscribers}: using {path.name} for this dry run")
    if issue is None:
        issue = campaign.pick_issue(settings, listed)
        click.echo(f"no ISSUE given: {issue} is the newest issue not yet sent to everyone")
    segment = _tags(tags)
    planned = campaign.plan(settings, issue, listed, options, dry_run=dry_run, tags=segment)
    print_notices(planned.email)
    if dry_run:
        rehearsal = campaign.dry_run(settings, planned)
        _print_dry_run(ctx, planned, rehearsal.summary, rehearsal.samples)
        sys.exit(rehearsal.summary.exit_code)
    where = planned.subscribers.label
    confirm(f"Send {planned.issue!r} to up to {planned.rows} subscribers in {where}?", yes)
    bar = _Progress(ctx, planned, quiet=False)
    try:
        summary = campaign.send(
            settings,
            planned,
            on_start=bar.start,
            on_progress=bar.update,
            ledger_was_reset=ledger_was_reset,
        )
    finally:
        bar.close()
    _report(summary, planned, quiet=False)
    sys.exit(summary.exit_code)


def _tags(given: tuple[str, ...]) -> tuple[str, ...] | None:
    """--tag as stored tags; None when not given (the issue's own segment then)."""
    from mailer.state.reader_rows import tag_name

    try:
        return tuple(dict.fromkeys(tag_name(t) for t in given)) if given else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tag") from None


class _Progress:
    """A progress bar on a terminal; in logs (cron) a plain line every 10 seconds."""

    def __init__(self, ctx: Context, planned: Plan | None, *, quiet: bool) -> None:
        self.ctx, self.planned, self.quiet = ctx, planned, quiet
        self.bar: object | None = None
        self.seen = 0
        self.last = time.monotonic()

    def start(self) -> None:
        if self.quiet or self.planned is None or not self.planned.owed:
            return  # nobody is owed a copy: nothing will connect
        s, o = self.ctx.settings, self.planned.options
        where = f"{s.smtp_host}:{s.smtp_port}" if s.transport == "smtp" else "Amazon SES"
        capped = " (SES's MaxSendRate)" if self.planned.ceiling == o.rate else ""
        shared = ", the list shared through the database" if s.database_url else ""
        click.echo(
            f"sending {self.planned.issue} via {where}"
            f" ({o.connections} connection(s), rate {rate_text(o.rate)}{capped}{shared})"
        )
        if sys.stderr.isatty():
            bar = click.progressbar(
                length=max(self.planned.rows, 1),
                label="sending",
                show_eta=True,
                show_pos=True,
                file=sys.stderr,
            )
            self.bar = bar.__enter__()

    def update(self, p: Progress) -> None:
        if self.bar is not None:
            if p.done > self.seen:
                self.bar.update(p.done - self.seen)  # type: ignore[attr-defined]
                self.seen = p.done
        elif time.monotonic() - self.last >= 10:
            self.last = time.monotonic()
            click.echo(
                f"  {p.done}/{p.total}: {p.sent} sent, {p.deferred} deferred, {p.failed} failed",
                err=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)  # type: ignore[attr-defined]
            self.bar = None


def _report(s: Summary, planned: Plan, *, quiet: bool) -> None:
    if quiet and not (s.attempted or s.error or s.interrupted or s.given_up):
        return
    rate = s.sent / s.elapsed if s.elapsed else 0.0
    click.echo(
        f"{s.issue}: sent {s.sent}, deferred {s.deferred}, failed {s.failed}"
        f" in {s.elapsed:.1f}s ({rate:.0f}/s)"
    )
    extras = [
        (s.already_done, "already sent earlier"),
        (s.failed_earlier, "failed for good earlier (--retry-failed sends to them again)"),
        (s.suppressed, "suppressed (unsubscribed/bounced)"),
        (s.skipped, "skipped in the list (unsubscribed or duplicate)"),
        (s.invalid, "invalid rows"),
        (s.not_due, "deferred earlier, retry not due yet"),
        (s.slowdowns, f"slow-downs for a throttling server ({_rates(s)})"),
    ]
    for count, what in extras:
        if count:
            click.echo(f"  {count} {what}")
    for problem in planned.problems:
        click.echo(f"  line {problem.line}: {problem.reason} '{problem.email}'".rstrip(), err=True)
    for address, reply in s.failures[:20]:
        click.echo(f"  {address}: {reply}", err=True)
    if s.given_up:
        click.echo(
            f"  {s.given_up} deferred for longer than give_up_after: now failed for good"
            f" (`mailer status {s.issue} --failed` lists them)"
        )
    if s.reconciled:
        many = "s" if s.reconciled != 1 else ""
        click.echo(f"  {s.reconciled} outcome{many} of an earlier run recorded from its journal")
    if s.error:
        click.secho(f"error: {s.error}", fg="red", err=True)
    if s.interrupted:
        click.echo(
            f"interrupted: run `mailer send {s.issue}` again to resume ({s.signal}; {_doubt(s)})"
        )
    elif s.deferred:
        click.echo(
            f"{s.deferred} deferred: a later `mailer send {s.issue}` retries them"
            " once their next try is due (`mailer status` shows when; cron's --due does it)"
        )


def _rates(s: Summary) -> str:
    """How far the rate went down, and where it was when the run ended."""
    low, end = rate_text(s.lowest_rate), rate_text(s.end_rate)
    return f"down to {low}, {end} at the end" if end != low else f"down to {low}"


def _doubt(s: Summary) -> str:
    """Who may get a second copy, counted: never a promise the run cannot keep."""
    if not s.twice:
        return "every copy handed to the server has its outcome recorded: nobody gets two copies"
    why = []
    if s.unrecorded:
        why.append(f"{s.unrecorded} handed to the server had no outcome recorded when it stopped")
    if s.uncertain:
        why.append(f"{s.uncertain} lost in flight after the whole message went out")
    copies = "1 copy" if s.twice == 1 else f"{s.twice} copies"
    return f"{copies} may arrive twice: {'; '.join(why)}"


def _print_dry_run(ctx: Context, planned: Plan, s: Summary, samples: tuple[Path, ...]) -> None:
    options = planned.options
    click.echo(f"dry run of {s.issue}: nothing was sent, the ledger is untouched")
    click.echo(f"  subject      {planned.email.subject}")
    click.echo(f"  from         {ctx.settings.from_}")
    if planned.subscribers.path is None or planned.subscribers.tags:
        click.echo(f"  list         {planned.subscribers.label}")
    click.echo(f"  rows read    {s.rows + s.invalid + s.skipped}")
    click.echo(f"  recipients   {s.sent}")
    for count, what in [
        (s.already_done, "already sent"),
        (s.failed_earlier, "failed (5xx)"),
        (s.suppressed, "suppressed"),
        (s.not_due, "retry later"),
        (s.skipped, "skipped"),
        (s.invalid, "invalid"),
    ]:
        if count:
            click.echo(f"  {what:<12} {count}")
    for problem in planned.skipped_rows + planned.problems:
        click.echo(f"    line {problem.line}: {problem.email or '-'}: {problem.reason}")
    click.echo(
        f"  batches      {planned.batches} of up to {options.batch_size},"
        f" {options.connections} connection(s)"
    )
    duration = human(planned.estimate)
    click.echo(f"  duration     ~{duration} at {rate_text(options.rate)}")
    click.echo(f"  html         {planned.email.html_bytes / 1024:.1f} KB")
    for path in samples:
        click.echo(f"  sample       {shown(path, ctx.settings.root)}")


def _test_copy(ctx: Context, issue: str | None, to: str, dry_run: bool) -> int:
    if issue is None:
        raise click.UsageError("--to needs an ISSUE")
    try:
        copy = campaign.test_copy(ctx.settings, issue, to, dry_run=dry_run)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    if copy.path is not None:
        where = shown(copy.path, ctx.settings.root)
        click.echo(f"dry run: the test copy for {copy.address} is {where}")
    else:
        click.echo(f"test copy of {copy.issue} to {copy.address}: {copy.reply}")
    return copy.exit_code


def _due(
    ctx: Context,
    options: SendOptions,
    now: datetime,
    force: bool,
    dry_run: bool,
    subscribers: Path | None,
    ledger_was_reset: bool,
) -> int:
    """Cron's entry point: one line per action, silence when nothing is due."""
    events: list[DueEvent] = []
    log = _Progress(ctx, None, quiet=True)
    for event in cron.send_due(
        ctx.settings,
        options,
        now,
        force=force,
        dry=dry_run,
        subscribers=subscribers,
        on_progress=log.update,
        ledger_was_reset=ledger_was_reset,
    ):
        events.append(event)
        _print_due(ctx, event)
    return cron.due_exit_code(events)


def _print_due(ctx: Context, event: DueEvent) -> None:
    if event.kind == "problem":
        click.echo(f"error: {event.text}", err=True)
    elif event.kind == "stale" and event.entry is not None:
        click.echo(
            f"{event.issue}: not sent: it was due {event.entry.send_at:%Y-%m-%d %H:%M} UTC,"
            f" more than {format_duration(ctx.settings.max_late)} ago; send it with --due --force"
            f" (or `mailer send {event.issue}`), or cancel it",
            err=True,
        )
    elif event.kind == "locked":
        click.echo(f"{event.issue}: another mailer run is sending it; leaving it to that run")
    elif event.summary is not None and event.plan is not None:
        if event.summary.dry_run:
            _print_dry_run(ctx, event.plan, event.summary, event.samples)
        else:
            _report(event.summary, event.plan, quiet=True)
