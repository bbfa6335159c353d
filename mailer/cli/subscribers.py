"""`mailer subscribers add|remove|list|tag|import|forget`: the store's list, by hand.

The group itself, `check` and `export` live in status.py; these commands join it here.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from mailer import lists
from mailer.cli.common import Context, pass_ctx, warn
from mailer.cli.status import SHOW_INVALID, SHOW_SKIPPED, subscribers
from mailer.errors import EXIT_DATA, printable
from mailer.state.imports import FORMATS, Report
from mailer.state.reader_rows import RESERVED_FIELDS, Reader, field_name, tag_name
from mailer.states import SubscriberStatus

PROGRESS_EVERY = 100_000  # rows between two progress lines of a long import
LIST_COLUMNS = ("email", "name", "status", "tags", "fields", "created", "confirmed", "source")


def _store_note(ctx: Context) -> None:
    """Say so when sends do not read the store, whose list these commands change."""
    if not lists.in_use(ctx.settings):
        warn(
            f"subscribers = {ctx.settings.subscribers!r}: sends read that file, not the store"
            ' (set subscribers = "store" in mailer.toml to send to this list)'
        )


def _tags(values: tuple[str, ...], flag: str) -> list[str]:
    try:
        return list(dict.fromkeys(tag_name(v) for v in values))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def _fields(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        name = field_name(key)
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--field")
        if name in RESERVED_FIELDS:
            raise click.BadParameter(f"{name!r} is not a field: use --name", param_hint="--field")
        out[name] = " ".join(text.split())
    return out


def _address_error(exc: ValueError) -> click.BadParameter:
    return click.BadParameter(str(exc), param_hint="EMAIL")


def _shown_tags(reader: Reader) -> str:
    return ", ".join(reader.tags) or "-"


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The reader's name, as {{ subscriber.name }} shows it.")
@click.option("--field", "fields", multiple=True, metavar="KEY=VALUE", help="A merge field.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag (repeat for more).")
@pass_ctx
def add(
    ctx: Context, email: str, name: str, fields: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Add EMAIL to the store's list as a confirmed reader (consent source `cli`).

    \b
    Use it for someone who asked you in person or by mail; a reader already on the
    list keeps their consent record and gets the new name, fields and tags.
    An unsubscribed, bounced or forgotten address is refused (exit 65): only the
    reader can come back, through a confirmed signup.

    \b
      mailer subscribers add ada@example.com --name "Ada Lovelace" \\
          --field city=London --tag paid
    """
    _store_note(ctx)
    wanted_tags, wanted_fields = _tags(tags, "--tag"), _fields(fields)
    try:
        outcome, reader = lists.add(
            ctx.settings, email, name=" ".join(name.split()), fields=wanted_fields, tags=wanted_tags
        )
    except ValueError as exc:
        raise _address_error(exc) from None
    click.echo(f"{reader.email}: {outcome} ({reader.status}, tags: {_shown_tags(reader)})")


@subscribers.command("remove")
@click.argument("email")
@pass_ctx
def remove(ctx: Context, email: str) -> None:
    """Unsubscribe EMAIL by hand and suppress it (reason `manual`).

    For a reader who asked by mail. The row stays, with its consent record, as
    `unsubscribed`; `mailer subscribers forget` erases it instead.
    """
    _store_note(ctx)
    try:
        address, listed, new = lists.remove(ctx.settings, email)
    except ValueError as exc:
        raise _address_error(exc) from None
    if not new:
        click.echo(f"{address}: was already suppressed")
    elif listed:
        click.echo(f"{address}: unsubscribed and suppressed (manual)")
    else:
        click.echo(f"{address}: suppressed (manual); it was not on the list")


@subscribers.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriberStatus]),
    help="Only readers with this status.",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only readers with this tag.")
@click.option("--csv", "as_csv", is_flag=True, help=f"CSV: {','.join(LIST_COLUMNS)}.")
@pass_ctx
def list_readers(ctx: Context, status: str | None, tags: tuple[str, ...], as_csv: bool) -> None:
    """List the store's readers: address, status, tags, name (or everything, --csv).

    \b
    --csv is the consent record of each reader too (created: when they signed up,
    confirmed: when they confirmed, source: form, import:FILE or cli): what to
    hand over when a reader asks what you hold about them.
    """
    wanted = SubscriberStatus(status) if status else None
    found = lists.readers(ctx.settings, wanted, _tags(tags, "--tag"))
    count = 0
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(LIST_COLUMNS)
    for reader in found:
        count += 1
        if as_csv:
            consent = reader.consent
            writer.writerow(
                [
                    reader.email,
                    reader.name,
                    reader.status,
                    ",".join(reader.tags),
                    json.dumps(dict(reader.fields), sort_keys=True, ensure_ascii=False),
                    consent.signed_up_at.isoformat(),
                    consent.confirmed_at.isoformat() if consent.confirmed_at else "",
                    consent.source,
                ]
            )
        else:
            # printable: a name from another service's export may hold a terminal escape.
            line = f"{reader.email}  {reader.status}  {_shown_tags(reader)}  {reader.name}"
            click.echo(printable(line))
    click.echo(f"{count} reader{'s' if count != 1 else ''}", err=True)


