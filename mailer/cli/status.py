"""`mailer status`, the subscriber list, the suppression list and `mailer config`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from mailer.cli.common import Context, pass_ctx
from mailer.config import env_name
from mailer.errors import EXIT_DATA
from mailer.states import DeliveryState, Feedback, Reason

# campaign (the send side: ledger, render, DKIM) and lists are imported by the commands that
# use them: `mailer config` and `mailer --help` need neither.

# `subscribers check` lists this many rows of each kind, then says how many more there are.
SHOW_SKIPPED = 50
SHOW_INVALID = 200


@click.command()
@click.argument("issue")
@click.option(
    "--failed",
    "only_failed",
    is_flag=True,
    help="List who did not get it (failed, deferred and bounced) and why.",
)
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    help="With --failed: CSV (email,state,attempts,reply,updated_at,next_try_at).",
)
@click.option(
    "--subscribers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Count pending against this list.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Count pending among readers with this tag [the front matter's segment:].",
)
@pass_ctx
def status(
    ctx: Context,
    issue: str,
    only_failed: bool,
    as_csv: bool,
    subscribers: Path | None,
    tags: tuple[str, ...],
) -> None:
    """Show how ISSUE's send went: sent, deferred, failed, bounced, complained, pending."""
    from mailer import campaign
    from mailer.state.reader_rows import tag_name

    try:
        segment = tuple(dict.fromkeys(tag_name(t) for t in tags)) if tags else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tag") from None
    st = campaign.status(ctx.settings, issue, subscribers, segment)
    if only_failed:
        if as_csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["email", "state", "attempts", "reply", "updated_at", "next_try_at"])
            for d in st.problems:
                next_try = d.next_try_at.isoformat() if d.next_try_at else ""
                writer.writerow(
                    [d.email, d.state, d.attempts, d.last_reply, d.updated_at.isoformat(), next_try]
                )
            return
        for d in st.problems:
            when = f"  next try {d.next_try_at:%Y-%m-%d %H:%M} UTC" if d.next_try_at else ""
            click.echo(f"{d.email}  {d.state}  attempts={d.attempts}{when}  {d.last_reply}")
        return
    click.echo(st.issue)
    click.echo(f"  sent       {st.counts[DeliveryState.SENT]}")
    deferred = st.counts[DeliveryState.DEFERRED]
    click.echo(f"  deferred   {deferred}")
    upcoming = [d.next_try_at for d in st.problems if d.next_try_at is not None]
    if upcoming and deferred:
        click.echo(f"  next try   {min(upcoming):%Y-%m-%d %H:%M} UTC (the soonest)")
    click.echo(f"  failed     {st.counts[DeliveryState.FAILED]}")
    # Accepted, then returned by a DSN (`mailer bounces`); complaints are about this issue.
    click.echo(f"  bounced    {st.counts[DeliveryState.BOUNCED]}")
    click.echo(f"  complained {_complained(ctx, st.issue)}")
    pending = st.pending if st.pending is not None else "? (no subscriber list)"
    click.echo(f"  pending    {pending}")
    if st.problems:
        click.echo("  last problems:")
        for d in st.problems[-5:]:
            click.echo(f"    {d.email}: {d.last_reply}")
    if st.senders:
        live = sum(r.live for r in st.senders)
        click.echo(f"  senders    {len(st.senders)} ({live} live)")
        for r in st.senders:
            counts = f"sent {r.sent}, deferred {r.deferred}, failed {r.failed}"
            if r.live:
                doing = f"sending since {r.started_at:%Y-%m-%d %H:%M:%S} UTC"
            elif r.state == "sending":  # never said goodbye: killed, or its host went away
                doing = f"silent since {r.heartbeat_at:%H:%M:%S} UTC (its readers go to others)"
            else:
                doing = f"{r.state} at {r.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
            click.echo(f"    {r.host} pid {r.pid}: {doing}, {counts}")


