"""The `mailer` command: a thin shell over the pipeline, and the only module that prints."""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from . import config as config_mod
from . import issue as issue_mod
from . import schedule as schedule_mod
from .config import Settings
from .errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, InputError, LockedError, MailerError
from .ledger import DEFERRED, FAILED, SENT, Ledger, lock
from .message import Composer
from .render import GMAIL_CLIP_BYTES, Email, render
from .send import Progress, Sender, SendOptions, Summary, check_preflight, estimate
from .subscribers import Subscriber, SubscriberList
from .transport import DryRunTransport, SMTPTransport
from .when import now as current_time
from .when import parse_when, zone


@dataclass
class Context:
    """What every command gets: the project's settings, read once."""

    settings: Settings

    def load_issue(self, name: str) -> issue_mod.Issue:
        path = issue_mod.resolve(name, self.settings.root)
        return issue_mod.read(
            path, default_lang=self.settings.lang, base_url=self.settings.base_url
        )

    def render(self, name: str) -> Email:
        return render(self.load_issue(name), self.settings)

    def ledger(self, *, create: bool = True) -> Ledger | None:
        path = self.settings.state_path
        if not create and not (path / "ledger.db").exists():
            return None
        return Ledger(path)


pass_ctx = click.make_pass_decorator(Context)


def _warn(text: str) -> None:
    click.secho(f"warning: {text}", fg="yellow", err=True)


def _print_notices(email: Email, fold: bool = True) -> None:
    """Warnings; unless `build` asks for all, runs of one kind fold into one line."""
    by_code: dict[str, list[issue_mod.Notice]] = {}
    for notice in email.notices:
        by_code.setdefault(notice.code, []).append(notice)
    for notices in by_code.values():
        if len(notices) <= 3 or not fold:
            for notice in notices:
                _warn(str(notice))
            continue
        lines = ", ".join(str(n.line) for n in notices if n.line)
        what = notices[0].message.split(":")[0]
        _warn(f"{len(notices)} times: {what} (lines {lines}; `mailer build` lists them)")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-C",
    "--project",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Run as if started in this folder (the one holding issues/ and mailer.toml).",
)
@click.option(
    "--templates",
    type=click.Path(file_okay=False, path_type=Path),
    help="A folder of templates that overrides the built-in ones (newsletter.mjml.j2, ...).",
)
@click.version_option(package_name="mailer")
@click.pass_context
def main(ctx: click.Context, project: Path | None, templates: Path | None) -> None:
    """Compose a newsletter issue from Markdown and send it, once per subscriber, never twice.

    \b
    An issue is issues/NAME.md: YAML front matter (title, excerpt, ...) and Markdown.
    Settings come from mailer.toml, then .env / MAILER_* variables, then flags.

    \b
    Typical use:
      mailer build issue-2               render build/issue-2/email.html and email.txt
      mailer preview issue-2             see it in a browser, live while you edit
      mailer send issue-2 --dry-run      everything but the sending
      mailer send issue-2                send, asking first on a terminal
      mailer status issue-2              who got it, who did not and why
    """
    if project is not None:
        os.chdir(project)
    settings = config_mod.load(
        Path.cwd(), overrides={"templates": str(templates) if templates else None}
    )
    ctx.obj = Context(settings)


# -- build --------------------------------------------------------------------------------


@main.command()
@click.argument("issue")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder [build/ISSUE]."
)
@pass_ctx
def build(ctx: Context, issue: str, out: Path | None) -> None:
    """Render ISSUE (a name in issues/ or a path) to email.html and email.txt.

    The files are what one reader would get, filled in for an example subscriber.
    """
    started = time.perf_counter()
    email = ctx.render(issue)
    out = out or ctx.settings.root / "build" / email.issue.slug
    out.mkdir(parents=True, exist_ok=True)
    html, text = _sample(ctx, email)
    (out / "email.html").write_text(html, encoding="utf-8")
    (out / "email.txt").write_text(text, encoding="utf-8")
    elapsed = time.perf_counter() - started
    kb = email.html_bytes / 1024
    click.echo(f"built {out / 'email.html'} and email.txt in {elapsed * 1000:.0f} ms")
    click.echo(f"  subject    {email.subject}")
    click.echo(f"  preheader  {email.preheader}")
    size_note = "  (over 102 KB: Gmail will clip it)" if email.html_bytes > GMAIL_CLIP_BYTES else ""
    click.echo(f"  html       {kb:.1f} KB{size_note}")
    click.echo(f"  words      {email.words}")
    click.echo(f"  links      {email.links}")
    click.echo(f"  images     {email.images}")
    _print_notices(email, fold=False)