@subscribers.command("tag")
@click.argument("emails", metavar="EMAIL...", nargs=-1, required=True)
@click.option("--add", "add_tags", multiple=True, metavar="TAG", help="A tag to add.")
@click.option("--remove", "remove_tags", multiple=True, metavar="TAG", help="A tag to take off.")
@pass_ctx
def tag(
    ctx: Context, emails: tuple[str, ...], add_tags: tuple[str, ...], remove_tags: tuple[str, ...]
) -> None:
    """Add and take off tags, on every EMAIL or (if one is not listed) on none.

    \b
    Tags make segments: `mailer send ISSUE --tag paid`, or `segment: [paid]` in an
    issue's front matter, sends to readers with any of those tags.
      mailer subscribers tag ada@example.com alan@example.org --add paid --remove trial
    """
    if not add_tags and not remove_tags:
        raise click.UsageError("say what to do: --add TAG, --remove TAG or both")
    _store_note(ctx)
    try:
        readers = lists.tag(
            ctx.settings, emails, _tags(add_tags, "--add"), _tags(remove_tags, "--remove")
        )
    except ValueError as exc:
        raise _address_error(exc) from None
    for reader in readers:
        click.echo(f"{reader.email}: tags {_shown_tags(reader)}")


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", *FORMATS]),
    default="auto",
    show_default=True,
    help="The service the file comes from; auto tells it by the header.",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag every reader imported.")
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@pass_ctx
def import_list(ctx: Context, file: Path, fmt: str, tags: tuple[str, ...], dry_run: bool) -> None:
    """Import FILE, another service's export, into the store's list.

    \b
    Mailchimp: the audience export zip (subscribed, unsubscribed and cleaned
    members); Substack: the export zip (email_list.*.csv); listmonk and Buttondown:
    their subscriber CSV; or any CSV with an email column. Unsubscribed and cleaned
    readers are suppressed; a suppressed or forgotten address is never added back.
    Every bad row is named with its file and line; the good ones still come in
    (exit 65 if any row was invalid). Importing the same file again changes nothing.

    \b
      mailer subscribers import members_export_1a2b3c.zip --dry-run
      mailer subscribers import substack-export.zip --tag from-substack
    """
    _store_note(ctx)
    extra = _tags(tags, "--tag")
    shown = [0]

    def progress(report: Report) -> None:
        if report.rows - shown[0] >= PROGRESS_EVERY:
            shown[0] = report.rows
            click.echo(f"  {report.rows:,} of {report.total:,} rows", err=True)

    report = lists.import_file(
        ctx.settings, file, fmt=fmt, tags=extra, dry_run=dry_run, on_progress=progress
    )
    for table, name in report.formats:
        click.echo(f"{table}: {name}")
    for note in report.skipped_rows[:SHOW_SKIPPED]:
        click.echo(f"  {note.where}: skipped: {note.email or '-'}: {note.reason}")
    if report.skipped > SHOW_SKIPPED:
        click.echo(f"  …and {report.skipped - SHOW_SKIPPED} more skipped rows")
    for note in report.invalid_rows[:SHOW_INVALID]:
        click.echo(f"  {note.where}: invalid: {note.email or '-'}: {note.reason}")
    if report.invalid > SHOW_INVALID:
        click.echo(f"  …and {report.invalid - SHOW_INVALID} more invalid rows")
    what = "dry run, nothing written" if dry_run else "imported"
    click.echo(
        f"{file.name} ({what}): {report.added} added, {report.changed} changed,"
        f" {report.suppressed} suppressed, {report.skipped} skipped, {report.invalid} invalid,"
        f" {report.unchanged} unchanged"
    )
    if report.invalid:
        sys.exit(EXIT_DATA)


@subscribers.command("forget")
@click.argument("email")
@pass_ctx
def forget(ctx: Context, email: str) -> None:
    """Erase EMAIL: a reader's right to be forgotten.

    \b
    Their row, their deliveries, what came back about them and their suppression
    are deleted; in its place a keyed hash of the address (HMAC with MAILER_SECRET)
    stays in the suppressions, so the address is never mailed or imported again,
    and nobody can read it back. Keep MAILER_SECRET: the hash is keyed with it.
    """
    try:
        address, lost = lists.forget(ctx.settings, email)
    except ValueError as exc:
        raise _address_error(exc) from None
    gone = ", ".join(f"{count} from {table}" for table, count in lost.items() if count)
    click.echo(f"{address}: forgotten ({gone or 'it was nowhere'}); a keyed hash stays suppressed")


__all__ = ["subscribers"]