def _complained(ctx: Context, issue: str) -> int:
    """Readers who reported this issue as spam (ARF reports read by `mailer bounces`)."""
    from mailer.state.ledger import existing_ledger

    book = existing_ledger(ctx.settings)
    if book is None:
        return 0
    with book:
        return book.feedback_counts(issue)[Feedback.COMPLAINT]


@click.group()
def subscribers() -> None:
    """The subscriber list: check or export it; the store's list (subscribers = "store"):
    add, remove, list, tag, import from another service, forget."""


@subscribers.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_ctx
def subscribers_check(ctx: Context, path: Path | None) -> None:
    """Validate a subscriber CSV without sending anything (exit 65 if any row is bad)."""
    from mailer import lists

    if path is None and lists.in_use(ctx.settings):
        counts = ", ".join(f"{n} {status}" for status, n in lists.counts(ctx.settings).items())
        click.echo(f"the store: {counts}")
        return
    checked = lists.check(path or ctx.settings.root / ctx.settings.subscribers)
    invalid, skipped = checked.invalid_count, checked.skipped_count
    click.echo(f"{checked.path}: {checked.good} subscribers, {invalid} invalid, {skipped} skipped")
    for p in checked.skipped[:SHOW_SKIPPED]:
        click.echo(f"  line {p.line}: skipped: {p.email or '-'}: {p.reason}")
    if skipped > SHOW_SKIPPED:
        click.echo(f"  …and {skipped - SHOW_SKIPPED} more skipped rows")
    for p in checked.invalid[:SHOW_INVALID]:
        click.echo(f"  line {p.line}: invalid: {p.email or '-'}: {p.reason}")
    if invalid > SHOW_INVALID:
        click.echo(f"  …and {invalid - SHOW_INVALID} more invalid rows")
    if invalid:
        sys.exit(EXIT_DATA)


@subscribers.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_ctx
def subscribers_export(ctx: Context, path: Path | None) -> None:
    """Print the list (CSV) with suppressed, invalid and duplicate rows left out.

    With subscribers = "store" and no PATH: the store's confirmed readers.
    """
    from mailer import lists

    export = lists.export(ctx.settings, path)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["email", "name", *export.columns])
    kept = 0
    for sub in export.rows:
        writer.writerow([sub.email, sub.name, *(sub.fields.get(c, "") for c in export.columns)])
        kept += 1
    left_out = export.listing.problem_count + export.listing.skipped_count
    click.echo(
        f"{kept} exported, {left_out} rows left out, {len(export.suppressed)} suppressed addresses",
        err=True,
    )


@click.command()
@click.argument("address")
@click.option(
    "--reason",
    type=click.Choice([r.value for r in Reason]),
    default=Reason.MANUAL.value,
    show_default=True,
)
@pass_ctx
def unsubscribe(ctx: Context, address: str, reason: str) -> None:
    """Suppress ADDRESS by hand (a reply asking to be removed); every later send skips it."""
    from mailer import lists

    try:
        normalised, new = lists.suppress(ctx.settings, address, Reason(reason))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None
    click.echo(f"{normalised}: {'suppressed' if new else 'was already suppressed'} ({reason})")


@click.command()
@click.option("--csv", "as_csv", is_flag=True, help="CSV output (email,reason,source,created_at).")
@pass_ctx
def suppressed(ctx: Context, as_csv: bool) -> None:
    """List suppressed addresses: who, why, since when."""
    from mailer import lists

    rows = lists.suppressions(ctx.settings)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["email", "reason", "source", "created_at"])
        for r in rows:
            writer.writerow([r.email, r.reason, r.source, r.created_at.isoformat()])
        return
    for r in rows:
        click.echo(f"{r.email}  {r.reason}  {r.source}  {r.created_at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{len(rows)} suppressed", err=True)


@click.command("config")
@pass_ctx
def show_config(ctx: Context) -> None:
    """Print the settings in force and where each came from (secrets masked)."""
    s = ctx.settings
    click.echo(f"# project {s.root}")
    masked = s.masked()
    width = max(map(len, masked), default=0)
    for key, value in masked.items():
        source = s.sources.get(key, "default")
        click.echo(f"{key:<{width}} = {value!r:<44} # {env_name(key)}, from {source}")
