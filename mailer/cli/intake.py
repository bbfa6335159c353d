"""`mailer digest` and `mailer import-posts`: new issues written from elsewhere."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import Bounded, Context, pass_ctx, shown
from mailer.values import Bounds
from mailer.when import parse_when

MAX_ENTRIES = Bounds(1, 1000)


@click.command()
@click.argument("feed_url", metavar="FEED_URL")
@click.option("--title", metavar="T", help="The issue's title [FEED: new posts, DATE].")
@click.option(
    "--max",
    "limit",
    type=Bounded(MAX_ENTRIES),
    default=10,
    show_default=True,
    help="At most this many entries (1 to 1000), the newest; older new ones are dropped, not "
    "kept for the next digest.",
)
@click.option(
    "--send-at",
    metavar="TIME",
    help="Put send_at in the front matter, e.g. '2026-12-01 09:00 Europe/Berlin', so that "
    "`mailer send --due` from cron sends it then.",
)
@pass_ctx
def digest(ctx: Context, feed_url: str, title: str | None, limit: int, send_at: str | None) -> None:
    """Write a new issue listing what FEED_URL (RSS 2.0 or Atom) published since the last
    digest of it: each entry's title, link, date, summary and first image.

    \b
    The issue is issues/digest-DATE.md, front matter included (title, date,
    digest: FEED_URL, send_at). Its body comes from digest.md.j2: copy
    mailer/compose/templates/digest.md.j2 to templates/ to change it.
    Nothing new (or the server answers 304 Not Modified): says so, writes
    nothing, exits 0. The feed is fetched with a 20 s deadline, at most 10 MB
    and 5 redirects, conditionally (its ETag and Last-Modified are kept in the
    ledger, with the entries already listed).

    \b
    From cron, every Monday at 07:00, sent at 09:00:
      0 7 * * 1  cd /srv/news && mailer digest https://blog.example.org/feed.xml \\
                   --send-at "$(date +\\%F) 09:00 Europe/Berlin"

    Exit codes: 0 written or nothing new, 65 not a feed or broken XML,
    69 the host cannot be reached.
    """
    from mailer.intake import digest as digest_mod

    if send_at is not None:
        try:
            parse_when(send_at)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--send-at") from None
    settings = ctx.settings
    done = digest_mod.digest(settings, feed_url, title=title, limit=limit, send_at=send_at)
    if done.not_modified:
        click.echo(f"nothing new: {feed_url} has not changed since the last digest")
        return
    if done.path is None:
        click.echo(f"nothing new in {done.feed_title} since the last digest")
        return
    entries = "entry" if done.entries == 1 else "entries"
    click.echo(f"wrote {shown(done.path, settings.root)}: {done.entries} new {entries}")
    if done.left_out:
        click.echo(f"  {done.left_out} older new entries left out (--max {limit})")
    click.echo(f"  next: mailer build {done.path.stem}")


@click.command("import-posts")
@click.argument(
    "export", metavar="EXPORT.zip", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@pass_ctx
def import_posts(ctx: Context, export: Path) -> None:
    """Import past posts from a Substack export into issues/.

    \b
    EXPORT.zip is what Substack's Settings > Exports gives: posts.csv and
    posts/<id>.<slug>.html. Each published newsletter or podcast post becomes
    issues/<slug>.md: title, subtitle as preheader, date, published: true (so
    `mailer publish` puts it in the archive), the HTML as clean Markdown.
    Drafts, pages and threads are skipped. A post whose issue exists already
    is left alone: importing again writes nothing new.
    Paid posts keep `audience:` in their front matter: set `published: false`
    on those the public archive must not show.
    """
    from mailer.intake import substack

    settings = ctx.settings
    done = substack.import_posts(settings, export)
    for path in done.written:
        click.echo(f"wrote {shown(path, settings.root)}")
    parts = [f"{len(done.written)} imported", f"{done.existing} already there"]
    parts += [f"{count} skipped ({why})" for why, count in sorted(done.skipped.items())]
    click.echo(", ".join(parts))