def _sample(ctx: Context, email: Email) -> tuple[str, str]:
    """The HTML and text as an example reader would see them."""
    composer = Composer(email, _sample_settings(ctx.settings))
    reader = Subscriber(email=config_mod.EXAMPLE_READER, name="", fields={}, line=0)
    return composer.personalise(reader, composer.unsubscribe_url(reader.email) or "#unsubscribe")


def _sample_settings(settings: Settings) -> Settings:
    if settings.from_:
        return settings
    return config_mod.with_overrides(settings, from_=config_mod.EXAMPLE_FROM)


# -- send ---------------------------------------------------------------------------------


def _options(settings: Settings, **flags: Any) -> SendOptions:
    s = config_mod.with_overrides(settings, **flags)
    return SendOptions(
        rate=config_mod.parse_rate(s.rate),
        batch_size=s.batch_size,
        pause=s.pause,
        connections=s.connections,
        max_attempts=s.max_attempts,
        retry_delay=s.retry_delay,
    )


def _subscriber_file(ctx: Context, given: Path | None, dry_run: bool) -> Path:
    if given is not None:
        return given
    default = ctx.settings.root / ctx.settings.subscribers
    example = ctx.settings.root / config_mod.EXAMPLE_SUBSCRIBERS
    if not default.exists() and dry_run and example.exists():
        click.echo(
            f"no {ctx.settings.subscribers}: using {example.name} for this dry run"
        )
        return example
    if not default.exists():
        raise InputError(
            f"no subscriber list at {default}",
            hint="pass --subscribers FILE or set `subscribers` in mailer.toml",
        )
    return default


