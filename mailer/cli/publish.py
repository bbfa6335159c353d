"""`mailer publish`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import Context, collector_paused, pass_ctx, shown, warn


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the site to; upload it as it is to any static host [site/ beside "
    "issues/].",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="The public URL the site will live at, for the feed's and sitemap's absolute links "
    "[archive_url without its /issues, else base_url].",
)
@pass_ctx
def publish(ctx: Context, out: Path | None, base_url: str | None) -> None:
    """Write the newsletter's public archive as a static site.

    \b
      index.html                the issues, newest first: date, title, preheader
                                (and a signup form when subscribe_url is set)
      issues/NAME/index.html    each issue as the email renders it, with nobody's
                                address, token or unsubscribe link in it
      feed.xml                  Atom 1.0: the newest 20 issues in full
      sitemap.xml, assets/      the sitemap; the project's assets/ folder, copied

    \b
    Which issues: every issue sent to the list unless its front matter says
    `published: false`, and any issue whose front matter says `published: true`
    (with a `date` if it was never sent; not before its send_at). Never one with
    `draft: true`. Dates: front matter `date`, else when the issue first went out.

    A file is rewritten only when its bytes change, and only changed issues are
    rendered again: run it from cron after each send, then sync the folder.
    The emails' "view in browser" link (archive_url/NAME/) points at these pages
    when archive_url is the site's URL plus /issues.
    """
    from mailer.archive import pages, site

    settings = ctx.settings
    with collector_paused():
        done = site.publish(settings, out or settings.root / "site", base_url)
    for message in done.warnings:
        warn(message)
    archive = done.site + pages.ISSUES_DIR
    if settings.archive_url and settings.archive_url.rstrip("/") != archive:
        warn(
            f"archive_url is {settings.archive_url}: the emails' 'view in browser' links "
            f"do not lead to these pages (they would with archive_url = {archive})"
        )
    for path in done.written:
        click.echo(f"wrote {shown(path, settings.root)}")
    for path in done.removed:
        click.echo(f"removed {shown(path, settings.root)}")
    issues = f"{done.issues} issue{'' if done.issues == 1 else 's'}"
    click.echo(
        f"published {issues} to {shown(done.out, settings.root)}/ for {done.site}: "
        f"{len(done.written)} written, {done.unchanged} unchanged, {len(done.removed)} removed, "
        f"{done.rendered} rendered in {done.elapsed:.2f} s"
    )
