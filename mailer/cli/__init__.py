"""The `mailer` command. Each command lives in a module of this package, parses its flags,
makes one call into the core and prints the result; this module only gathers them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import config as config_mod
from .bounces import bounces
from .build import build
from .common import Context, warn
from .deliverability import dkim, dns
from .lint import lint
from .schedule import schedule
from .send import send
from .serve import preview, serve
from .status import show_config, status, subscribers, suppressed, unsubscribe


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
    for warning in settings.warnings:
        warn(warning)
    ctx.obj = Context(settings)


for command in (
    build,
    lint,
    bounces,
    preview,
    send,
    schedule,
    status,
    subscribers,
    unsubscribe,
    suppressed,
    serve,
    show_config,
    dkim,
    dns,
):
    main.add_command(command)

__all__ = ["main"]