def _pick_issue(ctx: Context, subscribers: Path) -> str:
    """The newest issue that some active subscriber has not been sent yet."""
    issues_dir = ctx.settings.root / "issues"
    paths = sorted(issues_dir.glob("*.md"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not paths:
        raise InputError(f"no issues in {issues_dir}", hint="create issues/NAME.md")
    ledger = ctx.ledger(create=False)
    suppressed = ledger.suppressed_set() if ledger is not None else set()
    for path in paths:
        if ledger is None:
            return path.stem
        skip = ledger.done(path.stem) | suppressed
        if any(s.email.lower() not in skip for s in SubscriberList(subscribers)):
            return path.stem
    raise InputError("every issue in issues/ has been sent to everyone on the list")


@main.command()
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
    help="Subscriber CSV [subscribers.csv].",
)
@click.option("--rate", help="Pace over all connections: N/s, N/min, N/h, or 'off' [10/s].")
@click.option("--batch-size", type=int, help="Messages per connection before reconnecting [100].")
@click.option("--pause", type=float, help="Seconds to wait between batches [0].")
@click.option("--connections", type=int, help="Parallel SMTP connections [1].")
@click.option("--max-attempts", type=int, help="Tries per recipient on 4xx replies [5].")
@click.option(
    "--retry-delay", type=float, help="Seconds before the first retry, doubling after [30]."
)
@click.option(
    "--retry-failed", is_flag=True, help="Also resend to recipients whose server said 5xx."
)
@click.option(
    "--due", is_flag=True, help="Send every scheduled issue whose time has come (for cron)."
)
@click.option("--force", is_flag=True, help="With --due: also send schedules older than max_late.")
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
    rate: str | None,
    batch_size: int | None,
    pause: float | None,
    connections: int | None,
    max_attempts: int | None,
    retry_delay: float | None,
    retry_failed: bool,
    due: bool,
    force: bool,
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

    \b
    Exit codes: 0 all sent, 1 some failed for good (5xx), 75 some deferred
    (retry later) or another run holds the lock, 2 usage/config, 65 bad input,
    69 server unreachable, 77 login refused.
    """
    flags = dict(
        rate=rate,
        batch_size=batch_size,
        pause=pause,
        connections=connections,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
    )
    options = _options(ctx.settings, **flags)
    if retry_failed:
        options = SendOptions(**{**options.__dict__, "retry_failed": True})
    if due:
        moment = _now_option(now_text)
        sys.exit(
            _send_due(ctx, options, moment, force=force, dry_run=dry_run, subscribers=subscribers)
        )
    if to:
        sys.exit(_send_test_copy(ctx, issue, to, dry_run=dry_run))
    path = _subscriber_file(ctx, subscribers, dry_run)
    if issue is None:
        issue = _pick_issue(ctx, path)
        click.echo(f"no ISSUE given: {issue} is the newest issue not yet sent to everyone")
    summary = _run_send(ctx, issue, path, options, dry_run=dry_run, yes=yes)
    sys.exit(summary.exit_code)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise MailerError(
            "refusing a real send without a terminal to confirm on",
            hint="add --yes (cron), or --dry-run to see what would happen",
        )
    if not click.confirm(question, default=False):
        raise click.Abort()


def _run_send(
    ctx: Context,
    issue: str,
    path: Path,
    options: SendOptions,
    *,
    dry_run: bool,
    yes: bool,
    quiet: bool = False,
) -> Summary:
    settings = ctx.settings
    email = ctx.render(issue)
    slug = email.issue.slug
    check_preflight(email, settings, dry_run=dry_run)
    composer = Composer(email, settings)
    _print_notices_once(email, quiet)
    subscriber_list = SubscriberList(path)
    composer.check_fields(set(subscriber_list.columns))
    total = subscriber_list.rows_in_file
    if dry_run:
        return _dry_run(ctx, email, composer, subscriber_list, total, options)
    _confirm(f"Send {slug!r} to up to {total} subscribers in {path.name}?", yes)
    ledger = ctx.ledger()
    assert ledger is not None
    try:
        with lock(settings.state_path, f"send-{slug}"):
            sender = Sender(
                email,
                composer,
                lambda: SMTPTransport(settings, composer.envelope_from),
                ledger,
                options,
            )
            if not quiet:
                click.echo(
                    f"sending {slug} via {settings.smtp_host}:{settings.smtp_port} "
                    f"({options.connections} connection(s), rate {_rate_text(options)})"
                )
            summary = _with_progress(sender, subscriber_list, total, quiet)
    except LockedError as exc:
        raise LockedError(
            f"another mailer run is sending {slug} ({exc.message}); not starting a second one",
            hint="wait for it to finish; re-running afterwards is safe",
        ) from None
    finally:
        ledger.close()
    _report(summary, subscriber_list, quiet)
    return summary


def _print_notices_once(email: Email, quiet: bool) -> None:
    if not quiet:
        _print_notices(email)


def _with_progress(sender: Sender, subscribers: SubscriberList, total: int, quiet: bool) -> Summary:
    if quiet or not sys.stderr.isatty():
        last = [time.monotonic()]

        def log(p: Progress) -> None:  # plain lines for logs: one every 10 seconds
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                click.echo(
                    f"  {p.done}/{p.total}: {p.sent} sent, {p.deferred} deferred,"
                    f" {p.failed} failed",
                    err=True,
                )

        return sender.run(subscribers, total, log)
    with click.progressbar(
        length=max(total, 1), label="sending", show_eta=True, show_pos=True, file=sys.stderr
    ) as bar:
        seen = [0]

        def update(p: Progress) -> None:
            if p.done > seen[0]:
                bar.update(p.done - seen[0])
                seen[0] = p.done

        return sender.run(subscribers, total, update)


def _report(summary: Summary, subscribers: SubscriberList, quiet: bool) -> None:
    s = summary
    s.invalid = subscribers.problem_count
    s.skipped = subscribers.skipped_count
    if quiet and not (s.attempted or s.error or s.interrupted):
        return
    rate = s.sent / s.elapsed if s.elapsed else 0.0
    verb = "would send" if s.dry_run else "sent"
    click.echo(
        f"{s.issue}: {verb} {s.sent}, deferred {s.deferred}, failed {s.failed}"
        f" in {s.elapsed:.1f}s ({rate:.0f}/s)"
    )
    extras = [
        (s.already_done, "already sent earlier"),
        (s.suppressed, "suppressed (unsubscribed/bounced)"),
        (s.skipped, "skipped in the list (unsubscribed or duplicate)"),
        (s.invalid, "invalid rows"),
        (s.not_due, "deferred earlier, retry not due yet"),
        (s.slowdowns, "slow-downs for a throttling server"),
    ]
    for count, what in extras:
        if count:
            click.echo(f"  {count} {what}")
    for problem in subscribers.problems[:20]:
        click.echo(f"  line {problem.line}: {problem.reason} {problem.email!r}".rstrip(), err=True)
    for address, reply in s.failures[:20]:
        click.echo(f"  {address}: {reply}", err=True)
    if s.error:
        click.secho(f"error: {s.error}", fg="red", err=True)
    if s.interrupted:
        click.echo(
            f"interrupted: run `mailer send {s.issue}` again to resume (nobody gets two copies)"
        )
    elif s.deferred and not s.dry_run:
        click.echo(f"{s.deferred} deferred: a later `mailer send {s.issue}` retries them")


def _dry_run(
    ctx: Context,
    email: Email,
    composer: Composer,
    subscribers: SubscriberList,
    total: int,
    options: SendOptions,
) -> Summary:
    out = ctx.settings.root / "build" / email.issue.slug / "dry-run"
    for old in out.glob("*.eml"):
        old.unlink()
    transport = DryRunTransport(out, keep=3)
    ledger = ctx.ledger(create=False)
    sender = Sender(email, composer, lambda: transport, ledger, options, dry_run=True)
    summary = sender.run(subscribers, total)
    if ledger is not None:
        ledger.close()
    summary.invalid = subscribers.problem_count
    summary.skipped = subscribers.skipped_count
    s = summary
    batches = -(-s.sent // options.batch_size) if s.sent else 0
    rate_text = _rate_text(options)
    click.echo(f"dry run of {email.issue.slug}: nothing was sent, the ledger is untouched")
    click.echo(f"  subject      {email.subject}")
    click.echo(f"  from         {ctx.settings.from_}")
    click.echo(f"  rows read    {s.rows + s.invalid + s.skipped}")
    click.echo(f"  recipients   {s.sent}")
    for count, what in [
        (s.already_done, "already sent"),
        (s.suppressed, "suppressed"),
        (s.not_due, "retry later"),
        (s.skipped, "skipped"),
        (s.invalid, "invalid"),
    ]:
        if count:
            click.echo(f"  {what:<12} {count}")
    for problem in subscribers.skipped[:20] + subscribers.problems[:20]:
        click.echo(f"    line {problem.line}: {problem.email or '-'}: {problem.reason}")
    click.echo(
        f"  batches      {batches} of up to {options.batch_size},"
        f" {options.connections} connection(s)"
    )
    click.echo(f"  duration     ~{_human(estimate(s.sent, options))} at {rate_text}")
    click.echo(f"  html         {email.html_bytes / 1024:.1f} KB")
    for path in transport.written:
        click.echo(f"  sample       {_shown(path, ctx.settings.root)}")
    return summary


def _rate_text(options: SendOptions) -> str:
    return "unlimited" if options.rate == float("inf") else f"{options.rate:g}/s"


def _shown(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _send_test_copy(ctx: Context, issue: str | None, to: str, *, dry_run: bool) -> int:
    from .subscribers import check_email

    if issue is None:
        raise click.UsageError("--to needs an ISSUE")
    try:
        address = check_email(to)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    email = ctx.render(issue)
    check_preflight(email, ctx.settings, dry_run=dry_run)
    composer = Composer(email, ctx.settings)
    if dry_run:
        out = ctx.settings.root / "build" / email.issue.slug / "test-copy.eml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(composer.compose(Subscriber(address, "", {}, 0)).data)
        click.echo(f"dry run: the test copy for {address} is {_shown(out, ctx.settings.root)}")
        return 0
    transport = SMTPTransport(ctx.settings, composer.envelope_from)
    transport.open()
    try:
        result = transport.send(composer.compose(Subscriber(address, "", {}, 0)))
    finally:
        transport.close()
    click.echo(f"test copy of {email.issue.slug} to {address}: {result.reply}")
    return 0 if result.state == SENT else (1 if result.state == FAILED else EXIT_TEMPFAIL)


def _now_option(text: str | None) -> datetime:
    """--now, else MAILER_NOW, else the clock."""
    try:
        return parse_when(text) if text else current_time()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now" if text else "MAILER_NOW") from None


def _send_due(
    ctx: Context,
    options: SendOptions,
    now: datetime,
    *,
    force: bool,
    dry_run: bool,
    subscribers: Path | None,
) -> int:
    """Cron's entry point: one line per action, silence when nothing is due."""
    ledger = ctx.ledger()
    assert ledger is not None
    with ledger:
        entries, problems = schedule_mod.entries(ctx.settings, ledger)
    limit = schedule_mod.max_late(ctx.settings)
    code = EXIT_OK
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
        code = EXIT_FAILED
    for entry in entries:
        status = entry.status(now, limit)
        if status == schedule_mod.STALE and not force:
            click.echo(
                f"{entry.issue}: not sent: it was due {entry.send_at:%Y-%m-%d %H:%M} UTC,"
                f" more than {ctx.settings.max_late} ago; send it with --due --force"
                f" (or `mailer send {entry.issue}`), or cancel it",
                err=True,
            )
            code = max(code, EXIT_FAILED)
            continue
        if status not in (schedule_mod.DUE, schedule_mod.STALE, schedule_mod.SENDING):
            continue
        path = _subscriber_file(ctx, subscribers, dry_run)
        try:
            summary = _run_send(
                ctx, entry.issue, path, options, dry_run=dry_run, yes=True, quiet=True
            )
        except LockedError:
            click.echo(f"{entry.issue}: another mailer run is sending it; leaving it to that run")
            continue
        if not dry_run:
            # "sending" once a copy went out (finishing it is then never stale); "sent" when
            # nobody is left. A run that failed before sending leaves the schedule as it was.
            finished = not (summary.deferred or summary.not_due or summary.interrupted)
            state = "sent" if finished and not summary.error else "sending"
            if state == "sent" or summary.attempted or summary.already_done:
                with Ledger(ctx.settings.state_path) as ledger:
                    if ledger.schedule(entry.issue) is None:
                        ledger.set_schedule(entry.issue, entry.send_at)
                    ledger.set_schedule_state(entry.issue, state)
        if summary.failed or summary.error:
            code = max(code, summary.exit_code)
        if summary.interrupted:
            return EXIT_TEMPFAIL
    return code


@main.command("schedule")
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
    now = _now_option(now_text)
    if show or (issue is None and not at and not cancel):
        ledger = ctx.ledger(create=False)
        entries, problems = schedule_mod.entries(ctx.settings, ledger)
        if ledger is not None:
            ledger.close()
        for problem in problems:
            _warn(problem)
        if not entries:
            click.echo("nothing scheduled")
        limit = schedule_mod.max_late(ctx.settings)
        for e in entries:
            zone_note = f"{e.send_at:%Y-%m-%d %H:%M} UTC"
            click.echo(f"{e.issue:<24} {zone_note}  {e.status(now, limit):<9} ({e.source})")
        return
    if issue is None:
        raise click.UsageError("name the ISSUE to schedule or cancel")
    slug = issue_mod.resolve(issue, ctx.settings.root).stem
    ledger = ctx.ledger()
    assert ledger is not None
    with ledger:
        if cancel:
            if ledger.cancel_schedule(slug):
                click.echo(f"{slug}: schedule cancelled")
            elif (row := ledger.schedule(slug)) is not None:
                raise InputError(
                    f"{slug} is {row.state}; only a schedule not yet started can be cancelled"
                )
            else:
                entries, _ = schedule_mod.entries(ctx.settings, ledger)
                if any(e.issue == slug for e in entries):
                    ledger.set_schedule(slug, next(e.send_at for e in entries if e.issue == slug))
                    ledger.cancel_schedule(slug)
                    click.echo(
                        f"{slug}: schedule cancelled (its front matter send_at is now ignored)"
                    )
                else:
                    raise InputError(f"{slug} is not scheduled (or is already sending)")
            return
        if not at:
            raise click.UsageError("give --at TIME (and --tz ZONE), --list or --cancel")
        try:
            when = parse_when(at, tz)
            where = zone(tz) if tz else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--at/--tz") from None
        schedule_row = ledger.schedule(slug)
        if schedule_row is not None and schedule_row.state in ("sending", "sent"):
            raise InputError(f"{slug} is already {schedule_row.state}; it will not be sent twice")
        ledger.set_schedule(slug, when)
    local = f" ({when.astimezone(where):%Y-%m-%d %H:%M %Z})" if where else ""
    click.echo(f"{slug}: scheduled for {when:%Y-%m-%d %H:%M} UTC{local}")
    if when < now:
        _warn(
            "that time has passed: the next `mailer send --due` sends it"
            " (unless it is older than max_late)"
        )


# -- status -------------------------------------------------------------------------------


@main.command()
@click.argument("issue")
@click.option(
    "--failed",
    "only_failed",
    is_flag=True,
    help="List who did not get it (failed and deferred) and why.",
)
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    help="With --failed: CSV (email,state,attempts,reply,updated_at).",
)
@click.option(
    "--subscribers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Count pending against this list.",
)
@pass_ctx
def status(
    ctx: Context, issue: str, only_failed: bool, as_csv: bool, subscribers: Path | None
) -> None:
    """Show how ISSUE's send went: sent, deferred, failed, pending."""
    slug = Path(issue).stem
    ledger = ctx.ledger(create=False)
    if ledger is None:
        raise InputError(f"nothing has been sent yet (no ledger in {ctx.settings.state_path})")
    with ledger:
        if only_failed:
            rows = [d for d in ledger.deliveries(slug) if d.state in (FAILED, DEFERRED)]
            if as_csv:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow(["email", "state", "attempts", "reply", "updated_at"])
                for d in rows:
                    writer.writerow(
                        [d.email, d.state, d.attempts, d.last_reply, d.updated_at.isoformat()]
                    )
                return
            for d in rows:
                click.echo(f"{d.email}  {d.state}  attempts={d.attempts}  {d.last_reply}")
            return
        counts = ledger.counts(slug)
        path = subscribers or ctx.settings.root / ctx.settings.subscribers
        pending = None
        if path.exists():
            skip = {d.email for d in ledger.deliveries(slug)} | ledger.suppressed_set()
            pending = sum(1 for s in SubscriberList(path) if s.email.lower() not in skip)
        click.echo(f"{slug}")
        click.echo(f"  sent      {counts[SENT]}")
        click.echo(f"  deferred  {counts[DEFERRED]}")
        click.echo(f"  failed    {counts[FAILED]}")
        click.echo(f"  pending   {pending if pending is not None else '? (no subscriber list)'}")
        recent = [d for d in ledger.deliveries(slug) if d.state != SENT][-5:]
        if recent:
            click.echo("  last problems:")
            for d in recent:
                click.echo(f"    {d.email}: {d.last_reply}")


