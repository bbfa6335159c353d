"""The `mailer` command. Each command lives in a module of this package, parses its flags,
makes one call into the core and prints the result; this module only gathers them."""

from __future__ import annotations

import gc
import importlib
import os
from pathlib import Path
from typing import Any

import click

from mailer import config as config_mod
from mailer.cli.common import Context, collector_paused, ends_process, warn

# Each command's module, imported only when that command runs (or --help lists it): `mailer
# send --due` from cron need not load MJML, the linter, DKIM or the bounce parsers.
COMMANDS = {
    "build": "build:build",
    "lint": "lint:lint",
    "bounces": "bounces:bounces",
    "preview": "serve:preview",
    "send": "send:send",
    "schedule": "schedule:schedule",
    "status": "status:status",
    "subscribers": "subscribers:subscribers",  # the group is status.py's; more join it there
    "unsubscribe": "status:unsubscribe",
    "suppressed": "status:suppressed",
    "serve": "serve:serve",
    "form": "serve:form",
    "config": "status:show_config",
    "dkim": "deliverability:dkim",
    "dns": "deliverability:dns",
    "backup": "backup:backup",
    "publish": "publish:publish",
    "digest": "intake:digest",
    "import-posts": "intake:import_posts",
    "init": "init:init",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported by name, on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            with collector_paused():
                command: Any = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The `mailer` script and `python -m mailer` (CliRunner calls main() instead).

        The command is the process (common.ends_process). When it is done, what it built is
        moved out of the cyclic collector's sight (gc.freeze), so the interpreter's exit does
        not sweep and free it object by object (~50 ms after a build: MJML, premailer,
        cssutils and lxml leave ~55,000 objects). The OS takes the memory back; atexit
        handlers, the flushing of stdout and stderr and every object that is not in a
        reference cycle are finalised as before.
        """
        ends_process()
        try:
            return self.main(*args, **kwargs)
        finally:
            gc.freeze()


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
      mailer init news                   start a newsletter in news/, with a first issue
      mailer build issue-2               render build/issue-2/email.html and email.txt
      mailer preview issue-2             see it in a browser, live while you edit
      mailer send issue-2 --dry-run      everything but the sending
      mailer send issue-2                send, asking first on a terminal
      mailer status issue-2              who got it, who did not and why
    """
    if project is not None:
        os.chdir(project)
    if ctx.invoked_subcommand == "init":
        return  # a new project: the settings of wherever this runs are none of its business
    settings = config_mod.load(
        Path.cwd(), overrides={"templates": str(templates) if templates else None}
    )
    for warning in settings.warnings:
        warn(warning)
    ctx.obj = Context(settings)


__all__ = ["main"]
