"""`mailer init`."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path

import click

from mailer import init as init_mod
from mailer.errors import EXIT_ABORTED, ConfigError, printable

# What each file is for, as `init` lists them.
PURPOSES = {
    "mailer.toml": "the settings, each explained (commit it)",
    ".env": "MAILER_SECRET and the SMTP login (never commit it)",
    ".gitignore": "keeps .env, subscribers.csv, .mailer/ and build/ out of git",
    "subscribers.csv": "your readers, one email,name row each",
}


@click.command()
@click.argument(
    "directory", default=".", type=click.Path(file_okay=False, path_type=Path), metavar="[DIR]"
)
@click.option("--name", help="The newsletter's name [the From address's display name].")
@click.option("--from", "from_", metavar="'NAME <ADDRESS>'", help="Who sends it.")
@click.option(
    "--url",
    metavar="URL",
    help="Where `mailer serve` will answer (the unsubscribe page and the archive), "
    "e.g. https://news.example.org.",
)
def init(directory: Path, name: str | None, from_: str | None, url: str | None) -> None:
    """Start a newsletter in DIR (default: here): mailer.toml, .env, a first issue.

    \b
    Writes mailer.toml (every common setting, explained), .env (a random MAILER_SECRET;
    readable by you alone), .gitignore, an empty subscribers.csv and issues/welcome-to-NAME.md,
    an example issue to build, preview and edit. Asks on a terminal for what the flags do not
    give; without one (a script) --url and --from are needed. It never overwrites a file: if
    one it would write exists, it names it and writes nothing.
    """
    answers = _answers(name, from_, url)
    created = init_mod.create(directory, answers)
    where = "here" if directory == Path(".") else f"in {directory}{os.sep}"
    click.echo(f"created {where}, for {answers.name}:")
    width = max(len(str(p)) for p in created.files) + 2
    for path in created.files:
        purpose = PURPOSES.get(str(path), "a first issue: edit it, or start your own beside it")
        click.echo(f"  {str(path):<{width}}{purpose}")
    issue = created.issue
    steps = [(f"cd {shlex.quote(str(directory))}", "")] if directory != Path(".") else []
    steps += [
        (f"mailer build {issue}", "the email in build/, and what to check"),
        (f"mailer preview {issue}", "in a browser, live as you edit"),
        (f"mailer send {issue} --dry-run", "the plan and sample messages; nothing is sent"),
    ]
    click.echo("next:")
    column = max(len(step) for step, _ in steps) + 4
    for step, note in steps:
        click.echo(f"  {step:<{column}}{note}".rstrip())
    click.echo(
        "then add readers to subscribers.csv, your postal address and SMTP server to"
        " mailer.toml, and send: docs/getting-started.md"
    )


def _answers(name: str | None, from_: str | None, url: str | None) -> init_mod.Answers:
    """The flags, checked; on a terminal, questions for the rest."""
    name = init_mod.check_name(name) if name is not None else None
    from_ = init_mod.check_from(from_) if from_ is not None else None
    url = init_mod.check_url(url) if url is not None else None
    display = parseaddr(from_)[0] if from_ else ""
    if not sys.stdin.isatty():
        missing = [flag for flag, value in (("--url", url), ("--from", from_)) if not value]
        if not (name or display):
            missing.insert(0, "--name")
        if missing:
            raise ConfigError(
                f"no terminal to ask on: give {', '.join(missing)}"
                " (mailer init --name NAME --from 'NAME <ADDRESS>' --url URL)"
            )
        assert url is not None and from_ is not None  # for mypy: `missing` is empty
        return init_mod.Answers(name or display, from_, url)
    try:
        name = name or _ask("Newsletter name", init_mod.check_name, display or None)
        url = url or _ask(
            "Its website, where `mailer serve` will answer (https://...)", init_mod.check_url
        )
        from_ = from_ or _ask("From", init_mod.check_from, init_mod.default_from(name, url))
    except click.Abort:
        click.echo()  # end the question's line
        click.echo("aborted: nothing was written", err=True)
        raise click.exceptions.Exit(EXIT_ABORTED) from None
    return init_mod.Answers(name, from_, url)


def _ask(question: str, check: Callable[[str], str], default: str | None = None) -> str:
    """One question, asked again until the answer passes `check`."""

    def checked(text: str) -> str:
        try:
            return check(text)
        except ConfigError as exc:
            raise click.UsageError(printable(exc.message)) from None

    answer: str = click.prompt(question, default=default, value_proc=checked)
    return answer