# -- subscribers --------------------------------------------------------------------------


@main.group()
def subscribers() -> None:
    """Check or export the subscriber list."""


@subscribers.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_ctx
def subscribers_check(ctx: Context, path: Path | None) -> None:
    """Validate a subscriber CSV without sending anything (exit 65 if any row is bad)."""
    path = path or ctx.settings.root / ctx.settings.subscribers
    listing = SubscriberList(path)
    good = sum(1 for _ in listing)
    click.echo(
        f"{path}: {good} subscribers, {listing.problem_count} invalid,"
        f" {listing.skipped_count} skipped"
    )
    for p in listing.skipped[:50]:
        click.echo(f"  line {p.line}: skipped: {p.email or '-'}: {p.reason}")
    for p in listing.problems[:200]:
        click.echo(f"  line {p.line}: invalid: {p.email or '-'}: {p.reason}")
    if listing.problem_count:
        sys.exit(65)


# -- preview ------------------------------------------------------------------------------


@main.command()
@click.argument("issue")
@click.option("--port", type=int, default=8025, show_default=True, help="Port to serve on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you ask).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the preview as static files to this folder instead of serving it.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Show the headers this subscriber would get [the first in the list].",
)
@pass_ctx
def preview(
    ctx: Context,
    issue: str,
    port: int,
    host: str,
    no_open: bool,
    out: Path | None,
    as_email: str | None,
) -> None:
    """Preview ISSUE in a browser: phone and desktop widths, plaintext, headers, warnings.

    The page updates by itself when the issue, a template or mailer.toml changes.
    """
    from . import preview as preview_mod

    if out is not None:
        written = preview_mod.write_static(ctx.settings, issue, out, as_email=as_email)
        for path in written:
            click.echo(f"wrote {path}")
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        _warn(f"serving on {host}: anyone who can reach this machine can see the preview")

    def ready(url: str) -> None:
        click.echo(f"previewing {issue} at {url} (Ctrl-C to stop)")
        if not no_open:
            import webbrowser

            webbrowser.open(url)

    _serve(
        lambda: preview_mod.serve(
            ctx.settings, issue, host=host, port=port, as_email=as_email, ready=ready
        ),
        host,
        port,
        "preview",
    )


