"""`mailer backup FILE`: a consistent copy of the store, safe to take while a send runs."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import Context, pass_ctx, shown


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def backup(ctx: Context, path: Path) -> None:
    """Copy the ledger (deliveries, suppressions, schedules) to PATH, consistently.

    \b
    Safe while a send runs: with SQLite the online backup API copies one moment of the
    database; with database_url, pg_dump does (custom format: restore with pg_restore).
    PATH must not exist. Back up .mailer/dkim/ (the DKIM keys), .env, mailer.toml and the
    subscriber list as files; docs/operations.md says how to restore.

    \b
      mailer backup backups/ledger-$(date +%F).db
    """
    from mailer import lists

    made = lists.backup(ctx.settings, path)
    where = shown(made.path.resolve(), ctx.settings.root)
    click.echo(f"backed up the ledger to {where} ({made.size:,} bytes, {made.how})")
