"""`mailer build`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer import build as build_mod
from mailer import lint as lint_mod
from mailer.cli.common import Context, collector_paused, pass_ctx, print_notices, shown, warn
from mailer.compose import images, load
from mailer.compose.render import GMAIL_CLIP_BYTES


@click.command()
@click.argument("issue")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder [build/ISSUE]."
)
@click.option(
    "--fetch-images",
    is_flag=True,
    help="Before building, read the real size of each image not sized yet: an HTTP request for "
    "its first 64 KB only. This is the only network access `build` ever makes; without it "
    "the build is offline. Sizes are cached in images.json in the state directory "
    "(.mailer/ unless state_dir says otherwise); every later build and send reads them, so a "
    "small badge stays small in Outlook instead of filling the column. An image that cannot "
    "be sized is a warning, never a failure.",
)
@pass_ctx
def build(ctx: Context, issue: str, out: Path | None, fetch_images: bool) -> None:
    """Render ISSUE (a name in issues/ or a path) to email.html and email.txt.

    The files are what one reader would get, filled in for an example subscriber. The
    last lines are `mailer lint`'s count of what some email clients will not show as built,
    and the warnings about the issue itself (file and line).
    """
    if fetch_images:
        _fetch_images(ctx, issue)
    with collector_paused():
        _build(ctx, issue, out)


def _build(ctx: Context, issue: str, out: Path | None) -> None:
    built = build_mod.build(ctx.settings, issue, out)
    email = built.email
    click.echo(f"built {built.html_path} and email.txt in {built.elapsed * 1000:.0f} ms")
    click.echo(f"  subject    {email.subject}")
    click.echo(f"  preheader  {email.preheader}")
    clipped = email.html_bytes > GMAIL_CLIP_BYTES
    size_note = "  (over 102 KB: Gmail will clip it)" if clipped else ""
    click.echo(f"  html       {email.html_bytes / 1024:.1f} KB{size_note}")
    click.echo(f"  words      {email.words}")
    click.echo(f"  links      {email.links}")
    click.echo(f"  images     {email.images}")
    click.echo(lint_mod.summary(lint_mod.lint(email, ctx.settings)))
    print_notices(email, fold=False)


def _fetch_images(ctx: Context, name: str) -> None:
    """Size the issue's images into the cache; one summary line, one warning per failure."""
    settings = ctx.settings
    parsed = load.by_name(settings, name)
    fetched = images.fetch_sizes(settings, images.image_urls(parsed.tokens))
    parts = [f"{len(fetched.sized)} sized", f"{len(fetched.failed)} failed"]
    if fetched.known:
        parts.append(f"{len(fetched.known)} already known")
    if fetched.skipped:
        parts.append(f"{len(fetched.skipped)} not http(s)")
    click.echo(f"images: {', '.join(parts)} (cache {shown(fetched.cache, settings.root)})")
    for url, reason in fetched.failed.items():
        warn(f"image size unknown: {url}: {reason}")