# -- unsubscribes and the web app ---------------------------------------------------------


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Port to serve on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you ask).",
)
@pass_ctx
def serve(ctx: Context, port: int, host: str) -> None:
    """Serve the one-click unsubscribe endpoint and the web archive (small lists).

    For real traffic run the same WSGI app behind a server: gunicorn 'mailer.web:app'.
    """
    from . import web

    def ready(url: str) -> None:
        click.echo(f"serving unsubscribe endpoint and archive at {url} (Ctrl-C to stop)")

    _serve(lambda: web.serve(ctx.settings, host=host, port=port, ready=ready), host, port)


def _serve(run: Callable[[], None], host: str, port: int, what: str = "server") -> None:
    """Run a server until Ctrl-C, which is the normal way to stop it."""
    try:
        run()
    except KeyboardInterrupt:
        click.echo(f"{what} stopped")
    except OSError as exc:
        raise MailerError(
            f"cannot serve on {host}:{port}: {exc.strerror}", hint="try --port"
        ) from None


@main.command()
@click.argument("address")
@click.option(
    "--reason",
    type=click.Choice(["manual", "unsubscribed", "bounced"]),
    default="manual",
    show_default=True,
)
@pass_ctx
def unsubscribe(ctx: Context, address: str, reason: str) -> None:
    """Suppress ADDRESS by hand (a reply asking to be removed); every later send skips it."""
    from .subscribers import check_email

    try:
        normalised = check_email(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None
    ledger = ctx.ledger()
    assert ledger is not None
    with ledger:
        new = ledger.suppress(normalised, reason, "cli")
    click.echo(f"{normalised}: {'suppressed' if new else 'was already suppressed'} ({reason})")


@main.command()
@click.option("--csv", "as_csv", is_flag=True, help="CSV output (email,reason,source,created_at).")
@pass_ctx
def suppressed(ctx: Context, as_csv: bool) -> None:
    """List suppressed addresses: who, why, since when."""
    ledger = ctx.ledger(create=False)
    rows = ledger.suppressions() if ledger is not None else []
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["email", "reason", "source", "created_at"])
        for r in rows:
            writer.writerow([r.email, r.reason, r.source, r.created_at.isoformat()])
        return
    for r in rows:
        click.echo(f"{r.email}  {r.reason}  {r.source}  {r.created_at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{len(rows)} suppressed", err=True)


