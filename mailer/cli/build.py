"""`mailer build`."""

from __future__ import annotations

from pathlib import Path

import click

from .. import build as build_mod
from ..render import GMAIL_CLIP_BYTES
from .common import Context, pass_ctx, print_notices


@click.command()
@click.argument("issue")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder [build/ISSUE]."
)
@pass_ctx
def build(ctx: Context, issue: str, out: Path | None) -> None:
    """Render ISSUE (a name in issues/ or a path) to email.html and email.txt.

    The files are what one reader would get, filled in for an example subscriber.
    """
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
    print_notices(email, fold=False)
