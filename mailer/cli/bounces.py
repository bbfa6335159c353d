"""`mailer bounces`: read what came back (bounces, complaints, mailed unsubscribes)."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import Context, pass_ctx
from mailer.feedback import mailboxes
from mailer.feedback import process as feedback


@click.command()
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read this Maildir (new/ and cur/); handled messages move to its .processed folder.",
)
@click.option(
    "--mbox",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read this mbox file; it is never changed (the ledger remembers what was handled).",
)
@click.option(
    "--imap",
    is_flag=True,
    help="Read bounce_imap_folder on bounce_imap_host over TLS; handled messages move to"
    " 'processed'. The password only from MAILER_BOUNCE_IMAP_PASSWORD (.env).",
)
@click.option("--keep", is_flag=True, help="Leave handled messages where they are.")
@click.option("-v", "--verbose", is_flag=True, help="Say who each message was about and why.")
@pass_ctx
def bounces(
    ctx: Context, maildir: Path | None, mbox: Path | None, imap: bool, keep: bool, verbose: bool
) -> None:
    """Suppress readers who hard-bounced, soft-bounced soft_bounce_limit issues in a row,
    complained (ARF) or mailed the unsubscribe address. Reading a message twice changes
    nothing; what it cannot classify it counts and leaves alone.

    \b
    Exit codes: 0 done; 2 bad settings; 65 unreadable Maildir or mbox;
    69 IMAP server unreachable or its certificate untrusted; 77 IMAP login refused.
    """
    if [maildir is not None, mbox is not None, imap].count(True) != 1:
        raise click.UsageError("give exactly one of --maildir DIR, --mbox FILE or --imap")
    settings = ctx.settings
    box: mailboxes.Mailbox
    if maildir is not None:
        box = mailboxes.Maildir(maildir)
    elif mbox is not None:
        box = mailboxes.Mbox(mbox)
    else:
        box = mailboxes.Imap(settings)
    try:
        report = feedback.process(settings, box, keep=keep)
    finally:
        box.close()
    click.echo(report.summary())
    if verbose:
        for line in report.lines:
            click.echo(f"  {line}")