@subscribers.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_ctx
def subscribers_export(ctx: Context, path: Path | None) -> None:
    """Print the list (CSV) with suppressed, invalid and duplicate rows left out."""
    path = path or ctx.settings.root / ctx.settings.subscribers
    ledger = ctx.ledger(create=False)
    suppressed_set = ledger.suppressed_set() if ledger is not None else set()
    listing = SubscriberList(path)
    columns = sorted(listing.columns)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["email", "name", *columns])
    kept = 0
    for sub in listing:
        if sub.email.lower() in suppressed_set:
            continue
        writer.writerow([sub.email, sub.name, *(sub.fields.get(c, "") for c in columns)])
        kept += 1
    click.echo(
        f"{kept} exported, {listing.problem_count + listing.skipped_count} rows left out,"
        f" {len(suppressed_set)} suppressed addresses",
        err=True,
    )


# -- config -------------------------------------------------------------------------------


@main.command("config")
@pass_ctx
def show_config(ctx: Context) -> None:
    """Print the settings in force and where each came from (secrets masked)."""
    s = ctx.settings
    click.echo(f"# project {s.root}")
    for key, value in s.masked().items():
        source = s.sources.get(key, "default")
        click.echo(f"{key:<18} = {value!r:<44} # {config_mod.env_name(key)}, from {source}")


def run() -> None:
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
